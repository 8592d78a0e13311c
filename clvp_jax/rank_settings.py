"""`RankSettings`: how `clvp_jax.pipeline` generates and ranks the candidates of a text, as one validated value.

Every entry point of the AR stage takes these settings: `pipeline.rank_speech` builds them from its keywords,
`clvp-jax generate` from its flags, and the speech pipeline (`speech_settings.SpeechSettings.ranking`) holds them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from clvp_jax.config import ClvpConfig
from clvp_jax.generation.options import ComputeDtype, GenerationOptions, SamplingOverrides
from clvp_jax.generation.presets import PRESETS, preset_options

# Seeds are the 32-bit keys of `jax.random.key`: larger values alias a smaller seed (2^32 gave seed 0's output).
SEED_RANGE = (0, 2**32)


def check_seed(seed: int) -> int:
    """`seed`, or `ValueError` with the range when it is not an integer in [0, 2^32)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not SEED_RANGE[0] <= seed < SEED_RANGE[1]:
        raise ValueError(f"the seed must be an integer in [0, 2^32) = [0, {SEED_RANGE[1] - 1}], got {seed!r}")
    return int(seed)


@dataclasses.dataclass(frozen=True)
class RankSettings:
    """The AR stage's settings, checked on construction (`ValueError` naming the bad one).

    Attributes:
      preset: a Tortoise preset (`generation.presets.PRESETS`): candidates per chunk; every preset samples with
        Tortoise's knobs (`GenerationOptions.tortoise`).
      candidates: candidates drawn per chunk (None: the preset's).
      max_new_tokens: speech codes per candidate (None: Tortoise's 500, capped by the model's position table).
      seed: the seed of every draw, in [0, 2^32).
      dtype: the compute dtype of generation.
      sampling: temperature, top-p, top-k and repetition penalty over the preset's (None: Tortoise's); its
        length penalty is recorded. Its counts (`num_samples`, `keep`, `max_new_tokens`) are not read here: the
        caller passes them as `candidates` and `max_new_tokens`.
    """

    preset: str = "ultra_fast"
    candidates: int | None = None
    max_new_tokens: int | None = None
    seed: int = 0
    dtype: ComputeDtype = "float32"
    sampling: SamplingOverrides | None = None

    def __post_init__(self) -> None:
        check_seed(self.seed)
        # The rest is checked by building the options; the model only sets the default length (500 capped by its
        # position table, always valid), so any config serves here.
        self.options(ClvpConfig())

    @property
    def drawn(self) -> int:
        """Candidates drawn per chunk: `candidates`, or the preset's count."""
        return PRESETS[self.preset] if self.candidates is None else self.candidates

    def options(self, config: ClvpConfig) -> GenerationOptions:
        """The generation options of every candidate for a model of `config` (`preset_options`)."""
        return preset_options(
            self.preset,
            config=config,
            candidates=self.candidates,
            max_new_tokens=self.max_new_tokens,
            dtype=self.dtype,
            sampling=self.sampling,
        )

    def record(self, options: GenerationOptions) -> dict[str, Any]:
        """What the results record of these settings, with the values `options` (`self.options(...)`) resolved."""
        sampling = self.sampling
        return {
            "preset": self.preset,
            "candidates": options.num_return_sequences,
            "max_new_tokens": options.max_new_tokens,
            "seed": self.seed,
            "dtype": self.dtype,
            "temperature": options.temperature,
            "top_p": options.top_p,
            "top_k": options.top_k,
            "repetition_penalty": options.repetition_penalty,
            "length_penalty": 1.0 if sampling is None or sampling.length_penalty is None else sampling.length_penalty,
            "pad_to_max_mel_tokens": options.pad_to_max_mel_tokens,
        }
