"""Original Tortoise checkpoints -> clvp-jax: parity with the original code's outputs, and converter strictness.

Oracle: shared/data/tortoise_tiny (tiny random original-format checkpoints + outputs of the original modules, see
its README for the conventions used below). A second, larger-than-tiny configuration the fixture does not cover
is made by writing a random HF model back into the original layout (the inverse of the converter's rules), so the
converter is also checked on head counts, widths and depths it was not written against.
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

from clvp_jax.config import ConfigError
from clvp_jax.loading import CheckpointError, from_pretrained, load_params
from clvp_jax.model import ClvpModelForConditionalGeneration, fix_speech_decoder_output
from clvp_jax.weights import AUTOREGRESSIVE_PARTS, WeightsMismatchError, state_dict_to_params
from clvp_jax.writing import export_hf
from convert.original import load_original

TINY = Path(__file__).resolve().parents[2] / "shared" / "data" / "tortoise_tiny"
if not TINY.is_dir():
    TINY = Path("/work/shared/data/tortoise_tiny")


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(TINY / "reference.npz"))


@pytest.fixture(scope="module")
def tiny():
    loaded = load_params(TINY)
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


def test_original_to_hf_to_flax_is_identical(tiny, ref):
    """original -> HF state dict -> transformers (strict) -> state_dict() -> Flax equals original -> Flax."""
    import torch
    from transformers import ClvpConfig as HFConfig
    from transformers import ClvpModelForConditionalGeneration as HFModel

    loaded, _, _ = tiny
    orig = load_original(TINY)
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


def _copy_tiny(tmp_path: Path, files=("autoregressive.pth", "clvp2.pth", "original_config.json")) -> Path:
    folder = tmp_path / "orig"
    folder.mkdir()
    for f in files:
        shutil.copy(TINY / f, folder / f)
    return folder


def test_autoregressive_only_loads(tmp_path, tiny, ref):
    folder = _copy_tiny(tmp_path, ("autoregressive.pth", "original_config.json"))
    model, params = from_pretrained(folder, masked_pooling=False)
    assert set(params) == {*AUTOREGRESSIVE_PARTS, "logit_scale"}  # + a placeholder scale, see from_pretrained
    lat = _cond(model, {"params": params}, ref["cond_mels"])
    np.testing.assert_allclose(lat, _cond(*tiny[1:], ref["cond_mels"]), rtol=0, atol=0)  # same weights, same code
    loaded = load_params(folder)
    with pytest.raises(CheckpointError, match="needs the whole model"):
        export_hf(tmp_path / "hf", loaded.config, loaded.params)
    assert not (tmp_path / "hf").exists()
    # A fine-tuned autoregressive file plus the stock CLVP from elsewhere makes a whole model.
    whole = load_params(folder, clvp=TINY / "clvp2.pth")
    a, b = flatten_dict(whole.params), flatten_dict(tiny[0].params)
    assert a.keys() == b.keys() and all(np.array_equal(a[p], b[p]) for p in a)


def test_heads_come_from_flags_without_original_config(tmp_path, tiny, ref):
    ar = TINY / "autoregressive.pth"
    assert load_params(ar).config.decoder_config.num_attention_heads == 16  # the real model's default
    loaded = load_params(ar, heads=4)
    assert loaded.config.decoder_config == tiny[0].config.decoder_config
    folder = _copy_tiny(tmp_path)
    with pytest.raises(ConfigError, match="heads"):
        load_params(folder, heads=8)  # contradicts original_config.json


def test_mismatched_original_config(tmp_path):
    folder = _copy_tiny(tmp_path)
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


def test_unknown_original_key_is_reported(tmp_path):
    import torch

    folder = _copy_tiny(tmp_path)
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


# ---- an unseen configuration, via the inverse of the converter's rules ----------------------------------------

UNSEEN = dict(
    text_config=dict(vocab_size=120, hidden_size=128, intermediate_size=96, projection_dim=48, num_hidden_layers=3, num_attention_heads=2, bos_token_id=119),
    speech_config=dict(vocab_size=300, hidden_size=64, intermediate_size=40, projection_dim=48, num_hidden_layers=1, num_attention_heads=1),
    decoder_config=dict(vocab_size=302, bos_token_id=300, eos_token_id=301, max_position_embeddings=30, max_text_tokens=26,
                        hidden_size=48, num_hidden_layers=3, num_attention_heads=3, num_mel_attn_blocks=2, n_inner=80),
)  # fmt: skip


def _to_original(sd: dict, heads: int) -> tuple[dict, dict]:
    """HF numpy state dict -> (autoregressive, clvp) original state dicts (torch), inverting the converter."""
    import torch

    D, ar, cl = "speech_decoder_model.model.decoder.", {}, {}
    t = torch.from_numpy
    for i in range(sum(k.endswith("q_proj.weight") and "mel_attn_blocks" in k for k in sd)):
        b = f"conditioning_encoder.mel_attn_blocks.{i}."
        for leaf in ("weight", "bias"):
            q, k, v = (sd[b + f"{n}_proj.{leaf}"] for n in "qkv")
            d = q.shape[0]
            fused = np.stack([x.reshape(heads, d // heads, *x.shape[1:]) for x in (q, k, v)], 1).reshape(
                3 * d, *q.shape[1:]
            )
            ar[f"conditioning_encoder.attn.{i}.qkv.{leaf}"] = t(fused[..., None] if leaf == "weight" else fused)
        ar[f"conditioning_encoder.attn.{i}.proj_out.weight"] = t(sd[b + "out_proj.weight"][..., None].copy())
        ar[f"conditioning_encoder.attn.{i}.proj_out.bias"] = t(sd[b + "out_proj.bias"])
        for leaf in ("weight", "bias"):
            ar[f"conditioning_encoder.attn.{i}.norm.{leaf}"] = t(sd[f"conditioning_encoder.group_norms.{i}.{leaf}"])
    ar["conditioning_encoder.init.weight"] = t(sd["conditioning_encoder.mel_conv.weight"])
    ar["conditioning_encoder.init.bias"] = t(sd["conditioning_encoder.mel_conv.bias"])
    ar["text_embedding.weight"] = t(sd["conditioning_encoder.text_token_embedding.weight"])
    ar["text_pos_embedding.emb.weight"] = t(sd["conditioning_encoder.text_position_embedding.weight"])
    ar["mel_embedding.weight"] = t(sd[D + "input_embeds_layer.weight"])
    ar["mel_pos_embedding.emb.weight"] = t(sd[D + "position_embeds_layer.weight"])
    for i in range(UNSEEN["decoder_config"]["num_hidden_layers"]):
        b, o = f"{D}layers.{i}.", f"gpt.h.{i}."
        for a, h in (("ln_1", "input_layernorm"), ("ln_2", "post_attention_layernorm")):
            for leaf in ("weight", "bias"):
                ar[o + f"{a}.{leaf}"] = t(sd[b + f"{h}.{leaf}"])
        ar[o + "attn.bias"] = torch.ones(1, 1, 8, 8, dtype=torch.bool)  # the old GPT-2 buffers: must be dropped
        ar[o + "attn.masked_bias"] = torch.tensor(-1e4)
        ar[o + "attn.c_attn.weight"] = t(np.concatenate([sd[b + f"attn.{n}_proj.weight"] for n in "qkv"]).T.copy())
        ar[o + "attn.c_attn.bias"] = t(np.concatenate([sd[b + f"attn.{n}_proj.bias"] for n in "qkv"]))
        ar[o + "attn.c_proj.weight"] = t(sd[b + "attn.out_proj.weight"].T.copy())
        ar[o + "attn.c_proj.bias"] = t(sd[b + "attn.out_proj.bias"])
        for leaf in ("c_fc.weight", "c_fc.bias", "c_proj.weight", "c_proj.bias"):
            ar[o + "mlp." + leaf] = t(sd[b + "mlp." + leaf])
    for leaf in ("weight", "bias"):
        ar[f"gpt.ln_f.{leaf}"] = t(sd[D + f"layer_norm.{leaf}"])
        ar[f"final_norm.{leaf}"] = t(sd[f"speech_decoder_model.final_norm.{leaf}"])
        ar[f"mel_head.{leaf}"] = t(sd[f"speech_decoder_model.lm_head.{leaf}"])
    ar["text_head.weight"] = torch.zeros(3, 48)
    cl["temperature"] = t(sd["logit_scale"])
    for tower in ("text", "speech"):
        e, x = f"{tower}_encoder_model.", f"{tower}_transformer.transformer."
        cl[f"{tower}_emb.weight"] = t(sd[e + "token_embedding.weight"])
        cl[f"to_{tower}_latent.weight"] = t(sd[e + "projection.weight"])
        cl[x + "attn_layers.rotary_pos_emb.inv_freq"] = t(sd[e + "rotary_pos_emb.inv_freq"])
        for leaf in ("weight", "bias"):
            cl[x + f"norm.{leaf}"] = t(sd[e + f"final_layer_norm.{leaf}"])
        for i in range(UNSEEN[f"{tower}_config"]["num_hidden_layers"]):
            b, a, f = f"{e}layers.{i}.", f"{x}attn_layers.layers.{2 * i}.", f"{x}attn_layers.layers.{2 * i + 1}."
            cl[a + "0.0.g"] = t(sd[b + "input_rmsnorm.weight"])
            cl[f + "0.0.g"] = t(sd[b + "post_attention_rmsnorm.weight"])
            for n in "qkv":
                cl[a + f"1.wrap.to_{n}.weight"] = t(sd[b + f"self_attn.{n}_proj.weight"])
            for leaf in ("weight", "bias"):
                cl[a + f"1.wrap.to_out.{leaf}"] = t(sd[b + f"self_attn.out_proj.{leaf}"])
                cl[f + f"1.wrap.net.0.proj.{leaf}"] = t(sd[b + f"mlp.fc1.proj.{leaf}"])
                cl[f + f"1.wrap.net.3.{leaf}"] = t(sd[b + f"mlp.fc2.{leaf}"])
    return ar, cl


def test_unseen_configuration_round_trips(tmp_path):
    import torch
    from reference_models import redraw_o1
    from transformers import ClvpConfig as HFConfig
    from transformers import ClvpModelForConditionalGeneration as HFModel

    torch.manual_seed(0)
    hf = HFModel(HFConfig.from_dict(UNSEEN)).eval()
    redraw_o1(hf, 3)
    sd = {k: v.detach().numpy().copy() for k, v in hf.state_dict().items()}
    ar, cl = _to_original(sd, heads=3)
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
