"""Ranking: pad the candidates, score them against their texts with CLVP, pick each text's best.

Axis legend: B texts, C candidates per text, R = B * C rows (text-major), M new tokens, S' scored speech tokens,
P CLVP projection width.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from clvp_jax.generation.options import GenerationOptions
from clvp_jax.model import ClvpModelForConditionalGeneration, ClvpScores


@flax.struct.dataclass
class Ranking:
    """Attributes:
    speech_ids: [R, S'] what CLVP scored (padded, fixed); scores: `ClvpScores` of every text against every row;
    candidate_scores: [B, C] each text against its own candidates; best_index: [B] within its C candidates;
    best_rows: [B] the best candidate's row.
    """

    speech_ids: jax.Array
    scores: ClvpScores
    candidate_scores: jax.Array
    best_index: jax.Array
    best_rows: jax.Array


def pad_to_scoring_length(sequences: jax.Array, stop: int, pad_to: int | None) -> jax.Array:
    """Pad [R, 1 + M] with the stop token to `pad_to` columns (Tortoise pads to 500 before CLVP; None: as is)."""
    R, width = sequences.shape
    if pad_to is None or pad_to <= width:
        return sequences
    return jnp.concatenate([sequences, jnp.full((R, pad_to - width), stop, sequences.dtype)], axis=1)


def rank_candidates(
    m: ClvpModelForConditionalGeneration,
    input_ids: jax.Array,  # [B, T] tokenizer ids
    attention_mask: jax.Array,  # [B, T]
    sequences: jax.Array,  # [R, 1 + M]
    *,
    opts: GenerationOptions,
) -> Ranking:
    """Score every candidate against every text (`score_candidates`) and rank each text's own. Bound `m`."""
    B, C = input_ids.shape[0], opts.num_return_sequences
    padded = pad_to_scoring_length(sequences, opts.stop_token(m.config), opts.pad_to_max_mel_tokens)
    speech_ids, scores = m.score_candidates(input_ids, attention_mask, padded)
    own = scores.logits_per_text.reshape(B, B, C)[jnp.arange(B), jnp.arange(B)]  # [B, C]
    best = jnp.argmax(own, axis=1)
    return Ranking(speech_ids, scores, own, best, jnp.arange(B) * C + best)
