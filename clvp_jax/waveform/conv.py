"""Channels-first 1-D convolutions and GroupNorm with torch's parameter layouts, shared by the waveform models.

Tensors are [B, W, T] as in the original code, so every weight loads without a transpose: `Conv1d.weight` is
[out, in / groups, k], `ConvTranspose1d.weight` is [in, out, k] (torch's layouts). Weight norm is folded into the
weight when a checkpoint is converted (`fold_weight_norm`); the modules hold plain weights.
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.config import group_norm_groups
from clvp_jax.layers import param

Padding = Literal["zeros", "reflect"]


class Conv1d(nn.Module):
    """torch's `nn.Conv1d` on [B, W_in, T] -> [B, W_out, T_out] (weight [out, in / groups, k], bias [out]).

    Attributes: features (out channels), kernel_size, stride, padding (each side), dilation, groups, use_bias,
    padding_mode ("zeros", or "reflect" as torch's `padding_mode="reflect"` and `nn.ReflectionPad1d`).
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    use_bias: bool = True
    padding_mode: Padding = "zeros"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_channels = x.shape[1]
        if in_channels % self.groups:
            raise ValueError(f"Conv1d: {in_channels} input channels do not split into {self.groups} groups")
        weight = param(
            self,
            "weight",
            nn.initializers.lecun_normal(),
            (self.features, in_channels // self.groups, self.kernel_size),
        )
        pad = [(self.padding, self.padding)]
        if self.padding_mode == "reflect" and self.padding:
            x = jnp.pad(x, ((0, 0), (0, 0), (self.padding, self.padding)), mode="reflect")
            pad = [(0, 0)]
        y = jax.lax.conv_general_dilated(
            x,
            weight.astype(x.dtype),
            window_strides=(self.stride,),
            padding=pad,
            rhs_dilation=(self.dilation,),
            dimension_numbers=("NCH", "OIH", "NCH"),
            feature_group_count=self.groups,
            precision=jax.lax.Precision.HIGHEST,
        )
        if self.use_bias:
            y = y + param(self, "bias", nn.initializers.zeros, (self.features,)).astype(y.dtype)[:, None]
        return y


class ConvTranspose1d(nn.Module):
    """torch's `nn.ConvTranspose1d` (groups 1) on [B, W_in, T] -> [B, W_out, (T - 1) s - 2 p + d (k - 1) + op + 1].

    The weight is torch's [in, out, k]. Computed as a convolution of the input dilated by the stride with the
    flipped kernel, which is exactly the transpose (gradient) of the strided convolution.

    Attributes: features (out channels), kernel_size, stride, padding, output_padding, dilation, use_bias.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    output_padding: int = 0
    dilation: int = 1
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        weight = param(self, "weight", nn.initializers.lecun_normal(), (x.shape[1], self.features, self.kernel_size))
        kernel = jnp.flip(weight, axis=2).transpose(1, 0, 2).astype(x.dtype)  # [out, in, k]
        edge = self.dilation * (self.kernel_size - 1) - self.padding
        y = jax.lax.conv_general_dilated(
            x,
            kernel,
            window_strides=(1,),
            padding=[(edge, edge + self.output_padding)],
            lhs_dilation=(self.stride,),
            rhs_dilation=(self.dilation,),
            dimension_numbers=("NCH", "OIH", "NCH"),
            precision=jax.lax.Precision.HIGHEST,
        )
        if self.use_bias:
            y = y + param(self, "bias", nn.initializers.zeros, (self.features,)).astype(y.dtype)[:, None]
        return y


def norm_groups(channels: int) -> int:
    """The original `normalization(channels)` group count (the AR conditioning encoder's rule,
    `clvp_jax.config.group_norm_groups`: 32 above 64 channels, 16 above 16, else 8, halved until it divides);
    fewer than 3 groups is refused, as the original asserts."""
    groups = group_norm_groups(channels)
    if groups <= 2:
        raise ValueError(f"GroupNorm over {channels} channels would have {groups} groups; the original needs > 2")
    return groups


class GroupNorm(nn.Module):
    """torch's `nn.GroupNorm` on [B, W, ...] (channels first), statistics in float32 (`scale`, `bias`: [W]).

    Attributes: groups, eps.
    """

    groups: int
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[1]
        if channels % self.groups:
            raise ValueError(f"GroupNorm: {channels} channels do not split into {self.groups} groups")
        scale = param(self, "scale", nn.initializers.ones, (channels,))
        bias = param(self, "bias", nn.initializers.zeros, (channels,))
        x32 = x.astype(jnp.float32)
        g = x32.reshape(x.shape[0], self.groups, -1)
        mean = g.mean(axis=-1, keepdims=True)
        var = jnp.square(g - mean).mean(axis=-1, keepdims=True)
        y = ((g - mean) * jax.lax.rsqrt(var + self.eps)).reshape(x.shape)
        shape = (1, channels) + (1,) * (x.ndim - 2)
        y = y * scale.astype(jnp.float32).reshape(shape) + bias.astype(jnp.float32).reshape(shape)
        return y.astype(x.dtype)


def fold_weight_norm(weight_g: np.ndarray, weight_v: np.ndarray) -> np.ndarray:
    """torch's `weight_norm(dim=0)` folded: w = g * v / ||v||, the norm over every axis but the first.

    For `Conv1d` the first axis is the output channel; for `ConvTranspose1d` ([in, out, k]) it is the INPUT
    channel, as torch's default `dim=0` makes it. Computed in float64 and rounded once.
    """
    v = np.asarray(weight_v, np.float64)
    g = np.asarray(weight_g, np.float64)
    if g.shape != (v.shape[0],) + (1,) * (v.ndim - 1):
        raise ValueError(f"weight norm: weight_g {g.shape} does not match weight_v {v.shape} (dim=0)")
    norm = np.sqrt(np.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))
    return (g * v / norm).astype(np.asarray(weight_v).dtype)
