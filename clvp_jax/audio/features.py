"""`ClvpFeatureExtractor`: Tortoise / CLVP log-mel features, identical to transformers' extractor (spec section 10).

Axis letters: see the package legend in `clvp_jax/__init__.py` (here B clips; N = 1 + A // hop frames).

Per clip: reflect-pad n_fft/2 on both sides -> frames of n_fft every hop samples -> periodic Hann window -> rfft,
rounded to complex64 as the reference stores it -> power |X|^2 (float64) -> HTK-scale mel filters with Slaney area
normalisation, 0..8000 Hz whatever the sampling rate, bin frequencies from the integer sr // 2 -> max(·, 1e-10)
-> ln(max(·, 1e-5)) -> divided by `mel_norms` when given -> float32. The whole batch is one vectorised numpy
computation (strided frames, one rfft call, one matmul) instead of the reference's Python loop over frames.

Beyond the reference (each documented where it applies):
- `sampling_rate` other than the extractor's: the clips are resampled (librosa / soxr) instead of raising.
- multi-channel input is down-mixed (mean of the channels) following the `layout` rule of `__call__`; the
  reference reads every 2-D array as a batch, so a (samples, 2) stereo array becomes `samples` two-sample clips
  and exhausts memory.
- empty clips, NaN / inf samples, complex or non-numeric data and arrays of more than two dimensions raise
  `AudioError` naming the problem (the reference crashes later or returns NaN features).
- `padding=False` with clips of different lengths returns a list of per-clip features (the reference raises).
"""

from __future__ import annotations

import functools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from clvp_jax.audio.io import AudioError, as_clips, resample
from clvp_jax.fs import write_text
from clvp_jax.text.tokenizer import BatchEncoding

SAMPLING_RATE = 22050  # Hz
N_FFT = 1024  # samples per STFT frame (46 ms)
HOP_LENGTH = 256  # samples between frames (11.6 ms)
N_MELS = 80
DEFAULT_AUDIO_LENGTH = 6  # seconds: clips are padded / truncated to 6 s = 132300 samples by default
MEL_FMAX = 8000.0  # Hz, fixed whatever the sampling rate (as in Tortoise and the reference)
LOG_FLOOR = 1e-5  # log(max(mel, 1e-5)); silence -> ln(1e-5) = -11.5129
MEL_FLOOR = 1e-10
_FRAMES_PER_BLOCK = 1024  # frames per rfft call: 8 MB temporaries, and the reference-sized clip is one block


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)  # HTK mel scale


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filter_bank(n_mels: int = N_MELS, n_fft: int = N_FFT, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Triangular HTK-scale mel filters with Slaney area normalisation, float64 of shape [Y, F]."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(MEL_FMAX), n_mels + 2))  # [F + 2] Hz
    bins = np.linspace(0, sampling_rate // 2, n_fft // 2 + 1)  # [Y] Hz (integer Nyquist, as the reference)
    offsets = edges[None, :] - bins[:, None]  # [Y, F + 2]: edge minus bin frequency
    widths = np.diff(edges)  # [F + 1]
    rising = -offsets[:, :-2] / widths[:-1]  # (f - lower edge) / (centre - lower edge)
    falling = offsets[:, 2:] / widths[1:]  # (upper edge - f) / (upper edge - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling))  # [Y, F]
    return filters * (2.0 / (edges[2:] - edges[:-2]))[None, :]


def hann_window(n_fft: int = N_FFT) -> np.ndarray:
    """Periodic Hann window (the first n_fft points of a symmetric window of n_fft + 1), float64."""
    return np.hanning(n_fft + 1)[:-1]


@functools.cache
def _fft_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, 8)), thread_name_prefix="clvp-mel")


