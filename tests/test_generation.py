"""`generate` against the reference: cached greedy logits == HF teacher-forced logits with explicit positions,
identical tokens, CLVP scores and the fix rule; stop handling; padding, chunk and key invariance; latents."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from clvp_jax.generation import (
    GenerationOptions,
    compiling,
    generate,
    get_conditioning_latents,
    load_conditioning_latents,
    save_conditioning_latents,
    warmup,
)
from clvp_jax.model import ClvpModelForConditionalGeneration
from clvp_jax.tuning import Tuning

torch = pytest.importorskip("torch")

NAME = "full_rotary"  # decoder vocab 258 (bos 256, eos 257), text eos 0, 2 decoder layers
# Decoder logits after the cached prefill + N single-token steps vs. one uncached HF forward: fp32 sums in a
# different order through 2 layers, 2 LayerNorms and the lm_head on O(1) weights; observed ~2e-6.
LOGITS = dict(rtol=1e-4, atol=1e-4)
# CLVP scores: two encoder towers + normalisation + exp(logit_scale) ~ 3.7; observed ~1e-6.
SCORES = dict(rtol=1e-5, atol=1e-5)
TEXTS = [np.array([17, 40, 9, 88, 120]), np.array([201, 5, 33, 33, 71, 240, 12, 99])]  # no 0 (= text eos / pad)
N_NEW = 10


@pytest.fixture(scope="module")
def setup(reference_of):
    hf, _, cfg, params = reference_of(NAME)
    model = ClvpModelForConditionalGeneration(cfg, masked_pooling=False)
    T = max(len(t) for t in TEXTS)
    ids = np.zeros((len(TEXTS), T), np.int64)
    mask = np.zeros((len(TEXTS), T), np.int32)
    for i, t in enumerate(TEXTS):
        ids[i, : len(t)], mask[i, : len(t)] = t, 1
    feats = np.random.default_rng(0).standard_normal((len(TEXTS), cfg.decoder_config.feature_size, 12))
    return hf, model, params, ids, mask, feats.astype(np.float32)


def _hf_prefix(hf, text: np.ndarray, feats: np.ndarray):
    """HF conditioning for one unpadded text as its composite generate builds it, plus the start token: X [L, D]."""
    from transformers.models.clvp.modeling_clvp import _pad_extra_bos_eos_tokens

    tc = hf.config.text_config
    ids = torch.from_numpy(text[None].astype(np.int64))
    ids1, mask1 = _pad_extra_bos_eos_tokens(
        ids, torch.ones_like(ids), add_bos_token=False, bos_token_id=tc.bos_token_id, eos_token_id=tc.eos_token_id
    )
    cond = hf.conditioning_encoder(input_features=torch.from_numpy(feats[None]), input_ids=ids1, attention_mask=mask1)
    dec = hf.speech_decoder_model.model.decoder
    start = dec.input_embeds_layer.weight[hf.config.decoder_config.bos_token_id] + dec.position_embeds_layer.weight[0]
    return torch.cat([cond[0], start[None]], dim=0), ids1, mask1


@torch.no_grad()
def _hf_teacher_forced(hf, text, feats, codes: np.ndarray, first_position: int) -> np.ndarray:
    """HF decoder logits [n, V] that predict codes c_0..c_{n-1}, teacher-forced, positions given explicitly:
    the prefix X exactly (its positions are pre-subtracted), then c_k at `first_position + k`."""
    X, _, _ = _hf_prefix(hf, text, feats)
    dec = hf.speech_decoder_model.model.decoder
    L, n = X.shape[0], len(codes)
    E_pos = dec.position_embeds_layer.weight
    emb = dec.input_embeds_layer.weight[torch.from_numpy(codes[:-1].astype(np.int64))]
    inputs = torch.cat([X - E_pos[:L], emb], dim=0)[None]
    positions = torch.cat([torch.arange(L), first_position + torch.arange(n - 1)])[None]
    logits = hf.speech_decoder_model(inputs_embeds=inputs, position_ids=positions).logits[0, L - 1 :]
    return logits.numpy()


@pytest.mark.parametrize("convention", ["training", "reference"])
def test_cached_greedy_matches_teacher_forced_reference(setup, convention):
    hf, model, params, ids, mask, feats = setup
    opts = GenerationOptions(max_new_tokens=N_NEW, position_convention=convention, output_scores=True)
    out = generate(model, params, ids, feats, mask, options=opts)
    seqs, scores, n_gen = np.asarray(out.sequences), np.asarray(out.scores), np.asarray(out.num_generated)
    first = 1 if convention == "training" else 2
    max_diff = 0.0
    for b, text in enumerate(TEXTS):  # each text alone, unpadded, on the reference side
        n = int(n_gen[b])
        assert n >= 3, "the test wants a few decided steps"
        codes = seqs[b, 1 : 1 + n]
        ref = _hf_teacher_forced(hf, text, feats[b], codes, first)
        np.testing.assert_allclose(scores[b, :n], ref, **LOGITS)
        np.testing.assert_array_equal(codes, ref.argmax(-1))  # greedy tokens identical
        max_diff = max(max_diff, float(np.abs(scores[b, :n] - ref).max()))
        stop = hf.config.decoder_config.eos_token_id
        assert (seqs[b, 1 + n :] == stop).all()  # stop-token padding after the stop
    print(f"{convention}: max |logit diff| vs teacher-forced HF = {max_diff:.2e}")

    # Fix + CLVP scores against the reference's own fix and towers (unmasked pooling, as the reference; the text
    # tower sees the padded batch with the extra eos, as the reference composite's generate feeds it).
    from transformers.models.clvp.modeling_clvp import _pad_extra_bos_eos_tokens

    tc = hf.config.text_config
    with torch.no_grad():
        fixed_ref = hf.fix_speech_decoder_output(torch.from_numpy(seqs.astype(np.int64))).numpy()
        np.testing.assert_array_equal(np.asarray(out.speech_ids), fixed_ref)
        ids1, mask1 = _pad_extra_bos_eos_tokens(
            torch.from_numpy(ids),
            torch.from_numpy(mask).long(),
            add_bos_token=False,
            bos_token_id=tc.bos_token_id,
            eos_token_id=tc.eos_token_id,
        )
        t = hf.text_encoder_model(input_ids=ids1, attention_mask=mask1)[0]
        s = hf.speech_encoder_model(input_ids=torch.from_numpy(fixed_ref))[0]
        t, s = t / t.norm(dim=-1, keepdim=True), s / s.norm(dim=-1, keepdim=True)
        rows = (hf.logit_scale.exp() * t @ s.T).numpy()
    np.testing.assert_allclose(np.asarray(out.logits_per_text), rows, **SCORES)
    own = rows.reshape(2, 2, 1)[np.arange(2), np.arange(2)]
    np.testing.assert_array_equal(np.asarray(out.best_index), own.argmax(1))


def test_stop_on_text_eos_min_new_tokens_and_fix(setup):
    """The reference composite's stop token (text eos 0), forced to fire right after min_new_tokens."""
    hf, model, params, ids, mask, feats = setup
    forced = jax.tree_util.tree_map(np.array, params)  # a copy
    forced["speech_decoder_model"]["lm_head"]["bias"][0] += 50.0  # code 0 (= the text eos) always wins
    opts = GenerationOptions(max_new_tokens=8, min_new_tokens=3, stop_on="text_eos", pad_to_max_mel_tokens=12)
    out = generate(model, forced, ids, feats, mask, options=opts)
    seqs = np.asarray(out.sequences)
    assert (seqs[:, 1:4] != 0).all() and (seqs[:, 4:] == 0).all()  # 3 tokens, then stop, then stop padding
    np.testing.assert_array_equal(np.asarray(out.num_generated), [4, 4])
    # Padded with the stop in use (0) to 12; the fix only knows the decoder eos, so those 0s survive -- exactly
    # the reference's behaviour (spec §14.3), which is why decoder_eos is our default.
    padded = np.concatenate([seqs, np.zeros((2, 3), seqs.dtype)], axis=1)
    with torch.no_grad():
        ref = hf.fix_speech_decoder_output(torch.from_numpy(padded.astype(np.int64))).numpy()
    np.testing.assert_array_equal(np.asarray(out.speech_ids), ref)
    assert (np.asarray(out.speech_ids)[:, 3:] == 0).all()


