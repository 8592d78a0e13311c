"""Audio input: reading files, resampling, down-mixing and validating clips.

`load_audio` reads any file librosa can read (wav, flac, ogg, mp3, ...) as mono float32 at 22.05 kHz;
`load_voice` reads a folder of clips (Tortoise's `voices/<name>/` layout) for multi-clip conditioning.
Problems are reported as `AudioError` (a ValueError) with what is wrong and what to do.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aiff", ".aif")
_MAX_CHANNELS = 8  # more than 7.1 surround is not treated as channels by layout="auto"
_MIN_AUTO_SAMPLES = 1000  # layout="auto": an (N, C) array is one clip only when N is at least this


class AudioError(ValueError):
    """Audio that cannot be turned into features: the message names the problem and the fix."""


def _check_clip(clip: np.ndarray, index: int | None = None) -> np.ndarray:
    """Validate one mono clip and return it as float32."""
    where = "audio clip" if index is None else f"audio clip {index}"
    if clip.dtype.kind == "c":
        raise AudioError(f"{where} is complex-valued; pass real samples (e.g. np.real or the magnitude)")
    if clip.dtype.kind not in "fiub":
        raise AudioError(f"{where} has non-numeric dtype {clip.dtype}; pass float samples in [-1, 1]")
    if clip.size == 0:
        raise AudioError(f"{where} is empty (0 samples); pass at least one sample or leave the clip out")
    clip = clip.astype(np.float32)
    if not np.isfinite(clip).all():
        bad = int(np.size(clip) - np.isfinite(clip).sum())
        raise AudioError(f"{where} contains {bad} NaN or infinite samples; clean the signal (e.g. np.nan_to_num) first")
    return clip


def _downmix(clip: np.ndarray, channel_axis: int) -> np.ndarray:
    return clip.astype(np.float64).mean(axis=channel_axis).astype(np.float32)


# Integer PCM is scaled to [-1, 1) as audio libraries read it (soundfile, librosa's `buf_to_float`): signed
# types by 2^(bits - 1), 8-bit WAV's unsigned samples around 128. Other integer types have no PCM meaning.
_PCM_SCALE = {np.dtype(np.int8): 2.0**7, np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31}


def _to_array(data: Any) -> np.ndarray:
    try:
        array = np.asarray(data)
    except ValueError as error:  # ragged nested lists
        raise AudioError(f"audio could not be read as an array ({error}); pass a list of 1-D clips") from None
    if array.dtype in _PCM_SCALE:
        return (array / _PCM_SCALE[array.dtype]).astype(np.float32)
    if array.dtype == np.uint8:
        return ((array.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if array.dtype.kind in "iub":
        raise AudioError(
            f"audio samples of dtype {array.dtype} have no PCM scale; pass float samples in [-1, 1], or int16, "
            "int32, int8 or uint8 PCM (scaled to [-1, 1] as audio libraries read them)"
        )
    return array


def as_clips(raw: Any, layout: str = "auto") -> list[np.ndarray]:
    """Turn a clip, a list of clips or a 2-D array into a list of validated mono float32 clips.

    See `ClvpFeatureExtractor.__call__` for the `layout` rule for 2-D arrays. A 2-D element of a list is always
    one multi-channel clip; its channel axis is the shorter one (or as `layout` says).
    """
    if layout not in ("auto", "batch", "channels_first", "channels_last"):
        raise ValueError(f"layout must be 'auto', 'batch', 'channels_first' or 'channels_last', got {layout!r}")
    if isinstance(raw, (list, tuple)):
        if not raw:
            raise AudioError("the batch of audio clips is empty; pass at least one clip")
        if not np.isscalar(raw[0]):
            return [_one_clip(_to_array(clip), layout, i) for i, clip in enumerate(raw)]
    array = _to_array(raw)
    if array.ndim == 0:
        raise AudioError("audio is a single number; pass a 1-D array of samples")
    if array.ndim > 2:
        raise AudioError(
            f"audio has {array.ndim} dimensions (shape {array.shape}); expected a clip (samples,), a batch "
            "(clips, samples) or one multi-channel clip; pass a list of clips for a batch of multi-channel audio"
        )
    if array.ndim == 1:
        return [_check_clip(array)]
    rows, cols = array.shape
    if layout == "auto":
        layout = "channels_last" if cols <= _MAX_CHANNELS and rows >= _MIN_AUTO_SAMPLES else "batch"
    if layout == "batch":
        return [_check_clip(row, i) for i, row in enumerate(array)]
    return [_check_clip(_downmix(array, 0 if layout == "channels_first" else 1))]


def _one_clip(clip: np.ndarray, layout: str, index: int) -> np.ndarray:
    if clip.ndim == 2:
        if layout in ("channels_first", "channels_last"):
            axis = 0 if layout == "channels_first" else 1
        elif min(clip.shape) <= _MAX_CHANNELS and clip.shape[0] != clip.shape[1]:
            axis = int(np.argmin(clip.shape))
        else:
            raise AudioError(
                f"audio clip {index} has shape {clip.shape}, which is not (samples, channels) with at most "
                f"{_MAX_CHANNELS} channels; pass 1-D clips"
            )
        clip = _downmix(clip, axis) if clip.size else clip.reshape(-1)
    elif clip.ndim != 1:
        raise AudioError(f"audio clip {index} has {clip.ndim} dimensions (shape {clip.shape}); pass 1-D clips")
    return _check_clip(clip, index)


def resample(clip: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono float32 clip with librosa's default high-quality (soxr) resampler."""
    if orig_sr <= 0:
        raise AudioError(f"sampling_rate must be positive, got {orig_sr}")
    if orig_sr == target_sr:
        return clip
    import librosa

    return librosa.resample(clip, orig_sr=orig_sr, target_sr=target_sr).astype(np.float32)


