"""`SpeechSettings`: what `clvp_jax.speech` speaks a text with, both stages, as one validated value.

  speech_settings(preset="fast", k=1, ...)   `synthesize`'s keywords -> `SpeechSettings` (checked)
  SpeechSettings.check_models(model, wm)     do the AR and waveform models fit these settings?

`synthesize` and `TextToSpeech.tts_with_preset` build them from their keywords, `clvp-jax speak` from its flags;
`speech.plan_speech` and what runs the plan take them as they are.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from clvp_jax.generation.options import ComputeDtype, SamplingOverrides
from clvp_jax.rank_settings import RankSettings
from clvp_jax.waveform.bundle import WaveformModels
from clvp_jax.waveform.presets import SpeechPreset, speech_preset
from clvp_jax.waveform.sampler import SamplerConfig

Vocoder = Literal["univnet", "hifigan"]
VOCODERS: tuple[Vocoder, ...] = ("univnet", "hifigan")


@dataclasses.dataclass(frozen=True)
class SpeechSettings:
    """The settings of both stages, checked on construction (`ValueError` naming the bad one).

    Attributes:
      ranking: the AR stage: preset, candidates drawn per chunk, codes per candidate, seed (of the waveform draws
        too), dtype and sampling knobs (`RankSettings`).
      sampler: the diffusion sampler (kind, steps, guidance, cond_free_k, temperature).
      k: candidates rendered per chunk, the best k by score: in [1, candidates drawn].
      cvvp_amount: in [0, 1]; > 0 mixes CVVP into the ranking (`speech_scores.mix_scores`; needs a CVVP model and
        the voice's clips).
      vocoder: "univnet" (diffusion, then UnivNet: Tortoise's path) or "hifigan" (api_fast's preview: the trimmed
        AR latents straight to audio, no diffusion; needs the HiFiGAN decoder, `hifidecoder.pth`).
    """

    ranking: RankSettings
    sampler: SamplerConfig
    k: int = 1
    cvvp_amount: float = 0.0
    vocoder: Vocoder = "univnet"

    def __post_init__(self) -> None:
        k, drawn = self.k, self.ranking.drawn
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= drawn:
            raise ValueError(f"k must be an integer in [1, candidates = {drawn}], got {k!r}")
        if not 0 <= self.cvvp_amount <= 1:
            raise ValueError(f"cvvp_amount must be in [0, 1], got {self.cvvp_amount!r}")
        if self.vocoder not in VOCODERS:
            raise ValueError(f"vocoder must be one of {', '.join(VOCODERS)}, got {self.vocoder!r}")

    def check_models(self, model, waveform_models: WaveformModels) -> None:
        """`ValueError` unless the models run these settings: the diffusion decoder (and, for "hifigan", the
        HiFiGAN decoder) take the AR model's latents, and a CVVP model is there when `cvvp_amount` > 0."""
        width, wanted = model.config.decoder_config.hidden_size, waveform_models.diffusion.config.in_latent_channels
        if width != wanted:
            raise ValueError(
                f"the diffusion decoder takes AR latents of width {wanted} but the AR model's are {width}: the "
                f"checkpoint's files come from different models ({', '.join(waveform_models.sources) or 'built in'})"
            )
        config = waveform_models.hifigan_config
        if self.vocoder == "hifigan" and config is None:
            raise ValueError(
                "vocoder='hifigan' needs api_fast's HiFiGAN decoder: put hifidecoder.pth in the checkpoint folder "
                "(and re-convert a clvp-jax checkpoint), or use vocoder='univnet'"
            )
        if self.vocoder == "hifigan" and (config.in_channels, config.cond_channels) != (width, width):
            raise ValueError(
                f"the HiFiGAN decoder takes latents of width {config.in_channels} and a speaker embedding of width "
                f"{config.cond_channels}, but the AR model's are {width}: the checkpoint's files come from different "
                "models"
            )
        if self.cvvp_amount > 0 and waveform_models.cvvp is None:
            raise ValueError(
                "cvvp_amount > 0 needs the CVVP model: put Tortoise's cvvp.pth in the checkpoint folder (the packaged "
                "default has none), or leave cvvp_amount at 0"
            )

    def record(self, *, latent_length: int, diffusion_dtype: str) -> dict[str, Any]:
        """What the results record of the waveform stage (after the AR stage's `RankSettings.record`)."""
        return {
            "k": self.k,
            "sampler": self.sampler.kind,
            "diffusion_steps": self.sampler.steps,
            "cond_free": self.sampler.cond_free,
            "cond_free_k": self.sampler.cond_free_k,
            "diffusion_temperature": self.sampler.temperature,
            "cvvp_amount": self.cvvp_amount,
            "latent_length": latent_length,
            "vocoder": self.vocoder,
            "diffusion_dtype": diffusion_dtype,
        }


def speech_settings(
    *,
    preset: str | SpeechPreset = "fast",
    k: int = 1,
    sampler: str | None = None,
    diffusion_steps: int | None = None,
    candidates: int | None = None,
    cvvp_amount: float = 0.0,
    seed: int = 0,
    max_new_tokens: int | None = None,
    dtype: ComputeDtype = "float32",
    sampling: SamplingOverrides | None = None,
    vocoder: Vocoder = "univnet",
) -> SpeechSettings:
    """`speech.synthesize`'s settings keywords (documented there) as one checked `SpeechSettings`.

    A ready `SpeechPreset` is taken as it is: `sampler`, `diffusion_steps` and `candidates` are its business then.
    Raises `ValueError` naming a bad setting.
    """
    if not isinstance(preset, SpeechPreset):
        preset = speech_preset(preset, sampler=sampler, diffusion_steps=diffusion_steps, candidates=candidates)
    ranking = RankSettings(
        preset=preset.name,
        candidates=preset.candidates,
        max_new_tokens=max_new_tokens,
        seed=seed,
        dtype=dtype,
        sampling=sampling,
    )
    return SpeechSettings(ranking, preset.sampler, k=k, cvvp_amount=cvvp_amount, vocoder=vocoder)
