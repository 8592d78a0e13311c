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

LayerKV = tuple[jax.Array, jax.Array]  # ([B, S, H, K], [B, S, H, K])


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
            cache_k, cache_v = kv_cache
            k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), (0, cache_index, 0, 0))
            v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, cache_index, 0, 0))
            new_cache = (k, v)

        scores = jnp.einsum("bthk,bshk->bhts", q, k.astype(q.dtype), preferred_element_type=jnp.float32)
        if allowed is not None:
            scores = scores + additive_mask(allowed)[:, None, :, :]
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhts,bshk->bthk", probs, v).reshape(B, T, D)
        return dense(D, "out_proj", dtype=self.dtype)(out), new_cache
