"""Tortoise's UnivNet vocoder (`vocoder.pth`, `tortoise.models.vocoder.UnivNetGenerator`): log-mel -> 24 kHz audio.

Architecture (spec §5): noise z -> conv_pre (k7, reflect padding) -> one `LVCBlock` per stride (LeakyReLU +
ConvTranspose upsampling by the stride, then for each dilation a LeakyReLU / dilated conv / LeakyReLU followed by a
location-variable convolution (LVC) whose 3-tap kernels and biases are predicted from the mel, frame by frame, and
a gated residual update x += sigmoid(y[:W]) tanh(y[W:])) -> LeakyReLU, conv_post (k7, reflect), tanh.
`inference` appends 10 frames of -11.5129 to the mel, runs the generator and cuts the last 10 * hop samples.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here F = 100 mel bins, N mel frames, W = `channel_size`
channels, 2W the LVC output channels, A samples). Sizes without a letter: `layers` LVC layers (one per dilation), `taps`
kernel taps, `hop` samples per mel frame at a block (the product of the strides so far), `noise_dim` noise channels.

Where this differs from the original on purpose:
  * weight norm is folded into plain weights when a checkpoint is converted (as `eval(inference=True)` does);
  * the LVC is one batched contraction over all frames of [B, W, taps, N, hop] windows (three shifted views of the
    padded input, no gather), not torch's chain of `unfold`s, and the kernel predictor's big `kernel_conv` is one
    matmul over unfolded taps (`FrameConv1d`); the maths is the same;
  * the noise z is drawn from an explicit key (`univnet_noise`) or given, never from a global generator.
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

from clvp_jax.config import ConfigError
from clvp_jax.layers import param
from clvp_jax.waveform.conv import Conv1d, ConvTranspose1d

# Fixed by the original code (not constructor arguments).
KPNET_HIDDEN_CHANNELS = 64  # kernel-predictor width
KPNET_RESIDUAL_BLOCKS = 3  # kernel-predictor residual blocks
KPNET_INPUT_KERNEL = 5  # kernel-predictor input conv (pad 2)
LVC_KERNEL_SIZE = 3  # taps of the location-variable convolution (and of the dilated convs before it)
PRE_POST_KERNEL = 7  # conv_pre / conv_post (reflect pad 3)
INFERENCE_PAD_FRAMES = 10  # frames appended by `inference` (and their samples cut off again)
INFERENCE_PAD_VALUE = -11.5129  # their log-mel value: ~ln(1e-5), as written in the original (not TACOTRON_MEL_MIN)

_ORIGINAL_NAMES = {"lReLU_slope": "lrelu_slope"}  # original constructor kwarg -> our field


@dataclasses.dataclass(frozen=True)
class UnivNetConfig:
    """`UnivNetGenerator`'s constructor arguments (spec §5; defaults = the real `vocoder.pth`).

    Attributes:
      noise_dim: channels of the noise input z.
      channel_size: width W of the generator (the LVC gate makes 2W).
      dilations: one LVC layer per dilation (of its plain conv; the LVC itself is always dilation 1).
      strides: upsampling factor of each block; their product is the number of samples per mel frame.
      lrelu_slope: negative slope of every LeakyReLU, kernel predictor included (`lReLU_slope` in the original).
      kpnet_conv_size: kernel size of the kernel predictor's residual, kernel and bias convs (odd, 'same').
      hop_length: samples per frame that `inference` cuts off, times 10 (the original never checks it against
        the strides' product; only that product sets the real upsampling).
      n_mel_channels: mel bins F of the conditioning input.
    """

    noise_dim: int = 64
    channel_size: int = 32
    dilations: tuple[int, ...] = (1, 3, 9, 27)
    strides: tuple[int, ...] = (8, 8, 4)
    lrelu_slope: float = 0.2
    kpnet_conv_size: int = 3
    hop_length: int = 256
    n_mel_channels: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "dilations", tuple(self.dilations))
        object.__setattr__(self, "strides", tuple(self.strides))
        for name in ("noise_dim", "channel_size", "kpnet_conv_size", "hop_length", "n_mel_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"UnivNetConfig.{name} must be a positive integer, got {value!r}")
        for name in ("dilations", "strides"):
            values = getattr(self, name)
            if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
                raise ConfigError(f"UnivNetConfig.{name} must be a non-empty list of positive integers, got {values}")
        if self.kpnet_conv_size % 2 == 0:
            raise ConfigError(
                f"UnivNetConfig.kpnet_conv_size must be odd ('same' padding (k - 1) // 2 keeps the frame count "
                f"only for odd k), got {self.kpnet_conv_size}"
            )
        if not isinstance(self.lrelu_slope, int | float) or not math.isfinite(self.lrelu_slope):
            raise ConfigError(f"UnivNetConfig.lrelu_slope must be a finite number, got {self.lrelu_slope!r}")

    @property
    def upsampling(self) -> int:
        """Samples per mel frame of the generator (product of the strides; 256 for the real model)."""
        return math.prod(self.strides)

    @property
    def kernel_channels(self) -> int:
        """Output channels of a block's `kernel_conv`: layers x W x 2W x taps (24 576 for the real model)."""
        return len(self.dilations) * self.channel_size * 2 * self.channel_size * LVC_KERNEL_SIZE

    @classmethod
    def tortoise(cls) -> UnivNetConfig:
        """The real `vocoder.pth` (`UnivNetGenerator()` with its defaults, as api.py builds it)."""
        return cls()

    @classmethod
    def tiny(cls) -> UnivNetConfig:
        """The tiny random-weight fixture (`tests/data/tortoise_tiny_waveform`, `original_config.json`)."""
        return cls(noise_dim=16, channel_size=4, dilations=(1, 3, 9), strides=(4, 4), hop_length=16)

    @classmethod
    def from_original(cls, kwargs: Mapping[str, Any]) -> UnivNetConfig:
        """From `UnivNetGenerator(**kwargs)`'s keyword arguments; unknown names raise `ConfigError`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        out, unknown = {}, []
        for key, value in kwargs.items():
            name = _ORIGINAL_NAMES.get(key, key)
            if name in fields:
                out[name] = tuple(value) if isinstance(value, list) else value
            else:
                unknown.append(key)
        if unknown:
            valid = sorted({next((k for k, v in _ORIGINAL_NAMES.items() if v == f), f) for f in fields})
            raise ConfigError(f"unknown UnivNetGenerator argument(s) {sorted(unknown)}; valid: {valid}")
        return cls(**out)

    def to_original(self) -> dict[str, Any]:
        """The `UnivNetGenerator(**kwargs)` keyword arguments (lists, original names)."""
        back = {v: k for k, v in _ORIGINAL_NAMES.items()}
        return {
            back.get(f.name, f.name): list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }


def _activation(config: UnivNetConfig):
    """Every LeakyReLU of the generator, the kernel predictor's included, has the config's slope."""
    return functools.partial(jax.nn.leaky_relu, negative_slope=config.lrelu_slope)


class FrameConv1d(nn.Module):
    """A stride-1, zero-'same'-padded Conv1d computed as one matmul over the unfolded taps: [B, W, N] ->
    [B, features, N], parameters as `Conv1d` (`weight` [out, in, taps], `bias` [out]).

    For the kernel predictor's `kernel_conv` (64 -> 24 576 channels at frame rate, a third of the vocoder's work)
    this contraction ran ~1.5-2x faster than XLA's convolution on the 2-core CPU; it is the same sum.
    """

    features: int
    kernel_size: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, frames = self.kernel_size, x.shape[2]
        weight = param(self, "weight", nn.initializers.lecun_normal(), (self.features, x.shape[1], k))
        bias = param(self, "bias", nn.initializers.zeros, (self.features,))
        padded = jnp.pad(x, ((0, 0), (0, 0), ((k - 1) // 2, (k - 1) // 2)))
        taps = jnp.stack([padded[:, :, j : j + frames] for j in range(k)], axis=2)  # [B, W, taps, N]
        y = jnp.einsum("bwjn,owj->bon", taps, weight.astype(x.dtype), precision=jax.lax.Precision.HIGHEST)
        return y + bias.astype(y.dtype)[:, None]


class KernelPredictor(nn.Module):
    """Predicts every LVC kernel and bias of one block from the mel, at frame rate.

    [B, F, N] -> kernels [B, layers, W, 2W, taps, N] (channel order in before out, as the original's `view`) and
    bias [B, layers, 2W, N]. The mel and the 64-wide hidden convs are float32 (a log-mel of -11.5 in bfloat16
    is off by up to 0.03, and these convs are cheap, at frame rate); `kernel_conv` and `bias_conv`, the bulk of
    the work, run in `dtype` and return it.
    """

    config: UnivNetConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        cfg, act = self.config, _activation(self.config)
        k, hidden = cfg.kpnet_conv_size, KPNET_HIDDEN_CHANNELS
        c = c.astype(jnp.float32)
        h = act(Conv1d(hidden, KPNET_INPUT_KERNEL, padding=2, name="input_conv_0")(c))  # [B, 64, N]
        for r in range(KPNET_RESIDUAL_BLOCKS):  # torch: Sequential(Dropout, conv, LReLU, conv, LReLU)
            y = act(Conv1d(hidden, k, padding=(k - 1) // 2, name=f"residual_convs_{r}_1")(h))
            h = h + act(Conv1d(hidden, k, padding=(k - 1) // 2, name=f"residual_convs_{r}_3")(y))
        h = h.astype(self.dtype)
        kernels = FrameConv1d(cfg.kernel_channels, k, name="kernel_conv")(h)  # [B, layers W 2W taps, N]
        layers, channels = len(cfg.dilations), cfg.channel_size
        bias = Conv1d(layers * 2 * channels, k, padding=(k - 1) // 2, name="bias_conv")(h)  # [B, layers 2W, N]
        batch, frames = c.shape[0], c.shape[2]
        kernels = kernels.reshape(batch, layers, channels, 2 * channels, LVC_KERNEL_SIZE, frames)
        return kernels, bias.reshape(batch, layers, 2 * channels, frames)


def location_variable_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array, hop: int) -> jax.Array:
    """The LVC: a 3-tap cross-correlation whose kernel and bias change every `hop` samples.

    out[b, o, f hop + s] = bias[b, o, f] + sum_{i, j} x_pad[b, i, f hop + s + j] kernel[b, i, o, j, f], with x
    zero-padded by one sample at both ends of the whole sequence (so a frame's first and last outputs read its
    neighbours' samples), dilation 1.

    Args:
      x: [B, W, N hop] input.
      kernel: [B, W, 2W, taps, N] per-frame kernels (taps = 3).
      bias: [B, 2W, N] per-frame biases.
      hop: samples per kernel frame.

    Returns:
      [B, 2W, N hop].
    """
    batch, channels, samples = x.shape
    taps, frames = kernel.shape[3], kernel.shape[4]
    if samples != frames * hop:
        raise ValueError(f"LVC: {samples} samples do not make {frames} frames of {hop}")
    pad = (taps - 1) // 2
    padded = jnp.pad(x, ((0, 0), (0, 0), (pad, pad)))
    # Three shifted views instead of an unfold: windows[b, i, j, f, s] = x_pad[b, i, f hop + s + j].
    windows = jnp.stack([padded[:, :, j : j + samples] for j in range(taps)], axis=2)
    windows = windows.reshape(batch, channels, taps, frames, hop)  # [B, W, taps, N, hop]
    out = jnp.einsum(
        "bijfs,biojf->bofs", windows, kernel, precision=jax.lax.Precision.HIGHEST, preferred_element_type=jnp.float32
    )  # [B, 2W, N, hop], summed in float32 whatever the inputs' dtype
    out = out + bias[..., None].astype(jnp.float32)
    return out.reshape(batch, -1, samples)


class LVCBlock(nn.Module):
    """One upsampling block: [B, W, N hop / s] (+ mel [B, F, N]) -> [B, W, N hop].

    Attributes: config, stride (s), hop (samples per mel frame after this block's upsampling), dtype (of the
    convolutions and the kernel predictor; the residual stream x, the LVC sums and the gate stay float32).
    """

    config: UnivNetConfig
    stride: int
    hop: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        cfg, s, act = self.config, self.stride, _activation(self.config)
        channels = x.shape[1]
        # Odd strides need output_padding 1 for the length to be exactly x s.
        upsample = ConvTranspose1d(
            channels, 2 * s, stride=s, padding=s // 2 + s % 2, output_padding=s % 2, name="convt_pre_1"
        )
        x = upsample(act(x).astype(self.dtype)).astype(jnp.float32)  # [B, W, N hop]
        kernels, bias = KernelPredictor(cfg, self.dtype, name="kernel_predictor")(c)
        for layer, dilation in enumerate(cfg.dilations):
            conv = Conv1d(
                channels, LVC_KERNEL_SIZE, padding=dilation * (LVC_KERNEL_SIZE - 1) // 2, dilation=dilation,
                name=f"conv_blocks_{layer}_1",
            )  # fmt: skip
            y = act(conv(act(x).astype(self.dtype)))
            y = location_variable_conv(y, kernels[:, layer], bias[:, layer], self.hop)  # [B, 2W, N hop] float32
            x = x + jax.nn.sigmoid(y[:, :channels]) * jnp.tanh(y[:, channels:])
        return x


class UnivNetGenerator(nn.Module):
    """`UnivNetGenerator.forward(c, z)`: mel [B, F, N] and noise [B, noise_dim, N] -> audio [B, 1, N * prod(strides)].

    Attributes:
      config: the model's `UnivNetConfig`.
      dtype: compute dtype of the convolutions and kernel predictors (parameters stay float32). With bfloat16,
        what accumulates error stays float32: the mel and the kernel predictors' hidden convs, the residual
        stream of every block (12 gated updates), the LVC's sums and gate, and conv_post + tanh (one output
        channel, cheap); the output is float32.
    """

    config: UnivNetConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, c: jax.Array, z: jax.Array) -> jax.Array:
        cfg = self.config
        if c.ndim != 3 or c.shape[1] != cfg.n_mel_channels:
            raise ValueError(f"UnivNet: mel must be [B, {cfg.n_mel_channels}, F], got {c.shape}")
        if z.shape != (c.shape[0], cfg.noise_dim, c.shape[2]):
            raise ValueError(
                f"UnivNet: noise must be [B, Z, F] = {(c.shape[0], cfg.noise_dim, c.shape[2])}, got {z.shape}"
            )
        c, x = c.astype(jnp.float32), z.astype(self.dtype)  # the mel stays float32 (see KernelPredictor)
        pad = (PRE_POST_KERNEL - 1) // 2
        x = Conv1d(cfg.channel_size, PRE_POST_KERNEL, padding=pad, padding_mode="reflect", name="conv_pre")(x)
        x = x.astype(jnp.float32)
        hop = 1
        for b, stride in enumerate(cfg.strides):
            hop *= stride
            x = LVCBlock(cfg, stride, hop, self.dtype, name=f"res_stack_{b}")(x, c)  # [B, W, N hop] float32
        x = Conv1d(1, PRE_POST_KERNEL, padding=pad, padding_mode="reflect", name="conv_post_1")(_activation(cfg)(x))
        return jnp.tanh(x).astype(jnp.float32)  # [B, 1, A]

    def inference(self, c: jax.Array, z: jax.Array) -> jax.Array:
        """`UnivNetGenerator.inference(c, z)`: mel [B, F, N] + noise [B, noise_dim, N + 10] -> audio in [-1, 1].

        Appends 10 frames of -11.5129 to the mel, runs the generator, drops the last 10 * hop_length samples
        and clamps to [-1, 1]: [B, 1, (N + 10) prod(strides) - 10 hop_length] (= N * 256 for the real model).
        """
        pad = jnp.full((c.shape[0], c.shape[1], INFERENCE_PAD_FRAMES), INFERENCE_PAD_VALUE, c.dtype)
        audio = self(jnp.concatenate([c, pad], axis=2), z)
        cut = INFERENCE_PAD_FRAMES * self.config.hop_length
        return jnp.clip(audio[:, :, : audio.shape[2] - cut], -1.0, 1.0)


def univnet_noise(key: jax.Array, batch: int, frames: int, config: UnivNetConfig) -> jax.Array:
    """The N(0, 1) noise `inference` takes for a [B, F, N] mel: [B, noise_dim, N + 10] float32."""
    return jax.random.normal(key, (batch, config.noise_dim, frames + INFERENCE_PAD_FRAMES), jnp.float32)


@functools.partial(jax.jit, static_argnames=("config", "dtype"))
def univnet_inference(
    params: Mapping[str, Any], mel: jax.Array, z: jax.Array, *, config: UnivNetConfig, dtype: Any = jnp.float32
) -> jax.Array:
    """Jitted `UnivNetGenerator.inference`: log-mel [B, F, N] (de-normalised, ~-11.5 .. 2) and noise
    [B, noise_dim, N + 10] -> audio [B, 1, A] in [-1, 1] at 24 kHz. Compiles once per (shape, config, dtype)."""
    return UnivNetGenerator(config, dtype).apply({"params": params}, mel, z, method=UnivNetGenerator.inference)


def vocode(
    params: Mapping[str, Any],
    mel: jax.Array,
    *,
    config: UnivNetConfig,
    key: jax.Array | None = None,
    z: jax.Array | None = None,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """Log-mel [B, F, N] -> 24 kHz audio [B, 1, A] in [-1, 1], with the noise drawn from `key` or given as `z`.

    Exactly one of `key` (draws z with `univnet_noise`) and `z` ([B, noise_dim, N + 10], e.g. a recorded draw) is
    needed: the original draws z at random on every call, so the output is only reproducible with one of them.
    """
    mel = jnp.asarray(mel)
    if mel.ndim != 3 or mel.shape[1] != config.n_mel_channels:
        raise ValueError(f"vocode: mel must be [B, {config.n_mel_channels}, F], got shape {mel.shape}")
    if (key is None) == (z is None):
        raise ValueError("vocode: pass exactly one of key= (to draw the noise) and z= (a given noise)")
    if z is None:
        z = univnet_noise(key, mel.shape[0], mel.shape[2], config)
    want = (mel.shape[0], config.noise_dim, mel.shape[2] + INFERENCE_PAD_FRAMES)
    if tuple(z.shape) != want:
        raise ValueError(f"vocode: noise z must be [B, Z, F + 10] = {want} for this mel, got {tuple(z.shape)}")
    return univnet_inference(params, mel, jnp.asarray(z), config=config, dtype=dtype)
