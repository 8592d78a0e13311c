"""A synthetic (text, speech-codes) task with a real, learnable text -> speech relation.

Each text token ("phoneme") p in 1..num_phonemes owns a fixed pattern of 2-3 speech codes drawn once from the
code range. A text is a random sequence of phonemes; its "speech" is the concatenation of their patterns, as
an utterance would be, with realistic nuisance:
  * duration: each code is held for 1 frame, or 2 with probability `hold_prob`;
  * noise: each emitted code is replaced by a random one with probability `noise_prob`.
So the speech of a text is predictable from the text up to noise, and texts are distinguishable from their
speech: a CLVP model that learns the phoneme -> pattern relation retrieves the right clip among many, one
that does not is at chance (1 / number of candidates).

Everything is a pure function of the seed: the pattern table of `seed`, and pair i of a split from (seed, split,
i), so train and held-out pairs share the relation but not the pairs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from clvp_jax.training.data import Pair


@dataclasses.dataclass(frozen=True)
class SyntheticTask:
    """Attributes:
    num_phonemes: text ids used are 1..num_phonemes (must be < the text vocabulary).
    code_range: speech codes are drawn from 1..code_range-1 (must be <= the speech vocabulary).
    min_len, max_len: text length range (inclusive).
    hold_prob: probability that a code lasts two frames.
    noise_prob: probability that an emitted code is replaced by a random code.
    seed: fixes the pattern table.
    """

    num_phonemes: int = 40
    code_range: int = 200
    min_len: int = 4
    max_len: int = 10
    hold_prob: float = 0.25
    noise_prob: float = 0.05
    seed: int = 0

    @property
    def max_text_tokens(self) -> int:
        return self.max_len

    @property
    def max_speech_codes(self) -> int:
        return self.max_len * 3 * 2  # 3 codes per phoneme at most, each held at most twice

    def patterns(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, 0])
        return [rng.integers(1, self.code_range, rng.integers(2, 4)) for _ in range(self.num_phonemes + 1)]

    def pairs(self, n: int, split: str) -> list[Pair]:
        """`n` pairs of split `split` ("train", "eval", ...)."""
        table = self.patterns()
        split_id = int.from_bytes(split.encode()[:8], "little")
        out = []
        for i in range(n):
            rng = np.random.default_rng([self.seed, 1, split_id, i])
            text = rng.integers(1, self.num_phonemes + 1, rng.integers(self.min_len, self.max_len + 1))
            codes = np.concatenate([table[p] for p in text])
            codes = np.repeat(codes, 1 + (rng.random(codes.size) < self.hold_prob))
            noisy = rng.random(codes.size) < self.noise_prob
            codes = np.where(noisy, rng.integers(1, self.code_range, codes.size), codes)
            out.append(Pair(tuple(int(t) for t in text), tuple(int(c) for c in codes)))
        return out
