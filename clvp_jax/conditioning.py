"""`ClvpConditioningEncoder`: voice (log-mel) + text -> the decoder's conditioning prefix.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here T text tokens, D the decoder's width).

mel [B, F, N] -> 1x1 conv -> M x [h + Attn(GroupNorm(h))] over all frames -> first frame = the voice latent
[B, D]. Text ids get the text bos/eos added (spec §6.1) and are embedded with the text token table plus
mask-derived positions. Output: concat(latent, text) [B, T+3, D].

Deliberate difference from the reference (spec §14.10): the reference finds the padding of each row by looking
for the first token id 0 (hard-coded) and prepends 1s to the mask; we insert the eos at the first position the
attention mask drops (or at the end when there is no mask), and insert the matching 1 into the mask. For
right-padded batches whose pad id is 0, as the tokenizer makes them, both give identical results.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from clvp_jax.attention import ClvpSelfAttention
from clvp_jax.config import ClvpConfig
from clvp_jax.layers import Dtype, linear
from clvp_jax.tuning import Tuning


def insert_eos(ids: jax.Array, mask: jax.Array, eos: int) -> tuple[jax.Array, jax.Array]:
    """Insert `eos` (and a mask 1) into each row [B, T] at its first masked-out position -> [B, T+1]."""
    B, T = ids.shape
    is_pad = mask == 0
    first_pad = jnp.where(is_pad.any(axis=1), jnp.argmax(is_pad, axis=1), T)[:, None]  # [B, 1]
    j = jnp.arange(T + 1)[None, :]
    src = jnp.clip(jnp.where(j < first_pad, j, j - 1), 0, max(T - 1, 0))
    shifted_ids = jnp.take_along_axis(ids, src, axis=1) if T else jnp.zeros((B, 1), ids.dtype)
    shifted_mask = jnp.take_along_axis(mask, src, axis=1) if T else jnp.zeros((B, 1), mask.dtype)
    new_ids = jnp.where(j == first_pad, jnp.asarray(eos, ids.dtype), shifted_ids)
    new_mask = jnp.where(j == first_pad, jnp.asarray(1, mask.dtype), shifted_mask)
    return new_ids, new_mask


def add_bos_eos(
    ids: jax.Array, mask: jax.Array | None, bos: int, eos: int, *, add_bos: bool = True
) -> tuple[jax.Array, jax.Array]:
    """The reference's `_pad_extra_bos_eos_tokens`, vectorised (see module docstring for the padding rule)."""
    ids = jnp.asarray(ids)
    if mask is None:
        mask = jnp.ones(ids.shape, jnp.int32)
    ids, mask = insert_eos(ids, mask.astype(jnp.int32), eos)
    if add_bos:
        B = ids.shape[0]
        ids = jnp.concatenate([jnp.full((B, 1), bos, ids.dtype), ids], axis=1)
        mask = jnp.concatenate([jnp.ones((B, 1), mask.dtype), mask], axis=1)
    return ids, mask


class ClvpConditioningEncoder(nn.Module):
    """Builds the conditioning prefix. Attributes: config (composite), dtype (compute), tuning (backend forms)."""

    config: ClvpConfig
    dtype: Dtype | None = None
    tuning: Tuning = dataclasses.field(default_factory=Tuning.for_backend)

    def setup(self) -> None:
        dec, text = self.config.decoder_config, self.config.text_config
        D = dec.hidden_size
        init = nn.initializers.normal(0.02)
        self.text_token_embedding = nn.Embed(text.vocab_size, D, dtype=self.dtype, embedding_init=init)
        self.text_position_embedding = nn.Embed(dec.max_text_tokens, D, dtype=self.dtype, embedding_init=init)
        self.mel_conv = linear(D, "mel_conv", dtype=self.dtype, tuning=self.tuning)  # the 1x1 Conv1d, weight [D, F]
        self.group_norms = [
            nn.GroupNorm(num_groups=dec.num_groups, epsilon=1e-5, use_fast_variance=False, dtype=jnp.float32)
            for _ in range(dec.num_mel_attn_blocks)
        ]
        self.mel_attn_blocks = [
            ClvpSelfAttention(D, dec.num_attention_heads, dec.use_attention_bias, dtype=self.dtype, tuning=self.tuning)
            for _ in range(dec.num_mel_attn_blocks)
        ]

    def voice_latent(self, input_features: jax.Array) -> jax.Array:
        """Log-mel [B, F, N] -> voice latent [B, D] (the first frame after the mel attention blocks)."""
        h = self.mel_conv(jnp.swapaxes(input_features, 1, 2).astype(self.dtype or jnp.float32))  # [B, N, D]
        for norm, attn in zip(self.group_norms, self.mel_attn_blocks, strict=True):
            # GroupNorm statistics over (channels of a group) x (all frames), in float32.
            normed = norm(h.astype(jnp.float32)).astype(h.dtype)  # [B, N, D]
            h = h + attn(normed)[0]  # full bidirectional attention over every frame, padding included
        return h[:, 0]

    def text_embeddings(self, input_ids: jax.Array, attention_mask: jax.Array | None) -> jax.Array:
        """Text ids [B, T] (+ mask) -> bos/eos added, embedded with mask-derived positions: [B, T+2, D]."""
        text = self.config.text_config
        ids, mask = add_bos_eos(input_ids, attention_mask, text.bos_token_id, text.eos_token_id)
        positions = jnp.cumsum(mask, axis=-1) - 1  # pads repeat the last valid index
        positions = jnp.clip(positions, 0, self.config.decoder_config.max_text_tokens - 1)
        return self.text_token_embedding(ids) + self.text_position_embedding(positions)

    def __call__(
        self,
        input_features: jax.Array,  # [B_a, F, N] log-mel of B_a clips
        input_ids: jax.Array,  # [B_t, T] B_t texts
        attention_mask: jax.Array | None = None,  # [B_t, T]
    ) -> jax.Array:  # [B, T+3, D], B = max(B_a, B_t)
        if input_ids.shape[1] + 2 > self.config.decoder_config.max_text_tokens:
            raise ValueError(
                f"text of {input_ids.shape[1]} tokens does not fit: the conditioning encoder has "
                f"{self.config.decoder_config.max_text_tokens} text positions and adds 2 tokens; split the text"
            )
        text = self.text_embeddings(input_ids, attention_mask)  # [B_t, T+2, D]
        mel = self.voice_latent(input_features)[:, None, :].astype(text.dtype)  # [B_a, 1, D]
        b_t, b_a = text.shape[0], mel.shape[0]
        if b_t != b_a:
            if b_t == 1:
                text = jnp.broadcast_to(text, (b_a,) + text.shape[1:])
            elif b_a == 1:
                mel = jnp.broadcast_to(mel, (b_t,) + mel.shape[1:])
            else:
                raise ValueError(
                    f"{b_t} texts and {b_a} audio clips: pass one text, one clip, or as many texts as clips"
                )
        return jnp.concatenate([mel, text], axis=1)
