"""Tortoise's random latent generators (`rlg_auto.pth`, `rlg_diffuser.pth`): noise -> a made-up voice's latents.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here B rows, one per random voice; D the latent width:
1024 for the AR conditioning latent, 2048 for the diffusion conditioning latent).

Architecture (as `tortoise/models/random_latent_generator.py::RandomLatentConverter(channels)`): an MLP of five
StyleGAN-style "equalized" linear layers followed by one plain linear layer, all D -> D:

    EqualLinear:  y = leaky_relu(x (W * lr_mul / sqrt(D))^T + b * lr_mul, slope 0.2) * sqrt(2),  lr_mul = 0.1
    final Linear: y = x W^T + b

The stored weights are the *unscaled* W and b (the scaling happens in the forward), so the converter copies them
unchanged. Differences from the original, on purpose:
* the original draws its own noise inside `forward` (`torch.randn(ref.shape[0], D)`, `ref` only gives the row
  count); here the noise is an argument (`RandomLatentConverter.__call__`) or comes from a JAX key
  (`random_voice_latents`), so a seed gives the same voice on every backend, though not the voice the torch RNG
  would give for that seed.
* matmuls run at HIGHEST precision, so TPU/GPU results match the float32 reference instead of bf16 passes.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.layers import param

AUTO_CHANNELS = 1024  # rlg_auto.pth: the autoregressive model's conditioning latent width
DIFFUSION_CHANNELS = 2048  # rlg_diffuser.pth: the diffusion decoder's conditioning latent width (scale | shift)
NUM_EQUAL_LAYERS = 5  # EqualLinear layers before the final nn.Linear (torch keys layers.0..4, then layers.5)
LR_MUL = 0.1  # the EqualLinear learning-rate multiplier the original uses
LEAKY_SLOPE = 0.2  # fused_leaky_relu's negative slope
LEAKY_GAIN = math.sqrt(2.0)  # fused_leaky_relu's output scale (keeps the activations' variance at ~1)
_HIGHEST = jax.lax.Precision.HIGHEST


class EqualLinear(nn.Module):
    """StyleGAN's equalized-learning-rate linear layer with its fused leaky ReLU, torch layout (`weight` [out, in]).

    Attributes: features (out), lr_mul (multiplies both the runtime weight scale and the bias).
    """

    features: int
    lr_mul: float = LR_MUL

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, D_in] -> [B, features]
        # The original initialises W ~ N(0, 1) / lr_mul and b = 0; the runtime scale lr_mul / sqrt(in) makes the
        # effective weight ~N(0, 1 / in).
        weight = param(self, "weight", nn.initializers.normal(1.0 / self.lr_mul), (self.features, x.shape[-1]))
        bias = param(self, "bias", nn.initializers.zeros, (self.features,))
        scale = self.lr_mul / math.sqrt(x.shape[-1])
        y = jnp.einsum("bi,oi->bo", x, weight * scale, precision=_HIGHEST)
        return jax.nn.leaky_relu(y + bias * self.lr_mul, LEAKY_SLOPE) * LEAKY_GAIN


class Linear(nn.Module):
    """torch's `nn.Linear` at HIGHEST precision, torch layout (`weight` [out, in]). Attributes: features (out)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, D_in] -> [B, features]
        bound = 1.0 / math.sqrt(x.shape[-1])  # torch's default init range for both weight and bias
        weight = param(self, "weight", nn.initializers.uniform(2 * bound), (self.features, x.shape[-1]))
        bias = param(self, "bias", nn.initializers.uniform(2 * bound), (self.features,))
        return jnp.einsum("bi,oi->bo", x, weight, precision=_HIGHEST) + bias


