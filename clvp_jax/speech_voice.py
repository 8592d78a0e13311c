"""A voice's conditioning for both stages of `clvp_jax.speech`: the AR latent, the diffusion latent, CVVP's mels.

voice_conditioning(model=..., params=..., waveform_models=..., voice=...)   clips / latents file -> `Voice`
diffusion_latent(waveform_models, clips)                                   clips -> the diffusion latent [W]
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.waveform.bundle import WaveformModels
from clvp_jax.waveform.diffusion import DiffusionTts

AR_SAMPLING_RATE = 22050  # Hz of the AR codes' mel frames (1024 samples per code), and of the voice clips


@dataclasses.dataclass(frozen=True)
class Voice:
    """One voice's conditioning for both stages.

    Attributes:
      autoregressive: float32 [D], the AR conditioning latent.
      diffusion: float32 [W], the diffusion conditioning latent.
      cvvp_mels: float32 [n, 80, F], the clips' AR-front-end mels (for CVVP), or None (voice from a latents file).
    """

    autoregressive: np.ndarray
    diffusion: np.ndarray
    cvvp_mels: np.ndarray | None = None


# ---- voice --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _conditioning_fn(model: DiffusionTts):
    return jax.jit(lambda v, mels: model.apply(v, mels, method=DiffusionTts.get_conditioning))


def diffusion_latent(waveform_models: WaveformModels, clips: Sequence[np.ndarray]) -> np.ndarray:
    """The diffusion conditioning latent [W] of a voice's clips (22.05 kHz float samples), as Tortoise's
    `get_conditioning_latents`: 24 kHz log-mels of each clip, contextual embeddings averaged over all of them."""
    from clvp_jax.audio.diffusion_conditioning import diffusion_conditioning_mels

    mels = diffusion_conditioning_mels(list(clips))  # [n, 100, 401]
    fn = _conditioning_fn(waveform_models.diffusion)
    return np.asarray(fn(waveform_models.diffusion_variables, jnp.asarray(mels)[None]), np.float32)[0]


def voice_conditioning(*, model, params, waveform_models: WaveformModels, voice: Any = None) -> Voice:
    """Both voice latents (and CVVP's mels) from a voice.

    Args:
      voice: a `Voice` (returned as is); None (the bundled LJ clip); a clip file, a folder of clips or a list of
        files; a list of 1-D numpy clips at 22.05 kHz (Tortoise's `voice_samples`); a latents file (version 2,
        `.npz`, with both latents); or a `generation.latents.VoiceLatents` / `voices.VoiceLatents`.
    Raises:
      MissingDiffusionLatentError: latents without the diffusion latent (a version-1 `.npy`).
      LatentsFileError: latents of the wrong width for these models.
    """
    from clvp_jax.audio import load_voice
    from clvp_jax.generation.latents import LatentsFileError, VoiceLatents, get_conditioning_latents, load_voice_latents
    from clvp_jax.pipeline import TEXT_NORMALIZER
    from clvp_jax.processor import ClvpProcessor

    if isinstance(voice, Voice):
        return voice
    from clvp_jax import voices

    if isinstance(voice, voices.VoiceLatents):  # what `voice_latents.voice_latents` / `load_latents_file` return
        voice = VoiceLatents(voice.auto, voice.diffusion, source="the voice's latents")
    width = waveform_models.diffusion_width
    if isinstance(voice, (str, os.PathLike)) and Path(voice).is_file() and Path(voice).suffix in (".npz", ".npy"):
        voice = load_voice_latents(voice, model, width)
    if isinstance(voice, VoiceLatents):
        where = voice.source or "the given latents"
        diffusion = np.asarray(voice.require_diffusion(), np.float32).reshape(-1)
        ar = np.asarray(voice.autoregressive, np.float32)
        ar = ar.reshape(-1, ar.shape[-1]).mean(axis=0)  # [n, D] latents of several clips: their mean, as Tortoise
        for name, value, want in (
            ("autoregressive", ar, model.config.decoder_config.hidden_size),
            ("diffusion", diffusion, width),
        ):
            if value.shape != (want,):
                raise LatentsFileError(
                    f"{where}: the {name} latent has width {value.shape[-1]} but the model expects {want}; recompute "
                    "the latents with this checkpoint"
                )
        return Voice(ar, diffusion)
    if voice is None:
        from clvp_jax.assets import default_voice_path

        voice = default_voice_path()
    if isinstance(voice, (str, os.PathLike)) or (
        isinstance(voice, (list, tuple)) and voice and not isinstance(voice[0], np.ndarray)
    ):
        clips = load_voice(voice, AR_SAMPLING_RATE)
    else:
        clips = [np.asarray(c, np.float32).reshape(-1) for c in voice]
    features = ClvpProcessor.default(normalizer=TEXT_NORMALIZER).voice_features(
        clips
    )  # [n, 80, F] normalised AR mels (format_conditioning's)
    ar = get_conditioning_latents(model, params, list(features))
    return Voice(ar, diffusion_latent(waveform_models, clips), np.asarray(features, np.float32))
