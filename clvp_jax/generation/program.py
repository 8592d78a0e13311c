"""The generation program: prefill -> decode -> rank, as one function that `compiling` turns into one `jax.jit`.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here B texts; M' the scored speech tokens).

  1. prefill (`prefill.py`): each text's prompt (the model's `decoder_prompt`) through the decoder once;
  2. decode (`decode.py`): the R candidate rows chunk by chunk, each chunk sharing its texts' prompt caches;
  3. rank (`ranking.py`): pad with the stop token (optional), fix, both CLVP towers, similarity, best per text.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from clvp_jax.generation.decode import decode_candidates
from clvp_jax.generation.options import GenerationOptions
from clvp_jax.generation.prefill import prefill
from clvp_jax.generation.ranking import rank_candidates
from clvp_jax.model import ClvpModelForConditionalGeneration


@flax.struct.dataclass
class GenerationOutput:
    """Result of `generate` (rows are text-major: row r = text r // C, candidate r % C).

    Attributes:
      sequences: [R, 1 + M] raw decoder output, the start token first; stop-token padding after a row stopped.
      speech_ids: [R, M'] what CLVP scored: sequences (padded with the stop token to `pad_to_max_mel_tokens` if
        set), fixed as the reference does (first column dropped, M' = max(1 + M, pad) - 1).
      logits_per_text: [B, R] CLVP scores of every text against every candidate (as the reference).
      logits_per_speech: [R, B] its transpose.
      text_embeds: [B, P], speech_embeds: [R, P]: L2-normalised CLVP embeddings.
      candidate_scores: [B, C] each text against its own candidates.
      best_index: [B] the best candidate of each text (index within its C candidates).
      best_speech_ids: [B, M'] the best candidate's speech ids; best_sequences: [B, 1 + M].
      num_generated: [R] tokens each row generated up to and including its stop token (M if it never stopped).
      scores: [R, M, V] raw decoder logits of every step (zeros after the loop stopped), if requested.
    """

    sequences: jax.Array
    speech_ids: jax.Array
    logits_per_text: jax.Array
    logits_per_speech: jax.Array
    text_embeds: jax.Array
    speech_embeds: jax.Array
    candidate_scores: jax.Array
    best_index: jax.Array
    best_speech_ids: jax.Array
    best_sequences: jax.Array
    num_generated: jax.Array
    scores: jax.Array | None = None


def generation_program(
    m: ClvpModelForConditionalGeneration,
    input_ids: jax.Array,  # [B, T]
    attention_mask: jax.Array,  # [B, T]
    features: jax.Array | None,  # [B_a, F, N]
    latents: jax.Array | None,  # [B_a, D]
    rng: jax.Array,
    limit: jax.Array,  # int32 <= M: tokens to generate this call
    candidate_offset: jax.Array,  # int32: index of this call's first candidate (for its random keys)
    text_indices: jax.Array,  # int32 [B]: each text's index (for its random keys)
    *,
    opts: GenerationOptions,
    mesh: Mesh | None,
) -> GenerationOutput:
    """The whole generation on prepared inputs (bound `m`, run through `m.apply(..., method=...)`)."""
    cache_dtype = jnp.bfloat16 if opts.dtype == "bfloat16" else jnp.float32
    prompts = prefill(m, input_ids, attention_mask, features, latents, cache_dtype)
    decoded = decode_candidates(m, prompts, rng, limit, candidate_offset, text_indices, opts=opts, mesh=mesh)
    ranked = rank_candidates(m, input_ids, attention_mask, decoded.sequences, opts=opts)
    return GenerationOutput(
        sequences=decoded.sequences,
        speech_ids=ranked.speech_ids,
        logits_per_text=ranked.scores.logits_per_text,
        logits_per_speech=ranked.scores.logits_per_speech,
        text_embeds=ranked.scores.text_embeds,
        speech_embeds=ranked.scores.speech_embeds,
        candidate_scores=ranked.candidate_scores,
        best_index=ranked.best_index,
        best_speech_ids=ranked.speech_ids[ranked.best_rows],
        best_sequences=decoded.sequences[ranked.best_rows],
        num_generated=decoded.num_generated,
        scores=decoded.scores,
    )
