"""Logit processors for speech-token generation: small frozen dataclasses, each a pure function of the logits.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here R the rows, text x candidate).

Every processor maps float32 logits [R, V] to processed logits [R, V] given a `ProcessorContext` (the tokens seen
so far as a [R, V] mask and the number of tokens generated so far). They reproduce transformers' processors of the
same role (`RepetitionPenaltyLogitsProcessor`, `MinNewTokensLengthLogitsProcessor`, `TemperatureLogitsWarper`,
`TopKLogitsWarper`, `TopPLogitsWarper`) and are applied in the reference's order: penalties first, then the
sampling warpers (`processor_chain`).

`TopP` is sort-free: instead of sorting V logits per row (on CPU a 16 x 8194 sort costs more than a decode step)
it bisects over the bit patterns of the probability threshold, 32 masked row sums, which finds the reference's
keep set exactly up to float rounding of the cumulative sums. One deliberate difference: where several tokens tie
exactly at the boundary probability, the reference keeps an arbitrary subset of the tie (it depends on its sort);
`TopP` keeps or drops the whole tie.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


@flax.struct.dataclass
class ProcessorContext:
    """Attributes: seen [R, V] bool (prompt + generated tokens, or None); num_new: int32 tokens generated so far."""

    seen: jax.Array | None
    num_new: jax.Array


@dataclasses.dataclass(frozen=True)
class Temperature:
    """logits / temperature (temperature > 0)."""

    temperature: float

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}; use greedy decoding for 0")

    def __call__(self, logits: jax.Array, ctx: ProcessorContext) -> jax.Array:
        return logits / jnp.asarray(self.temperature, logits.dtype)


@dataclasses.dataclass(frozen=True)
class TopK:
    """Keep the k largest logits (and every logit tied with the k-th), set the rest to -inf."""

    k: int

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.k}")

    def __call__(self, logits: jax.Array, ctx: ProcessorContext) -> jax.Array:
        k = min(self.k, logits.shape[-1])
        kth = jax.lax.top_k(logits, k)[0][..., -1:]  # [R, 1]
        return jnp.where(logits < kth, NEG_INF, logits)


def _float_bits(x: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(x, jnp.int32)


def _from_bits(b: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(b, jnp.float32)


@dataclasses.dataclass(frozen=True)
class TopP:
    """Nucleus filtering, as the reference: token i survives iff the probability mass of the tokens strictly more
    likely than i is below `top_p` (the most likely token always survives).

    Sort-free: for non-negative float32, the int32 bit pattern orders like the value, so a 32-step bisection over
    bit patterns finds the smallest threshold t with mass(p > t) < top_p exactly; tokens with p >= t survive.
    """

    top_p: float

    def __post_init__(self) -> None:
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def __call__(self, logits: jax.Array, ctx: ProcessorContext) -> jax.Array:
        if self.top_p >= 1.0:
            return logits
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)  # [R, V]
        top_p = jnp.float32(self.top_p)

        def mass_above(t: jax.Array) -> jax.Array:  # t [R] -> [R]
            return jnp.sum(jnp.where(probs > t[:, None], probs, 0.0), axis=-1)

        # Invariant: mass_above(lo) >= top_p (or lo == 0), mass_above(hi) < top_p. Bits of 0.0 and of max(p).
        lo = jnp.zeros(probs.shape[:1], jnp.int32)
        hi = _float_bits(jnp.max(probs, axis=-1))

        def body(_, bounds):
            lo, hi = bounds
            mid = lo + (hi - lo) // 2
            below = mass_above(_from_bits(mid)) < top_p
            return jnp.where(below, lo, mid), jnp.where(below, mid, hi)

        lo, hi = jax.lax.fori_loop(0, 32, body, (lo, hi))
        # `hi` is now the smallest bit pattern with mass_above < top_p (or lo + 1 == hi with mass_above(lo) >= p).
        threshold = jnp.where(mass_above(_from_bits(lo)) < top_p, _from_bits(lo), _from_bits(hi))
        return jnp.where(probs >= threshold[:, None], logits, NEG_INF)


@dataclasses.dataclass(frozen=True)
class RepetitionPenalty:
    """The reference's (CTRL) repetition penalty: for every token already seen (prompt included), a positive logit
    is divided by `penalty` and a negative one multiplied by it. Which tokens count as seen is the caller's choice
    (see `GenerationOptions.repetition_prompt`)."""

    penalty: float

    def __post_init__(self) -> None:
        if not self.penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.penalty}")

    def __call__(self, logits: jax.Array, ctx: ProcessorContext) -> jax.Array:
        if ctx.seen is None:
            raise ValueError("RepetitionPenalty needs ctx.seen (the loop tracks it when a penalty is configured)")
        p = jnp.asarray(self.penalty, logits.dtype)
        penalised = jnp.where(logits < 0, logits * p, logits / p)
        return jnp.where(ctx.seen, penalised, logits)


@dataclasses.dataclass(frozen=True)
class MinNewTokens:
    """Forbid `eos_token_id` while fewer than `min_new_tokens` tokens have been generated."""

    min_new_tokens: int
    eos_token_id: int

    def __call__(self, logits: jax.Array, ctx: ProcessorContext) -> jax.Array:
        block = (ctx.num_new < self.min_new_tokens) & (jnp.arange(logits.shape[-1]) == self.eos_token_id)
        return jnp.where(block[None, :], NEG_INF, logits)


@dataclasses.dataclass(frozen=True)
class SuppressTokens:
    """Forbid `tokens` at every step (e.g. the decoder's start token, which is never a valid code)."""

    tokens: tuple[int, ...]

    def __call__(self, logits: jax.Array, ctx: ProcessorContext) -> jax.Array:
        block = jnp.isin(jnp.arange(logits.shape[-1]), jnp.asarray(self.tokens))
        return jnp.where(block[None, :], NEG_INF, logits)


Processor = Temperature | TopK | TopP | RepetitionPenalty | MinNewTokens | SuppressTokens


def apply_processors(processors: Sequence[Processor], logits: jax.Array, ctx: ProcessorContext) -> jax.Array:
    """Apply `processors` in order to float32 logits [R, V]."""
    logits = logits.astype(jnp.float32)
    for proc in processors:
        logits = proc(logits, ctx)
    return logits


def processor_chain(
    *,
    do_sample: bool,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    min_new_tokens: int = 0,
    eos_token_id: int | None = None,
    suppress_tokens: Sequence[int] = (),
) -> tuple[Processor, ...]:
    """The processors the reference's `generate` builds for these settings, in its order.

    Penalties apply always; the warpers (temperature, top-k, top-p) only when sampling, as in the reference
    (they cannot change a greedy argmax anyway). Neutral settings (temperature 1, top_p 1, penalty 1) add nothing.
    """
    chain: list[Processor] = [SuppressTokens(tuple(suppress_tokens))] if suppress_tokens else []
    if repetition_penalty is not None and repetition_penalty != 1.0:
        chain.append(RepetitionPenalty(repetition_penalty))
    if min_new_tokens > 0:
        if eos_token_id is None:
            raise ValueError("min_new_tokens needs the eos_token_id to suppress")
        chain.append(MinNewTokens(min_new_tokens, eos_token_id))
    if do_sample:
        if temperature != 1.0:
            chain.append(Temperature(temperature))
        if top_k is not None and top_k > 0:
            chain.append(TopK(top_k))
        if top_p is not None and top_p < 1.0:
            chain.append(TopP(top_p))
    return tuple(chain)