def test_padded_batch_equals_each_text_alone_and_bad_input(setup):
    _, model, params, ids, mask, feats = setup
    opts = GenerationOptions(max_new_tokens=N_NEW, output_scores=True)
    both = generate(model, params, ids, feats, mask, options=opts)
    # Text 0 alone padded differently (more padding): same tokens, same logits.
    ids2 = np.zeros((2, 12), np.int64)
    ids2[:, : ids.shape[1]] = ids
    mask2 = np.zeros((2, 12), np.int32)
    mask2[:, : ids.shape[1]] = mask
    other = generate(model, params, ids2, feats, mask2, options=opts)
    np.testing.assert_array_equal(np.asarray(other.sequences), np.asarray(both.sequences))
    np.testing.assert_allclose(np.asarray(other.scores), np.asarray(both.scores), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="exactly one"):
        generate(model, params, ids, None, mask, options=opts)
    with pytest.raises(ValueError, match="rng"):
        generate(model, params, ids, feats, mask, options=opts.replace(do_sample=True))
    with pytest.raises(ValueError, match="position"):
        generate(model, params, ids, feats, mask, max_new_tokens=500)
    with pytest.raises(ValueError, match="room"):
        generate(model, params, np.ones((1, 40), np.int64), feats, options=opts)


# ---- sampling: chunking and key invariance, latents (tiny config, random init) ----


