"""What `clvp_jax.speech` makes: per chunk the ranked candidates and the rendered ones, and the whole text's."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from clvp_jax.audio.univnet_mel import SAMPLING_RATE
from clvp_jax.pipeline import Candidate


@dataclasses.dataclass(frozen=True)
class SpeechCandidate:
    """One rendered candidate.

    Attributes:
      candidate: the AR candidate (index, CLVP score, codes up to its stop token, stopped).
      score: the ranking score (CLVP, or the CVVP mix); cvvp_score: its CVVP score (None when not mixed).
      frames: AR latent frames kept after the calm-code trim; waveform: float32 [samples] in [-1, 1] at 24 kHz.
    """

    candidate: Candidate
    score: float
    cvvp_score: float | None
    frames: int
    waveform: np.ndarray

    def to_json(self) -> dict[str, Any]:
        """What the JSON outputs say of it (everything but the samples themselves)."""
        return {
            "candidate": self.candidate.index,
            "score": self.score,
            "clvp_score": self.candidate.score,
            "cvvp_score": self.cvvp_score,
            "codes": len(self.candidate.codes),
            "latent_frames": self.frames,
            "samples": int(self.waveform.size),
        }


@dataclasses.dataclass(frozen=True)
class SpeechChunk:
    """One chunk of the text: every candidate ranked (best first, by `scores`) and the k rendered ones."""

    text: str
    ranked: list[Candidate]
    scores: list[float]
    outputs: list[SpeechCandidate]

    @property
    def waveform(self) -> np.ndarray:
        """The best candidate's waveform."""
        return self.outputs[0].waveform


@dataclasses.dataclass(frozen=True)
class SpeechResult:
    """What `synthesize` made. `waveform` is the joined best; `waveforms[r]` the joined rank-r candidates."""

    chunks: list[SpeechChunk]
    settings: dict[str, Any]
    random_weights: bool
    sampling_rate: int = SAMPLING_RATE

    @property
    def waveforms(self) -> list[np.ndarray]:
        k = len(self.chunks[0].outputs)
        return [np.concatenate([c.outputs[r].waveform for c in self.chunks]) for r in range(k)]

    @property
    def waveform(self) -> np.ndarray:
        return self.waveforms[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "random_weights": self.random_weights,
            "sampling_rate": self.sampling_rate,
            "chunks": [
                {
                    "text": c.text,
                    "outputs": [o.to_json() for o in c.outputs],
                    "ranked": [
                        dataclasses.asdict(x) | {"score_used": s} for x, s in zip(c.ranked, c.scores, strict=True)
                    ],
                }
                for c in self.chunks
            ],
        }
