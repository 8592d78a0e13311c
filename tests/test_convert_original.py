"""Original Tortoise checkpoints -> clvp-jax: parity with the original code's outputs, and converter strictness.

Oracle: tests/data/tortoise_tiny (tiny random original-format checkpoints + outputs of the original modules, see
its README for the conventions used below; the `tortoise_tiny` fixture of conftest.py). A second, larger-than-tiny
configuration the fixture does not cover is made by writing a random HF model back into the original layout with
the library's inverse (`to_original`, the same rules run backwards), so the converter is also checked on head
counts, widths and depths it was not written against, and the two directions are checked against each other.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from clvp_jax.checkpoint import (
    AUTOREGRESSIVE_PARTS,
    CheckpointError,
    WeightsMismatchError,
    export_hf,
    from_pretrained,
    load_original,
    load_params,
    params_to_state_dict,
    state_dict_to_params,
    to_original,
)
from clvp_jax.config import ClvpConfig, ConfigError
from clvp_jax.model import ClvpModelForConditionalGeneration, fix_speech_decoder_output


@pytest.fixture(scope="module")
def tiny_dir(tortoise_tiny) -> Path:
    return tortoise_tiny.folder


@pytest.fixture(scope="module")
def ref(tortoise_tiny) -> dict:
    return tortoise_tiny.reference


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    loaded = load_params(tiny_dir)
    model = ClvpModelForConditionalGeneration(loaded.config, masked_pooling=False)  # the original pools over all
    return loaded, model, {"params": loaded.params}


def _cond(model, variables, mels):
    return _jit_cond(model)(variables, mels)


@functools.cache
def _jit_cond(model):
    return jax.jit(lambda v, f: model.apply(v, f, method=lambda m, x: m.conditioning_encoder.voice_latent(x)))


def _teacher_forced(model, variables, mels, text_ids, mel_ids):
    """[cond] + [255, text.., 0] (text positions 0..T+1) + mel ids at mel positions 0..m+1, as the original."""
    return _jit_tf(model)(variables, mels, text_ids, mel_ids)


@functools.cache
def _jit_tf(model):
    def run(m, mels, text_ids, mel_ids):
        prefix = m.conditioning_encoder(mels, text_ids)
        mel = m.speech_decoder_model.embed(mel_ids, jnp.arange(mel_ids.shape[1])[None])
        embeds = jnp.concatenate([prefix, mel], axis=1)
        out = m.speech_decoder_model.forward_embeds(embeds)
        return embeds, out, m.speech_decoder_model.final_norm(out.last_hidden_state)

    return jax.jit(lambda v, *a: model.apply(v, *a, method=run))


@functools.cache
def _jit_tower(model, which):
    return jax.jit(lambda v, ids: model.apply(v, ids, method=lambda m, i: getattr(m, f"{which}_encoder_model")(i)))


def test_conditioning_latents(tiny, ref):
    _, model, variables = tiny
    lat = np.asarray(_cond(model, variables, ref["cond_mels"]))
    # fp32 through a 1x1 conv, 6 GroupNorm + attention blocks over 517 frames with O(1) random weights
    # (|latent| ~ 10): accumulation-order noise reaches ~2e-5 absolute.
    np.testing.assert_allclose(lat, ref["cond_latents"], rtol=1e-5, atol=5e-5)
    np.testing.assert_allclose(lat.mean(0, keepdims=True), ref["cond_latent_avg"], rtol=1e-5, atol=5e-5)


def test_teacher_forced_pass(tiny, ref):
    _, model, variables = tiny
    mel_ids = ref["ar_mel_input_ids"]
    embeds, out, final = _teacher_forced(model, variables, ref["cond_mels"], ref["text_ids"], mel_ids)
    m = mel_ids.shape[1]
    # Embeddings inherit the latent's noise (above); the transformer outputs are LayerNormed, so ~1e-5 absolute.
    np.testing.assert_allclose(embeds, ref["ar_inputs_embeds"], rtol=1e-5, atol=5e-5)
    np.testing.assert_allclose(out.last_hidden_state, ref["ar_gpt_last_hidden"], rtol=1e-5, atol=2e-5)
    logits = np.asarray(out.logits[:, -m:])
    np.testing.assert_allclose(logits, ref["ar_mel_logits"], rtol=1e-5, atol=2e-5)  # |logits| up to ~9
    np.testing.assert_allclose(final[:, -m:-2], ref["ar_latent"], rtol=1e-5, atol=2e-5)
    logp = jax.nn.log_softmax(logits, axis=-1)
    loss = -np.take_along_axis(np.asarray(logp), ref["ar_mel_targets"][..., None], -1).mean()
    np.testing.assert_allclose(loss, ref["ar_loss_mel"], rtol=1e-5, atol=1e-6)  # a mean of O(1) terms


def test_clvp_scores(tiny, ref):
    _, model, variables = tiny
    raw = ref["clvp_codes_raw"]
    fixed = fix_speech_decoder_output(jnp.pad(raw, ((0, 0), (1, 0))), 257, (83, 45, 45, 248))
    np.testing.assert_array_equal(fixed, ref["clvp_codes"])

    speech = _jit_tower(model, "speech")(variables, ref["clvp_codes"])
    # The RMSNorm eps differs on purpose (HF 1e-5 inside the rsqrt, the original a 1e-8 clamp): ~1e-5 moves.
    np.testing.assert_allclose(speech.last_hidden_state, ref["clvp_speech_enc"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(speech.embeds, ref["clvp_speech_latents"], rtol=1e-4, atol=1e-4)
    for suffix, ids_key in (("", "clvp_text0_ids"), ("_text1", "clvp_text1_ids")):
        text = _jit_tower(model, "text")(variables, ref[ids_key])
        np.testing.assert_allclose(text.last_hidden_state, ref[f"clvp_text_enc{suffix}"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(text.embeds, ref[f"clvp_text_latent{suffix}"], rtol=1e-4, atol=1e-4)
        scores = model.apply(variables, text.embeds, speech.embeds, method=lambda m, t, s: m.similarity(t, s))[0][0]
        # Scores = exp(2.3) x cosine (|s| < 1 here); the RMSNorm eps difference moves them by ~5e-6 (seen: 4.6e-6).
        np.testing.assert_allclose(scores, ref[f"clvp_scores{suffix}"], rtol=1e-5, atol=1e-4)
        assert np.all(np.argsort(-np.asarray(scores)) == np.argsort(-ref[f"clvp_scores{suffix}"]))


def test_greedy_teacher_forced_codes(tiny, ref):
    """Greedy codes by repeated full forwards, uncached positions (code k at mel position k+1)."""
    _, model, variables = tiny
    steps, (start, stop) = ref["greedy_tf_codes"].shape[1], (256, 257)
    B = ref["text_ids"].shape[0]

    def step(ids):
        return _teacher_forced(model, variables, ref["cond_mels"], ref["text_ids"], ids)[1].logits

    buf = np.full((B, steps + 1), start, np.int64)  # fixed shape: one compilation, causal so the tail is inert
    done = np.zeros(B, bool)
    for k in range(steps):
        logits = np.asarray(step(buf))[:, -(steps + 1) + k]
        nxt = np.where(done, stop, logits.argmax(-1))
        buf[:, k + 1] = nxt
        done |= nxt == stop
        if done.all():
            buf[:, k + 2 :] = stop
            break
    np.testing.assert_array_equal(buf[:, 1:], ref["greedy_tf_codes"])


def test_original_to_hf_to_flax_is_identical(tiny, ref, tiny_dir):
    """original -> HF state dict -> transformers (strict) -> state_dict() -> Flax equals original -> Flax."""
    import torch
    from transformers import ClvpConfig as HFConfig
    from transformers import ClvpModelForConditionalGeneration as HFModel

    loaded, _, _ = tiny
    orig = load_original(tiny_dir)
    hf_sd = {k: torch.from_numpy(np.array(v)) for k, v in orig.state_dict.items()}
    hf = HFModel(HFConfig.from_dict(loaded.config.to_dict())).eval()
    result = hf.load_state_dict(hf_sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    back = state_dict_to_params({k: v.numpy() for k, v in hf.state_dict().items()}, loaded.config)
    a, b = flatten_dict(back), flatten_dict(loaded.params)
    assert a.keys() == b.keys()
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg="/".join(path))
    _, model, variables = tiny
    with torch.no_grad():  # and the strictly loaded HF model computes what ours does
        for which, ids in (("text", ref["clvp_text0_ids"]), ("speech", ref["clvp_codes"])):
            theirs = getattr(hf, f"{which}_encoder_model")(torch.from_numpy(ids)).embeds.numpy()
            ours = _jit_tower(model, which)(variables, ids).embeds
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)  # same weights, fp32 reorderings only


def _copy_tiny(
    tmp_path: Path, tiny_dir: Path, files=("autoregressive.pth", "clvp2.pth", "original_config.json")
) -> Path:
    folder = tmp_path / "orig"
    folder.mkdir()
    for f in files:
        shutil.copy(tiny_dir / f, folder / f)
    return folder


def test_autoregressive_only_loads(tmp_path, tiny, ref, tiny_dir):
    folder = _copy_tiny(tmp_path, tiny_dir, ("autoregressive.pth", "original_config.json"))
    model, params = from_pretrained(folder, masked_pooling=False)
    assert set(params) == {*AUTOREGRESSIVE_PARTS, "logit_scale"}  # + a placeholder scale, see from_pretrained
    lat = _cond(model, {"params": params}, ref["cond_mels"])
    np.testing.assert_allclose(lat, _cond(*tiny[1:], ref["cond_mels"]), rtol=0, atol=0)  # same weights, same code
    loaded = load_params(folder)
    with pytest.raises(CheckpointError, match="needs the whole model"):
        export_hf(tmp_path / "hf", loaded.config, loaded.params)
    assert not (tmp_path / "hf").exists()
    # A fine-tuned autoregressive file plus the stock CLVP from elsewhere makes a whole model.
    whole = load_params(folder, clvp=tiny_dir / "clvp2.pth")
    a, b = flatten_dict(whole.params), flatten_dict(tiny[0].params)
    assert a.keys() == b.keys() and all(np.array_equal(a[p], b[p]) for p in a)


def test_heads_come_from_flags_without_original_config(tmp_path, tiny, ref, tiny_dir):
    ar = tiny_dir / "autoregressive.pth"
    assert load_params(ar).config.decoder_config.num_attention_heads == 16  # the real model's default
    loaded = load_params(ar, heads=4)
    assert loaded.config.decoder_config == tiny[0].config.decoder_config
    folder = _copy_tiny(tmp_path, tiny_dir)
    with pytest.raises(ConfigError, match="heads"):
        load_params(folder, heads=8)  # contradicts original_config.json


def test_mismatched_original_config(tmp_path, tiny_dir):
    folder = _copy_tiny(tmp_path, tiny_dir)
    cfg = json.loads((folder / "original_config.json").read_text())
    cfg["autoregressive"]["model_dim"] = 128
    (folder / "original_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="model_dim = 128, but the weights have 64"):
        load_params(folder)
    cfg["autoregressive"]["model_dim"] = 64
    cfg["autoregressive"]["n_layer"] = 2
    (folder / "original_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="unknown constructor argument"):
        load_params(folder)


def test_unknown_original_key_is_reported(tmp_path, tiny_dir):
    import torch

    folder = _copy_tiny(tmp_path, tiny_dir)
    sd = torch.load(folder / "autoregressive.pth", weights_only=True)
    sd["gpt.h.0.attn.extra"] = torch.zeros(3)
    torch.save(sd, folder / "autoregressive.pth")
    with pytest.raises(WeightsMismatchError, match="gpt.h.0.attn.extra"):
        load_params(folder)
    report = load_original(folder, strict=False)
    assert report.unexpected == ("autoregressive.pth:gpt.h.0.attn.extra",)
    # Exactly the GPT-2 buffers and text_head are dropped; c_attn.bias is kept.
    assert sorted(report.ignored) == sorted(
        [f"gpt.h.{i}.attn.{b}" for i in range(2) for b in ("bias", "masked_bias")]
        + ["text_head.weight", "text_head.bias"]
    )


def test_original_hf_original_is_bit_exact(tiny, tiny_dir):
    """The library's inverse gives back the fixture's own tensors: original -> params -> HF -> original."""
    import torch

    loaded = tiny[0]
    back = to_original(params_to_state_dict(loaded.params, loaded.config), loaded.config)
    for kind, file in (("autoregressive", "autoregressive.pth"), ("clvp", "clvp2.pth")):
        stored = {k: v.numpy() for k, v in torch.load(tiny_dir / file, weights_only=True).items()}
        dropped = {k for k in stored if k.startswith("text_head.") or k.endswith((".attn.bias", ".attn.masked_bias"))}
        assert back[kind].keys() == stored.keys() - dropped, kind
        for key, value in back[kind].items():
            np.testing.assert_array_equal(value, stored[key], err_msg=key)
            assert value.dtype == stored[key].dtype, key


# ---- an unseen configuration, via the inverse of the converter's rules (the library's `to_original`) -------------

UNSEEN = dict(
    text_config=dict(vocab_size=120, hidden_size=128, intermediate_size=96, projection_dim=48, num_hidden_layers=3, num_attention_heads=2, bos_token_id=119),
    speech_config=dict(vocab_size=300, hidden_size=64, intermediate_size=40, projection_dim=48, num_hidden_layers=1, num_attention_heads=1),
    decoder_config=dict(vocab_size=302, bos_token_id=300, eos_token_id=301, max_position_embeddings=30, max_text_tokens=26,
                        hidden_size=48, num_hidden_layers=3, num_attention_heads=3, num_mel_attn_blocks=2, n_inner=80),
)  # fmt: skip


def test_unseen_configuration_round_trips(tmp_path):
    import torch
    from reference_models import redraw_o1
    from transformers import ClvpConfig as HFConfig
    from transformers import ClvpModelForConditionalGeneration as HFModel

    torch.manual_seed(0)
    hf = HFModel(HFConfig.from_dict(UNSEEN)).eval()
    redraw_o1(hf, 3)
    sd = {k: v.detach().numpy().copy() for k, v in hf.state_dict().items()}
    config = ClvpConfig.from_dict(UNSEEN)
    original = to_original(sd, config)
    ar = {k: torch.from_numpy(v) for k, v in original["autoregressive"].items()}
    cl = {k: torch.from_numpy(v) for k, v in original["clvp"].items()}
    for i in range(UNSEEN["decoder_config"]["num_hidden_layers"]):  # what the original has and HF does not:
        ar[f"gpt.h.{i}.attn.bias"] = torch.ones(1, 1, 8, 8, dtype=torch.bool)  # old GPT-2 buffers, to be dropped
        ar[f"gpt.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    ar["text_head.weight"] = torch.zeros(3, 48)  # the training-only text head, to be dropped
    folder = tmp_path / "unseen"
    folder.mkdir()
    torch.save(ar, folder / "autoregressive.pth")
    torch.save(cl, folder / "clvp2.pth")
    kwargs = {"autoregressive": {"heads": 3, "start_text_token": 119, "start_mel_token": 300, "stop_mel_token": 301}}
    (folder / "original_config.json").write_text(json.dumps(kwargs))
    loaded = load_params(folder)
    want = state_dict_to_params(sd, loaded.config)
    a, b = flatten_dict(loaded.params), flatten_dict(want)
    assert a.keys() == b.keys()
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg="/".join(path))
    hf_cfg = loaded.config.to_dict()
    for section in ("text_config", "speech_config", "decoder_config"):
        for key, value in UNSEEN[section].items():
            assert hf_cfg[section][key] == value, (section, key)
