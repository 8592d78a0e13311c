"""Tortoise's `tts_with_preset` presets for the whole speech pipeline: AR candidates and diffusion settings.

One name, both stages (spec `tortoise_waveform.md` §3.1, `tortoise_original.md` §5): the candidate counts are
`generation.presets.PRESETS` (what `clvp-jax generate` samples), the diffusion settings `sampler.TORTOISE_PRESETS`
(steps, conditioning-free guidance; every preset also sets cond_free_k 2.0 and diffusion_temperature 1.0). Both
tables stay where their stage reads them; this module joins them and applies the user's overrides.

  preset        candidates  diffusion steps  cond_free  model calls (ddpm)
  ultra_fast    16          30               False      30
  fast          96          80               True       160
  standard      256         200              True       400
  high_quality  256         400              True       800
"""

from __future__ import annotations

import dataclasses

from clvp_jax.generation.presets import PRESETS as CANDIDATE_PRESETS
from clvp_jax.waveform.sampler import SAMPLER_KINDS, TORTOISE_PRESETS, SamplerConfig

PRESET_NAMES: tuple[str, ...] = tuple(CANDIDATE_PRESETS)

# DPM-Solver++ is not in the original, so nothing ties it to the original's grid: for speech it runs on steps even
# in log-SNR with the guidance ramped on the model's timestep (benchmarks/README.md, "DPM++(2M) against fast": on
# a trained tiny model that reaches fast's 80-step DDIM accuracy in 24 steps, against 40 on the original's grid).
DPM_SPEECH = {"spacing": "logsnr", "cond_free_ramp": "timestep"}
assert set(PRESET_NAMES) == set(TORTOISE_PRESETS), "the AR and diffusion preset tables must name the same presets"


@dataclasses.dataclass(frozen=True)
class SpeechPreset:
    """The settings of one preset for both stages.

    Attributes:
      name: the preset's name.
      candidates: AR candidates sampled per text chunk (ranked by CLVP, and CVVP when mixed in).
      sampler: the diffusion sampler (kind, steps, guidance, cond_free_k, temperature).
    """

    name: str
    candidates: int
    sampler: SamplerConfig


def speech_preset(
    name: str = "fast",
    *,
    sampler: str | None = None,
    diffusion_steps: int | None = None,
    candidates: int | None = None,
    cond_free: bool | None = None,
    cond_free_k: float | None = None,
    diffusion_temperature: float | None = None,
) -> SpeechPreset:
    """Preset `name` with optional overrides (None keeps the preset's value).

    Args:
      name: one of `PRESET_NAMES`.
      sampler: "ddpm" (Tortoise's own, the default), "ddim" or "dpm++2m" (on the log-SNR grid with the guidance
        ramped on the model's timestep: `DPM_SPEECH`).
      diffusion_steps: sampling steps K (2 .. 4000).
      candidates: AR candidates per chunk (>= 1).
      cond_free, cond_free_k, diffusion_temperature: the diffusion guidance and initial-noise temperature.
    Raises:
      ValueError: an unknown preset or sampler, or an invalid value (the message names it).
    """
    if name not in CANDIDATE_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    if sampler is not None and sampler not in SAMPLER_KINDS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLER_KINDS)}")
    n = CANDIDATE_PRESETS[name] if candidates is None else candidates
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"candidates must be a positive integer, got {n!r}")
    overrides = {
        **(DPM_SPEECH if sampler == "dpm++2m" else {}),
        "kind": sampler,
        "steps": diffusion_steps,
        "cond_free": cond_free,
        "cond_free_k": cond_free_k,
        "temperature": diffusion_temperature,
    }
    return SpeechPreset(name, n, SamplerConfig.tortoise(name, **{k: v for k, v in overrides.items() if v is not None}))
