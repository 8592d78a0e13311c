"""The GPT-2-like speech-token decoder (`ClvpDecoder`, `ClvpModel`, `ClvpForCausalLM`) and its KV cache.

Axis legend: B batch, T new tokens, S cache slots, D width, H heads, K head dim, V vocabulary, L layers.

x = token (or given) embeddings + E_pos[position_ids] -> L x GPT-2 pre-LN blocks -> `layer_norm`.
`ClvpForCausalLM`: logits = lm_head(final_norm(layer_norm(...))) -- two LayerNorms in a row, the second with a
fixed eps of 1e-5, exactly as the reference; lm_head has a bias and is not tied.

The KV cache is an explicit pytree (`KVCache`): per-layer keys [B, H, K, S] and values [B, H, S, K], a [B, S] mask of the slots
that hold real tokens (so padded conditioning rows can be excluded from attention), and the next write index.
It is built by `init_cache`, passed in, and returned updated.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from clvp_jax.attention import ClvpSelfAttention
from clvp_jax.config import ClvpDecoderConfig
from clvp_jax.layers import DecoderMLP, Dtype, dense, layer_norm


@flax.struct.dataclass
class KVCache:
    """Attributes: per-layer keys [B, H, K, S] and values [B, H, S, K]; valid [B, S] bool; index: int32 next slot."""

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    valid: jax.Array
    index: jax.Array

    @property
    def max_length(self) -> int:
        return self.valid.shape[1]


def init_cache(config: ClvpDecoderConfig, batch_size: int, max_length: int, dtype=jnp.float32) -> KVCache:
    """An empty cache for `batch_size` rows and `max_length` slots."""
    B, S, H, K = batch_size, max_length, config.num_attention_heads, config.head_dim
    return KVCache(
        keys=tuple(jnp.zeros((B, H, K, S), dtype) for _ in range(config.num_hidden_layers)),
        values=tuple(jnp.zeros((B, H, S, K), dtype) for _ in range(config.num_hidden_layers)),
        valid=jnp.zeros((batch_size, max_length), bool),
        index=jnp.zeros((), jnp.int32),
    )


@flax.struct.dataclass
class CausalLMOutput:
    """Attributes: logits [B, T, V] float32; last_hidden_state [B, T, D] (after `layer_norm`); cache."""

    logits: jax.Array
    last_hidden_state: jax.Array
    cache: KVCache | None = None


class ClvpDecoderLayer(nn.Module):
    config: ClvpDecoderConfig
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x, allowed, kv_cache=None, cache_index=None):
        cfg = self.config
        h = layer_norm(cfg.layer_norm_epsilon, "input_layernorm", dtype=self.dtype)(x)
        h, kv = ClvpSelfAttention(
            cfg.hidden_size, cfg.num_attention_heads, cfg.use_attention_bias, dtype=self.dtype, name="attn"
        )(h, allowed=allowed, kv_cache=kv_cache, cache_index=cache_index)
        x = x + h
        h = layer_norm(cfg.layer_norm_epsilon, "post_attention_layernorm", dtype=self.dtype)(x)
        h = DecoderMLP(cfg.hidden_size, cfg.inner_dim, cfg.activation_function, dtype=self.dtype, name="mlp")(h)
        return x + h, kv


class ClvpDecoder(nn.Module):
    """The decoder stack. Attributes: config, dtype (compute)."""

    config: ClvpDecoderConfig
    dtype: Dtype | None = None

    def setup(self) -> None:
        cfg = self.config
        init = nn.initializers.normal(0.02)
        self.input_embeds_layer = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=self.dtype, embedding_init=init)
        self.position_embeds_layer = nn.Embed(
            cfg.max_position_embeddings, cfg.hidden_size, dtype=self.dtype, embedding_init=init
        )
        self.layers = [ClvpDecoderLayer(cfg, dtype=self.dtype) for _ in range(cfg.num_hidden_layers)]
        self.layer_norm = layer_norm(cfg.layer_norm_epsilon, "layer_norm", dtype=self.dtype)

    def embed(self, input_ids: jax.Array, position_ids: jax.Array) -> jax.Array:
        """E_tok[ids] + E_pos[positions] (positions broadcast as in the reference)."""
        return self.input_embeds_layer(input_ids) + self.position_embeds_layer(position_ids)

    def __call__(
        self,
        input_ids: jax.Array | None = None,  # [B, T]
        inputs_embeds: jax.Array | None = None,  # [B, T, D]
        position_ids: jax.Array | None = None,  # broadcastable to [B, T]; default arange(T) + cache index
        attention_mask: jax.Array | None = None,  # [B, T] for the new tokens (1 keep / 0 pad)
        cache: KVCache | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = self.input_embeds_layer(input_ids) if inputs_embeds is None else inputs_embeds
        T = x.shape[1]
        if position_ids is None:
            position_ids = jnp.arange(T)[None, :] + (0 if cache is None else cache.index)
        # A plain broadcasting add, as the reference: a [B, 1] position adds one vector to every step.
        x = x + self.position_embeds_layer(position_ids).astype(x.dtype)
        return self.run_layers(x, attention_mask, cache)

    def run_layers(
        self,
        hidden: jax.Array,  # [B, T, D], positions already added
        attention_mask: jax.Array | None = None,  # [B, T]
        cache: KVCache | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """The transformer stack on ready embeddings: causal, plus key padding from masks (and the cache)."""
        B, T, _ = hidden.shape
        keep = jnp.ones((B, T), bool) if attention_mask is None else attention_mask.astype(bool)
        if cache is None:
            causal = jnp.tril(jnp.ones((T, T), bool))
            allowed = causal[None] & keep[:, None, :]  # [B, T, T]
        else:
            index = cache.index
            valid = jax.lax.dynamic_update_slice(cache.valid, keep, (0, index))
            slots = jnp.arange(cache.max_length)
            causal = slots[None, :] <= (index + jnp.arange(T))[:, None]  # [T, S]
            allowed = causal[None] & valid[:, None, :]  # [B, T, S]
        new_keys, new_values = [], []
        for i, layer in enumerate(self.layers):
            kv = None if cache is None else (cache.keys[i], cache.values[i])
            hidden, kv = layer(hidden, allowed, kv, None if cache is None else cache.index)
            if kv is not None:
                new_keys.append(kv[0])
                new_values.append(kv[1])
        hidden = self.layer_norm(hidden)
        if cache is None:
            return hidden, None
        return hidden, KVCache(tuple(new_keys), tuple(new_values), valid, cache.index + T)


class ClvpModel(nn.Module):
    """The reference's `ClvpModel` wrapper (kept so parameter paths mirror `model.decoder.*`)."""

    config: ClvpDecoderConfig
    dtype: Dtype | None = None

    def setup(self) -> None:
        self.decoder = ClvpDecoder(self.config, dtype=self.dtype)

    def __call__(self, *args, **kwargs):
        return self.decoder(*args, **kwargs)