def log_mel_spectrogram(
    waveforms: np.ndarray,
    filters: np.ndarray,
    mel_norms: np.ndarray | None = None,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
) -> np.ndarray:
    """Log-mel features of equal-length clips.

    Args:
        waveforms: [B, A] float32 samples.
        filters: [Y, F] mel filters from `mel_filter_bank`.
        mel_norms: optional [F] per-bin divisors applied after the log.
        n_fft, hop_length: STFT frame length and step, in samples.

    Returns:
        [B, F, N] float32 with N = 1 + A // hop_length.
    """
    half = n_fft // 2
    padded = np.pad(waveforms, ((0, 0), (half, half)), mode="reflect")  # [B, A + n_fft]; float64 at the window
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop_length]  # [B, N, n_fft]
    batch, n_frames, _ = frames.shape
    window = hann_window(n_fft)
    # Bins above the highest filter's upper edge have zero weight: skip them (bit-identical result).
    used = int(np.nonzero(filters.any(axis=1))[0].max()) + 1 if filters.any() else 1
    bank = np.ascontiguousarray(filters[:used])  # [Y', F]
    power = np.empty((batch, n_frames, used), dtype=np.float64)  # [B, N, Y']

    import scipy.fft  # local: a process that only generates from saved latents never loads it (~12 MiB)

    def clip_power(b: int) -> None:  # blocks of frames keep the FFT temporaries small
        for start in range(0, n_frames, _FRAMES_PER_BLOCK):
            block = slice(start, start + _FRAMES_PER_BLOCK)
            spectrum = scipy.fft.rfft(frames[b, block] * window, axis=-1)[:, :used].astype(np.complex64)
            power[b, block] = np.abs(spectrum, dtype=np.float64) ** 2  # after the reference's complex64 rounding

    # Clips are independent and scipy's FFT releases the GIL: one thread per core (same values, in any order).
    if batch > 1:
        list(_fft_pool().map(clip_power, range(batch)))
    else:
        clip_power(0)
    mel = power.reshape(batch * n_frames, used) @ bank  # one matrix product for the batch: [B * N, F]
    mel = mel.reshape(batch, n_frames, -1)
    log_mel = np.log(np.maximum(np.maximum(mel, MEL_FLOOR), LOG_FLOOR))
    if mel_norms is not None:
        log_mel = log_mel / np.asarray(mel_norms, dtype=np.float64)
    return log_mel.transpose(0, 2, 1).astype(np.float32)  # [B, F, N]


