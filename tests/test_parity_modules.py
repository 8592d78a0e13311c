"""Per-module parity with transformers' PyTorch CLVP on four tiny configurations (see reference_models.py).

Tolerances (fp32 on O(1) activations, weights redrawn at O(1) scale):
  ATOL_BLOCK = 2e-5: a few layers of matmuls + softmax + norms; XLA and torch order their fp32 reductions
      differently, which leaves ~1e-6 relative noise per op that a few layers grow to a few 1e-6 absolute.
  ATOL_LOGITS = 5e-5: logits over a vocabulary are sums of O(width) products of O(1) values, so the same
      relative noise shows up ~width^0.5 larger.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from clvp_jax.model import ClvpModelForConditionalGeneration
from clvp_jax.tuning import Tuning

ATOL_BLOCK = 2e-5
ATOL_LOGITS = 5e-5
RTOL = 1e-5


def text_batch(cfg, seed=0, B=3, T=9, vocab_size=None):
    """Right-padded text ids (pad id 0, as the tokenizer pads) with their mask; real ids avoid 0."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, (vocab_size or cfg.text_config.vocab_size) - 1, (B, T))
    lengths = np.array([T, T - 3, 2][:B])
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    return ids * mask, mask


def mel_batch(cfg, B, frames=23, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(B, cfg.decoder_config.feature_size, frames)).astype(np.float32)


def apply(cfg, params, fn, *args, masked_pooling=False, dtype=None, scan_layers=False, tuning=None):
    """Apply `fn(module, *args)` jitted (one compilation beats hundreds of eager op dispatches)."""
    model = ClvpModelForConditionalGeneration(
        cfg, masked_pooling=masked_pooling, dtype=dtype, scan_layers=scan_layers, tuning=tuning or Tuning.for_backend()
    )
    return jax.jit(lambda p, *a: model.apply({"params": p}, *a, method=fn))(params, *args)


def t(x):
    return torch.from_numpy(np.asarray(x))


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])  # generate runs the scanned towers
@pytest.mark.parametrize("tower", ["text_encoder_model", "speech_encoder_model"])
def test_encoder_matches_reference_on_padded_batch(reference, tower, scan):
    hf, _, cfg, params = reference
    enc_cfg = getattr(cfg, tower.replace("_encoder_model", "_config"))
    ids, mask = text_batch(cfg, seed=3, vocab_size=enc_cfg.vocab_size)
    with torch.no_grad():
        ref = getattr(hf, tower)(input_ids=t(ids), attention_mask=t(mask))
    ours = apply(cfg, params, lambda m, i, a: getattr(m, tower)(i, a), ids, mask, scan_layers=scan)
    for name in ("last_hidden_state", "pooler_output", "embeds"):
        np.testing.assert_allclose(
            np.asarray(getattr(ours, name)), getattr(ref, name).numpy(), rtol=RTOL, atol=ATOL_BLOCK, err_msg=name
        )


def test_masked_pooling_gives_each_row_its_unpadded_embedding(reference):
    """Our default pooling ignores padding: a padded row's embedding equals the row encoded alone."""
    hf, _, cfg, params = reference
    ids, mask = text_batch(cfg, seed=4)
    batched = apply(cfg, params, lambda m, i, a: m.get_text_features(i, a), ids, mask, masked_pooling=True)
    for row in range(ids.shape[0]):
        n = int(mask[row].sum())
        with torch.no_grad():
            alone = hf.text_encoder_model(input_ids=t(ids[row : row + 1, :n])).embeds.numpy()
        np.testing.assert_allclose(np.asarray(batched[row : row + 1]), alone, rtol=RTOL, atol=ATOL_BLOCK)


@pytest.mark.parametrize("per_head", [False, True], ids=["all_heads", "per_head"])
def test_conditioning_encoder_matches_reference(reference, per_head):
    """Real clips are long enough for the mel blocks to compute attention head by head; force it here."""
    tuning = dataclasses.replace(Tuning.cpu(), per_head_above_bytes=0) if per_head else None
    hf, _, cfg, params = reference
    ids, mask = text_batch(cfg, seed=5)
    feats = mel_batch(cfg, ids.shape[0])
    with torch.no_grad():
        ref = hf.conditioning_encoder(input_features=t(feats), input_ids=t(ids), attention_mask=t(mask)).numpy()
    ours = apply(cfg, params, lambda m, *a: m.conditioning_encoder(*a), feats, ids, mask, tuning=tuning)
    assert ours.shape == ref.shape == (ids.shape[0], ids.shape[1] + 3, cfg.decoder_config.hidden_size)
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=RTOL, atol=ATOL_BLOCK)


def test_conditioning_one_text_against_several_clips(reference):
    hf, _, cfg, params = reference
    ids, _ = text_batch(cfg, seed=6, B=1)
    feats = mel_batch(cfg, 3, frames=17)
    with torch.no_grad():
        ref = hf.conditioning_encoder(input_features=t(feats), input_ids=t(ids)).numpy()
    ours = apply(cfg, params, lambda m, *a: m.conditioning_encoder(*a), feats, ids)
    assert ours.shape[0] == 3
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=RTOL, atol=ATOL_BLOCK)


def test_conditioning_rejects_mismatched_batches(reference):
    _, _, cfg, params = reference
    ids, _ = text_batch(cfg, B=2)
    with pytest.raises(ValueError, match="2 texts and 3 audio clips"):
        apply(cfg, params, lambda m, *a: m.conditioning_encoder(*a), mel_batch(cfg, 3), ids)


def decoder_inputs(cfg, seed=7, B=2, T=11):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, cfg.decoder_config.vocab_size, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, :2] = 0  # a left-padded row exercises the key-padding mask
    positions = np.broadcast_to(np.arange(T) + 3, (B, T)).copy()  # explicit, shifted positions
    return ids, mask, positions


