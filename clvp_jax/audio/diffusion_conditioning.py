"""Voice clips -> the mels `DiffusionTts.get_conditioning` takes, as Tortoise's `get_conditioning_latents` builds them.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here B clips; F = 100 mel bins, N = 401 frames).

Per clip (22.05 kHz, as `load_audio` returns it: clipped to [-1, 1]): resample the **whole** clip to 24 kHz with
torchaudio's sinc interpolation (`clvp_jax.audio.resample`), keep the first 102 400 samples or zero-pad on the
right to that length (`pad_or_truncate`; no random window on this path, unlike the AR conditioning's 6 s window),
then the raw (not normalised) 100-bin log-mel (`univnet_log_mel`) -> [100, 401]. The diffusion model runs its
contextual embedder on each clip and averages over all clips' frames; that part belongs to the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clvp_jax.audio.io import AudioError, as_clips
from clvp_jax.audio.resample import resample
from clvp_jax.audio.univnet_mel import SAMPLING_RATE, univnet_log_mel

VOICE_SAMPLING_RATE = 22050  # Hz: Tortoise's voice clips (`load_audio(path, 22050)`)
CONDITIONING_SAMPLES = 102400  # 24 kHz samples per clip (4.27 s) -> 401 mel frames


def pad_or_truncate(x: np.ndarray, length: int) -> np.ndarray:
    """The first `length` samples of x [..., A], zero-padded on the right when A < length."""
    n = x.shape[-1]
    if n >= length:
        return x[..., :length]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, length - n)])


def diffusion_conditioning_mels(
    clips: np.ndarray | Sequence[np.ndarray], sampling_rate: int = VOICE_SAMPLING_RATE
) -> np.ndarray:
    """The diffusion conditioning input of one voice: one raw 24 kHz log-mel per clip.

    Args:
        clips: one 1-D clip or a list of 1-D clips (any lengths) of float samples at `sampling_rate`.
        sampling_rate: rate of the clips in Hz; Tortoise's clips are 22.05 kHz (`load_audio` brings other rates
            there first, with the same sinc resampler, which is what is done here too).

    Returns:
        float32 [B, F, N] = [clips, 100, 401]: ready for `DiffusionTts.get_conditioning`.

    Raises:
        AudioError: no clips, an empty clip, NaN / inf samples, non-numeric data.
    """
    mono = as_clips(list(clips) if isinstance(clips, (list, tuple)) else clips, "batch")
    mels = []
    for clip in mono:
        if sampling_rate != VOICE_SAMPLING_RATE:
            clip = resample(clip, sampling_rate, VOICE_SAMPLING_RATE)
        clip = np.clip(clip, -1.0, 1.0)  # as `load_audio` leaves it
        wav = pad_or_truncate(resample(clip, VOICE_SAMPLING_RATE, SAMPLING_RATE), CONDITIONING_SAMPLES)
        mels.append(univnet_log_mel(wav))
    if not mels:
        raise AudioError("no voice clips given: pass at least one clip")
    return np.stack(mels)
