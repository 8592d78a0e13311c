"""The GPT-2-like speech-token decoder (`ClvpDecoder`, `ClvpModel`, `ClvpForCausalLM`) and its KV cache.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here T the new tokens of a call, S cache slots;
per-layer arrays are tuples, never an axis).

x = token (or given) embeddings + E_pos[position_ids] -> L x GPT-2 pre-LN blocks -> `layer_norm`.
`ClvpForCausalLM`: logits = lm_head(final_norm(layer_norm(...))) -- two LayerNorms in a row, the second with a
fixed eps of 1e-5, exactly as the reference; lm_head has a bias and is not tied.

The KV cache is an explicit pytree (`KVCache`): per-layer keys [B, H, K, S] and values [B, H, S, K], a [B, S] mask of the slots
that hold real tokens (so padded conditioning rows can be excluded from attention), and the next write index.
It is built by `init_cache`, passed in, and returned updated. For decoding many candidates of a few prompts,
`SharedPrefixCache` (built from a prefill `KVCache` by `share_prefix`) keeps each prompt's keys/values once and
each row's generated tokens apart, so a step reads every prompt once and only the filled part of each row's slots.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from clvp_jax.attention import ClvpSelfAttention, LayerKV, SplitKV
from clvp_jax.config import ClvpDecoderConfig
from clvp_jax.layers import DecoderMLP, Dtype, layer_norm, linear
from clvp_jax.tuning import Tuning


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
class SharedPrefixCache:
    """Decode cache for R rows over G shared prompts of L slots (one new token per row per call).

    Attributes:
      prefix_keys: per-layer [G, H, K, L]; prefix_values: per-layer [G, H, L, K]; prefix_valid: [G, L] bool.
      group: [R] int32, each row's prompt.
      keys: per-layer [R, H, K, M]; values: per-layer [R, H, M, K]: the rows' own tokens (M a multiple of block).
      index: int32, own tokens cached so far (the next one goes to own slot `index`).
      block: own slots read per inner-loop iteration (static).
    """

    prefix_keys: tuple[jax.Array, ...]
    prefix_values: tuple[jax.Array, ...]
    prefix_valid: jax.Array
    group: jax.Array
    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    index: jax.Array
    block: int = flax.struct.field(pytree_node=False, default=16)


def share_prefix(prefill: KVCache, group: jax.Array, max_new_tokens: int, block: int = 16) -> SharedPrefixCache:
    """A decode cache for rows `group` [R] (indices into the prefill's batch) with room for `max_new_tokens`.

    The prefill cache must be exactly full (its slots are the prompt, `index == max_length`).
    """
    R = group.shape[0]
    M = max(block, -(-max_new_tokens // block) * block)
    own = lambda shape, like: jnp.zeros(shape, like.dtype)  # noqa: E731
    return SharedPrefixCache(
        prefix_keys=prefill.keys,
        prefix_values=prefill.values,
        prefix_valid=prefill.valid,
        group=group.astype(jnp.int32),
        keys=tuple(own((R, *k.shape[1:3], M), k) for k in prefill.keys),
        values=tuple(own((R, v.shape[1], M, v.shape[3]), v) for v in prefill.values),
        index=jnp.zeros((), jnp.int32),
        block=block,
    )


@flax.struct.dataclass
class CausalLMOutput:
    """Attributes: logits [B, T, V] float32; last_hidden_state [B, T, D] (after `layer_norm`); cache."""

    logits: jax.Array
    last_hidden_state: jax.Array
    cache: KVCache | None = None


class ClvpDecoderLayer(nn.Module):
    """One GPT-2 pre-LN block: x + Attn(LN(x)), then x + MLP(LN(x)). Attributes: config, dtype, tuning."""

    config: ClvpDecoderConfig
    dtype: Dtype | None = None
    tuning: Tuning = dataclasses.field(default_factory=Tuning.for_backend)

    @nn.compact
    def __call__(
        self,
        x: jax.Array,  # [B, T, D]
        allowed: jax.Array | None,  # [B, T, S] bool (None with a SplitKV: its own masks)
        kv_cache: LayerKV | SplitKV | None = None,
        cache_index: jax.Array | None = None,  # int32 scalar: slot of the first new token
    ) -> tuple[jax.Array, LayerKV | SplitKV | None]:  # [B, T, D], the updated layer cache
        cfg = self.config
        h = layer_norm(cfg.layer_norm_epsilon, "input_layernorm", dtype=self.dtype)(x)
        h, kv = ClvpSelfAttention(
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.use_attention_bias,
            dtype=self.dtype,
            tuning=self.tuning,
            name="attn",
        )(h, allowed=allowed, kv_cache=kv_cache, cache_index=cache_index)
        x = x + h
        h = layer_norm(cfg.layer_norm_epsilon, "post_attention_layernorm", dtype=self.dtype)(x)
        h = DecoderMLP(
            cfg.hidden_size, cfg.inner_dim, cfg.activation_function, dtype=self.dtype, tuning=self.tuning, name="mlp"
        )(h)
        return x + h, kv


class ClvpDecoder(nn.Module):
    """The decoder stack. Attributes: config, dtype (compute), tuning (backend forms)."""

    config: ClvpDecoderConfig
    dtype: Dtype | None = None
    tuning: Tuning = dataclasses.field(default_factory=Tuning.for_backend)

    def setup(self) -> None:
        cfg = self.config
        init = nn.initializers.normal(0.02)
        self.input_embeds_layer = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=self.dtype, embedding_init=init)
        self.position_embeds_layer = nn.Embed(
            cfg.max_position_embeddings, cfg.hidden_size, dtype=self.dtype, embedding_init=init
        )
        self.layers = [
            ClvpDecoderLayer(cfg, dtype=self.dtype, tuning=self.tuning) for _ in range(cfg.num_hidden_layers)
        ]
        self.layer_norm = layer_norm(cfg.layer_norm_epsilon, "layer_norm", dtype=self.dtype)

    def embed(self, input_ids: jax.Array, position_ids: jax.Array) -> jax.Array:
        """E_tok[ids] + E_pos[positions] (positions broadcast as in the reference): [B, T] -> [B, T, D]."""
        return self.input_embeds_layer(input_ids) + self.position_embeds_layer(position_ids)

    def __call__(
        self,
        input_ids: jax.Array | None = None,  # [B, T]
        inputs_embeds: jax.Array | None = None,  # [B, T, D]
        position_ids: jax.Array | None = None,  # broadcastable to [B, T]; default arange(T) + cache index
        attention_mask: jax.Array | None = None,  # [B, T] for the new tokens (1 keep / 0 pad)
        cache: KVCache | SharedPrefixCache | None = None,
    ) -> tuple[jax.Array, KVCache | SharedPrefixCache | None]:  # [B, T, D] after `layer_norm`, the cache
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if isinstance(cache, SharedPrefixCache) and position_ids is None:
            raise ValueError("decoding with a SharedPrefixCache needs explicit position_ids")
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
        cache: KVCache | SharedPrefixCache | None = None,
    ) -> tuple[jax.Array, KVCache | SharedPrefixCache | None]:
        """The transformer stack on ready embeddings: causal, plus key padding from masks (and the cache)."""
        if isinstance(cache, SharedPrefixCache):
            return self._run_shared(hidden, cache)
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

    def _run_shared(self, hidden: jax.Array, cache: SharedPrefixCache) -> tuple[jax.Array, SharedPrefixCache]:
        """One token per row [R, 1, D] over a SharedPrefixCache (rows attend to their prompt and own tokens)."""
        allowed = jnp.take(cache.prefix_valid, cache.group, axis=0)  # [R, L]
        new_keys, new_values = [], []
        for i, layer in enumerate(self.layers):
            kv = SplitKV(
                cache.prefix_keys[i], cache.prefix_values[i], allowed, cache.group, cache.keys[i], cache.values[i],
                cache.block,
            )  # fmt: skip
            hidden, kv = layer(hidden, None, kv, cache.index)
            new_keys.append(kv.keys)
            new_values.append(kv.values)
        cache = cache.replace(keys=tuple(new_keys), values=tuple(new_values), index=cache.index + 1)
        return self.layer_norm(hidden), cache


class ClvpModel(nn.Module):
    """The reference's `ClvpModel` wrapper (kept so parameter paths mirror `model.decoder.*`)."""

    config: ClvpDecoderConfig
    dtype: Dtype | None = None
    tuning: Tuning = dataclasses.field(default_factory=Tuning.for_backend)

    def setup(self) -> None:
        self.decoder = ClvpDecoder(self.config, dtype=self.dtype, tuning=self.tuning)

    def __call__(
        self,
        input_ids: jax.Array | None = None,  # [B, T]
        inputs_embeds: jax.Array | None = None,  # [B, T, D]
        position_ids: jax.Array | None = None,  # broadcastable to [B, T]
        attention_mask: jax.Array | None = None,  # [B, T]
        cache: KVCache | SharedPrefixCache | None = None,
    ) -> tuple[jax.Array, KVCache | SharedPrefixCache | None]:  # as `ClvpDecoder.__call__`
        return self.decoder(input_ids, inputs_embeds, position_ids, attention_mask, cache)


class ClvpForCausalLM(nn.Module):
    """Decoder + double final norm + lm_head. Logits are float32 whatever the compute dtype.

    Attributes: config, dtype (compute), tuning (backend forms).
    """

    config: ClvpDecoderConfig
    dtype: Dtype | None = None
    tuning: Tuning = dataclasses.field(default_factory=Tuning.for_backend)

    def setup(self) -> None:
        self.model = ClvpModel(self.config, dtype=self.dtype, tuning=self.tuning)
        self.final_norm = layer_norm(1e-5, "final_norm", dtype=jnp.float32)  # eps fixed at 1e-5 (spec §14.9)
        self.lm_head = linear(self.config.vocab_size, "lm_head", dtype=jnp.float32, tuning=self.tuning)

    def logits(self, last_hidden_state: jax.Array) -> jax.Array:
        """layer_norm output [B, T, D] -> logits [B, T, V] (float32)."""
        return self.lm_head(self.final_norm(last_hidden_state.astype(jnp.float32)))

    def __call__(
        self,
        input_ids: jax.Array | None = None,  # [B, T]
        inputs_embeds: jax.Array | None = None,  # [B, T, D]
        position_ids: jax.Array | None = None,  # broadcastable to [B, T]
        attention_mask: jax.Array | None = None,  # [B, T]
        cache: KVCache | SharedPrefixCache | None = None,
    ) -> CausalLMOutput:
        hidden, cache = self.model(input_ids, inputs_embeds, position_ids, attention_mask, cache)
        return CausalLMOutput(logits=self.logits(hidden), last_hidden_state=hidden, cache=cache)

    def forward_embeds(
        self, hidden: jax.Array, attention_mask: jax.Array | None = None, cache: KVCache | None = None
    ) -> CausalLMOutput:
        """Run on embeddings [B, T, D] that already carry their positions (e.g. the conditioning prefix)."""
        hidden, cache = self.model.decoder.run_layers(hidden, attention_mask, cache)
        return CausalLMOutput(logits=self.logits(hidden), last_hidden_state=hidden, cache=cache)

    def embed(self, input_ids: jax.Array, position_ids: jax.Array) -> jax.Array:
        """E_tok[ids] + E_pos[positions]: [B, T] -> [B, T, D]."""
        return self.model.decoder.embed(input_ids, position_ids)