@pytest.fixture(scope="module")
def tiny(tiny_model):
    model, params = tiny_model
    ids = np.array([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14]])
    mask = (np.arange(6)[None] < np.array([[4], [6]])).astype(np.int32)
    feats = np.random.default_rng(1).standard_normal((2, 80, 16)).astype(np.float32)
    return model, params, ids, mask, feats


def test_sampling_is_independent_of_chunk_size(tiny):
    model, params, ids, mask, feats = tiny
    opts = GenerationOptions.tortoise(num_candidates=3, max_new_tokens=12, pad_to_max_mel_tokens=16)
    outs = [
        generate(model, params, ids, feats, mask, rng=jax.random.key(7), options=opts, chunk_size=c) for c in (None, 4)
    ]
    a, b = (np.asarray(o.sequences) for o in outs)
    np.testing.assert_array_equal(a, b)
    # Candidate scores agree to float rounding (different batch sizes may sum in another order).
    np.testing.assert_allclose(
        np.asarray(outs[0].logits_per_text), np.asarray(outs[1].logits_per_text), rtol=1e-5, atol=1e-5
    )
    assert len({tuple(r) for r in a.tolist()}) == a.shape[0]  # the 6 candidates differ
    again = generate(model, params, ids, feats, mask, rng=jax.random.key(7), options=opts)
    np.testing.assert_array_equal(np.asarray(again.sequences), a)  # same key, same output
    other = generate(model, params, ids, feats, mask, rng=jax.random.key(8), options=opts)
    assert not np.array_equal(np.asarray(other.sequences), a)
    assert np.asarray(outs[0].speech_ids).shape == (6, 15)


def test_conditioning_latents_roundtrip(tiny, tmp_path):
    model, params, ids, mask, feats = tiny
    lat = get_conditioning_latents(model, params, [feats[0], feats[1][:, :10]])
    one = get_conditioning_latents(model, params, feats[:1])
    two = get_conditioning_latents(model, params, feats[1][:, :10])
    np.testing.assert_allclose(lat, (one + two) / 2, rtol=1e-6, atol=1e-6)  # the mean over clips
    path = save_conditioning_latents(tmp_path / "voice.npy", lat)
    np.testing.assert_array_equal(load_conditioning_latents(path, model), lat)
    opts = GenerationOptions(max_new_tokens=6)
    by_feats = generate(model, params, ids, feats[:1], mask, options=opts)
    by_lat = generate(model, params, ids, None, mask, conditioning_latents=one, options=opts)
    np.testing.assert_array_equal(np.asarray(by_feats.sequences), np.asarray(by_lat.sequences))


