"""Channels-last ([B, T, W]) 1-D convolutions and GroupNorm with torch's parameter layouts (the diffusion decoder's).

The parameters are exactly those of `conv.Conv1d`, `pointwise.PointwiseConv1d` and `conv.GroupNorm` (weight
[out, in, k], bias [out]; scale, bias [W]), so checkpoints load unchanged; only the activations' layout differs.
Channels last, every convolution is a matmul over rows B*T: a 1x1 kernel is [B T, in] x [in, out] and a k-tap
kernel is the same over the k shifted copies of the input (`Tuning.conv_kernel`: "im2col", one dot against the
weight read as [out, in * k], which is torch's memory order, so the weight is never transposed; or "conv",
`lax.conv_general_dilated` in NWC). GroupNorm reduces over T and the channels of a group, in float32.

Axis letters: see the package legend in `clvp_jax/__init__.py` (T frames, W channels).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from clvp_jax.layers import param
from clvp_jax.tuning import Tuning

HIGHEST = jax.lax.Precision.HIGHEST


def dot_weight(x: jax.Array, weight: jax.Array) -> jax.Array:
    """x [..., in] times a torch-layout weight [out, in] -> [..., out] float32 (contracting the weight's second
    axis; accumulated and returned in float32). (On XLA:CPU a bfloat16 dot asked for a bfloat16 result
    runs ~4x slower than the same dot with a float32 result: measured 120 against 480 GFLOP per CPU-second at
    [556, 3072] x [3072, 1024] on the AMX Xeon; float32 accumulation is also what TPUs and GPUs do.)"""
    y = jax.lax.dot_general(
        x,
        weight.astype(x.dtype),
        (((x.ndim - 1,), (1,)), ((), ())),
        precision=HIGHEST,
        preferred_element_type=jnp.float32,
    )
    return y


class ConvNWC(nn.Module):
    """torch's `nn.Conv1d` (zero padding, groups 1) on [B, T, W_in] -> [B, T_out, W_out]; weight [out, in, k].

    Attributes: features (out channels), kernel_size, stride, padding (each side), use_bias, tuning.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    use_bias: bool = True
    tuning: Tuning = dataclasses.field(default_factory=Tuning.for_backend)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, frames, channels = x.shape
        k, s = self.kernel_size, self.stride
        weight = param(self, "weight", nn.initializers.lecun_normal(), (self.features, channels, k)).astype(x.dtype)
        if k == 1 and s == 1 and self.padding == 0:
            y = dot_weight(x, weight[:, :, 0])
        elif self.tuning.conv_kernel == "im2col":
            xp = jnp.pad(x, ((0, 0), (self.padding, self.padding), (0, 0)))
            out = (frames + 2 * self.padding - k) // s + 1
            # [B, T_out, in, k]: tap j of output frame t is input frame s t + j; (in, k) is the weight's order.
            taps = jnp.stack([xp[:, j : j + s * (out - 1) + 1 : s] for j in range(k)], axis=-1)
            y = dot_weight(taps.reshape(batch, out, channels * k), weight.reshape(self.features, channels * k))
        else:
            y = jax.lax.conv_general_dilated(
                x,
                weight,
                window_strides=(s,),
                padding=[(self.padding, self.padding)],
                dimension_numbers=("NHC", "OIH", "NHC"),
                precision=HIGHEST,
                preferred_element_type=jnp.float32,
            )
        if self.use_bias:  # added in float32, then rounded once to the compute dtype
            y = y + param(self, "bias", nn.initializers.zeros, (self.features,)).astype(jnp.float32)
        return y.astype(x.dtype)


class GroupNormNWC(nn.Module):
    """torch's `nn.GroupNorm` on channels-last [B, T, W]: statistics over T and each group's channels in float32
    (the biased variance E[(x - mean)^2], two passes, as torch); `scale`, `bias` [W]. Returns float32 (callers
    cast).

    Each statistic is reduced over T first, per channel ([B, T, W] -> [B, W], the rows summed along the
    contiguous channels), then over the group's channels of the small [B, W]; normalising is then one pass with
    per-channel [B, 1, W] vectors. (Reducing [B, T, G, W/G] over axes 1 and 3 at once, then broadcasting the
    [B, G] statistics back through that 4-d view, made the real-size bf16 diffusion step on XLA:CPU 4-9%
    slower; fp32 within noise: benchmarks/README.md, "Waveform stage".)

    Attributes: groups, eps.
    """

    groups: int
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, frames, channels = x.shape
        if channels % self.groups:
            raise ValueError(f"GroupNorm: {channels} channels do not split into {self.groups} groups")
        scale = param(self, "scale", nn.initializers.ones, (channels,)).astype(jnp.float32)
        bias = param(self, "bias", nn.initializers.zeros, (channels,)).astype(jnp.float32)
        xf = x.astype(jnp.float32)
        mean = self._group_mean(xf.mean(axis=1))  # [B, 1, W]: each channel's group mean
        var = self._group_mean(jnp.square(xf - mean).mean(axis=1))
        return (xf - mean) * (jax.lax.rsqrt(var + self.eps) * scale) + bias

    def _group_mean(self, per_channel: jax.Array) -> jax.Array:
        """[B, W] per-channel means -> [B, 1, W]: the mean of each channel's group, repeated over the group."""
        batch, channels = per_channel.shape
        g = per_channel.reshape(batch, self.groups, channels // self.groups)
        return jnp.broadcast_to(g.mean(axis=-1, keepdims=True), g.shape).reshape(batch, 1, channels)