class RandomLatentConverter(nn.Module):
    """noise [B, D] -> latents [B, D]. Submodules `layers_0`..`layers_5` are the torch `layers.0`..`layers.5`.

    Attributes: channels (D: `AUTO_CHANNELS` for rlg_auto, `DIFFUSION_CHANNELS` for rlg_diffuser).
    """

    channels: int

    @nn.compact
    def __call__(self, noise: jax.Array) -> jax.Array:
        if noise.ndim != 2 or noise.shape[-1] != self.channels:
            raise ValueError(f"noise must be [rows, {self.channels}], got shape {tuple(noise.shape)}")
        x = noise.astype(jnp.float32)
        for i in range(NUM_EQUAL_LAYERS):
            x = EqualLinear(self.channels, name=f"layers_{i}")(x)
        return Linear(self.channels, name=f"layers_{NUM_EQUAL_LAYERS}")(x)


def param_shapes(channels: int) -> dict:
    """{'params': ShapeDtypeStruct tree} of a `RandomLatentConverter(channels)`, without allocating weights."""
    model = RandomLatentConverter(channels)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, channels), jnp.float32))


@functools.lru_cache(maxsize=4)
def _converter_fn(channels: int):
    return jax.jit(RandomLatentConverter(channels).apply)


class RandomVoiceLatents(NamedTuple):
    """The two conditioning latents of a random voice, as `TextToSpeech.get_random_conditioning_latents` returns.

    Attributes:
      auto: float32 [rows, 1024], the autoregressive model's conditioning latent.
      diffusion: float32 [rows, 2048], the diffusion decoder's conditioning latent.
    """

    auto: np.ndarray
    diffusion: np.ndarray


def _channels(variables: dict, name: str) -> int:
    try:
        return int(np.shape(variables["params"][f"layers_{NUM_EQUAL_LAYERS}"]["weight"])[0])
    except (KeyError, TypeError, IndexError):
        raise ValueError(
            f"{name}: expected RandomLatentConverter variables {{'params': {{'layers_0'..'layers_5': ...}}}} "
            "(convert rlg_auto.pth / rlg_diffuser.pth with clvp_jax.checkpoint.tortoise_rlg.load_original)"
        ) from None


def random_voice_latents(
    key: jax.Array,
    auto_variables: dict,
    diffusion_variables: dict,
    rows: int = 1,
    widths: tuple[int, int] | None = (AUTO_CHANNELS, DIFFUSION_CHANNELS),
) -> RandomVoiceLatents:
    """A key -> the `random` voice's latents, as Tortoise's api.py makes them (`get_random_conditioning_latents`).

    Each generator maps its own standard-normal noise [rows, D] (float32) to a latent: the key is split in two,
    the first half for rlg_auto, the second for rlg_diffuser (Tortoise draws them in that order from torch's RNG).

    Args:
      key: a JAX PRNG key; the same key gives the same voice.
      auto_variables: converted rlg_auto.pth ({'params': ...}, 1024 channels).
      diffusion_variables: converted rlg_diffuser.pth ({'params': ...}, 2048 channels).
      rows: how many random voices to draw (Tortoise draws one).
      widths: the (auto, diffusion) channels the generators must have (Tortoise's 1024, 2048); None takes the
        variables' own (the packaged default's small random generators).
    Returns:
      `RandomVoiceLatents(auto [rows, 1024], diffusion [rows, 2048])`, float32 numpy arrays.
    """
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    auto_channels, diffusion_channels = (
        _channels(auto_variables, "rlg_auto"),
        _channels(diffusion_variables, "rlg_diffuser"),
    )
    if widths is not None and (auto_channels, diffusion_channels) != tuple(widths):
        raise ValueError(
            f"the random voice needs rlg_auto ({widths[0]} channels) then rlg_diffuser ({widths[1]}); "
            f"got {auto_channels} and {diffusion_channels} channels (are the two swapped?)"
        )
    auto_key, diffusion_key = jax.random.split(key)
    auto_noise = jax.random.normal(auto_key, (rows, auto_channels), jnp.float32)  # [B, 1024]
    diffusion_noise = jax.random.normal(diffusion_key, (rows, diffusion_channels), jnp.float32)  # [B, 2048]
    return RandomVoiceLatents(
        auto=np.asarray(_converter_fn(auto_channels)(auto_variables, auto_noise)),
        diffusion=np.asarray(_converter_fn(diffusion_channels)(diffusion_variables, diffusion_noise)),
    )
