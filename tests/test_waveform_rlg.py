"""The random latent generators (rlg_auto / rlg_diffuser) and their converter, against the original torch class.

The reference is `tortoise.models.random_latent_generator.RandomLatentConverter` itself, built at the real sizes
(1024 and 2048 channels) with random weights (its own init, plus random biases, which it initialises to zero, so
that the bias path is exercised). Tolerance, one tier for every comparison: the outputs are values up to ~3
after six C x C float32 matmuls (each followed by a sqrt(2) gain), where the two libraries' summation orders
differ; max abs errors seen were 3.0e-6 (1024) and 3.6e-6 (2048), so atol 1e-5 (plus rtol 1e-6) is a ~3x
margin, while any layout, scale or bias mistake gives O(0.1..1) differences.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from tortoise.models.random_latent_generator import RandomLatentConverter as TorchRlg

from clvp_jax.checkpoint.errors import CheckpointError
from clvp_jax.checkpoint.tortoise_rlg import (
    RlgCheckpointError,
    infer_channels,
    load_original,
    load_random_voice_generators,
    original_from_params,
    params_from_original,
)
from clvp_jax.waveform.random_latents import (
    AUTO_CHANNELS,
    DIFFUSION_CHANNELS,
    RandomLatentConverter,
    random_voice_latents,
)

ROWS = 3  # odd, and more than Tortoise's single row, to check rows are independent


@functools.cache
def torch_model(channels: int) -> TorchRlg:
    torch.manual_seed(channels)
    model = TorchRlg(channels).eval()
    with torch.no_grad():
        for i in range(5):
            model.layers[i].bias.normal_(0.0, 1.0)  # zero at init; the forward multiplies it by lr_mul
    return model


@functools.cache
def source(channels: int) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in torch_model(channels).state_dict().items()}


@functools.cache
def converted(channels: int) -> dict:
    got_channels, variables = params_from_original(source(channels))
    assert got_channels == channels
    return variables


@functools.cache
def jax_forward(channels: int):
    return jax.jit(RandomLatentConverter(channels).apply)


@pytest.mark.parametrize("channels", [AUTO_CHANNELS, DIFFUSION_CHANNELS])
def test_matches_original_on_given_noise(channels):
    noise = np.random.default_rng(channels).standard_normal((ROWS, channels)).astype(np.float32)
    with torch.no_grad():
        want = torch_model(channels).layers(torch.from_numpy(noise)).numpy()
    got = np.asarray(jax_forward(channels)(converted(channels), jnp.asarray(noise)))
    assert got.shape == (ROWS, channels) and np.abs(want).max() > 0.1  # a live signal, not all zeros
    err = np.abs(got - want).max()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5, err_msg=f"max abs error {err:.2e}")


def test_original_forward_draws_its_noise_as_given():
    # The original forward draws torch.randn(rows, C) itself; replaying the seed gives that noise, so our module
    # fed the same noise reproduces `forward` as api.py calls it (a dummy `ref` whose length is the row count).
    channels = AUTO_CHANNELS
    torch.manual_seed(1234)
    with torch.no_grad():
        want = torch_model(channels)(torch.tensor([0.0])).numpy()
    torch.manual_seed(1234)
    noise = torch.randn(1, channels).numpy()
    got = np.asarray(jax_forward(channels)(converted(channels), jnp.asarray(noise)))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)  # same tier as above: one row of the same MLP


@pytest.mark.parametrize("channels", [AUTO_CHANNELS, DIFFUSION_CHANNELS])
def test_round_trip_is_exact(channels):
    back = original_from_params(converted(channels), channels)
    assert sorted(back) == sorted(source(channels))
    for key, value in source(channels).items():
        assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key


def test_random_voice_latents_shapes_determinism_and_independence():
    auto, diffusion = converted(AUTO_CHANNELS), converted(DIFFUSION_CHANNELS)
    first = random_voice_latents(jax.random.PRNGKey(7), auto, diffusion)
    again = random_voice_latents(jax.random.PRNGKey(7), auto, diffusion)
    other = random_voice_latents(jax.random.PRNGKey(8), auto, diffusion)
    assert first.auto.shape == (1, AUTO_CHANNELS) and first.diffusion.shape == (1, DIFFUSION_CHANNELS)
    assert first.auto.dtype == first.diffusion.dtype == np.float32
    np.testing.assert_array_equal(first.auto, again.auto)  # same key, same program: bit-identical
    np.testing.assert_array_equal(first.diffusion, again.diffusion)
    assert np.abs(first.auto - other.auto).max() > 0.1  # another key is another voice
    # The latents are the generators applied to the documented noise: split the key, rlg_auto takes the first half.
    k_auto, k_diff = jax.random.split(jax.random.PRNGKey(7))
    noise_auto = np.array(jax.random.normal(k_auto, (1, AUTO_CHANNELS), jnp.float32))
    noise_diff = np.array(jax.random.normal(k_diff, (1, DIFFUSION_CHANNELS), jnp.float32))
    with torch.no_grad():
        want_auto = torch_model(AUTO_CHANNELS).layers(torch.from_numpy(noise_auto)).numpy()
        want_diff = torch_model(DIFFUSION_CHANNELS).layers(torch.from_numpy(noise_diff)).numpy()
    np.testing.assert_allclose(first.auto, want_auto, rtol=1e-6, atol=1e-5)  # tier of the parity test above
    np.testing.assert_allclose(first.diffusion, want_diff, rtol=1e-6, atol=1e-5)
    several = random_voice_latents(jax.random.PRNGKey(7), auto, diffusion, rows=ROWS)
    assert several.auto.shape == (ROWS, AUTO_CHANNELS) and several.diffusion.shape == (ROWS, DIFFUSION_CHANNELS)
    with pytest.raises(ValueError, match="swapped"):
        random_voice_latents(jax.random.PRNGKey(7), diffusion, auto)
    with pytest.raises(ValueError, match="rows must be at least 1"):
        random_voice_latents(jax.random.PRNGKey(7), auto, diffusion, rows=0)
    with pytest.raises(ValueError, match="tortoise_rlg.load_original"):
        random_voice_latents(jax.random.PRNGKey(7), {"layers": {}}, diffusion)


def test_noise_shape_is_checked():
    with pytest.raises(ValueError, match=r"noise must be \[rows, 1024\]"):
        jax_forward(AUTO_CHANNELS)(converted(AUTO_CHANNELS), jnp.zeros((1, 512)))


def test_converter_is_strict():
    good = source(AUTO_CHANNELS)
    assert infer_channels(good) == AUTO_CHANNELS
    bad = dict(good)
    del bad["layers.2.bias"]
    bad["layers.6.weight"] = good["layers.0.weight"]  # an extra layer
    bad["layers.3.weight"] = good["layers.3.weight"][:, :10]
    bad["layers.4.bias"] = good["layers.4.bias"].astype(np.float16)
    with pytest.raises(RlgCheckpointError) as info:
        params_from_original(bad)
    err = info.value
    assert err.missing == ["layers.2.bias"] and err.unexpected == ["layers.6.weight"]
    assert [m[0] for m in err.mismatched] == ["layers.3.weight"]
    assert err.mistyped == [("layers.4.bias", "float16", "float32")]
    assert "float16" in str(err) and "rlg_auto.pth" in str(err)
    with pytest.raises(RlgCheckpointError, match="mis-shaped"):
        params_from_original(good, channels=DIFFUSION_CHANNELS)  # the wrong generator for the asked width
    with pytest.raises(RlgCheckpointError, match=r"missing \(1\): layers.5.weight"):
        infer_channels({})
    tree = converted(AUTO_CHANNELS)
    partial = {"params": {k: v for k, v in tree["params"].items() if k != "layers_1"}}
    with pytest.raises(RlgCheckpointError, match="parameter tree.*\n.*missing \\(2\\): layers_1/bias, layers_1/weight"):
        original_from_params(partial, AUTO_CHANNELS)


def test_load_original_reads_a_pth(tmp_path):
    path = tmp_path / "rlg_auto.pth"
    torch.save(torch_model(AUTO_CHANNELS).state_dict(), path)
    channels, variables = load_original(path)
    assert channels == AUTO_CHANNELS
    for key, value in source(AUTO_CHANNELS).items():
        layer, leaf = key.rsplit(".", 1)
        np.testing.assert_array_equal(variables["params"][layer.replace(".", "_")][leaf], value)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        load_original(tmp_path / "list.pth")


def test_load_random_voice_generators(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs rlg_auto.pth and rlg_diffuser.pth in .*Manmay/tortoise-tts"):
        load_random_voice_generators(tmp_path)
    torch.save(torch_model(AUTO_CHANNELS).state_dict(), tmp_path / "rlg_auto.pth")
    torch.save(torch_model(AUTO_CHANNELS).state_dict(), tmp_path / "rlg_diffuser.pth")  # the wrong generator
    with pytest.raises(
        RlgCheckpointError, match=r"layers.0.weight: checkpoint \(1024, 1024\), config expects \(2048, 2048\)"
    ):
        load_random_voice_generators(tmp_path)
    torch.save(torch_model(DIFFUSION_CHANNELS).state_dict(), tmp_path / "rlg_diffuser.pth")
    auto, diffusion = load_random_voice_generators(tmp_path)
    np.testing.assert_array_equal(auto["params"]["layers_5"]["bias"], source(AUTO_CHANNELS)["layers.5.bias"])
    np.testing.assert_array_equal(diffusion["params"]["layers_0"]["bias"], source(DIFFUSION_CHANNELS)["layers.0.bias"])