class ClvpFeatureExtractor:
    """Log-mel front end with transformers' `ClvpFeatureExtractor` interface and values.

    Args:
        feature_size: number of mel bins F (80).
        sampling_rate: expected sampling rate in Hz (22050); other rates are resampled.
        default_audio_length: seconds that clips are padded / truncated to when `max_length` is unset (6).
        hop_length, n_fft: STFT step and frame length in samples (256, 1024).
        chunk_length: unused, kept for config compatibility (30).
        padding_value: value used to pad clips (0.0).
        mel_norms: optional F per-bin divisors (Tortoise's are in the packaged `mel_norms.npy`).
        return_attention_mask: stored for config compatibility; `__call__` returns the mask unless told not to.
    """

    model_input_names = ["input_features", "attention_mask"]

    def __init__(
        self,
        feature_size: int = N_MELS,
        sampling_rate: int = SAMPLING_RATE,
        default_audio_length: int = DEFAULT_AUDIO_LENGTH,
        hop_length: int = HOP_LENGTH,
        chunk_length: int = 30,
        n_fft: int = N_FFT,
        padding_value: float = 0.0,
        mel_norms: Any = None,
        return_attention_mask: bool = False,
        **ignored: Any,
    ):
        self.feature_size, self.sampling_rate = feature_size, sampling_rate
        self.default_audio_length, self.hop_length, self.n_fft = default_audio_length, hop_length, n_fft
        self.chunk_length, self.padding_value = chunk_length, padding_value
        self.return_attention_mask = return_attention_mask
        self.mel_norms = None if mel_norms is None else [float(x) for x in np.asarray(mel_norms).reshape(-1)]
        if self.mel_norms is not None and len(self.mel_norms) != feature_size:
            raise ValueError(f"mel_norms has {len(self.mel_norms)} values, expected feature_size={feature_size}")
        self.mel_filters = mel_filter_bank(feature_size, n_fft, sampling_rate)

    def __repr__(self) -> str:
        return f"ClvpFeatureExtractor({self.to_dict()})"

    def __call__(
        self,
        raw_speech: Any = None,
        sampling_rate: int | None = None,
        truncation: bool = True,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool | None = True,
        padding: bool | str = "max_length",
        max_length: int | None = None,
        layout: Literal["auto", "batch", "channels_first", "channels_last"] = "auto",
        audio: Any = None,
        **kwargs: Any,
    ) -> BatchEncoding:
        """Log-mel features of one clip or a batch of clips.

        Args:
            raw_speech (or audio=): a 1-D clip; a list of clips (1-D, or 2-D multi-channel, each down-mixed);
                or a 2-D array read according to `layout`.
            sampling_rate: rate of the input in Hz; clips at another rate than the extractor's are resampled
                (the reference raises). None means "already at the extractor's rate".
            truncation: cut clips longer than `max_length` (default on, as the reference).
            pad_to_multiple_of: round the padded length up to a multiple of this many samples.
            return_tensors: None or "np" (numpy), "jax" (jax arrays).
            return_attention_mask: return the per-sample mask [B, A] int32 (default True, as the reference).
            padding: "max_length" (default: pad to `max_length`), True / "longest" (to the longest clip after
                truncation) or False (no padding: clips of different lengths give a list of features).
            max_length: target length in samples (default `default_audio_length * sampling_rate` = 132300).
            layout: how a 2-D array is read. "batch": rows are clips (the reference). "channels_first" /
                "channels_last": one clip of shape (channels, A) / (A, channels), down-mixed by averaging the channels.
                "auto" (default): (A, channels) with at most 8 channels and A >= 1000 samples is a multi-channel clip
                (as a batch it would be thousands of clips shorter than one frame); anything else is a batch.
                A (2, A) array therefore stays a batch of two clips; pass layout="channels_first" for stereo.

        Returns:
            BatchEncoding with `input_features` [B, F, N] float32 and `attention_mask` [B, A] int32.

        Raises:
            AudioError: empty clips, NaN / inf samples, non-numeric data, more than two dimensions.
        """
        raw_speech = audio if raw_speech is None else raw_speech
        if raw_speech is None:
            raise AudioError("no audio given: pass a clip or a list of clips")
        clips = as_clips(raw_speech, layout)
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            clips = [resample(clip, sampling_rate, self.sampling_rate) for clip in clips]
        if max_length is None:
            max_length = self.default_audio_length * self.sampling_rate
        if pad_to_multiple_of and max_length % pad_to_multiple_of:
            max_length = -(-max_length // pad_to_multiple_of) * pad_to_multiple_of
        if truncation:
            clips = [clip[:max_length] for clip in clips]
        if padding is True or padding == "longest":
            target = max(len(clip) for clip in clips)
        elif padding == "max_length":
            target = max_length
        elif padding in (False, None, "do_not_pad"):
            target = 0
        else:
            raise ValueError(f"padding must be 'max_length', True, 'longest' or False, got {padding!r}")
        if target and pad_to_multiple_of and target % pad_to_multiple_of:
            target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
        lengths = [len(clip) for clip in clips]
        clips = [np.pad(c, (0, max(target - len(c), 0)), constant_values=self.padding_value) for c in clips]
        mel_norms = None if self.mel_norms is None else np.asarray(self.mel_norms)
        if len({len(clip) for clip in clips}) == 1:
            features = log_mel_spectrogram(np.stack(clips), self.mel_filters, mel_norms, self.n_fft, self.hop_length)
        else:  # ragged (padding=False or clips longer than max_length without truncation)
            if return_tensors is not None:
                raise ValueError("clips have different lengths: use padding to return tensors")
            features = [
                log_mel_spectrogram(c[None], self.mel_filters, mel_norms, self.n_fft, self.hop_length)[0] for c in clips
            ]
        out = BatchEncoding(input_features=features)
        if return_attention_mask or return_attention_mask is None:
            masks = [(np.arange(len(c)) < n).astype(np.int32) for c, n in zip(clips, lengths, strict=True)]
            out["attention_mask"] = np.stack(masks) if isinstance(features, np.ndarray) else masks
        if return_tensors == "jax":
            import jax.numpy as jnp

            out.update({key: jnp.asarray(value) for key, value in out.items()})
        elif return_tensors not in (None, "np"):
            raise ValueError(f"return_tensors must be None, 'np' or 'jax', got {return_tensors!r}")
        return out

    # ------------------------------------------------------------------------------------------ config files
    def to_dict(self) -> dict[str, Any]:
        """The config in transformers' `preprocessor_config.json` form."""
        return {
            "feature_extractor_type": "ClvpFeatureExtractor",
            "feature_size": self.feature_size,
            "sampling_rate": self.sampling_rate,
            "default_audio_length": self.default_audio_length,
            "hop_length": self.hop_length,
            "chunk_length": self.chunk_length,
            "n_fft": self.n_fft,
            "padding_value": self.padding_value,
            "padding_side": "right",
            "mel_norms": self.mel_norms,
            "return_attention_mask": self.return_attention_mask,
        }

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> ClvpFeatureExtractor:
        """Build from a `preprocessor_config.json` dict (derived and unknown keys are ignored)."""
        return cls(**config)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, **kwargs: Any) -> ClvpFeatureExtractor:
        """Load from a folder's preprocessor_config.json (or processor_config.json with a "feature_extractor"
        entry), or a config file path; None gives the Tortoise settings with the packaged `mel_norms`."""
        if path is None:
            from clvp_jax import assets

            return cls(mel_norms=np.load(assets.mel_norms_path()), **kwargs)
        path = Path(path)
        candidates = [path] if path.is_file() else [path / "preprocessor_config.json", path / "processor_config.json"]
        for candidate in candidates:
            if candidate.is_file():
                config = json.loads(candidate.read_text(encoding="utf-8"))
                config = config.get("feature_extractor", config)
                return cls.from_dict({**config, **kwargs})
        raise FileNotFoundError(f"no preprocessor_config.json or processor_config.json in {path}")

    def save_pretrained(self, folder: str | os.PathLike, **kwargs: Any) -> tuple[str]:
        """Write preprocessor_config.json atomically; returns its path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "preprocessor_config.json", json.dumps(self.to_dict(), indent=2) + "\n")
        return (str(folder / "preprocessor_config.json"),)
