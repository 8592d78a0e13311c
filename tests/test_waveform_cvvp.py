"""CVVP (cvvp.pth) against the original code's outputs on the tiny random-weight fixture, and its converter."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from waveform_fixture import WAVEFORM_DIR, original_config, reference, state_dict

from clvp_jax.audio import ClvpFeatureExtractor, load_audio
from clvp_jax.checkpoint import tortoise_cvvp as conv
from clvp_jax.waveform.cvvp import CVVP, CvvpConfig, cvvp_score_matrix, cvvp_scores

VOICES = WAVEFORM_DIR.parent / "tortoise" / "voices"


@pytest.fixture(scope="module")
def cvvp():
    """(config, params, jitted latents / scores) of the fixture checkpoint: compiled once for the module."""
    config = CvvpConfig.from_original(original_config()["cvvp"])
    params = conv.state_dict_to_params(state_dict("cvvp"), config)
    model = CVVP(config)

    @jax.jit
    def outputs(p, mels, codes):  # one compilation for every method compared with the original
        def run(method, *args):
            return model.apply({"params": p}, *args, method=method)

        # The original's row-by-row forward, as api.tts calls it: clip 1's mel repeated for each candidate.
        rows = run(CVVP.__call__, jnp.repeat(mels[1:], codes.shape[0], axis=0), codes)
        return {
            "cond": run(CVVP.conditioning_latent, mels),
            "speech": run(CVVP.speech_latent, codes),
            "per_clip": run(CVVP.score_matrix, mels, codes),
            "rows": rows,
        }

    ref = reference()
    return config, params, model, outputs(params, jnp.asarray(ref["cvvp_cond_mels"]), jnp.asarray(ref["cvvp_codes"]))


# ------------------------------------------------------------------------------------------------ config


def test_config_presets_and_original_kwargs():
    kwargs = original_config()["cvvp"]
    assert CvvpConfig.from_original(kwargs) == CvvpConfig.tiny()
    assert CvvpConfig.from_original(CvvpConfig.tiny().to_original()) == CvvpConfig.tiny()
    real = CvvpConfig.tortoise()  # api.py's constructor (spec §1)
    assert (real.model_dim, real.transformer_heads, real.conditioning_enc_depth, real.speech_enc_depth) == (
        512,
        8,
        8,
        8,
    )
    assert (real.mel_codes, real.mel_channels, real.inner_dim) == (8192, 80, 512)
    assert CvvpConfig.tiny().inner_dim == 128  # x-transformers' head dim is 64 whatever model_dim is
    with pytest.raises(ValueError, match=r"unknown CVVP constructor arguments \['depth'\]"):
        CvvpConfig.from_original({**kwargs, "depth": 3})
    with pytest.raises(ValueError, match="latent_multiplier=2"):
        CvvpConfig.from_original({**kwargs, "latent_multiplier": 2})
    with pytest.raises(ValueError, match="mel_codes=None"):
        CvvpConfig.from_original({**kwargs, "mel_codes": None})
    with pytest.raises(ValueError, match="model_dim 30 must split into transformer_heads 4"):
        CvvpConfig(model_dim=30, transformer_heads=4)
    with pytest.raises(ValueError, match="speech_enc_depth must be a positive integer"):
        CvvpConfig(speech_enc_depth=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        CvvpConfig.tiny().model_dim = 64


def test_config_inferred_from_the_weights():
    assert conv.infer_config(state_dict("cvvp")) == CvvpConfig.tiny()


def test_real_size_structure():
    """The real cvvp.pth layout (spec §1, §6) from abstract shapes only: 37 780 225 parameters in 208 tensors,
    plus the two 16-entry rotary buffers (210 state-dict entries)."""
    expected = conv.expected_params(CvvpConfig.tortoise())
    assert len(expected) == 208
    assert sum(int(np.prod(s.shape)) for s in expected.values()) == 37_780_225
    keys = {conv.torch_key(path): tuple(s.shape) for path, s in expected.items()}
    assert keys["conditioning_transformer.transformer.attn_layers.layers.15.1.net.3.weight"] == (512, 512)
    assert keys["speech_transformer.pre_combiner.1.qkv.weight"] == (1536, 512, 1)
    assert keys["speech_emb.emb.weight"] == (8192, 512)


# ------------------------------------------------------------------------------------------------ parity


def test_latents_match_the_original(cvvp):
    ref, out = reference(), cvvp[3]
    cond, speech = out["cond"], out["speech"]
    # float32 through two stride-2 convs, 1-2 encoder layers, the pre-combiner and a projection, values of O(1-5):
    # a few ulps per op accumulate to ~1e-6 (measured max 9.5e-7).
    np.testing.assert_allclose(cond, ref["cvvp_cond_latents_raw"], rtol=1e-6, atol=4e-6)
    np.testing.assert_allclose(speech, ref["cvvp_speech_latents_raw"], rtol=1e-6, atol=4e-6)


def test_scores_match_the_original(cvvp):
    ref, out = reference(), cvvp[3]
    per_clip = out["per_clip"]
    # exp(1.3) * cosine, |score| <= 3.7: the latents' ~1e-6 error shrinks through the normalisation (measured 3.5e-7).
    np.testing.assert_allclose(per_clip, ref["cvvp_scores_per_clip"], rtol=0, atol=2e-6)
    # api.tts's mix: the mean over clips.
    np.testing.assert_allclose(np.mean(per_clip, axis=0), ref["cvvp_scores"], rtol=0, atol=2e-6)
    # The original's row-by-row forward: same latents, only the pairing differs.
    np.testing.assert_allclose(out["rows"], per_clip[1], rtol=0, atol=1e-6)


def test_scores_from_the_voice_clips(cvvp):
    """The AR front end (`format_conditioning`'s mel) feeds CVVP: from the wav files to the original's scores."""
    _, params, model, _ = cvvp
    ref = reference()
    clips = [load_audio(VOICES / "lj" / "1.wav")[:132300], load_audio(VOICES / "lj" / "2.wav")[:88200]]
    mels = ClvpFeatureExtractor.from_pretrained()(clips, sampling_rate=22050, return_attention_mask=False)
    mels = mels["input_features"]
    # The original's torchaudio float32 STFT against our float64 one, divided by mel_norms (measured 1.7e-5).
    np.testing.assert_allclose(mels, ref["cvvp_cond_mels"], rtol=0, atol=5e-5)
    scores = cvvp_scores(model, params, mels, ref["cvvp_codes"])  # the public, jitted entry point
    np.testing.assert_allclose(cvvp_score_matrix(model, params, mels, ref["cvvp_codes"]).mean(0), scores, atol=0)
    # The mel difference moves the scores by ~1e-5 at most (measured 2.4e-6).
    np.testing.assert_allclose(scores, ref["cvvp_scores"], rtol=0, atol=2e-5)


def test_scoring_refuses_bad_input(cvvp):
    _, params, model, _ = cvvp
    ref = reference()
    mels, codes = ref["cvvp_cond_mels"], ref["cvvp_codes"]
    with pytest.raises(ValueError, match=r"codes range over \[0, 64\] but the model has 64 codes"):
        cvvp_scores(model, params, mels, np.where(codes == codes.max(), 64, codes))
    with pytest.raises(ValueError, match=r"mels must be \[clips, 80, frames\]"):
        cvvp_scores(model, params, mels[:, :79], codes)
    with pytest.raises(ValueError, match="codes must be integer"):
        cvvp_scores(model, params, mels, codes.astype(np.float32))


def test_bfloat16_compute_stays_close(cvvp):
    config, params, _, _ = cvvp
    ref = reference()
    scores = cvvp_scores(CVVP(config, dtype=jnp.bfloat16), params, ref["cvvp_cond_mels"], ref["cvvp_codes"])
    assert scores.dtype == jnp.float32
    # bfloat16 has 8 bits of mantissa (~4e-3 relative per op); scores of O(1) after a few layers: 0.15 absolute.
    np.testing.assert_allclose(scores, ref["cvvp_scores"], rtol=0, atol=0.15)


# ------------------------------------------------------------------------------------------------ converter


def test_converter_round_trip_is_exact():
    sd = state_dict("cvvp")
    back = conv.params_to_state_dict(conv.state_dict_to_params(sd), CvvpConfig.tiny())
    assert sorted(back) == sorted(sd)  # rotary buffers included
    for key, value in sd.items():
        assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key
    for key in sd:
        assert conv.torch_key(conv.flax_path(key)) == key


def test_converter_fills_every_parameter():
    params = conv.state_dict_to_params(state_dict("cvvp"))
    expected = conv.expected_params(CvvpConfig.tiny())
    from flax.traverse_util import flatten_dict

    flat = flatten_dict(params)
    assert set(flat) == set(expected)
    assert flat[("conditioning_transformer", "pre_combiner_1", "norm", "scale")].shape == (32,)  # norm.weight
    assert flat[
        ("speech_transformer", "transformer", "attn_layers", "layers_1_1", "net_0", "proj", "weight")
    ].shape == (64, 32)


def test_converter_reports_every_problem_at_once():
    sd = dict(state_dict("cvvp"))
    del sd["to_speech_latent.weight"]
    sd["speech_emb.emb.extra"] = np.zeros(3, np.float32)
    sd["cond_emb.0.bias"] = np.zeros(17, np.float32)
    sd["temperature"] = np.asarray(1.3, np.float64)
    key = "speech_transformer.transformer.attn_layers.rotary_pos_emb.inv_freq"
    sd[key] = sd[key] * 1.001
    with pytest.raises(conv.CvvpCheckpointError) as info:
        conv.state_dict_to_params(sd, CvvpConfig.tiny())
    error, message = info.value, str(info.value)
    assert error.missing == ["to_speech_latent.weight"] and error.unexpected == ["speech_emb.emb.extra"]
    assert error.mismatched == [("cond_emb.0.bias", (17,), (16,))]
    assert error.mistyped == [("temperature", "float64", "float32")]
    assert error.other == {"wrong value": [f"{key} (not the buffer the model computes)"]}
    assert "mis-shaped: cond_emb.0.bias: checkpoint (17,), config expects (16,)" in message
    assert "mis-typed: temperature: checkpoint float64, expected float32" in message
    assert f"wrong value (1): {key}" in message and "cvvp.pth" in message


def test_converter_refuses_missing_buffers_and_bad_exports():
    sd = dict(state_dict("cvvp"))
    del sd["conditioning_transformer.transformer.attn_layers.rotary_pos_emb.inv_freq"]
    with pytest.raises(conv.CvvpCheckpointError, match=r"missing \(1\): conditioning_transformer.*inv_freq"):
        conv.state_dict_to_params(sd, CvvpConfig.tiny())
    params = conv.state_dict_to_params(state_dict("cvvp"))
    params = {k: v for k, v in params.items() if k != "temperature"}
    with pytest.raises(conv.CvvpCheckpointError, match=r"export.*\n.*missing \(1\): temperature"):
        conv.params_to_state_dict(params, CvvpConfig.tiny())


def test_load_cvvp_reads_the_original_file():
    config, params = conv.load_cvvp(WAVEFORM_DIR / "cvvp.pth")
    assert config == CvvpConfig.tiny()
    np.testing.assert_array_equal(params["temperature"], state_dict("cvvp")["temperature"])
    with pytest.raises(FileNotFoundError, match="no CVVP checkpoint"):
        conv.load_cvvp(WAVEFORM_DIR / "missing.pth")
