"""Band-limited resampling as torchaudio's `functional.resample` computes it (the default "sinc_interp_hann").

Axis letters: see the package legend in `clvp_jax/__init__.py` (A input samples). Sizes without a letter: `blocks` of
`orig` input samples after the gcd reduction, `phases` (`new` output samples per block), `taps` (2 w + orig).

Tortoise resamples each 22.05 kHz voice clip to 24 kHz this way before the diffusion conditioning mel. The
method (public torchaudio documentation and its published algorithm; re-derived here, not copied):
  1. reduce the rates by their gcd: 22050 / 24000 -> orig 147, new 160;
  2. cutoff `base = min(orig, new) * rolloff` in units of the reduced rate (rolloff 0.99: just below Nyquist);
  3. half-width `w = ceil(lowpass_filter_width * orig / base)` input samples (width 6 -> w = 7);
  4. for output phase p (0 <= p < new) and tap j (0 <= j < 2 w + orig), the input offset in input samples is
     (j - w) / orig - p / new, scaled to t = base * offset and clamped to [-width, width]; the tap is
     sinc(pi t) * cos(pi t / (2 width))^2 * base / orig (a Hann window over the clamped range);
  5. zero-pad the input by w on the left and w + orig on the right, take frames of 2 w + orig samples every orig
     samples, multiply each by the [new, taps] kernel -> new outputs per frame, and keep the first
     ceil(new * A / orig) outputs.
The kernel is evaluated in float32 as torchaudio does for float32 clips; the products are summed in float64 and
rounded once, which agrees with torchaudio to one float32 ulp on speech (tests/test_waveform_frontend.py).
"""

from __future__ import annotations

import math

import numpy as np

LOWPASS_FILTER_WIDTH = 6  # zero crossings of the sinc on each side of the centre tap (torchaudio's default)
ROLLOFF = 0.99  # cutoff as a fraction of the lower Nyquist frequency (torchaudio's default)


def sinc_resample_kernel(
    orig_freq: int,
    new_freq: int,
    lowpass_filter_width: int = LOWPASS_FILTER_WIDTH,
    rolloff: float = ROLLOFF,
    dtype: np.dtype = np.float32,
) -> tuple[np.ndarray, int]:
    """The polyphase kernel [phases, taps] and its half-width w, for gcd-reduced rates `orig_freq`, `new_freq`.

    Every step is evaluated in `dtype`, as torchaudio evaluates it in the waveform's dtype (float32 for Tortoise's
    clips): with a float64 kernel the resampled speech differs from torchaudio's by up to ~5e-6, with this float32
    one by one float32 ulp (measured on the fixture clips).
    """
    dtype = np.dtype(dtype)
    base = min(orig_freq, new_freq) * rolloff
    width = math.ceil(lowpass_filter_width * orig_freq / base)
    taps = np.arange(-width, width + orig_freq, dtype=dtype) / dtype.type(orig_freq)  # [taps] offsets, input periods
    phases = np.arange(0, -new_freq, -1, dtype=dtype) / dtype.type(new_freq)  # [phases] minus each output's offset
    t = (phases[:, None] + taps[None, :]) * dtype.type(base)  # [phases, taps] in units of the cutoff period
    t = np.clip(t, -lowpass_filter_width, lowpass_filter_width).astype(dtype)
    window = np.cos(t * dtype.type(math.pi) / dtype.type(lowpass_filter_width) / dtype.type(2)) ** 2  # Hann
    x = t * dtype.type(math.pi)
    sinc = np.where(x == 0, dtype.type(1), np.sin(x) / np.where(x == 0, dtype.type(1), x)).astype(dtype)
    return sinc * (window * dtype.type(base / orig_freq)), width


def resample(
    waveforms: np.ndarray,
    orig_freq: int,
    new_freq: int,
    lowpass_filter_width: int = LOWPASS_FILTER_WIDTH,
    rolloff: float = ROLLOFF,
) -> np.ndarray:
    """Resample along the last axis from `orig_freq` to `new_freq` Hz, as `torchaudio.functional.resample`.

    Args:
        waveforms: [..., A] float samples.
        orig_freq, new_freq: sampling rates in Hz (positive integers).
        lowpass_filter_width, rolloff: the sinc's zero crossings per side and the cutoff fraction (torchaudio's
            defaults, which Tortoise uses).

    Returns:
        float32 [..., ceil(A * new / orig)] (A * new / orig reduced by the gcd); the input as float32 when the
        rates are equal.
    """
    if int(orig_freq) != orig_freq or int(new_freq) != new_freq or orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"resample: rates must be positive integers in Hz, got {orig_freq} -> {new_freq}")
    if lowpass_filter_width <= 0 or not 0 < rolloff <= 1:
        raise ValueError(
            f"resample: need lowpass_filter_width > 0 and 0 < rolloff <= 1, got {lowpass_filter_width}, {rolloff}"
        )
    x = np.asarray(waveforms)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"resample: expected samples along the last axis, got shape {x.shape}")
    if orig_freq == new_freq:
        return x.astype(np.float32)
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    kernel, width = sinc_resample_kernel(orig, new, lowpass_filter_width, rolloff)  # [phases, taps] float32
    kernel = kernel.astype(np.float64)
    lead, n = x.shape[:-1], x.shape[-1]
    flat = x.reshape(-1, n).astype(np.float64)  # [B, A]
    padded = np.pad(flat, ((0, 0), (width, width + orig)))  # [B, A + 2 w + orig]
    frames = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1], axis=-1)[:, ::orig]  # [B, blocks, taps]
    out = np.einsum("bfk,pk->bfp", frames, kernel).reshape(flat.shape[0], -1)  # [B, blocks * phases]
    target = -(-new * n // orig)  # ceil(new * A / orig)
    return out[:, :target].reshape(*lead, target).astype(np.float32)
