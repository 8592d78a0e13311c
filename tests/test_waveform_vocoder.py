"""UnivNet vocoder and api_fast HiFiGAN decoder against the original code's outputs on the tiny fixture
(tests/data/tortoise_tiny_waveform), and their strict converters.

Tolerance tiers (float32 everywhere; measured errors in brackets): folded weights, a float64 fold rounded once
vs torch's float32 one, 1-2 ulps; one convolution, a few ulps of its sum; the kernel predictor, five convolutions
on raw log-mels (~ -11.5) that give kernels up to 12; LVC blocks and waveforms, where float32 rounding is amplified
by a random-weight network: the original itself run in float64 moves block 1 by 5e-5 and the wav by 5e-6, ours
by 9e-5 and 9e-6 (same order, checked when these tolerances were set).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from waveform_fixture import WAVEFORM_DIR, original_config, reference, state_dict

from clvp_jax.checkpoint import tortoise_hifigan, tortoise_vocoder
from clvp_jax.checkpoint.errors import CheckpointError
from clvp_jax.checkpoint.weight_norm_convert import StateDictMismatchError, flax_path, torch_key
from clvp_jax.config import ConfigError
from clvp_jax.waveform.hifigan import (
    LATENT_SCALE_FACTORS,
    HifiganConfig,
    HifiganGenerator,
    hifigan_inference,
    interpolate_linear,
    latent_frames,
)
from clvp_jax.waveform.univnet import (
    UnivNetConfig,
    UnivNetGenerator,
    location_variable_conv,
    univnet_noise,
    vocode,
)

REF = reference()


@functools.cache
def voc_params() -> dict:
    return tortoise_vocoder.state_dict_to_params(state_dict("vocoder"))


@functools.cache
def hifi_params() -> dict:
    return tortoise_hifigan.state_dict_to_params(state_dict("hifidecoder"))


@functools.cache
def voc_intermediates() -> tuple[np.ndarray, dict]:
    """`inference` on voc_mel / voc_z with every submodule's output captured."""

    @jax.jit
    def run(params, mel, z):
        return UnivNetGenerator(UnivNetConfig.tiny()).apply(
            {"params": params}, mel, z, method=UnivNetGenerator.inference,
            capture_intermediates=True, mutable=["intermediates"],
        )  # fmt: skip

    wav, state = run(voc_params(), REF["voc_mel"], REF["voc_z"])
    return np.asarray(wav), jax.tree.map(np.asarray, state["intermediates"])


# ----------------------------------------------------------------------------------------------------------------
# UnivNet


def test_univnet_config_matches_fixture_and_original_kwargs():
    kwargs = original_config()["vocoder"]
    assert UnivNetConfig.from_original(kwargs) == UnivNetConfig.tiny()
    assert UnivNetConfig.tiny().to_original() == kwargs
    assert tortoise_vocoder.infer_config(state_dict("vocoder")["model_g"]) == UnivNetConfig.tiny()
    with pytest.raises(ConfigError, match="unknown UnivNetGenerator argument.*'channels'"):
        UnivNetConfig.from_original({**kwargs, "channels": 4})
    with pytest.raises(ConfigError, match="kpnet_conv_size must be odd"):
        UnivNetConfig(kpnet_conv_size=4)
    with pytest.raises(ConfigError, match="strides must be a non-empty list"):
        UnivNetConfig(strides=())


def test_univnet_folded_weights():
    params = voc_params()
    # float64 fold rounded once vs the original's float32 remove_weight_norm: 1-2 ulps of O(0.5) weights [6e-8].
    np.testing.assert_allclose(params["conv_pre"]["weight"], REF["voc_folded_conv_pre_weight"], rtol=3e-7, atol=1e-7)
    # The ConvTranspose1d weight [in, out, 2s], normalised per INPUT channel (dim 0).
    np.testing.assert_allclose(
        params["res_stack_0"]["convt_pre_1"]["weight"], REF["voc_folded_convt_pre0_weight"], rtol=3e-7, atol=1e-7
    )


