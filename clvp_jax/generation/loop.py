"""The decode loop: one `lax.while_loop` over an explicit state, independent of the model.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here R the rows the loop is given, M the new-token
budget).

The loop only sees a `step_fn(tokens [R], positions [R], cache) -> (logits [R, V] float32, cache)` and a tuple
of logit processors, so it can be driven by a stub in tests. Token c_k (k = 0, 1, ...) is chosen from the logits
of the previous step (c_0 from the prefill logits, which the caller passes in), then fed back at decoder position
`first_position + k`. The loop runs `step_fn` only for tokens that are still needed: n new tokens cost n - 1 steps
after the prefill, as the reference's generate, and it stops as soon as every row has emitted `eos_token_id`.

Randomness: each row has its own key (the caller derives it from the row's text and candidate index); the draw for
token k uses `fold_in(row_key, k)`. So a row's tokens depend only on its own key, not on how rows are batched,
chunked or sharded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from clvp_jax.generation.processors import Processor, ProcessorContext, RepetitionPenalty, apply_processors

StepFn = Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, Any]]


def first_argmax(x: jax.Array) -> jax.Array:
    """`jnp.argmax(x, axis=-1)`, the same index (the first maximum; the first NaN if there is one), as two plain
    reductions: the row maximum, then the smallest index holding it. XLA's CPU backend runs argmax as one variadic
    (value, index) reduction that it does not vectorize: over 16 x 8194 logits 0.47 ms against 0.17 ms, and
    inside `jax.random.categorical` (gumbel noise + logits, then argmax) 3.1 ms against 0.9 ms per decode step
    (benchmarks/README.md, "fp32 on Intel Xeon with AMX (2026-12-02)")."""
    m = jnp.max(x, axis=-1, keepdims=True)  # NaN if the row has a NaN (jnp.max propagates it)
    hit = (x == m) | jnp.isnan(x)  # no NaN in the row: the maxima; else its NaNs, as jnp.argmax
    return jnp.min(jnp.where(hit, jnp.arange(x.shape[-1], dtype=jnp.int32), x.shape[-1]), axis=-1)


def sample_categorical(key: jax.Array, logits: jax.Array) -> jax.Array:
    """`jax.random.categorical(key, logits)` for one row of logits [V], the same draw (its Gumbel-max: the same
    gumbel noise from `key`, added to the logits), with `first_argmax` in place of its argmax."""
    return first_argmax(jax.random.gumbel(key, logits.shape, logits.dtype) + logits)


@flax.struct.dataclass
class LoopState:
    """Attributes:
    step: int32, tokens chosen so far (the next one goes to column `step`).
    tokens: [R, M] int32 buffer, pre-filled with the pad id.
    done: [R] bool, rows that have emitted eos.
    seen: [R, V] bool tokens seen (prompt + generated) for the repetition penalty, or None.
    cache: the model's cache pytree (opaque here).
    scores: [R, M, V] float32 raw logits of every step, or None.
    """

    step: jax.Array
    tokens: jax.Array
    done: jax.Array
    seen: jax.Array | None
    cache: Any
    scores: jax.Array | None


@flax.struct.dataclass
class LoopOutput:
    """Attributes: tokens [R, M] (pad after eos and after early stop); num_steps: int32 columns written;
    scores [R, M, V] raw logits (zeros where no step ran) or None."""

    tokens: jax.Array
    num_steps: jax.Array
    scores: jax.Array | None


def _choose(
    logits: jax.Array,  # [R, V] float32
    state: LoopState,
    row_keys: jax.Array,  # [R] keys
    processors: Sequence[Processor],
    do_sample: bool,
    eos_token_id: int,
    pad_token_id: int,
) -> LoopState:
    """Pick column `state.step` from `logits` and record it."""
    ctx = ProcessorContext(seen=state.seen, num_new=state.step)
    processed = apply_processors(processors, logits, ctx)
    if do_sample:
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, state.step)
        token = jax.vmap(sample_categorical)(keys, processed)
    else:
        token = first_argmax(processed)
    token = jnp.where(state.done, pad_token_id, token).astype(jnp.int32)  # [R]
    rows = jnp.arange(token.shape[0])
    tokens = state.tokens.at[:, state.step].set(token)
    seen = None if state.seen is None else state.seen.at[rows, token].set(True)
    scores = None if state.scores is None else state.scores.at[:, state.step].set(logits)
    return state.replace(
        step=state.step + 1, tokens=tokens, done=state.done | (token == eos_token_id), seen=seen, scores=scores
    )


def decode(
    step_fn: StepFn,
    first_logits: jax.Array,  # [R, V]: logits after the prompt (predict c_0)
    cache: Any,
    row_keys: jax.Array,  # [R] PRNG keys (new-style typed keys or raw uint32[R, 2])
    *,
    max_new_tokens: int,
    processors: Sequence[Processor] = (),
    do_sample: bool = False,
    eos_token_id: int,
    pad_token_id: int | None = None,
    first_position: int = 1,
    limit: jax.Array | int | None = None,
    seen: jax.Array | None = None,  # [R, V] bool: prompt tokens for the repetition penalty
    output_scores: bool = False,
) -> LoopOutput:
    """Generate up to `max_new_tokens` tokens per row; pure and jittable (`max_new_tokens` static).

    Args:
      step_fn: feeds one token per row at the given positions, returns next-token logits and the new cache.
      first_logits: logits that choose the first token.
      cache: the cache after the prompt; donated through the loop.
      row_keys: one key per row (only read when `do_sample`).
      max_new_tokens: M, the size of the token buffer.
      processors: logit processors, applied in order.
      do_sample: sample from the processed logits (else argmax).
      eos_token_id: the stop token; a row stops after emitting it, later columns hold `pad_token_id`.
      pad_token_id: filler after eos (default: eos).
      first_position: decoder position of c_0 (1: training convention; 2: the reference's).
      limit: optional traced bound <= M on the tokens to generate (columns after it hold pad).
      seen: initial seen-token mask; required when a `RepetitionPenalty` is among the processors.
      output_scores: also return every step's raw logits [R, M, V].
    Returns:
      LoopOutput.
    """
    R, V = first_logits.shape
    pad = eos_token_id if pad_token_id is None else pad_token_id
    needs_seen = any(isinstance(p, RepetitionPenalty) for p in processors)
    if needs_seen and seen is None:
        seen = jnp.zeros((R, V), bool)
    limit = jnp.asarray(max_new_tokens if limit is None else limit, jnp.int32)
    state = LoopState(
        step=jnp.zeros((), jnp.int32),
        tokens=jnp.full((R, max_new_tokens), pad, jnp.int32),
        done=jnp.zeros((R,), bool),
        seen=seen if needs_seen else None,
        cache=cache,
        scores=jnp.zeros((R, max_new_tokens, V), jnp.float32) if output_scores else None,
    )
    choose = lambda logits, s: _choose(logits, s, row_keys, processors, do_sample, eos_token_id, pad)  # noqa: E731
    state = choose(first_logits.astype(jnp.float32), state)

    def cond(s: LoopState) -> jax.Array:
        return (s.step < jnp.minimum(limit, max_new_tokens)) & ~jnp.all(s.done)

    def body(s: LoopState) -> LoopState:
        last = jax.lax.dynamic_index_in_dim(s.tokens, s.step - 1, axis=1, keepdims=False)  # [R]
        positions = jnp.full((R,), first_position - 1, jnp.int32) + s.step
        logits, cache = step_fn(last, positions, s.cache)
        return choose(logits.astype(jnp.float32), s.replace(cache=cache))

    state = jax.lax.while_loop(cond, body, state)
    return LoopOutput(tokens=state.tokens, num_steps=state.step, scores=state.scores)
