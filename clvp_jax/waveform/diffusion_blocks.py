"""Building blocks of the diffusion decoder: timestep embedding, relative position bias, attention, ResBlock.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here T positions: mel frames or AR latent frames; T
query and S key positions in attention).

Tensors are channels-last [B, T, W] (the original's are [B, W, T]; the parameters are the same), and every submodule is named after the torch state-dict
key (`in_layers_0` for `in_layers.0`, ...), so the converter is a name rule. Where this differs from the original
on purpose: the relative-position bucket table is computed on the host with numpy (the length is static), and
the qkv split is one reshape of the head-interleaved channels instead of a split of a reshaped tensor.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.layers import Dtype, Linear
from clvp_jax.tuning import Tuning
from clvp_jax.waveform.attention_block import AttentionBlockNWC
from clvp_jax.waveform.conv import norm_groups
from clvp_jax.waveform.nwc import ConvNWC, GroupNormNWC

HIGHEST = jax.lax.Precision.HIGHEST
MAX_PERIOD = 10000.0  # lowest frequency of the sinusoidal timestep embedding: 1 / 10000 radians per step


def timestep_frequencies(dim: int) -> np.ndarray:
    """exp(-ln(10000) i / (dim/2)) for i < dim/2, float32, as the original's float32 torch expression.

    The exponent is formed in float32 (as torch does) and the exponential rounded once from float64, which
    reproduces torch's table in all but a few entries at dim 1024 (one ulp); a float32 `exp` misses many more,
    and at t ~ 4000 one ulp of a frequency moves the embedding by ~1e-4.
    """
    half = dim // 2
    exponent = np.float32(-math.log(MAX_PERIOD)) * np.arange(half, dtype=np.float32) / np.float32(half)
    return np.exp(exponent.astype(np.float64)).astype(np.float32)


def timestep_embedding(timesteps: jax.Array, dim: int) -> jax.Array:
    """Sinusoidal embedding [B, dim] of original-scale timesteps [B] (0..3999): [cos | sin] halves, float32.

    Odd `dim` gets a trailing zero column, as the original.
    """
    args = timesteps.astype(jnp.float32)[:, None] * timestep_frequencies(dim)[None, :]  # [B, dim/2]
    embedding = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        embedding = jnp.pad(embedding, ((0, 0), (0, 1)))
    return embedding


class ResBlock(nn.Module):
    """The diffusion decoder's ResBlock with scale-shift norm (`use_scale_shift_norm=True`, efficient config), on
    channels-last [B, T, W].

    h = Conv1x1(SiLU(GroupNorm(x))); (scale, shift) = halves of Linear(SiLU(t_emb));
    h = GroupNorm(h) * (1 + scale) + shift; return x + Conv_k3(SiLU(h)) (dropout is off in eval). The norms'
    statistics, SiLU and the scale-shift are float32 (XLA fuses them into one pass each); the convs run in `dtype`.

    Attributes: dtype (compute dtype of the matmuls; None: the input's), tuning.
    """

    dtype: Dtype | None = None
    tuning: Tuning = dataclasses.field(default_factory=Tuning.for_backend)

    @nn.compact
    def __call__(self, x: jax.Array, time_emb: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        groups = norm_groups(channels)
        dt = x.dtype if self.dtype is None else self.dtype
        h = nn.silu(GroupNormNWC(groups, name="in_layers_0")(x)).astype(dt)
        h = ConvNWC(channels, 1, tuning=self.tuning, name="in_layers_2")(h)
        emb = Linear(2 * channels, dtype=self.dtype, tuning=self.tuning, name="emb_layers_1")(nn.silu(time_emb))
        emb = emb.astype(jnp.float32)[:, None]  # [B, 1, 2W]
        scale, shift = emb[..., :channels], emb[..., channels:]
        h = nn.silu(GroupNormNWC(groups, name="out_layers_0")(h) * (1 + scale) + shift).astype(dt)
        return x + ConvNWC(channels, 3, padding=1, tuning=self.tuning, name="out_layers_3")(h).astype(x.dtype)


class DiffusionLayer(nn.Module):
    """ResBlock (timestep-conditioned) followed by a relative-bias AttentionBlock, channels-last [B, T, W]."""

    num_heads: int
    dtype: Dtype | None = None
    tuning: Tuning = dataclasses.field(default_factory=Tuning.for_backend)

    @nn.compact
    def __call__(self, x: jax.Array, time_emb: jax.Array) -> jax.Array:
        x = ResBlock(dtype=self.dtype, tuning=self.tuning, name="resblk")(x, time_emb)
        return AttentionBlockNWC(
            self.num_heads, relative_position=True, dtype=self.dtype, tuning=self.tuning, name="attn"
        )(x)
