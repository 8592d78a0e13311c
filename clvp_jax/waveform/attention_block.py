"""Tortoise's channels-first `AttentionBlock` (`arch_util.py`), shared by the waveform-stage models: CVVP's
pre-combiner uses it plain (`AttentionBlock`, [B, W, T]), the diffusion decoder channels-last with its learned
relative position bias (`AttentionBlockNWC`, [B, T, W], the same parameters).

Axis letters: see the package legend in `clvp_jax/__init__.py` (here T query positions, S key positions, K = W / H head
channels).

x + proj_out(attention(qkv(GroupNorm(x)))): qkv and proj_out are 1x1 convolutions; the 3W qkv channels are laid
out per head ([H][q | k | v][K]); q and k are each scaled by K^-1/4 before the dot product (the original's fp16
trick, kept for its rounding); softmax in float32; no mask. The relative-position bucket table is computed on
the host with numpy (the length is static).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.layers import Dtype, param
from clvp_jax.tuning import Tuning
from clvp_jax.waveform.conv import GroupNorm, norm_groups
from clvp_jax.waveform.nwc import ConvNWC, GroupNormNWC
from clvp_jax.waveform.pointwise import PointwiseConv1d

HIGHEST = jax.lax.Precision.HIGHEST
RELATIVE_BUCKETS = 32  # relative position bias table rows (16 per side)
RELATIVE_MAX_DISTANCE = 64  # distances >= this share the last bucket of their side


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
    """[B, W, T] -> [B, W, T]; submodules `norm` (GroupNorm), `qkv` (1x1 conv W -> 3W), `proj_out` (W -> W) and,
    with `relative_position`, `relative_pos_embeddings` (the bias table [32, H], times sqrt(K)).

    Attributes: num_heads; relative_position; dtype (compute dtype of the matmuls; softmax and norm statistics
    stay float32).
    """

    num_heads: int
    relative_position: bool = False
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, channels, length = x.shape
        heads = self.num_heads
        if channels % heads:
            raise ValueError(f"AttentionBlock: {channels} channels do not split into {heads} heads")
        head_dim = channels // heads
        h = x if self.dtype is None else x.astype(self.dtype)
        h = GroupNorm(norm_groups(channels), name="norm")(h)
        qkv = PointwiseConv1d(3 * channels, name="qkv")(h).reshape(batch, heads, 3, head_dim, length)
        scale = head_dim**-0.25
        q, k, v = qkv[:, :, 0] * scale, qkv[:, :, 1] * scale, qkv[:, :, 2]  # [B, H, K, T] each
        logits = jnp.einsum("bhkt,bhks->bhts", q, k, precision=HIGHEST).astype(jnp.float32)  # [B, H, T, S]
        if self.relative_position:
            logits = logits + RelativePositionBias(heads, math.sqrt(head_dim), name="relative_pos_embeddings")(length)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        a = jnp.einsum("bhts,bhks->bhkt", weights, v, precision=HIGHEST).reshape(batch, channels, length)
        return x + PointwiseConv1d(channels, name="proj_out")(a).astype(x.dtype)


class AttentionBlockNWC(nn.Module):
    """`AttentionBlock` on channels-last [B, T, W] -> [B, T, W], with the same submodules and parameters (`norm`,
    `qkv`, `proj_out`, `relative_pos_embeddings`), so it loads the same weights; the diffusion decoder's form.

    The kernel is `tuning.attention`: "einsum" (scores, float32 softmax, weighted values) or
    "dot_product_attention" (`jax.nn.dot_product_attention` with the bias; the same maths).

    Attributes: num_heads; relative_position; dtype (compute dtype of the matmuls; softmax and norm statistics
    stay float32); tuning.
    """

    num_heads: int
    relative_position: bool = False
    dtype: Dtype | None = None
    tuning: Tuning = dataclasses.field(default_factory=Tuning.for_backend)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, length, channels = x.shape
        heads = self.num_heads
        if channels % heads:
            raise ValueError(f"AttentionBlock: {channels} channels do not split into {heads} heads")
        head_dim = channels // heads
        dt = x.dtype if self.dtype is None else self.dtype
        h = GroupNormNWC(norm_groups(channels), name="norm")(x).astype(dt)
        qkv = ConvNWC(3 * channels, 1, tuning=self.tuning, name="qkv")(h).reshape(batch, length, heads, 3, head_dim)
        scale = head_dim**-0.25
        q, k, v = qkv[:, :, :, 0] * scale, qkv[:, :, :, 1] * scale, qkv[:, :, :, 2]  # [B, T, H, K] each
        bias = None
        if self.relative_position:
            bias = RelativePositionBias(heads, math.sqrt(head_dim), name="relative_pos_embeddings")(length)[None]
        if self.tuning.attention == "dot_product_attention":
            a = jax.nn.dot_product_attention(q, k, v, bias=None if bias is None else bias.astype(dt), scale=1.0)
        else:
            f32 = jnp.float32  # accumulate in float32 (see `nwc.dot_weight`)
            logits = jnp.einsum("bthk,bshk->bhts", q, k, precision=HIGHEST, preferred_element_type=f32)  # [B,H,T,S]
            if bias is not None:
                logits = logits + bias
            weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
            a = jnp.einsum("bhts,bshk->bthk", weights, v, precision=HIGHEST, preferred_element_type=f32).astype(dt)
        out = ConvNWC(channels, 1, tuning=self.tuning, name="proj_out")(a.reshape(batch, length, channels))
        return x + out.astype(x.dtype)
