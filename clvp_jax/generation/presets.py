"""Tortoise's named presets (`api.tts`: ultra_fast, fast, standard, high_quality) as `GenerationOptions`.

Every preset samples with Tortoise's settings (`GenerationOptions.tortoise`: temperature 0.8, top-p 0.8, repetition
penalty 2.0, candidates padded to 500 before CLVP ranking); they differ in the number of candidates per text.
"""

from __future__ import annotations

from clvp_jax.config import ClvpConfig
from clvp_jax.generation.options import ComputeDtype, GenerationOptions, SamplingOverrides

PRESETS: dict[str, int] = {"ultra_fast": 16, "fast": 96, "standard": 256, "high_quality": 256}
"""Candidates per text of each preset."""


def preset_options(
    preset: str,
    *,
    config: ClvpConfig,
    candidates: int | None = None,
    max_new_tokens: int | None = None,
    dtype: ComputeDtype = "float32",
    sampling: SamplingOverrides | None = None,
) -> GenerationOptions:
    """Tortoise's sampling settings for `preset`, with optional overrides.

    Args:
      preset: one of `PRESETS`.
      config: the model's config (the default length is Tortoise's 500 codes, capped by its position table).
      candidates: candidates per text (None: the preset's).
      max_new_tokens: speech tokens per candidate (None: the default length).
      dtype: compute dtype of the program.
      sampling: temperature, top-p, top-k and repetition penalty over the preset's (None: Tortoise's).
    Raises:
      ValueError: unknown preset, fewer than one candidate.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    # `is None`, not `or`: an explicit 0 is refused below (GenerationOptions), never replaced by the preset's value.
    n = PRESETS[preset] if candidates is None else candidates
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"candidates must be an integer of at least 1, got {n!r}")
    tokens = min(500, config.decoder_config.max_position_embeddings - 1) if max_new_tokens is None else max_new_tokens
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer of at least 1, got {tokens!r}")
    options = GenerationOptions.tortoise(num_candidates=n, max_new_tokens=tokens, dtype=dtype)
    return options if sampling is None else sampling.apply(options)