def test_decoder_logits_with_explicit_positions(reference):
    hf, _, cfg, params = reference
    ids, mask, positions = decoder_inputs(cfg)
    with torch.no_grad():
        ref = hf.speech_decoder_model(input_ids=t(ids), position_ids=t(positions), attention_mask=t(mask)).logits
    ours = apply(
        cfg,
        params,
        lambda m, i, p, a: m.speech_decoder_model(input_ids=i, position_ids=p, attention_mask=a).logits,
        ids,
        positions,
        mask,
    )
    # Row 1's first two queries see only masked keys; both sides then average uniformly over them.
    np.testing.assert_allclose(np.asarray(ours), ref.numpy(), rtol=RTOL, atol=ATOL_LOGITS)


def test_decoder_inputs_embeds_and_broadcast_position(reference):
    """inputs_embeds path, and a [B, 1] position tensor broadcast over every step (spec §7.2, §8)."""
    hf, _, cfg, params = reference
    rng = np.random.default_rng(8)
    embeds = rng.normal(size=(2, 6, cfg.decoder_config.hidden_size)).astype(np.float32)
    positions = np.array([[0], [4]])
    with torch.no_grad():
        ref = hf.speech_decoder_model(inputs_embeds=t(embeds), position_ids=t(positions)).logits.numpy()
    ours = apply(
        cfg, params, lambda m, e, p: m.speech_decoder_model(inputs_embeds=e, position_ids=p).logits, embeds, positions
    )
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=RTOL, atol=ATOL_LOGITS)


def test_cached_decoding_equals_uncached_pass(reference):
    """Prefill 5 tokens, then decode the rest one at a time: every step's logits equal the full pass."""
    from clvp_jax.decoder import init_cache

    _, _, cfg, params = reference
    ids, mask, positions = decoder_inputs(cfg, seed=9)
    B, T = ids.shape
    model = ClvpModelForConditionalGeneration(cfg)
    call = jax.jit(
        lambda p, i, pos, a, c: model.apply(
            {"params": p},
            method=lambda m: m.speech_decoder_model(input_ids=i, position_ids=pos, attention_mask=a, cache=c),
        )
    )
    full = call(params, ids, positions, mask, None).logits
    cache = init_cache(cfg.decoder_config, B, 16)
    out = call(params, ids[:, :5], positions[:, :5], mask[:, :5], cache)
    steps = [out.logits]
    cache = out.cache
    for k in range(5, T):
        out = call(params, ids[:, k : k + 1], positions[:, k : k + 1], mask[:, k : k + 1], cache)
        steps.append(out.logits)
        cache = out.cache
    assert int(cache.index) == T
    # Queries whose every key is padding (row 1's first two) average uniformly over whatever keys exist, which
    # differ between a 16-slot cache and an 11-token pass; they are garbage in both and are left out.
    keep = mask.astype(bool)
    cached = np.concatenate(steps, axis=1)
    # Same math on the same values: fp32 noise only.
    np.testing.assert_allclose(cached[keep], np.asarray(full)[keep], rtol=RTOL, atol=ATOL_LOGITS)


def test_forward_loss_and_similarity_match_reference(reference):
    hf, _, cfg, params = reference
    ids, mask = text_batch(cfg, seed=10)
    feats = mel_batch(cfg, ids.shape[0], frames=19)
    with torch.no_grad():
        ref = hf(input_ids=t(ids), input_features=t(feats), attention_mask=t(mask), return_loss=True)
    ours = apply(cfg, params, lambda m, *a: m(*a, return_loss=True), ids, feats, mask)
    for name in ("logits_per_text", "logits_per_speech", "text_embeds", "speech_embeds"):
        np.testing.assert_allclose(
            np.asarray(getattr(ours, name)), getattr(ref, name).numpy(), rtol=RTOL, atol=ATOL_LOGITS, err_msg=name
        )
    np.testing.assert_allclose(float(ours.loss), float(ref.loss), rtol=RTOL, atol=ATOL_BLOCK)
    for name in ("text_model_output", "speech_model_output"):
        np.testing.assert_allclose(
            np.asarray(getattr(ours, name)), getattr(ref, name).numpy(), rtol=RTOL, atol=ATOL_BLOCK, err_msg=name
        )


@pytest.mark.parametrize("name", ["partial_rotary", "odd_rotary"])  # dtype handling, not config coverage
def test_bf16_params_run_and_stay_close(name, reference_of):
    """bf16 params + compute: finite, and within bf16's ~3 significant digits of fp32 after a few layers."""
    _, _, cfg, params = reference_of(name)
    ids, mask = text_batch(cfg, seed=11)
    feats = mel_batch(cfg, ids.shape[0])
    p16 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.bfloat16), params)
    ref = apply(cfg, params, lambda m, *a: m(*a), ids, feats, mask, masked_pooling=True)
    out = apply(cfg, p16, lambda m, *a: m(*a), ids, feats, mask, masked_pooling=True, dtype=jnp.bfloat16)
    assert out.logits_per_text.dtype == jnp.float32
    assert np.isfinite(np.asarray(out.logits_per_text)).all()
    # Embeddings are unit vectors; bf16's 8-bit mantissa through ~5 blocks leaves errors of a few 1e-2.
    np.testing.assert_allclose(np.asarray(out.text_embeds), np.asarray(ref.text_embeds), rtol=0, atol=0.1)
    cond16 = apply(cfg, p16, lambda m, *a: m.conditioning_encoder(*a), feats, ids, mask, dtype=jnp.bfloat16)
    assert cond16.dtype == jnp.bfloat16 and np.isfinite(np.asarray(cond16, np.float32)).all()
