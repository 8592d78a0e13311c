"""Multi-head self-attention shared by the encoders, the decoder layers and the mel attention blocks.

Axis legend: B batch, T query length, S key length (cache slots when cached), D width, H heads, K head dim.

As the reference's `ClvpSelfAttention`: q, k, v projections (bias iff `use_bias`), q scaled by K^-1/2 right
after projection, optional partial rotary on q, k **and v** (encoders), additive mask (0 / finfo.min),
softmax in float32, out_proj with bias. The KV cache is an explicit pair of arrays per layer that the caller
passes in and gets back; new keys/values are written at `cache_index` with `dynamic_update_slice`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from clvp_jax.layers import Dtype, additive_mask, apply_rotary, dense

LayerKV = tuple[jax.Array, jax.Array]  # keys [B, H, K, S], values [B, H, S, K]


class ClvpSelfAttention(nn.Module):
    """Self-attention with optional rotary and an optional per-layer KV cache.

    Attributes:
      hidden_size: D.
      num_heads: H (K = D / H).
      use_bias: bias on q/k/v projections.
      dtype: compute dtype (scores and softmax are float32 regardless).
    """

    hidden_size: int
    num_heads: int
    use_bias: bool
    dtype: Dtype | None = None

    @nn.compact
    def __call__(
        self,
        x: jax.Array,  # [B, T, D]
        allowed: jax.Array | None = None,  # [B, T, S] bool: may query t attend to key s
        rotary: tuple[jax.Array, jax.Array] | None = None,  # cos, sin [T, R]
        kv_cache: LayerKV | None = None,
        cache_index: jax.Array | None = None,  # int32 scalar: slot of the first new token
    ) -> tuple[jax.Array, LayerKV | None]:
        B, T, D = x.shape
        H, K = self.num_heads, self.hidden_size // self.num_heads

        def project(name: str) -> jax.Array:
            return dense(D, name, use_bias=self.use_bias, dtype=self.dtype)(x).reshape(B, T, H, K)

        q = project("q_proj") * (K**-0.5)
        k = project("k_proj")
        v = project("v_proj")
        if rotary is not None:
            cos, sin = rotary
            q, k, v = (apply_rotary(t, cos, sin) for t in (q, k, v))

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
            scores = jnp.einsum("bthk,bhks->bhts", q, keys.astype(q.dtype), preferred_element_type=jnp.float32)
        else:
            scores = jnp.einsum("bthk,bshk->bhts", q, k, preferred_element_type=jnp.float32)
        if allowed is not None:
            scores = scores + additive_mask(allowed)[:, None, :, :]
        probs = jax.nn.softmax(scores, axis=-1)
        if kv_cache is not None:
            out = jnp.einsum("bhts,bhsk->bthk", probs.astype(values.dtype), values).astype(x.dtype).reshape(B, T, D)
        else:
            out = jnp.einsum("bhts,bshk->bthk", probs.astype(v.dtype), v).reshape(B, T, D)
        return dense(D, "out_proj", dtype=self.dtype)(out), new_cache