def load_audio(path: str | os.PathLike, sampling_rate: int = 22050) -> np.ndarray:
    """Read an audio file as a mono float32 clip at `sampling_rate` Hz (channels averaged, resampled).

    Raises:
        FileNotFoundError: no such file.
        AudioError: the file cannot be decoded, is empty or holds NaN / inf samples.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no audio file at {path}")
    import librosa

    try:
        with warnings.catch_warnings():  # librosa warns while falling back from soundfile to audioread
            warnings.simplefilter("ignore", (UserWarning, FutureWarning, DeprecationWarning))
            clip, _ = librosa.load(path, sr=sampling_rate, mono=True, dtype=np.float32)
    except Exception as error:  # librosa raises many types (soundfile, audioread, EOFError, ...)
        raise AudioError(f"could not decode {path} as audio ({type(error).__name__}: {error})") from error
    try:
        return _check_clip(clip)
    except AudioError as error:
        raise AudioError(f"{path}: {error}") from None


def load_voice(folder_or_files: str | os.PathLike | Iterable[str | os.PathLike], sampling_rate: int = 22050):
    """Read the clips of one voice: a folder (Tortoise's `voices/<name>/` layout; its audio files in name order)
    or an explicit list of files. Returns a list of mono float32 clips at `sampling_rate` Hz.

    Raises:
        FileNotFoundError: the folder or a file does not exist.
        AudioError: the folder holds no audio files, or a clip is unreadable.
    """
    if isinstance(folder_or_files, (str, os.PathLike)):
        folder = Path(folder_or_files)
        if folder.is_file():
            return [load_audio(folder, sampling_rate)]
        if not folder.is_dir():
            raise FileNotFoundError(f"no voice folder at {folder}")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
        if not files:
            raise AudioError(f"{folder} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    else:
        files = [Path(f) for f in folder_or_files]
        if not files:
            raise AudioError("no audio files given for the voice")
    return [load_audio(f, sampling_rate) for f in files]
