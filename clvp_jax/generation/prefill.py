"""The prefill: each text's prompt through the decoder once, and the per-chunk view of those prompt caches.

Axis legend: B texts, T text tokens, L prompt slots (T + 4), D decoder width, V decoder vocabulary,
G prompts one chunk of rows can span, N rows of a chunk, M own cache slots per row.

The prompt is the model's (`decoder_prompt`): `[latent, bos, t.., eos, eos, start]` with the reference composite's
extra eos and no decoder positions on the conditioning slots (the correct Tortoise input, not the reference's
step-0 bug). Text padding inside it is excluded through the cache's `valid` mask, so a padded batch gives each text
exactly what it gets alone. Candidates never re-run the prompt: each chunk of rows shares its texts' prompt caches
(`SharedPrefixCache`: no copy per candidate, and a step reads a prompt once for all of its candidates).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from clvp_jax.decoder import KVCache, SharedPrefixCache, init_cache, share_prefix
from clvp_jax.model import ClvpModelForConditionalGeneration


@flax.struct.dataclass
class Prefill:
    """Attributes: logits [B, V] float32 after the prompt (they choose c_0); cache: the prompts' `KVCache`
    (exactly full: L slots, index L)."""

    logits: jax.Array
    cache: KVCache


def prefill(
    m: ClvpModelForConditionalGeneration,
    input_ids: jax.Array,  # [B, T] tokenizer ids
    attention_mask: jax.Array,  # [B, T]
    features: jax.Array | None,  # [B_a, F, N]
    latents: jax.Array | None,  # [B_a, D]
    cache_dtype: jnp.dtype,
) -> Prefill:
    """Run every text's prompt (voice from `features` or given `latents`) through the decoder once. Bound `m`."""
    ids, mask = m.text_with_eos(input_ids, attention_mask)  # [B, T + 1]
    prompt = m.decoder_prompt(ids, mask, features, latents, start_token=True)  # [B, L, D]
    B, L = prompt.keep.shape
    cache = init_cache(m.config.decoder_config, B, L, cache_dtype)
    out = m.speech_decoder_model.forward_embeds(prompt.embeds, prompt.keep, cache)
    return Prefill(logits=out.logits[:, -1], cache=out.cache)


def chunk_prompts(prompts: KVCache, t_idx: jax.Array, G: int, M: int) -> SharedPrefixCache:
    """The decode cache of one chunk of rows (`t_idx` [N]: each row's text, ascending): the G prompts its rows can
    span (from its first row's text on), shared, and empty own slots for M new tokens."""
    first = jnp.clip(t_idx[0], 0, prompts.valid.shape[0] - G)
    take = lambda x: jax.lax.dynamic_slice_in_dim(x, first, G, axis=0)  # noqa: E731
    window = KVCache(
        tuple(map(take, prompts.keys)), tuple(map(take, prompts.values)), take(prompts.valid), prompts.index
    )
    return share_prefix(window, t_idx - first, M)
