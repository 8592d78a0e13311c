"""Tortoise's channels-first `AttentionBlock` (`arch_util.py`) and its GroupNorm group rule, shared by the
waveform-stage models (CVVP's pre-combiner; the diffusion decoder's blocks add a relative position bias).

Axis legend: B batch, C channels, T positions, H heads, d head channels (C / H).

x + proj_out(attention(qkv(GroupNorm(x)))): qkv and proj_out are 1x1 convolutions; the 3C qkv channels are laid
out per head ([H][q | k | v][d]); q and k are each scaled by d^-1/4 before the dot product (the original's fp16
trick, kept for its rounding); softmax in float32; no mask.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from clvp_jax.waveform.conv import Conv1d, GroupNorm


def norm_groups(channels: int) -> int:
    """The original `normalization(channels)` group count: 32 if C > 64, 16 if 16 < C <= 64, 8 if C <= 16, then
    halved until it divides C (1024 -> 32, 80 -> 16, 40 -> 8); fewer than 3 groups is refused as the original does."""
    groups = 8 if channels <= 16 else 16 if channels <= 64 else 32
    while channels % groups:
        groups //= 2
    if groups <= 2:
        raise ValueError(f"GroupNorm over {channels} channels would have {groups} groups; the original needs > 2")
    return groups


class AttentionBlock(nn.Module):
    """[B, C, T] -> [B, C, T]; submodules `norm` (GroupNorm), `qkv` (Conv1d C -> 3C, k1), `proj_out` (C -> C, k1).

    Attributes: num_heads; dtype (compute dtype of the matmuls; softmax and norm statistics stay float32).
    """

    num_heads: int
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array | None = None) -> jax.Array:
        """`bias`: optional additive logits [B or 1, H, T, T] (the diffusion decoder's relative position bias)."""
        B, C, T = x.shape
        H = self.num_heads
        if C % H:
            raise ValueError(f"AttentionBlock: {C} channels do not split into {H} heads")
        d = C // H
        h = x if self.dtype is None else x.astype(self.dtype)
        qkv = Conv1d(3 * C, 1, name="qkv")(GroupNorm(norm_groups(C), name="norm")(h))  # [B, 3C, T]
        q, k, v = jnp.split(qkv.reshape(B, H, 3 * d, T), 3, axis=2)  # each [B, H, d, T]
        scale = d**-0.25
        logits = jnp.einsum("bhdt,bhds->bhts", q * scale, k * scale).astype(jnp.float32)  # [B, H, T, T]
        if bias is not None:
            logits = logits + bias.astype(jnp.float32)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        a = jnp.einsum("bhts,bhds->bhdt", weights, v).reshape(B, C, T)
        return x + Conv1d(C, 1, name="proj_out")(a).astype(x.dtype)
