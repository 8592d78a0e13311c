"""Building blocks of the diffusion decoder: timestep embedding, relative position bias, attention, ResBlock.

Axis legend: B batch, C channels, L positions (mel frames or AR latent frames), H heads, D head dim,
T query positions, S key positions.

Tensors are channels-first [B, C, L] as in the original, and every submodule is named after the torch state-dict
key (`in_layers_0` for `in_layers.0`, ...), so the converter is a name rule. Where this differs from the original
on purpose: the relative-position bucket table is computed on the host with numpy (the length is static), and
the qkv split is one reshape of the head-interleaved channels instead of a split of a reshaped tensor.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.layers import Dtype, Linear, param
from clvp_jax.waveform.conv import Conv1d, GroupNorm
from clvp_jax.waveform.diffusion_config import RELATIVE_BUCKETS, RELATIVE_MAX_DISTANCE, norm_groups
from clvp_jax.waveform.pointwise import PointwiseConv1d

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


def relative_buckets(length: int) -> np.ndarray:
    """Bucket [T, S] of each (query, key) pair of the non-causal relative bias (32 buckets, max distance 64).

    n = query - key; keys after the query (n < 0) use the upper 16 buckets; |n| < 8 is its own bucket, larger
    distances are log-spaced, 8 + trunc(ln(|n| / 8) / ln(64 / 8) * 8), capped at 15. The log is taken in
    float32 as the original; no distance lands on a bucket edge other than 8 (exact) and 64 (capped), so the
    float rounding cannot move a pair.
    """
    half = RELATIVE_BUCKETS // 2
    max_exact = half // 2
    pos = np.arange(length)
    n = pos[:, None] - pos[None, :]  # [T, S] query minus key
    base = np.where(n < 0, half, 0)
    n = np.abs(n)
    far = np.maximum(n, max_exact)  # the log-spaced formula, evaluated only where it is used
    scaled = np.log(far.astype(np.float32) / np.float32(max_exact)) / np.float32(
        math.log(RELATIVE_MAX_DISTANCE / max_exact)
    )
    large = np.minimum(max_exact + (scaled * np.float32(half - max_exact)).astype(np.int64), half - 1)
    return (base + np.where(n < max_exact, n, large)).astype(np.int32)


class RelativePositionBias(nn.Module):
    """The learned relative position bias [H, T, T] of length T, times sqrt(head dim) (param [32, H])."""

    num_heads: int
    scale: float

    @nn.compact
    def __call__(self, length: int) -> jax.Array:
        table = param(self, "relative_attention_bias", nn.initializers.normal(1.0), (RELATIVE_BUCKETS, self.num_heads))
        # Gathered from the [H, 32] table straight into [H, T, S] (no transpose of the big result: ~20% faster).
        return jnp.take(table.astype(jnp.float32).T * self.scale, relative_buckets(length), axis=1)


class AttentionBlock(nn.Module):
    """x + proj_out(attention(qkv(GroupNorm(x)))) over L with a relative position bias, on [B, C, L].

    The 3C qkv channels are laid out per head, [H][q | k | v][D]. q and k are each scaled by D^-1/4 (as the
    original: the product is then scaled by D^-1/2); the bias is added to the logits; softmax in float32.
    """

    num_heads: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, channels, length = x.shape
        heads = self.num_heads
        head_dim = channels // heads
        h = GroupNorm(norm_groups(channels), name="norm")(x)
        qkv = PointwiseConv1d(3 * channels, name="qkv")(h).reshape(batch, heads, 3, head_dim, length)
        scale = head_dim**-0.25
        q, k, v = qkv[:, :, 0] * scale, qkv[:, :, 1] * scale, qkv[:, :, 2]  # [B, H, D, L] each
        logits = jnp.einsum("bhdt,bhds->bhts", q, k, precision=HIGHEST).astype(jnp.float32)
        bias = RelativePositionBias(heads, math.sqrt(head_dim), name="relative_pos_embeddings")(length)
        weights = jax.nn.softmax(logits + bias[None], axis=-1).astype(v.dtype)  # [B, H, T, S]
        a = jnp.einsum("bhts,bhds->bhdt", weights, v, precision=HIGHEST).reshape(batch, channels, length)
        return x + PointwiseConv1d(channels, name="proj_out")(a)


class ResBlock(nn.Module):
    """The diffusion decoder's ResBlock with scale-shift norm (`use_scale_shift_norm=True`, efficient config).

    h = Conv1x1(SiLU(GroupNorm(x))); (scale, shift) = halves of Linear(SiLU(t_emb));
    h = GroupNorm(h) * (1 + scale) + shift; return x + Conv_k3(SiLU(h)) (dropout is off in eval).
    """

    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, time_emb: jax.Array) -> jax.Array:
        channels = x.shape[1]
        groups = norm_groups(channels)
        h = nn.silu(GroupNorm(groups, name="in_layers_0")(x))
        h = PointwiseConv1d(channels, name="in_layers_2")(h)
        emb = Linear(2 * channels, dtype=self.dtype, name="emb_layers_1")(nn.silu(time_emb)).astype(h.dtype)
        scale, shift = emb[:, :channels, None], emb[:, channels:, None]  # [B, C, 1] each
        h = GroupNorm(groups, name="out_layers_0")(h) * (1 + scale) + shift
        return x + Conv1d(channels, 3, padding=1, name="out_layers_3")(nn.silu(h))


class DiffusionLayer(nn.Module):
    """ResBlock (timestep-conditioned) followed by a relative-bias AttentionBlock."""

    num_heads: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, time_emb: jax.Array) -> jax.Array:
        x = ResBlock(dtype=self.dtype, name="resblk")(x, time_emb)
        return AttentionBlock(self.num_heads, dtype=self.dtype, name="attn")(x)
