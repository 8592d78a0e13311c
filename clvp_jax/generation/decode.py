"""The decode call: every candidate row of every text, chunk by chunk, through `loop.decode`.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here R also the rows of one chunk, G the prompts one
chunk can span).

Chunks run one after another (`lax.map`), each a `lax.while_loop` that stops when all of its rows have stopped.
Each row's randomness comes from fold_in(fold_in(rng, text), candidate), so the output does not depend on the
chunk size or on how rows are sharded across devices.
"""

from __future__ import annotations

import functools
import math

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from clvp_jax.generation.loop import decode
from clvp_jax.generation.options import GenerationOptions
from clvp_jax.generation.prefill import Prefill, chunk_prompts
from clvp_jax.generation.sharding import constrain_rows
from clvp_jax.model import ClvpModelForConditionalGeneration


@flax.struct.dataclass
class Decoded:
    """Attributes: sequences [R, 1 + M] int32 (start token first, stop-token padding after a row stopped);
    num_generated [R] tokens up to and including the stop (M if none); scores [R, M, V] raw logits or None."""

    sequences: jax.Array
    num_generated: jax.Array
    scores: jax.Array | None


def chunk_rows(opts: GenerationOptions, batch_size: int) -> int:
    """Rows decoded together (one chunk) for `batch_size` texts."""
    rows = batch_size * opts.num_return_sequences
    return rows if opts.chunk_size is None else min(opts.chunk_size, rows)


def _decode_step(m: ClvpModelForConditionalGeneration, tokens: jax.Array, positions: jax.Array, cache):
    """One token per row [R] at decoder positions [R] -> (logits [R, V] float32, cache)."""
    out = m.speech_decoder_model(input_ids=tokens[:, None], position_ids=positions[:, None], cache=cache)
    return out.logits[:, 0], out.cache


def _initial_seen(opts: GenerationOptions, rows: int, vocab_size: int, start: int) -> jax.Array | None:
    """[R, V] tokens the repetition penalty counts as seen before step 0 (None when the penalty is off)."""
    if opts.repetition_penalty in (None, 1.0):
        return None
    seen = jnp.zeros((rows, vocab_size), bool).at[:, start].set(True)
    if opts.repetition_prompt == "tortoise":
        seen = seen.at[:, 1].set(True)  # the original's fake prompt of 1s
    return seen


def decode_candidates(
    m: ClvpModelForConditionalGeneration,
    prompts: Prefill,  # B prompts
    rng: jax.Array,
    limit: jax.Array,  # int32 <= M: tokens to generate this call
    candidate_offset: jax.Array,  # int32: index of this call's first candidate (for its random keys)
    text_indices: jax.Array | None = None,  # int32 [B]: each text's index for its random keys (None: 0 .. B-1)
    *,
    opts: GenerationOptions,
    mesh: Mesh | None,
) -> Decoded:
    """Decode `opts.num_return_sequences` candidates for each prompt (bound `m`; inside the compiled program)."""
    cfg, dec = m.config, m.config.decoder_config
    B = prompts.logits.shape[0]
    C, M = opts.num_return_sequences, opts.max_new_tokens
    R = B * C
    stop = opts.stop_token(cfg)
    chunk = chunk_rows(opts, B)
    n_chunks = math.ceil(R / chunk)
    rows = jnp.arange(n_chunks * chunk)
    text_of_row = jnp.minimum(rows // C, B - 1)  # the padding rows of the last chunk repeat the last text
    cand_of_row = (rows % C if C else rows) + candidate_offset
    text_index = jnp.arange(B, dtype=jnp.int32) if text_indices is None else text_indices
    keys = jax.vmap(lambda t, c: jax.random.fold_in(jax.random.fold_in(rng, t), c))(
        text_index[text_of_row], cand_of_row
    )
    processors = opts.processors(stop, dec.bos_token_id)
    step_fn = functools.partial(_decode_step, m)
    G = min(B, -(-chunk // max(C, 1)) + 1)  # prompts one chunk's rows can span

    def run_chunk(args):
        t_idx, row_keys = args  # [R], [R] keys
        cache = chunk_prompts(prompts.cache, t_idx, G, max(M - 1, 1))  # c_{M-1} is never fed back
        cache = cache.replace(**constrain_rows(dict(keys=cache.keys, values=cache.values, group=cache.group), mesh))
        first = constrain_rows(jnp.take(prompts.logits, t_idx, axis=0), mesh)
        res = decode(
            step_fn,
            first,
            cache,
            row_keys,
            max_new_tokens=M,
            processors=processors,
            do_sample=opts.do_sample,
            eos_token_id=stop,
            first_position=opts.first_position,
            limit=limit,
            seen=_initial_seen(opts, chunk, dec.vocab_size, dec.bos_token_id),
            output_scores=opts.output_scores,
        )
        return res.tokens, res.scores

    t_chunks = text_of_row.reshape(n_chunks, chunk)
    k_chunks = keys.reshape((n_chunks, chunk) + keys.shape[1:])
    tokens, scores = jax.lax.map(run_chunk, (t_chunks, k_chunks))
    tokens = tokens.reshape(n_chunks * chunk, M)[:R]
    if scores is not None:
        scores = scores.reshape(n_chunks * chunk, M, -1)[:R]
    sequences = jnp.concatenate([jnp.full((R, 1), dec.bos_token_id, jnp.int32), tokens], axis=1)  # [R, 1 + M]
    is_stop = tokens == stop
    num_generated = jnp.where(is_stop.any(axis=1), jnp.argmax(is_stop, axis=1) + 1, M)
    return Decoded(sequences=sequences, num_generated=num_generated, scores=scores)