def test_univnet_intermediates_match_original():
    _, inter = voc_intermediates()
    # One k7 conv of 112 terms of O(1) [6e-7 on values up to 4.8].
    np.testing.assert_allclose(inter["conv_pre"]["__call__"][0], REF["voc_conv_pre_out"], rtol=1e-5, atol=3e-6)
    kernels, bias = inter["res_stack_0"]["kernel_predictor"]["__call__"][0]
    assert kernels.shape == REF["voc_kp0_kernels"].shape  # [B, l, C_in, C_out, k, F]: in before out
    # Five convs deep on raw log-mels, kernels up to 12 [1.0e-5, bias 6e-6].
    np.testing.assert_allclose(kernels, REF["voc_kp0_kernels"], rtol=1e-5, atol=5e-5)
    np.testing.assert_allclose(bias, REF["voc_kp0_bias"], rtol=1e-5, atol=5e-5)
    # Block outputs, O(4): float32 rounding amplified by random gates (see the module docstring) [1.5e-5, 1.5e-4].
    np.testing.assert_allclose(inter["res_stack_0"]["__call__"][0], REF["voc_block0_out"], rtol=1e-5, atol=6e-5)
    np.testing.assert_allclose(inter["res_stack_1"]["__call__"][0], REF["voc_block1_out"], rtol=1e-5, atol=5e-4)


def test_univnet_inference_matches_original():
    wav, _ = voc_intermediates()
    assert wav.shape == REF["voc_wav"].shape == (2, 1, 12 * 16)
    # tanh and the clamp to [-1, 1] compress block 1's error [1.4e-5].
    np.testing.assert_allclose(wav, REF["voc_wav"], rtol=1e-5, atol=6e-5)


def test_end_to_end_vocoder_half():
    wav = vocode(voc_params(), REF["e2e_mel"], config=UnivNetConfig.tiny(), z=REF["e2e_voc_z"])
    np.testing.assert_allclose(wav, REF["e2e_wav"], rtol=1e-5, atol=5e-5)  # as voc_wav [8e-6]


def test_vocode_noise_from_key_and_errors():
    config, mel = UnivNetConfig.tiny(), REF["e2e_mel"]  # the shape test_end_to_end_vocoder_half compiled
    key = jax.random.key(7)
    z = univnet_noise(key, 1, 56, config)
    assert z.shape == REF["e2e_voc_z"].shape
    a = vocode(voc_params(), mel, config=config, key=key)
    np.testing.assert_array_equal(a, vocode(voc_params(), mel, config=config, z=z))  # the key only draws z
    assert np.abs(np.asarray(a) - REF["e2e_wav"]).max() > 0.1  # and another z gives another wav
    with pytest.raises(ValueError, match="exactly one of key"):
        vocode(voc_params(), mel, config=config)
    with pytest.raises(ValueError, match=r"F \+ 10"):
        vocode(voc_params(), mel, config=config, z=z[:, :, :56])
    with pytest.raises(ValueError, match="mel must be"):
        vocode(voc_params(), mel[:, :80], config=config, key=key)