class ClvpForCausalLM(nn.Module):
    """Decoder + double final norm + lm_head. Logits are float32 whatever the compute dtype."""

    config: ClvpDecoderConfig
    dtype: Dtype | None = None

    def setup(self) -> None:
        self.model = ClvpModel(self.config, dtype=self.dtype)
        self.final_norm = layer_norm(1e-5, "final_norm", dtype=jnp.float32)  # eps fixed at 1e-5 (spec §14.9)
        self.lm_head = dense(self.config.vocab_size, "lm_head", dtype=jnp.float32)

    def logits(self, last_hidden_state: jax.Array) -> jax.Array:
        """layer_norm output [B, T, D] -> logits [B, T, V] (float32)."""
        return self.lm_head(self.final_norm(last_hidden_state.astype(jnp.float32)))

    def __call__(
        self,
        input_ids: jax.Array | None = None,
        inputs_embeds: jax.Array | None = None,
        position_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        cache: KVCache | None = None,
    ) -> CausalLMOutput:
        hidden, cache = self.model(input_ids, inputs_embeds, position_ids, attention_mask, cache)
        return CausalLMOutput(logits=self.logits(hidden), last_hidden_state=hidden, cache=cache)

    def forward_embeds(
        self, hidden: jax.Array, attention_mask: jax.Array | None = None, cache: KVCache | None = None
    ) -> CausalLMOutput:
        """Run on embeddings that already carry their positions (e.g. the conditioning prefix)."""
        hidden, cache = self.model.decoder.run_layers(hidden, attention_mask, cache)
        return CausalLMOutput(logits=self.logits(hidden), last_hidden_state=hidden, cache=cache)

    def embed(self, input_ids: jax.Array, position_ids: jax.Array) -> jax.Array:
        return self.model.decoder.embed(input_ids, position_ids)
