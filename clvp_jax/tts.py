"""`TextToSpeech`: the Python entry point in the spirit of Tortoise's `tortoise.api.TextToSpeech`.

    tts = TextToSpeech()                         # packaged default: RANDOM weights, meaningless audio
    tts = TextToSpeech("tortoise-ckpt/")         # one clvp-jax checkpoint (`clvp-jax convert FOLDER OUT`), or
                                                 # a Tortoise models folder (autoregressive.pth, clvp2.pth,
                                                 # diffusion_decoder.pth, vocoder.pth[, cvvp.pth, hifidecoder.pth])
    result = tts.tts_with_preset("Hello.", voice_samples=clips, preset="fast")
    result.waveform                              # float32 [samples] in [-1, 1] at 24 kHz (the best candidate)
    result.chunks[0].ranked                      # every candidate, best first

Differences from Tortoise's: the result carries everything (waveforms of the k best, joined over the chunks of a
long text, and the ranked candidates with their scores) instead of a tensor or a list of tensors; every draw comes
from `seed`; `voice_samples` are 1-D numpy clips at 22.05 kHz (or files / a folder), `voice` a saved latents file
or `VoiceLatents`. The diffusion decoder and vocoder are loaded on first use, so a codes-only checkpoint still
builds, and `tts_with_preset` on it raises `MissingAudioModelsError` naming the missing files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from clvp_jax.generation.options import SamplingOverrides
from clvp_jax.speech import Progress, SpeechResult, Voice, speak, voice_conditioning
from clvp_jax.speech_settings import Vocoder, speech_settings
from clvp_jax.waveform.bundle import (
    DIFFUSION_DTYPES,
    WaveformModels,
    default_waveform_models,
    load_waveform_models,
    with_diffusion_dtype,
)

PACKAGED_MAX_CODES = 100
"""Default codes per candidate with the packaged random model: it never emits the stop token, so every candidate
would run to Tortoise's 500 codes (23 s of noise per chunk, 5x the diffusion and vocoder work); 100 codes give
4.6 s. Pass `max_new_tokens` to override; real checkpoints keep Tortoise's 500."""