def _randomize_weight_norm(module: torch.nn.Module, seed: int) -> dict[str, np.ndarray]:
    """The state dict of `module` with every weight_g redrawn (a fresh weight_norm has g = ||v||, which would let a
    fold that ignores g pass)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, value in module.named_parameters():
            if name.endswith("weight_g"):
                value.copy_(torch.rand(value.shape, generator=generator) + 0.5)
    return {k: v.numpy() for k, v in module.state_dict().items()}


def test_univnet_odd_strides_and_other_options_match_the_original_class():
    from tortoise.models.vocoder import UnivNetGenerator as Original

    kwargs = dict(noise_dim=3, channel_size=2, dilations=[1, 2], strides=[3, 2], lReLU_slope=0.1, kpnet_conv_size=5)
    kwargs.update(hop_length=6, n_mel_channels=7)
    torch.manual_seed(1)
    original = Original(**kwargs)
    sd = _randomize_weight_norm(original, 1)
    config = tortoise_vocoder.infer_config(sd, dilations=(1, 2), lrelu_slope=0.1)
    assert config == UnivNetConfig.from_original(kwargs)
    # Dilations and slope are not in the shapes: the inferred default (3^l, 0.2) differs, the given config is right.
    assert tortoise_vocoder.infer_config(sd).dilations == (1, 3)
    params = tortoise_vocoder.state_dict_to_params(sd, config)
    rng = np.random.default_rng(1)
    mel = rng.standard_normal((1, 7, 5)).astype(np.float32)
    z = rng.standard_normal((1, 3, 15)).astype(np.float32)
    original.eval(inference=True)
    with torch.no_grad():
        want = original.inference(torch.from_numpy(mel), torch.from_numpy(z)).numpy()
    wav = vocode(params, mel, config=config, z=z)
    assert wav.shape == want.shape == (1, 1, 5 * 6)  # odd stride 3: output_padding 1 keeps the length x 3
    # Small random net, float32: a few ulps per layer (as voc_wav).
    np.testing.assert_allclose(wav, want, rtol=1e-5, atol=6e-5)


def test_location_variable_conv_reads_across_frames():
    rng = np.random.default_rng(0)
    batch, cin, cout, frames, hop = 2, 3, 4, 5, 7
    x = rng.standard_normal((batch, cin, frames * hop)).astype(np.float32)
    kernel = rng.standard_normal((batch, cin, cout, 3, frames)).astype(np.float32)
    bias = rng.standard_normal((batch, cout, frames)).astype(np.float32)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1)))
    want = np.zeros((batch, cout, frames * hop))
    for t in range(frames * hop):  # the definition, one sample at a time
        f = t // hop
        want[:, :, t] = bias[:, :, f] + np.einsum("bij,bioj->bo", xp[:, :, t : t + 3], kernel[..., f])
    # 9 products of O(1) per output in float32 vs float64 [~5e-7].
    got = jax.jit(location_variable_conv, static_argnums=3)(x, kernel, bias, hop)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=3e-6)


def shapes_only(shapes: dict) -> dict:
    return {k: jax.ShapeDtypeStruct(v, jnp.float32) for k, v in shapes.items()}


def test_univnet_real_size_keys_and_parameter_count():
    config = UnivNetConfig.tortoise()
    weight_norm = tortoise_vocoder.original_shapes(config, weight_norm=True)
    folded = tortoise_vocoder.original_shapes(config, weight_norm=False)
    # Spec §1 (from the original classes): 132 entries / 14 865 506 values with weight norm, 88 / 14 789 153 folded.
    assert (len(weight_norm), sum(int(np.prod(s)) for s in weight_norm.values())) == (132, 14_865_506)
    assert (len(folded), sum(int(np.prod(s)) for s in folded.values())) == (88, 14_789_153)
    assert weight_norm["res_stack.2.kernel_predictor.kernel_conv.weight_v"] == (24576, 64, 3)
    assert weight_norm["res_stack.2.convt_pre.1.weight_g"] == (32, 1, 1)  # per INPUT channel
    assert tortoise_vocoder.infer_config(shapes_only(weight_norm)) == config
    assert tortoise_vocoder.infer_config(shapes_only(folded)) == config
    tiny_file = {k: v.shape for k, v in state_dict("vocoder")["model_g"].items()}
    assert tortoise_vocoder.original_shapes(UnivNetConfig.tiny(), weight_norm=True) == tiny_file


# ----------------------------------------------------------------------------------------------------------------
# HiFiGAN


def test_hifigan_config_matches_fixture_and_original_kwargs():
    kwargs = original_config()["hifigan"]
    assert HifiganConfig.from_original(kwargs) == HifiganConfig.tiny()
    back = HifiganConfig.tiny().to_original()
    assert {k: back[k] for k in kwargs} == kwargs
    assert HifiganConfig.from_original(back) == HifiganConfig.tiny()
    assert tortoise_hifigan.infer_config(state_dict("hifidecoder")) == HifiganConfig.tiny()
    with pytest.raises(ConfigError, match="unknown HifiganGenerator argument"):
        HifiganConfig.from_original({**kwargs, "upsample_rates": [4, 2]})
    with pytest.raises(ConfigError, match="resblock_type '2' is not supported"):
        HifiganConfig(resblock_type="2")


@jax.jit
def upsample_latents(x: jax.Array) -> jax.Array:
    for scale in LATENT_SCALE_FACTORS:
        x = interpolate_linear(x, scale)
    return x


def test_hifigan_interpolation_matches_original():
    x = upsample_latents(np.swapaxes(REF["hifi_latents"], 1, 2))
    assert x.shape == REF["hifi_upsampled_in"].shape and x.shape[2] == latent_frames(20) == 87
    # Same taps (index and weight bit for bit); torch blends with a fused multiply-add: 1-2 ulps of O(3) [2.4e-7].
    np.testing.assert_allclose(x, REF["hifi_upsampled_in"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("codes", [64, 500])
def test_hifigan_interpolation_matches_torch_at_real_lengths(codes):
    x = np.random.default_rng(codes).standard_normal((1, 3, codes)).astype(np.float32)
    want = torch.tensor(x)
    for scale in LATENT_SCALE_FACTORS:
        want = torch.nn.functional.interpolate(want, scale_factor=[scale], mode="linear")
    ours = upsample_latents(x)
    assert ours.shape[2] == latent_frames(codes) == codes * 4 * 24000 // 22050
    # As above: a size-based resize would be off by up to 0.8 frame here (errors of O(1)) [4.8e-7].
    np.testing.assert_allclose(ours, want.numpy(), rtol=1e-6, atol=1e-6)


def test_hifigan_inference_matches_original():
    wav = hifigan_inference(hifi_params(), REF["hifi_latents"], REF["hifi_speaker_emb"], config=HifiganConfig.tiny())
    assert wav.shape == REF["hifi_wav"].shape == (1, 1, 87 * 8)
    # conv_pre + 2 upsamplers x 2 resblocks x 6 convs, then tanh: a few ulps per layer [5.7e-7 on O(0.65)].
    np.testing.assert_allclose(wav, REF["hifi_wav"], rtol=1e-5, atol=3e-6)


def test_hifigan_batches_rows_with_their_own_speaker():
    # The original unsqueezes g to batch 1; here every row has its own embedding.
    latents = np.concatenate([REF["hifi_latents"], 0.5 * REF["hifi_latents"][:, ::-1]])
    speaker = np.concatenate([REF["hifi_speaker_emb"], -REF["hifi_speaker_emb"]])
    config = HifiganConfig.tiny()
    both = hifigan_inference(hifi_params(), latents, speaker, config=config)
    second = hifigan_inference(hifi_params(), latents[1:], speaker[1:], config=config)
    np.testing.assert_allclose(both[:1], REF["hifi_wav"], rtol=1e-5, atol=3e-6)  # as test_hifigan_inference
    np.testing.assert_allclose(both[1:], second, rtol=1e-5, atol=1e-6)  # same program per row, other batching
    assert np.abs(np.asarray(both[1]) - np.asarray(both[0])).max() > 0.1


def test_hifigan_real_size_keys_and_parameter_count():
    config = HifiganConfig.tortoise()
    weight_norm = tortoise_hifigan.original_shapes(config, weight_norm=True)
    folded = tortoise_hifigan.original_shapes(config, weight_norm=False)
    # Spec §1: 236 entries / 17 844 226 values in the file's weight-norm form; folding drops one g per output
    # (input, for the ConvTranspose ups) channel of the weight-normed convs: 158 entries / 17 834 113 values.
    assert (len(weight_norm), sum(int(np.prod(s)) for s in weight_norm.values())) == (236, 17_844_226)
    assert (len(folded), sum(int(np.prod(s)) for s in folded.values())) == (158, 17_834_113)
    assert weight_norm["ups.0.weight_g"] == (512, 1, 1) and weight_norm["cond_layer.weight"] == (512, 1024, 1)
    assert tortoise_hifigan.infer_config(shapes_only(weight_norm)) == config
    tiny_file = {k: v.shape for k, v in state_dict("hifidecoder").items()}
    assert tortoise_hifigan.original_shapes(HifiganConfig.tiny()) == tiny_file


def test_hifigan_without_cond_layer_or_pre_post_weight_norm_matches_the_original_class():
    from tortoise.models.hifigan_decoder import HifiganGenerator as Original

    kwargs = dict(in_channels=5, out_channels=1, resblock_type="1", resblock_dilation_sizes=[[1, 2, 3]])
    kwargs.update(resblock_kernel_sizes=[3], upsample_kernel_sizes=[6, 3], upsample_initial_channel=8)
    kwargs.update(upsample_factors=[3, 1], cond_channels=0, conv_pre_weight_norm=False, conv_post_bias=False)
    torch.manual_seed(2)
    original = Original(**kwargs).eval()
    sd = _randomize_weight_norm(original, 2)
    assert "conv_pre.weight" in sd and "cond_layer.weight" not in sd and "conv_post.bias" not in sd
    config = tortoise_hifigan.infer_config(sd, upsample_factors=(3, 1), resblock_dilation_sizes=((1, 2, 3),))
    assert config == HifiganConfig.from_original(kwargs)
    params = tortoise_hifigan.state_dict_to_params(sd, config)
    x = np.random.default_rng(2).standard_normal((1, 5, 6)).astype(np.float32)
    with torch.no_grad():
        want = original(torch.from_numpy(x)).numpy()
    wav = jax.jit(HifiganGenerator(config).apply)({"params": params}, x)
    assert wav.shape == want.shape == (1, 1, 6 * 3 + 1)  # k - u = 3 is odd: one extra sample, as the original
    np.testing.assert_allclose(wav, want, rtol=1e-5, atol=3e-6)  # as hifi_wav
    written = tortoise_hifigan.params_to_state_dict(params, config)
    assert {k: v.shape for k, v in written.items()} == {k: v.shape for k, v in sd.items()}


def test_hifigan_speaker_embedding_is_required():
    with pytest.raises(ValueError, match="speaker embedding g must be"):
        HifiganGenerator(HifiganConfig.tiny()).apply({"params": hifi_params()}, jnp.zeros((1, 32, 8)), None)


# ----------------------------------------------------------------------------------------------------------------
# Converters

CONVERTERS = {
    "vocoder": (tortoise_vocoder, lambda: state_dict("vocoder")["model_g"], UnivNetConfig.tiny),
    "hifidecoder": (tortoise_hifigan, lambda: state_dict("hifidecoder"), HifiganConfig.tiny),
}


def test_key_rule_round_trips():
    for key in (
        "res_stack.0.kernel_predictor.residual_convs.2.3.weight",
        "resblocks.11.convs1.0.bias",
        "conv_pre.weight",
    ):
        assert torch_key(flax_path(key)) == key
    assert flax_path("res_stack.1.conv_blocks.3.1.bias") == ("res_stack_1", "conv_blocks_3_1", "bias")


@pytest.mark.parametrize("name", CONVERTERS)
def test_converter_reports_every_problem(name):
    module, original, config = CONVERTERS[name]
    sd = dict(original())
    keys = sorted(k for k in sd if k.endswith(".weight_v"))
    dropped, reshaped, retyped = keys[0], keys[1], keys[2]
    del sd[dropped]
    sd[reshaped] = sd[reshaped][..., :1]
    sd[retyped] = sd[retyped].astype(np.float16)
    sd["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(StateDictMismatchError) as info:
        module.state_dict_to_params(sd, config())
    error, message = info.value, str(info.value)
    assert error.missing == [dropped]
    assert error.unexpected == ["extra.weight"]
    assert [m[0] for m in error.mismatched] == [reshaped]
    assert error.mistyped == [(retyped, "float16", "float32")] and "cast the tensors to float32" in message
    for key in (dropped, reshaped, retyped, "extra.weight"):
        assert key in message


@pytest.mark.parametrize("name", CONVERTERS)
def test_converter_rejects_mixed_weight_norm_forms(name):
    module, original, config = CONVERTERS[name]
    sd = dict(original())
    key = sorted(k for k in sd if k.endswith(".weight_v"))[0][: -len("_v")]
    sd[key] = sd.pop(key + "_v")
    del sd[key + "_g"]
    with pytest.raises(StateDictMismatchError, match="mixed forms") as info:
        module.state_dict_to_params(sd, config())
    assert info.value.other["mixed forms"] == [key]


@pytest.mark.parametrize("name", CONVERTERS)
def test_converter_round_trips(name):
    module, original, config = CONVERTERS[name]
    params = module.state_dict_to_params(original(), config())
    flat = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    # Folded form: the exact inverse.
    folded = module.params_to_state_dict(params, config(), weight_norm=False)
    assert not any(k.endswith(("_g", "_v")) for k in folded)
    again = dict(jax.tree_util.tree_flatten_with_path(module.state_dict_to_params(folded, config()))[0])
    assert again.keys() == flat.keys()
    for path, value in flat.items():
        np.testing.assert_array_equal(again[path], value)
    # Weight-norm form: the original file's keys and shapes; folds back within float32 rounding.
    weight_norm = module.params_to_state_dict(params, config(), weight_norm=True)
    assert {k: v.shape for k, v in weight_norm.items()} == {k: v.shape for k, v in original().items()}
    back = dict(jax.tree_util.tree_flatten_with_path(module.state_dict_to_params(weight_norm, config()))[0])
    for path, value in flat.items():
        np.testing.assert_allclose(back[path], value, rtol=2.4e-7, atol=1e-12)  # g = ||w|| rounded: <= 2 ulps
    with pytest.raises(StateDictMismatchError, match="missing"):
        module.params_to_state_dict({k: v for k, v in params.items() if k != "conv_pre"}, config())


def test_written_state_dicts_load_strictly_into_the_originals():
    from tortoise.models.hifigan_decoder import HifiganGenerator as OriginalHifigan
    from tortoise.models.vocoder import UnivNetGenerator as OriginalUnivNet

    def tensors(sd):
        return {k: torch.from_numpy(v) for k, v in sd.items()}

    vocoder = OriginalUnivNet(**original_config()["vocoder"])
    written = tortoise_vocoder.params_to_state_dict(voc_params(), UnivNetConfig.tiny(), weight_norm=True)
    vocoder.load_state_dict(tensors(written), strict=True)  # what api.py does, then eval(inference=True)
    vocoder.eval(inference=True)
    with torch.no_grad():
        wav = vocoder.inference(torch.from_numpy(REF["voc_mel"]), torch.from_numpy(REF["voc_z"])).numpy()
    np.testing.assert_allclose(wav, REF["voc_wav"], rtol=1e-5, atol=6e-5)  # as test_univnet_inference (2-ulp g)

    hifigan = OriginalHifigan(**original_config()["hifigan"]).eval()
    hifigan.load_state_dict(tensors(tortoise_hifigan.params_to_state_dict(hifi_params(), HifiganConfig.tiny())))
    with torch.no_grad():  # forward, as `inference` would after its interpolation (it moves the input to cuda)
        x = torch.from_numpy(REF["hifi_upsampled_in"])
        wav = hifigan(x, torch.from_numpy(REF["hifi_speaker_emb"])[:, :, None]).numpy()
    np.testing.assert_allclose(wav, REF["hifi_wav"], rtol=1e-5, atol=3e-6)  # as test_hifigan_inference


def test_load_files(tmp_path):
    params, config = tortoise_vocoder.load_vocoder(WAVEFORM_DIR / "vocoder.pth")
    assert config == UnivNetConfig.tiny()
    np.testing.assert_array_equal(params["conv_pre"]["weight"], voc_params()["conv_pre"]["weight"])
    params, config = tortoise_hifigan.load_hifigan(WAVEFORM_DIR / "hifidecoder.pth")
    assert config == HifiganConfig.tiny()
    np.testing.assert_array_equal(params["ups_0"]["weight"], hifi_params()["ups_0"]["weight"])
    with pytest.raises(CheckpointError, match="missing vocoder file"):
        tortoise_vocoder.load_vocoder(tmp_path / "vocoder.pth")
    torch.save({"model_d": {}, "step": torch.tensor(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a UnivNet vocoder checkpoint"):
        tortoise_vocoder.load_vocoder(tmp_path / "other.pth")


# ----------------------------------------------------------------------------------------------------------------
# bfloat16 compute


def _snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    reference, test = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - test) ** 2)))


def test_univnet_bfloat16_tracks_float32():
    # bf16 convolutions and kernel_conv, float32 mel, kernel-predictor hidden convs, residual streams, LVC sums,
    # gate and conv_post. Measured 32.7 dB on both fixture mels (28 dB with all of it in bf16: the -11.5 log-mel
    # alone rounds by up to 0.03); bf16 rounds each weight and activation by up to 2^-9, and this tiny random
    # net amplifies it. The upper bound checks that bf16 really ran (float32 vs itself would be infinite).
    config = UnivNetConfig.tiny()
    for mel, z in ((REF["voc_mel"], REF["voc_z"]), (REF["e2e_mel"], REF["e2e_voc_z"])):
        full = vocode(voc_params(), mel, config=config, z=z)
        half = vocode(voc_params(), mel, config=config, z=z, dtype=jnp.bfloat16)
        assert half.dtype == jnp.float32 and half.shape == full.shape
        assert 30 < _snr_db(full, half) < 80


def test_hifigan_bfloat16_tracks_float32():
    # bf16 convolutions, float32 residual streams / resblock average / conv_post: 40.9 dB measured (38.2 dB with
    # everything in bf16); as above, the upper bound shows bf16 ran.
    args = (hifi_params(), REF["hifi_latents"], REF["hifi_speaker_emb"])
    full = hifigan_inference(*args, config=HifiganConfig.tiny())
    half = hifigan_inference(*args, config=HifiganConfig.tiny(), dtype=jnp.bfloat16)
    assert half.dtype == jnp.float32
    assert 38 < _snr_db(full, half) < 80
