"""The 24 kHz, 100-bin log-mel of Tortoise's waveform stage (`wav_to_univnet_mel`, `TacotronSTFT`), and the
normalisation pair the diffusion model's output mels use.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here B clips, A samples at 24 kHz; N = 1 + A // hop).

Per clip: clip to [-1, 1] -> reflect-pad n_fft / 2 each side -> frames of n_fft every hop samples -> periodic
Hann window -> |DFT| (magnitude: power 1, not the AR mel's power 2) -> Slaney-scale mel filters with Slaney area
normalisation, 0..12 kHz -> natural log of max(., 1e-5). Not normalised: this is the diffusion *conditioning* input
and the vocoder input; the diffusion model *generates* mels normalised to [-1, 1] (`normalize_tacotron_mel`).

The original computes the STFT as a float32 convolution with a windowed float32 DFT basis (1024 products per bin);
here it is a float64 FFT of the frames times the same float32 window, then the same float32 filters with float64
sums. The results agree with the original to its own float32 rounding: 2.9e-6 on mel values up to 5 (about 6 ulps),
the same difference as with the original's float32 basis in float64 arithmetic, at a sixteenth of the cost of that
matrix product (tests/test_waveform_frontend.py). The mel filters are re-derived from the Slaney definition (the
`librosa.filters.mel(htk=False, norm="slaney")` that the original calls) and checked against librosa in the tests.
"""

from __future__ import annotations

import functools

import numpy as np

SAMPLING_RATE = 24000  # Hz
N_FFT = 1024  # samples per STFT frame (42.7 ms); also the window length
HOP_LENGTH = 256  # samples between frames (10.7 ms); the vocoder's upsampling factor
N_MELS = 100
MEL_FMIN = 0.0  # Hz
MEL_FMAX = 12000.0  # Hz (Nyquist)
LOG_FLOOR = 1e-5  # log(max(mel, 1e-5)): silence -> ln(1e-5) = -11.5129
INPUT_LIMIT = 10.0  # the original asserts |samples| <= 10 before clipping to [-1, 1]
TACOTRON_MEL_MAX = 2.3143386840820312  # the original's constants (float32 values written out)
TACOTRON_MEL_MIN = -11.512925148010254  # = float32(ln(1e-5))

# Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above (27 steps per factor 6.4).
_SLANEY_F_SP = 200.0 / 3  # Hz per mel in the linear part
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP  # 15 mels
_SLANEY_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_slaney_mel(hz: np.ndarray | float) -> np.ndarray:
    hz = np.asarray(hz, np.float64)
    linear = hz / _SLANEY_F_SP
    log = _SLANEY_MIN_LOG_MEL + np.log(np.maximum(hz, _SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
    return np.where(hz >= _SLANEY_MIN_LOG_HZ, log, linear)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    linear = mel * _SLANEY_F_SP
    log = _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (mel - _SLANEY_MIN_LOG_MEL))
    return np.where(mel >= _SLANEY_MIN_LOG_MEL, log, linear)


@functools.cache
def slaney_mel_filters(
    sampling_rate: int = SAMPLING_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = MEL_FMIN,
    fmax: float = MEL_FMAX,
) -> np.ndarray:
    """Triangular Slaney-scale mel filters with Slaney area normalisation (2 / bandwidth), float32 [F, Y].

    Each triangle is evaluated in float64 and stored as float32, then scaled by its float64 area factor and
    rounded again, the order of librosa's computation (so the float32 values agree with it).
    """
    if not 0 <= fmin < fmax <= sampling_rate / 2:
        raise ValueError(
            f"mel filters: need 0 <= fmin < fmax <= sampling_rate / 2, got {fmin}, {fmax}, {sampling_rate}"
        )
    bins = np.fft.rfftfreq(n_fft, 1.0 / sampling_rate)  # [Y] Hz
    edges = _slaney_mel_to_hz(np.linspace(_hz_to_slaney_mel(fmin), _hz_to_slaney_mel(fmax), n_mels + 2))  # [F + 2]
    widths = np.diff(edges)  # [F + 1]
    offsets = edges[:, None] - bins[None, :]  # [F + 2, Y]: edge minus bin frequency
    rising = -offsets[:-2] / widths[:-1, None]  # (f - lower edge) / (centre - lower edge)
    falling = offsets[2:] / widths[1:, None]  # (upper edge - f) / (upper edge - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)  # [F, Y]
    area = 2.0 / (edges[2:] - edges[:-2])  # [F]
    filters = (filters * area[:, None]).astype(np.float32)
    filters.flags.writeable = False
    return filters


@functools.cache
def _hann_window(n_fft: int) -> np.ndarray:
    """The periodic Hann window as the original stores it (`scipy.signal.get_window`, rounded to float32)."""
    import scipy.signal  # local: only voice preparation needs it

    window = scipy.signal.get_window("hann", n_fft, fftbins=True).astype(np.float32).astype(np.float64)
    window.flags.writeable = False
    return window


def univnet_log_mel(waveforms: np.ndarray) -> np.ndarray:
    """The diffusion conditioning / vocoder log-mel of 24 kHz clips (`wav_to_univnet_mel(do_normalization=False)`).

    Args:
        waveforms: [A] or [B, A] float samples at 24 kHz, within [-10, 10] (clipped to [-1, 1] here).

    Returns:
        float32 [F, N] or [B, F, N] with F = 100 and N = 1 + A // 256 (102 400 samples -> 401 frames).

    Raises:
        ValueError: NaN / inf samples, samples beyond +-10 (the original asserts this), a clip shorter than
            n_fft / 2 + 1 samples (reflect padding needs that many), or an array of more than two dimensions.
    """
    x = np.asarray(waveforms)
    single = x.ndim == 1
    if x.ndim not in (1, 2):
        raise ValueError(f"univnet mel: expected [samples] or [clips, samples], got shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise ValueError(f"univnet mel: expected real float samples, got dtype {x.dtype}")
    x = np.atleast_2d(x).astype(np.float32)
    half = N_FFT // 2
    if x.shape[-1] <= half:
        raise ValueError(f"univnet mel: clips need more than {half} samples (reflect padding), got {x.shape[-1]}")
    if not np.isfinite(x).all():
        raise ValueError("univnet mel: the clips contain NaN or infinite samples; clean the signal first")
    if np.abs(x).max() > INPUT_LIMIT:
        raise ValueError(
            f"univnet mel: samples reach {np.abs(x).max():.3g}, beyond +-{INPUT_LIMIT}: pass float audio in [-1, 1] "
            "(divide int16 samples by 32768)"
        )
    x = np.clip(x, -1.0, 1.0)
    padded = np.pad(x, ((0, 0), (half, half)), mode="reflect")  # [B, A + n_fft]
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT, axis=-1)[:, ::HOP_LENGTH]  # [B, N, n_fft]
    import scipy.fft  # local, as scipy.signal above

    spectrum = scipy.fft.rfft(frames.astype(np.float64) * _hann_window(N_FFT), axis=-1)  # [B, N, Y] complex128
    magnitude = np.abs(spectrum).astype(np.float32)  # power 1, rounded as the original's float32 sqrt
    filters = slaney_mel_filters().astype(np.float64)  # [F, Y]
    mel = np.einsum("fy,bny->bfn", filters, magnitude.astype(np.float64)).astype(np.float32)  # [B, F, N]
    log_mel = np.log(np.maximum(mel, np.float32(LOG_FLOOR))).astype(np.float32)
    return log_mel[0] if single else log_mel


def normalize_tacotron_mel(mel: np.ndarray) -> np.ndarray:
    """Log-mel -> the diffusion model's [-1, 1] range: 2 (mel - MIN) / (MAX - MIN) - 1 (works on numpy and jax)."""
    return 2 * ((mel - TACOTRON_MEL_MIN) / (TACOTRON_MEL_MAX - TACOTRON_MEL_MIN)) - 1


def denormalize_tacotron_mel(norm_mel: np.ndarray) -> np.ndarray:
    """The inverse of `normalize_tacotron_mel`: (n + 1) / 2 (MAX - MIN) + MIN (works on numpy and jax)."""
    return ((norm_mel + 1) / 2) * (TACOTRON_MEL_MAX - TACOTRON_MEL_MIN) + TACOTRON_MEL_MIN