class TextToSpeech:
    """Text + voice -> 24 kHz speech with one checkpoint.

    Args:
      checkpoint: None (the packaged default: tiny random weights, real vocabulary) or a checkpoint folder that
        `clvp_jax.from_pretrained` reads; audio also needs the diffusion decoder and vocoder in it (a clvp-jax
        checkpoint converted from a whole Tortoise folder, or the folder's `diffusion_decoder.pth` and
        `vocoder.pth`).
      dtype: compute dtype of the AR stage ("float32" or "bfloat16").
      diffusion_dtype: compute dtype of the diffusion decoder ("float32" or "bfloat16": bf16 matmuls with float32
        accumulation, norm statistics and softmax; weights cast once, at load). The vocoder runs in float32.
    """

    def __init__(
        self, checkpoint: str | os.PathLike | None = None, *, dtype: str = "float32", diffusion_dtype: str = "float32"
    ) -> None:
        from clvp_jax.pipeline import load_model

        if diffusion_dtype not in DIFFUSION_DTYPES:
            raise ValueError(f"diffusion_dtype must be one of {', '.join(DIFFUSION_DTYPES)}, got {diffusion_dtype!r}")
        self.checkpoint = checkpoint
        self.dtype = dtype
        self.diffusion_dtype = diffusion_dtype
        self.model, self.params = load_model(checkpoint, dtype=dtype)
        self._waveform: WaveformModels | None = None

    @property
    def random_weights(self) -> bool:
        """True for the packaged default: its speech is meaningless."""
        return self.checkpoint is None

    def waveform_models(self, *, with_cvvp: bool = False, with_hifigan: bool = False) -> WaveformModels:
        """The diffusion decoder and vocoder (and CVVP with `with_cvvp`, if the folder has it; the HiFiGAN decoder
        with `with_hifigan`, which must be there), loaded once."""
        wm = self._waveform
        more = (with_cvvp and wm is not None and wm.cvvp is None) or (
            with_hifigan and wm is not None and wm.hifigan_config is None
        )
        if wm is None or (more and not wm.random_weights):
            if self.checkpoint is None:
                wm = default_waveform_models(self.model.config.decoder_config.hidden_size)
            else:
                with_cvvp = with_cvvp or (wm is not None and wm.cvvp is not None)
                with_hifigan = with_hifigan or (wm is not None and wm.hifigan_config is not None)
                wm = load_waveform_models(self.checkpoint, with_cvvp=with_cvvp, with_hifigan=with_hifigan)
            wm = with_diffusion_dtype(wm, self.diffusion_dtype)
            self._waveform = wm
        return wm

    def get_conditioning_latents(self, voice_samples: Any = None) -> Voice:
        """The AR and diffusion latents of a voice (clips, files or a folder; None: the bundled LJ clip).

        Save them with `clvp_jax.generation.latents.save_conditioning_latents(path, v.autoregressive, v.diffusion)`.
        """
        return voice_conditioning(
            model=self.model, params=self.params, waveform_models=self.waveform_models(), voice=voice_samples
        )

    def tts_with_preset(
        self,
        text: str,
        *,
        voice_samples: Sequence[np.ndarray] | str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        voice: Any = None,
        preset: str = "fast",
        k: int = 1,
        sampler: str | None = None,
        diffusion_steps: int | None = None,
        candidates: int | None = None,
        cvvp_amount: float = 0.0,
        seed: int = 0,
        max_new_tokens: int | None = None,
        progress: Progress | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        length_penalty: float | None = None,
        vocoder: Vocoder = "univnet",
    ) -> SpeechResult:
        """Speak `text` with a Tortoise preset ("ultra_fast", "fast", "standard", "high_quality").

        Args:
          text: what to say (long text is split into chunks; their waveforms are joined).
          voice_samples: clips of the voice (1-D float numpy arrays at 22.05 kHz), clip files or a folder.
          voice: instead, saved latents (a version-2 latents file, a `VoiceLatents` or a `Voice`).
          preset: candidates and diffusion settings; k: candidates rendered per chunk (best first).
          sampler: "ddpm" (Tortoise's), "ddim" or "dpm++2m"; diffusion_steps: override the preset's steps.
          candidates: AR candidates per chunk (overrides the preset's count).
          cvvp_amount: mix CVVP into the ranking (0..1; needs `cvvp.pth` and voice clips).
          seed: the seed of every random draw (same seed, same waveform).
          max_new_tokens: AR codes per candidate (Tortoise: 500; the packaged default: `PACKAGED_MAX_CODES`).
          progress: progress(stage, done, total) for "candidates", "diffusion" and "vocoder".
          temperature, top_p, top_k, repetition_penalty, length_penalty: Tortoise's sampling knobs (None: the
            preset's: 0.8, 0.8, off, 2.0; length_penalty only matters to beam search, so it changes nothing).
          vocoder: "univnet" (Tortoise's diffusion decoder + UnivNet) or "hifigan" (api_fast's fast preview: AR
            latents straight to audio, no diffusion; needs `hifidecoder.pth`, the packaged default has a tiny one).
        Returns:
          `SpeechResult`: `.waveform` (best, float32, 24 kHz), `.waveforms` (the k best), `.chunks` (per chunk:
          ranked candidates, scores, rendered outputs).
        Raises:
          MissingAudioModelsError: the checkpoint has no diffusion decoder / vocoder files.
          ValueError: bad settings; both or neither of voice_samples / voice given where one is needed.
        """
        if voice_samples is not None and voice is not None:
            raise ValueError("give voice_samples (clips) or voice (saved latents), not both")
        sampling = SamplingOverrides(
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=repetition_penalty,
            length_penalty=length_penalty,
        )
        if max_new_tokens is None and self.random_weights:
            max_new_tokens = PACKAGED_MAX_CODES
        settings = speech_settings(
            preset=preset,
            k=k,
            sampler=sampler,
            diffusion_steps=diffusion_steps,
            candidates=candidates,
            cvvp_amount=cvvp_amount,
            seed=seed,
            max_new_tokens=max_new_tokens,
            dtype=self.dtype,
            sampling=sampling,
            vocoder=vocoder,
        )
        wm = self.waveform_models(with_cvvp=settings.cvvp_amount > 0, with_hifigan=settings.vocoder == "hifigan")
        return speak(
            text=text,
            model=self.model,
            params=self.params,
            waveform_models=wm,
            voice=voice if voice is not None else voice_samples,
            settings=settings,
            progress=progress,
        )
