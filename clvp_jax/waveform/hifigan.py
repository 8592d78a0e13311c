"""api_fast's HiFiGAN decoder (`hifidecoder.pth`, `tortoise.models.hifigan_decoder.HifiganGenerator`): AR latents
straight to 24 kHz audio, the fast preview path with no diffusion (spec §7).

`inference(latents, g)`: the latents [B, M, D] are linearly interpolated along time by scale factor 4, then by
24000 / 22050 (PyTorch's scale-factor source mapping, align_corners False: output length floor(4M * 24000 / 22050)
= the diffusion's N), then `forward`: conv_pre (k7, zero padding) + cond_layer(g) (1x1, added once, broadcast over
time); for each upsampler LeakyReLU(0.1), ConvTranspose1d, then the mean of its ResBlock1s (kernels 3, 7, 11); a
final LeakyReLU with torch's default slope 0.01 (not 0.1), conv_post (k7), tanh.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here M AR latent frames, D latent width `in_channels`,
D_g the speaker-embedding width `cond_channels`, N interpolated frames, W channels, A samples).

Where this differs from the original on purpose: weight norm is folded into plain weights at conversion (the
original keeps it and recomputes the weights on every call: same numbers); the speaker embedding is per row
([B, D_g]; the original unsqueezes it to batch 1 and is only correct for B = 1); the output stays on the caller's
device (the original moves its input to "cuda").
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.config import ConfigError
from clvp_jax.waveform.conv import Conv1d, ConvTranspose1d

LRELU_SLOPE = 0.1  # every LeakyReLU but the last
FINAL_LRELU_SLOPE = 0.01  # torch's F.leaky_relu default, used before conv_post
PRE_POST_KERNEL = 7
LATENT_SCALE_FACTORS = (1024 / 256, 24000 / 22050)  # code rate -> 22.05 kHz mel rate -> 24 kHz mel rate


@dataclasses.dataclass(frozen=True)
class HifiganConfig:
    """`HifiganGenerator`'s constructor arguments (defaults = api_fast's `hifidecoder.pth`).

    Attributes:
      in_channels: latent width D (1024, the AR model's width).
      out_channels: audio channels (1).
      resblock_type: "1" (three dilated conv pairs per block; the only type Tortoise uses and the only one here).
      resblock_dilation_sizes: per resblock kernel, the 3 dilations of its first convs.
      resblock_kernel_sizes: kernel of each of the resblocks that follow every upsampler (odd, 'same').
      upsample_kernel_sizes: ConvTranspose kernel of each upsampler.
      upsample_initial_channel: conv_pre width; halved by every upsampler.
      upsample_factors: stride of each upsampler (product = samples per interpolated frame, 256).
      cond_channels: speaker-embedding width D_g (0: no cond_layer).
      inference_padding: kept for the original's signature; unused (its `inference` has the padding commented out).
      conv_pre_weight_norm, conv_post_weight_norm: whether the state dict stores those convs in weight-norm form
        (only the converter's output format depends on them).
      conv_post_bias: whether conv_post has a bias.
    """

    in_channels: int = 1024
    out_channels: int = 1
    resblock_type: str = "1"
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    upsample_initial_channel: int = 512
    upsample_factors: tuple[int, ...] = (8, 8, 2, 2)
    cond_channels: int = 1024
    inference_padding: int = 5
    conv_pre_weight_norm: bool = True
    conv_post_weight_norm: bool = True
    conv_post_bias: bool = True

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        set_("resblock_dilation_sizes", tuple(tuple(d) for d in self.resblock_dilation_sizes))
        for name in ("resblock_kernel_sizes", "upsample_kernel_sizes", "upsample_factors"):
            set_(name, tuple(getattr(self, name)))

        def positive(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= 1

        for name in ("in_channels", "out_channels", "upsample_initial_channel"):
            if not positive(getattr(self, name)):
                raise ConfigError(f"HifiganConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not (isinstance(self.cond_channels, int) and self.cond_channels >= 0):
            raise ConfigError(f"HifiganConfig.cond_channels must be >= 0 (0: no cond_layer), got {self.cond_channels}")
        if self.resblock_type != "1":
            raise ConfigError(
                f"HifiganConfig.resblock_type {self.resblock_type!r} is not supported: only '1' (ResBlock1, what "
                "Tortoise's hifidecoder.pth uses) is implemented"
            )
        for name in ("resblock_kernel_sizes", "upsample_kernel_sizes", "upsample_factors"):
            if not getattr(self, name) or not all(positive(v) for v in getattr(self, name)):
                raise ConfigError(f"HifiganConfig.{name} must be a non-empty list of positive integers")
        if any(k % 2 == 0 for k in self.resblock_kernel_sizes):
            raise ConfigError(
                f"HifiganConfig.resblock_kernel_sizes must be odd ('same' padding), got {self.resblock_kernel_sizes}"
            )
        if len(self.resblock_dilation_sizes) != len(self.resblock_kernel_sizes):
            raise ConfigError("HifiganConfig: one resblock_dilation_sizes entry per resblock kernel size is needed")
        if not all(len(d) == 3 and all(positive(v) for v in d) for d in self.resblock_dilation_sizes):
            raise ConfigError(
                f"HifiganConfig: ResBlock1 takes 3 positive dilations each, got {self.resblock_dilation_sizes}"
            )
        if len(self.upsample_kernel_sizes) != len(self.upsample_factors):
            raise ConfigError("HifiganConfig: one upsample kernel size per upsample factor is needed")
        if any(k < u for k, u in zip(self.upsample_kernel_sizes, self.upsample_factors, strict=True)):
            raise ConfigError("HifiganConfig: every upsample kernel size must be >= its factor (padding (k - u) // 2)")
        if self.upsample_initial_channel % 2 ** len(self.upsample_factors):
            raise ConfigError(
                f"HifiganConfig.upsample_initial_channel {self.upsample_initial_channel} must be divisible by "
                f"2^{len(self.upsample_factors)} (it is halved by every upsampler)"
            )

    @property
    def upsampling(self) -> int:
        """Samples per interpolated latent frame (product of the upsample factors; 256)."""
        return math.prod(self.upsample_factors)

    @classmethod
    def tortoise(cls) -> HifiganConfig:
        """api_fast's `hifidecoder.pth` (the constructor arguments of `TextToSpeech.__init__`)."""
        return cls()

    @classmethod
    def tiny(cls) -> HifiganConfig:
        """The tiny random-weight fixture (`tests/data/tortoise_tiny_waveform`, `original_config.json`)."""
        return cls(
            in_channels=32, resblock_dilation_sizes=((1, 3, 5), (1, 3, 5)), resblock_kernel_sizes=(3, 5),
            upsample_kernel_sizes=(8, 4), upsample_initial_channel=16, upsample_factors=(4, 2), cond_channels=32,
        )  # fmt: skip

    @classmethod
    def from_original(cls, kwargs: Mapping[str, Any]) -> HifiganConfig:
        """From `HifiganGenerator(**kwargs)`'s keyword arguments; unknown names raise `ConfigError`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - fields)
        if unknown:
            raise ConfigError(f"unknown HifiganGenerator argument(s) {unknown}; valid: {sorted(fields)}")
        return cls(**kwargs)

    def to_original(self) -> dict[str, Any]:
        """The `HifiganGenerator(**kwargs)` keyword arguments (lists)."""
        out = dataclasses.asdict(self)
        out["resblock_dilation_sizes"] = [list(d) for d in self.resblock_dilation_sizes]
        for name in ("resblock_kernel_sizes", "upsample_kernel_sizes", "upsample_factors"):
            out[name] = list(out[name])
        return out


def _lrelu(x: jax.Array, slope: float = LRELU_SLOPE) -> jax.Array:
    return jax.nn.leaky_relu(x, negative_slope=slope)


def _linear_taps(size: int, scale: float) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's `interpolate(mode='linear', scale_factor=scale, align_corners=False)` source taps for `size`
    input frames: (output size, index0, index1, lambda1), computed in float32 as its CPU kernel does."""
    out_size = math.floor(float(size) * scale)
    if out_size == size:  # torch copies when the sizes agree
        idx = np.arange(size)
        return out_size, idx, idx, np.zeros(size, np.float32)
    ratio = np.float32(1.0 / scale)  # torch uses 1 / scale_factor, not in / out, when a scale factor is given
    # ratio * (d + 0.5) - 0.5 rounded once to float32 (torch's kernel compiles to a fused multiply-add; the
    # float64 product of two float32 values and the subtraction are exact, so this is that fma bit for bit).
    src = (np.float64(ratio) * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    idx0 = np.minimum(np.floor(src).astype(np.int64), size - 1)
    lam1 = np.clip(src - idx0.astype(np.float32), 0.0, 1.0).astype(np.float32)
    idx1 = idx0 + (idx0 < size - 1)
    return out_size, idx0, idx1, lam1


def interpolate_linear(x: jax.Array, scale: float) -> jax.Array:
    """[B, W, M] -> [B, W, floor(M * scale)]: torch's linear interpolation by scale factor (align_corners False).

    Output frame d reads source position max((d + 0.5) / scale - 0.5, 0): with the scale given (not the
    size ratio, which would shift frames by up to 0.8 of a frame at M = 500). The taps are static.
    """
    _, idx0, idx1, lam1 = _linear_taps(x.shape[2], scale)
    lam1 = jnp.asarray(lam1, x.dtype)
    return x[:, :, idx0] * (1 - lam1) + x[:, :, idx1] * lam1


def latent_frames(codes: int) -> int:
    """Frames after `inference`'s two interpolations of `codes` latent frames: floor(4M * 24000 / 22050)."""
    n = codes
    for scale in LATENT_SCALE_FACTORS:
        n = math.floor(float(n) * scale)
    return n


class ResBlock1(nn.Module):
    """Three times x = x + conv2(LReLU(conv1(LReLU(x)))) (conv1 dilated, conv2 not), 'same' padding. [B, W, T].

    The convolutions run in `dtype`; the residual x stays in its own dtype (float32 in `HifiganGenerator`).
    """

    kernel_size: int
    dilations: tuple[int, ...]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, channels = self.kernel_size, x.shape[1]
        for j, d in enumerate(self.dilations):
            conv1 = Conv1d(channels, k, padding=d * (k - 1) // 2, dilation=d, name=f"convs1_{j}")
            conv2 = Conv1d(channels, k, padding=(k - 1) // 2, name=f"convs2_{j}")
            x = x + conv2(_lrelu(conv1(_lrelu(x).astype(self.dtype)))).astype(x.dtype)
        return x


class HifiganGenerator(nn.Module):
    """`HifiganGenerator.forward(x, g)`: features [B, D, N] and speaker embedding g [B, D_g] -> audio
    [B, out_channels, N * prod(upsample_factors)] in [-1, 1].

    Attributes:
      config: the model's `HifiganConfig`.
      dtype: compute dtype of the convolutions (parameters stay float32). With bfloat16 the residual streams,
        the average over the resblocks and conv_post + tanh stay float32; the output is float32.
    """

    config: HifiganConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, g: jax.Array | None = None) -> jax.Array:
        cfg = self.config
        if x.ndim != 3 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"HiFiGAN: features must be [B, {cfg.in_channels}, L], got {x.shape}")
        x = x.astype(self.dtype)
        o = Conv1d(cfg.upsample_initial_channel, PRE_POST_KERNEL, padding=3, name="conv_pre")(x)  # [B, W_0, N]
        o = o.astype(jnp.float32)
        if cfg.cond_channels:
            if g is None or g.shape != (x.shape[0], cfg.cond_channels):
                got = None if g is None else g.shape
                raise ValueError(
                    f"HiFiGAN: speaker embedding g must be [B, G] = {(x.shape[0], cfg.cond_channels)}, got {got}"
                )
            cond = Conv1d(cfg.upsample_initial_channel, 1, name="cond_layer")(g.astype(self.dtype)[:, :, None])
            o = o + cond.astype(jnp.float32)  # [B, W_0, 1] broadcast over time, once
        kernels = len(cfg.resblock_kernel_sizes)
        for i, (u, k) in enumerate(zip(cfg.upsample_factors, cfg.upsample_kernel_sizes, strict=True)):
            channels = cfg.upsample_initial_channel // 2 ** (i + 1)
            upsample = ConvTranspose1d(channels, k, stride=u, padding=(k - u) // 2, name=f"ups_{i}")
            o = upsample(_lrelu(o).astype(self.dtype)).astype(jnp.float32)
            total = None
            for j, (rk, dil) in enumerate(zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True)):
                y = ResBlock1(rk, dil, self.dtype, name=f"resblocks_{i * kernels + j}")(o)
                total = y if total is None else total + y
            o = total / kernels  # [B, W_i, N prod(u_0..u_i)]
        post = Conv1d(cfg.out_channels, PRE_POST_KERNEL, padding=3, use_bias=cfg.conv_post_bias, name="conv_post")
        o = post(_lrelu(o, FINAL_LRELU_SLOPE))
        return jnp.tanh(o).astype(jnp.float32)  # [B, 1, A]

    def inference(self, latents: jax.Array, g: jax.Array | None = None) -> jax.Array:
        """api_fast's `inference(latents, g)`: AR latents [B, M, D] (+ g [B, D_g]) -> audio [B, 1, 256 N],
        N = floor(4M * 24000 / 22050)."""
        x = jnp.swapaxes(latents, 1, 2).astype(self.dtype)  # [B, D, M]
        for scale in LATENT_SCALE_FACTORS:
            x = interpolate_linear(x, scale)  # [B, D, 4M], then [B, D, N]
        return self(x, g)


@functools.partial(jax.jit, static_argnames=("config", "dtype"))
def hifigan_inference(
    params: Mapping[str, Any],
    latents: jax.Array,
    speaker_embedding: jax.Array | None = None,
    *,
    config: HifiganConfig,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """Jitted `HifiganGenerator.inference`: AR latents [B, M, D] and the AR conditioning latent [B, D_g] (the
    speaker embedding api_fast passes) -> audio [B, 1, 256 N] at 24 kHz. Compiles once per shape."""
    return HifiganGenerator(config, dtype).apply(
        {"params": params}, latents, speaker_embedding, method=HifiganGenerator.inference
    )
