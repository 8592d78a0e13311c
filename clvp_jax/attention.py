"""Multi-head self-attention shared by the encoders, the decoder layers and the mel attention blocks.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here T queries, S keys or cache slots).

As the reference's `ClvpSelfAttention`: q, k, v projections (bias iff `use_bias`), q scaled by K^-1/2 right
after projection, optional partial rotary on q, k **and v** (encoders), additive mask (0 / finfo.min),
softmax in float32, out_proj with bias. The KV cache is an explicit pair of arrays per layer that the caller
passes in and gets back; new keys/values are written at `cache_index` with `dynamic_update_slice`.

Decoding many candidates of one prompt uses a `SplitKV` cache instead (see `split_cache_attention`): the prompt's
keys/values are stored once per prompt (G prompts) and read once per step for all of its candidates, and each
row's own generated slots are combined with them by the online-softmax recurrence. The result equals attention
over the concatenated cache up to float32 rounding.

Backend-dependent forms (`Tuning`): full attention as einsums (one head at a time above a size) or
`jax.nn.dot_product_attention`; the own slots read block by block as far as filled, or all at once.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from clvp_jax.layers import Dtype, additive_mask, apply_rotary, linear
from clvp_jax.tuning import SharedPrefixRead, Tuning

LayerKV = tuple[jax.Array, jax.Array]  # keys [B, H, K, S], values [B, H, S, K]


@flax.struct.dataclass
class SplitKV:
    """One layer's decode cache for R rows that share G prompts of L slots; M own slots, a multiple of `block`.

    Attributes:
      prefix_keys: [G, H, K, L], prefix_values: [G, H, L, K]: the prompts' keys/values, shared by their rows.
      prefix_allowed: [R, L] bool: the prompt slots each row may attend to (its prompt's non-padding slots).
      group: [R] int32: each row's prompt.
      keys: [R, H, K, M], values: [R, H, M, K]: each row's own generated tokens.
      block: own slots read per inner-loop iteration of the "blocked" form (static).
    """

    prefix_keys: jax.Array
    prefix_values: jax.Array
    prefix_allowed: jax.Array
    group: jax.Array
    keys: jax.Array
    values: jax.Array
    block: int = flax.struct.field(pytree_node=False, default=16)


OnlineSoftmax = tuple[jax.Array, jax.Array, jax.Array]  # running max [R, H], total [R, H], weighted sum [R, H, K]


def _add_keys(state: OnlineSoftmax, q: jax.Array, keys: jax.Array, values: jax.Array, allowed: jax.Array):
    """The online-softmax recurrence: fold scores of q [R, H, K] against keys [R, H, K, S], values [R, H, S, K]
    (float32; `allowed` [S] or broadcastable to [R, H, S]) into `state`."""
    m, total, acc = state
    s = jnp.einsum("rhk,rhks->rhs", q, keys)
    s = jnp.where(allowed, s, -jnp.inf)
    m_new = jnp.maximum(m, s.max(axis=-1))
    scale = jnp.exp(m - m_new)
    p = jnp.exp(s - m_new[..., None])
    return m_new, total * scale + p.sum(axis=-1), acc * scale[..., None] + jnp.einsum("rhs,rhsk->rhk", p, values)


def split_cache_attention(
    q: jax.Array,  # [R, H, K], already scaled
    k: jax.Array,  # [R, H, K] the new token's key
    v: jax.Array,  # [R, H, K]
    kv: SplitKV,
    index: jax.Array,  # int32 scalar: own slot of the new token (= own tokens already cached)
    read: SharedPrefixRead = "blocked",
) -> tuple[jax.Array, SplitKV]:
    """Single-token attention over a shared prompt plus each row's filled own slots -> ([R, H, K], new cache).

    Scores over the prompt are one batched matmul per head ([R x K] x [K x G*L]), each row keeping its own
    prompt's columns. The own slots are then folded in by the online-softmax recurrence: `read="blocked"` visits
    them in blocks of `kv.block` up to the new token (a `fori_loop` with a traced trip count), `read="dense"`
    takes all M at once with the unfilled ones masked. Float32 throughout.
    """
    keys = jax.lax.dynamic_update_slice(kv.keys, k[..., None].astype(kv.keys.dtype), (0, 0, 0, index))
    values = jax.lax.dynamic_update_slice(kv.values, v[:, :, None, :].astype(kv.values.dtype), (0, 0, index, 0))
    G = kv.prefix_keys.shape[0]
    q32 = q.astype(jnp.float32)
    own_prompt = jax.nn.one_hot(kv.group, G, dtype=jnp.float32)  # [R, G]

    s = jnp.einsum("rhk,ghkl->rhgl", q32, kv.prefix_keys.astype(jnp.float32))
    s = jnp.einsum("rhgl,rg->rhl", s, own_prompt)  # each row's own prompt (exact: the others get weight 0)
    s = jnp.where(kv.prefix_allowed[:, None, :], s, -jnp.inf)
    m = s.max(axis=-1)  # [R, H]; finite: every prompt has its voice-latent slot
    p = jnp.exp(s - m[..., None])  # [R, H, L]
    p_all = p[:, :, None, :] * own_prompt[:, None, :, None]  # [R, H, G, L], zero outside the row's prompt
    acc = jnp.einsum("rhgl,ghlk->rhk", p_all, kv.prefix_values.astype(jnp.float32))
    state = (m, p.sum(axis=-1), acc)

    filled = index + 1
    if read == "dense":
        M = keys.shape[-1]
        own = jnp.arange(M) < filled  # [M]
        _, total, acc = _add_keys(state, q32, keys.astype(jnp.float32), values.astype(jnp.float32), own)
    else:
        n = kv.block

        def visit(j: jax.Array, state: OnlineSoftmax) -> OnlineSoftmax:
            kb = jax.lax.dynamic_slice_in_dim(keys, j * n, n, axis=3).astype(jnp.float32)  # [R, H, K, block]
            vb = jax.lax.dynamic_slice_in_dim(values, j * n, n, axis=2).astype(jnp.float32)  # [R, H, block, K]
            return _add_keys(state, q32, kb, vb, (j * n + jnp.arange(n)) < filled)

        _, total, acc = jax.lax.fori_loop(0, (filled + n - 1) // n, visit, state)
    return acc / total[..., None], kv.replace(keys=keys, values=values)


def full_attention(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array | None, tuning: Tuning) -> jax.Array:
    """softmax(q k^T + mask) v without a cache: q [B, T, H, K] (scaled), k, v [B, S, H, K] -> [B, T, H, K].

    Scores and softmax are float32; masked keys get the reference's additive finfo.min (a row with every key
    masked gets uniform weights, as in the reference). `tuning.attention` picks the kernel. With "einsum", when
    the scores of all heads would exceed `tuning.per_head_above_bytes` (the mel blocks over a long clip, the
    speech tower over many candidates), the heads are computed one after another (a `fori_loop` that slices each
    head in place), so only one head's scores are ever live; the values are the same.
    """
    B, T, H, _ = q.shape
    if tuning.attention == "dot_product_attention":
        # Its mask fills -0.7 * finfo.max instead of adding finfo.min: the same weights, all-masked rows included.
        mask = None if allowed is None else allowed[:, None, :, :]  # [B, 1, T, S]
        return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=1.0)
    bias = None if allowed is None else additive_mask(allowed)  # [B, T, S]
    limit = tuning.per_head_above_bytes
    if limit is None or B * H * T * k.shape[1] * 4 <= limit:
        scores = jnp.einsum("bthk,bshk->bhts", q, k, preferred_element_type=jnp.float32)  # [B, H, T, S]
        if bias is not None:
            scores = scores + bias[:, None, :, :]
        probs = jax.nn.softmax(scores, axis=-1)
        # Accumulated in float32 (also the fast path for bf16 on XLA CPU), rounded once to the values' dtype.
        out = jnp.einsum("bhts,bshk->bthk", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return out.astype(v.dtype)

    def one_head(h: jax.Array, out: jax.Array) -> jax.Array:
        qh, kh, vh = (jax.lax.dynamic_index_in_dim(t, h, axis=2, keepdims=False) for t in (q, k, v))  # [B, *, K]
        scores = jnp.einsum("btk,bsk->bts", qh, kh, preferred_element_type=jnp.float32)  # [B, T, S]
        if bias is not None:
            scores = scores + bias
        probs = jax.nn.softmax(scores, axis=-1).astype(vh.dtype)
        oh = jnp.einsum("bts,bsk->btk", probs, vh, preferred_element_type=jnp.float32)
        return jax.lax.dynamic_update_index_in_dim(out, oh.astype(out.dtype), h, axis=2)

    return jax.lax.fori_loop(0, H, one_head, jnp.zeros(q.shape, v.dtype))


class ClvpSelfAttention(nn.Module):
    """Self-attention with optional rotary and an optional per-layer KV cache.

    Attributes:
      hidden_size: D.
      num_heads: H (K = D / H).
      use_bias: bias on q/k/v projections.
      dtype: compute dtype (scores and softmax are float32 regardless).
      tuning: the backend's forms (`clvp_jax.tuning`).
    """

    hidden_size: int
    num_heads: int
    use_bias: bool
    dtype: Dtype | None = None
    tuning: Tuning = dataclasses.field(default_factory=Tuning.for_backend)

    @nn.compact
    def __call__(
        self,
        x: jax.Array,  # [B, T, D]
        allowed: jax.Array | None = None,  # [B, T, S] bool: may query t attend to key s
        rotary: tuple[jax.Array, jax.Array] | None = None,  # cos, sin [T, E]
        kv_cache: LayerKV | SplitKV | None = None,
        cache_index: jax.Array | None = None,  # int32 scalar: slot of the first new token
    ) -> tuple[jax.Array, LayerKV | SplitKV | None]:  # [B, T, D] and the updated cache (None without one)
        B, T, D = x.shape
        H, K = self.num_heads, self.hidden_size // self.num_heads

        def project(name: str) -> jax.Array:
            return linear(D, name, use_bias=self.use_bias, dtype=self.dtype, tuning=self.tuning)(x).reshape(B, T, H, K)

        q = project("q_proj") * (K**-0.5)
        k = project("k_proj")
        v = project("v_proj")
        if rotary is not None:
            cos, sin = rotary
            q, k, v = (apply_rotary(t, cos, sin) for t in (q, k, v))

        if isinstance(kv_cache, SplitKV):
            if T != 1:
                raise ValueError(f"a SplitKV cache decodes one token per row at a time, got {T}")
            read = self.tuning.shared_prefix
            out, new_kv = split_cache_attention(q[:, 0], k[:, 0], v[:, 0], kv_cache, cache_index, read)
            out = out.astype(x.dtype).reshape(B, 1, D)
            return linear(D, "out_proj", dtype=self.dtype, tuning=self.tuning)(out), new_kv

        new_cache = None
        if kv_cache is not None:
            # Cache layouts are the ones the two attention matmuls read without a transpose: keys [B, H, K, S],
            # values [B, H, S, K]. (A [B, S, H, K] cache made XLA copy the whole cache every decode step.)
            cache_k, cache_v = kv_cache
            k_new = jnp.transpose(k, (0, 2, 3, 1)).astype(cache_k.dtype)  # [B, H, K, T]
            v_new = jnp.transpose(v, (0, 2, 1, 3)).astype(cache_v.dtype)  # [B, H, T, K]
            keys = jax.lax.dynamic_update_slice(cache_k, k_new, (0, 0, 0, cache_index))
            values = jax.lax.dynamic_update_slice(cache_v, v_new, (0, 0, cache_index, 0))
            new_cache = (keys, values)
            scores = jnp.einsum(
                "bthk,bhks->bhts", q, keys.astype(q.dtype), preferred_element_type=jnp.float32
            )  # [B, H, T, S]
            if allowed is not None:
                scores = scores + additive_mask(allowed)[:, None, :, :]
            probs = jax.nn.softmax(scores, axis=-1)
            out = (
                jnp.einsum("bhts,bhsk->bthk", probs.astype(values.dtype), values, preferred_element_type=jnp.float32)
                .astype(x.dtype)
                .reshape(B, T, D)
            )
        else:
            out = full_attention(q, k, v, allowed, self.tuning).reshape(B, T, D)
        return linear(D, "out_proj", dtype=self.dtype, tuning=self.tuning)(out), new_cache
