"""`ClvpEncoder`: the text and speech towers of CLVP.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here T the tower's tokens).

token embedding (no absolute positions) -> L x [x + Attn(RMSNorm(x)) (rotary on q, k, v);
x + GLU(RMSNorm(x))] -> LayerNorm -> pooling -> bias-free projection.

Deliberate difference from the reference (spec §14.8): the reference pools over every position, padding
included ("mean" averages pads, "last" may pick a pad). By default we pool over the tokens the attention mask
keeps, so a padded batch gives each row the embedding it has alone. `masked_pooling=False` restores the
reference exactly. With no mask (or an all-ones mask) both agree.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from clvp_jax.attention import ClvpSelfAttention
from clvp_jax.config import ClvpEncoderConfig
from clvp_jax.layers import (
    Dtype,
    EncoderMLP,
    RMSNorm,
    layer_norm,
    linear,
    loop_layers,
    rotary_r0,
    rotary_tables,
)
from clvp_jax.tuning import Tuning


@flax.struct.dataclass
class ClvpEncoderOutput:
    """Attributes: embeds [B, P] (un-normalised), last_hidden_state [B, T, D], pooler_output [B, D]."""

    embeds: jax.Array
    last_hidden_state: jax.Array
    pooler_output: jax.Array


class ClvpEncoderLayer(nn.Module):
    """One pre-norm block: x + Attn(RMSNorm(x)), then x + GLU(RMSNorm(x)). Attributes: config, dtype, tuning."""

    config: ClvpEncoderConfig
    dtype: Dtype | None = None
    tuning: Tuning = dataclasses.field(default_factory=Tuning.for_backend)

    @nn.compact
    def __call__(
        self,
        x: jax.Array,  # [B, T, D]
        allowed: jax.Array | None,  # [B, T, T] bool, or None: every key
        rotary: tuple[jax.Array, jax.Array] | None,  # cos, sin [T, E]
    ) -> jax.Array:  # [B, T, D]
        cfg = self.config
        h = RMSNorm(cfg.layer_norm_eps, dtype=self.dtype, name="input_rmsnorm")(x)
        h, _ = ClvpSelfAttention(
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.use_attention_bias,
            dtype=self.dtype,
            tuning=self.tuning,
            name="self_attn",
        )(h, allowed=allowed, rotary=rotary)
        x = x + h
        h = RMSNorm(cfg.layer_norm_eps, dtype=self.dtype, name="post_attention_rmsnorm")(x)
        h = EncoderMLP(
            cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act, dtype=self.dtype, tuning=self.tuning, name="mlp"
        )(h)
        return x + h


def pool(hidden: jax.Array, summary_type: str, mask: jax.Array | None) -> jax.Array:
    """Pool [B, T, D] -> [B, D]. `mask` [B, T] (1 keep) restricts mean/last to kept tokens; None = all."""
    if summary_type == "first":
        return hidden[:, 0]
    if mask is None:
        return hidden.mean(axis=1) if summary_type == "mean" else hidden[:, -1]
    mask = mask.astype(jnp.float32)
    if summary_type == "mean":
        count = jnp.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        return (jnp.einsum("btd,bt->bd", hidden.astype(jnp.float32), mask) / count).astype(hidden.dtype)
    # "last" and "cls_index" (no cls index is ever given): the last kept token.
    T = hidden.shape[1]
    last = T - 1 - jnp.argmax(mask[:, ::-1] > 0, axis=1)  # [B]
    return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]


class ClvpEncoder(nn.Module):
    """The text or speech encoder.

    Attributes:
      config: the encoder config.
      masked_pooling: pool over kept tokens only (default, see module docstring) or over all (reference).
      dtype: compute dtype.
      scan: run the layers as a loop with one compiled layer, in the form `tuning.tower_loop` names
        (`layers.loop_layers`; same results, a smaller program). For inference only: differentiating through it
        is slow.
      tuning: the backend's forms (`clvp_jax.tuning`).
    """

    config: ClvpEncoderConfig
    masked_pooling: bool = True
    dtype: Dtype | None = None
    scan: bool = False
    tuning: Tuning = dataclasses.field(default_factory=Tuning.for_backend)

    def setup(self) -> None:
        cfg = self.config
        self.token_embedding = nn.Embed(
            cfg.vocab_size, cfg.hidden_size, dtype=self.dtype, embedding_init=nn.initializers.normal(0.02)
        )
        self.layers = [
            ClvpEncoderLayer(cfg, dtype=self.dtype, tuning=self.tuning) for _ in range(cfg.num_hidden_layers)
        ]
        self.final_layer_norm = layer_norm(cfg.layer_norm_eps, "final_layer_norm", dtype=self.dtype)
        self.projection = linear(cfg.projection_dim, "projection", use_bias=False, dtype=self.dtype, tuning=self.tuning)

    def __call__(
        self,
        input_ids: jax.Array | None = None,  # [B, T]
        attention_mask: jax.Array | None = None,  # [B, T], 1 keep / 0 pad
        inputs_embeds: jax.Array | None = None,  # [B, T, D]
    ) -> ClvpEncoderOutput:
        cfg = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = self.token_embedding(input_ids) if inputs_embeds is None else inputs_embeds
        T = x.shape[1]
        # Key padding only (bidirectional): masked keys get finfo.min; padded queries are still computed.
        allowed = (
            None if attention_mask is None else jnp.broadcast_to(attention_mask[:, None, :] > 0, (x.shape[0], T, T))
        )
        rotary = (
            rotary_tables(rotary_r0(cfg.projection_dim, cfg.num_attention_heads), T)
            if cfg.use_rotary_embedding
            else None
        )
        if self.scan and not self.is_initializing():
            layer = ClvpEncoderLayer(cfg, dtype=self.dtype, tuning=self.tuning, parent=None)
            params = [self.variables["params"][f"layers_{i}"] for i in range(len(self.layers))]
            run = lambda p, h: layer.apply({"params": p}, h, allowed, rotary)  # noqa: E731
            x = loop_layers(self.tuning.tower_loop, run, params, x)
        else:
            for layer in self.layers:
                x = layer(x, allowed, rotary)
        hidden = self.final_layer_norm(x)  # [B, T, D]
        pooled = pool(hidden, cfg.summary_type, attention_mask if self.masked_pooling else None)
        return ClvpEncoderOutput(embeds=self.projection(pooled), last_hidden_state=hidden, pooler_output=pooled)