def test_generate_leaves_the_global_jax_config_alone(tiny):
    """The persistent compilation cache is the caller's choice (`enable_compilation_cache`), never a side effect."""
    model, params, ids, mask, feats = tiny
    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    try:
        generate(model, params, ids, feats[:1], mask, options=GenerationOptions(max_new_tokens=6))
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_memory_scheduler_policy_counts_rows_per_chunk_and_device(tiny):
    """Few rows per chunk and device decode bound by reading weights: those programs get XLA's memory-optimized
    scheduler on CPU (the next test shows what it buys); more rows, the default one."""
    model = tiny[0].clone(tuning=Tuning.cpu())
    lean = model.tuning.memory_scheduler_max_rows
    few = GenerationOptions(max_new_tokens=7)
    wide = few.replace(num_return_sequences=lean + 1)
    assert compiling.uses_memory_scheduler(model, few, 1, 1)
    assert not compiling.uses_memory_scheduler(model, wide, 1, 1)
    assert compiling.uses_memory_scheduler(model, wide.replace(chunk_size=2), 1, 1)  # the chunk's rows count
    assert compiling.uses_memory_scheduler(model, wide.replace(num_return_sequences=2 * lean), 1, 2)
    assert not compiling.uses_memory_scheduler(model.clone(tuning=Tuning.portable()), few, 1, 1)


def test_few_rows_compile_with_the_memory_scheduler(tiny):
    """A one-row program under the memory-optimized scheduler: the same results, a smaller temporary buffer (at
    the real size 45 -> 24 MB for greedy) than the same program under XLA's default scheduler."""
    model, params, ids, mask, feats = tiny
    opts = GenerationOptions(max_new_tokens=7)
    shapes = dict(batch_size=1, text_length=ids.shape[1], num_frames=feats.shape[2], options=opts)
    run = lambda m: np.asarray(generate(m, params, ids[:1], feats[:1], mask[:1], options=opts).sequences)  # noqa: E731
    lean = warmup(model, **shapes)
    lean_tokens = run(model)
    plain = model.clone(tuning=dataclasses.replace(model.tuning, memory_scheduler_max_rows=0))  # the policy off
    default = warmup(plain, **shapes)
    with compiling.count_compilations() as compiled:
        np.testing.assert_array_equal(run(plain), lean_tokens)
    assert compiled.traced == 0  # generate ran what warmup returned
    if jax.default_backend() == "cpu":
        assert lean.memory_analysis().temp_size_in_bytes < default.memory_analysis().temp_size_in_bytes


def test_warmup_from_shapes_is_the_program_generate_runs(tiny):
    """`warmup(model)` compiles from shapes alone (so it can run before the weights are loaded); `generate` then
    runs that executable without compiling again, and it computes what the jitted program computes."""
    model, params, ids, mask, feats = tiny
    opts = GenerationOptions.tortoise(num_candidates=2, max_new_tokens=7, pad_to_max_mel_tokens=None)
    run = lambda f: generate(model, params, ids, f, mask, rng=jax.random.key(5), options=opts)  # noqa: E731
    with compiling.count_compilations() as first:
        jitted = run(feats)
    assert first.traced == 1  # no program for these options and shapes yet: compiled through jax.jit
    warmup(model, batch_size=2, text_length=ids.shape[1], num_frames=feats.shape[2], options=opts)
    with compiling.count_compilations() as after_warmup:
        ahead = run(feats)
    assert after_warmup.traced == after_warmup.compiled == 0  # generate ran the ahead-of-time executable
    with compiling.count_compilations() as other:
        run(feats[:, :, :12])
    assert other.traced == 1  # other shapes than warmed up: compiled through jit as usual
    np.testing.assert_array_equal(np.asarray(ahead.sequences), np.asarray(jitted.sequences))
    np.testing.assert_array_equal(np.asarray(ahead.logits_per_text), np.asarray(jitted.logits_per_text))  # same HLO
