"""Training losses for CLVP and the speech-token decoder: pure, jittable, differentiable.

Axis legend: B batch, T text tokens, M speech codes, L prefix slots (T+3), D width, V decoder vocabulary,
P projection width, F mel bins, N mel frames.

* `clvp_contrastive_loss`: the symmetric cross-entropy of the reference forward's `return_loss` (spec §9.2),
  computed on given (text, speech-code) pairs -- text ids through the text tower, codes through the speech tower.
  Unlike the reference forward, no "fake decode" is involved: the codes are the training targets themselves.
* `decoder_lm_loss`: Tortoise's teacher-forced training layout for the autoregressive decoder
  (tortoise_original.md §2.4):

      slots   [latent, bos_t, t_1 .. t_n, eos_t, (text pads)] [start, c_0 .. c_{m-1}, stop, (mel pads)]
      source  conditioning encoder (its own text positions;   decoder token table + decoder positions 0..M+1,
              no decoder position added)                       so code c_k sits at mel position k+1

  Causal attention; text pads and mel pads are masked as keys. The logits at mel slots 0..M predict
  `[c_0 .. c_{m-1}, stop]`; the cross-entropy is averaged over the real targets of every row (pads excluded).
  Where we differ from the original: it attends to text pads and scores the stop-token padding of short rows;
  we mask both, so a row's loss does not depend on what it is batched with.

Every loss returns `(loss, metrics)`, metrics being a dict of float32 scalars, ready for `jax.value_and_grad(...,
has_aux=True)`. `make_*_loss(model)` adapt them to the `(params, batch, rng) -> (loss, metrics)` form the train
steps use (`batch` is a dict of arrays, see `clvp_jax.training.data`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from clvp_jax.model import ClvpModelForConditionalGeneration, contrastive_loss

Params = Mapping[str, object]
Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
LossFn = Callable[[Params, Batch, jax.Array], tuple[jax.Array, Metrics]]


def clvp_embeddings(
    model: ClvpModelForConditionalGeneration,
    params: Params,
    text_ids: jax.Array,  # [B_t, T]
    text_mask: jax.Array | None,  # [B_t, T]
    speech_ids: jax.Array,  # [B_s, M]
    speech_mask: jax.Array | None,  # [B_s, M]
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(logits_per_text [B_t, B_s] float32, normalised text_embeds [B_t, P], normalised speech_embeds [B_s, P])."""

    scores = model.apply(
        {"params": params}, text_ids, text_mask, speech_ids, speech_mask, method=ClvpModelForConditionalGeneration.score
    )
    return scores.logits_per_text, scores.text_embeds, scores.speech_embeds


def clvp_contrastive_loss(
    model: ClvpModelForConditionalGeneration,
    params: Params,
    text_ids: jax.Array,  # [B, T]
    text_mask: jax.Array | None,  # [B, T], 1 keep / 0 pad
    speech_ids: jax.Array,  # [B, M] speech codes (fixed decoder output or ground truth)
    speech_mask: jax.Array | None,  # [B, M]
) -> tuple[jax.Array, Metrics]:
    """The CLIP loss of B matching (text, speech) pairs: row i of the text batch belongs to row i of the speech.

    Returns:
      (loss, {"loss", "accuracy": in-batch text->speech top-1, "logit_scale": exp(logit_scale)}).
    """
    if text_ids.shape[0] != speech_ids.shape[0]:
        raise ValueError(
            f"{text_ids.shape[0]} texts and {speech_ids.shape[0]} speech rows: the contrastive loss pairs row i "
            "with row i, so pass as many of each"
        )
    logits_per_text, _, _ = clvp_embeddings(model, params, text_ids, text_mask, speech_ids, speech_mask)
    loss = contrastive_loss(logits_per_text)
    B = logits_per_text.shape[0]
    accuracy = jnp.mean(jnp.argmax(logits_per_text, axis=1) == jnp.arange(B))
    scale = jnp.exp(jnp.asarray(params["logit_scale"], jnp.float32))
    return loss, {"loss": loss, "accuracy": accuracy.astype(jnp.float32), "logit_scale": scale}


def mel_inputs(
    speech_codes: jax.Array, speech_mask: jax.Array | None, start: int, stop: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Codes [B, M] (left-aligned, `speech_mask` 1 on real codes) -> the decoder's mel part.

    Returns:
      ids [B, M+2]: `[start, c_0 .. c_{m-1}, stop, stop ..]` (rows shorter than M padded with `stop`);
      keep [B, M+2]: 1 on `start`, the codes and the first `stop`;
      target_mask [B, M+1]: 1 where slot j's prediction `ids[j+1]` is a real target (j <= m).
    """
    B, M = speech_codes.shape
    lengths = jnp.full((B,), M, jnp.int32) if speech_mask is None else speech_mask.astype(jnp.int32).sum(axis=1)
    j = jnp.arange(M + 2)[None, :]  # [1, M+2]
    codes = jnp.pad(speech_codes, ((0, 0), (1, 1)))  # codes[:, j] = c_{j-1}
    ids = jnp.where(j == 0, start, jnp.where(j <= lengths[:, None], codes, stop)).astype(jnp.int32)
    keep = (j <= lengths[:, None] + 1).astype(jnp.int32)
    target_mask = (j[:, : M + 1] <= lengths[:, None]).astype(jnp.int32)
    return ids, keep, target_mask


def decoder_lm_logits(
    model: ClvpModelForConditionalGeneration,
    params: Params,
    input_features: jax.Array,  # [B or 1, F, N] conditioning log-mel
    text_ids: jax.Array,  # [B, T]
    text_mask: jax.Array | None,  # [B, T]
    mel_ids: jax.Array,  # [B, M+2] from `mel_inputs`
    mel_keep: jax.Array,  # [B, M+2]
) -> jax.Array:
    """Teacher-forced logits [B, M+2, V] (float32) at the mel slots of the Tortoise training layout."""
    dec = model.config.decoder_config
    if mel_ids.shape[1] > dec.max_position_embeddings:
        raise ValueError(
            f"{mel_ids.shape[1] - 2} speech codes do not fit: the decoder has {dec.max_position_embeddings} mel "
            "positions and the layout adds start and stop; crop the codes or use a larger max_position_embeddings"
        )
    B, T = text_ids.shape
    mask = jnp.ones((B, T), jnp.int32) if text_mask is None else text_mask.astype(jnp.int32)

    def run(m: ClvpModelForConditionalGeneration) -> jax.Array:
        prompt = m.decoder_prompt(text_ids, mask, input_features)  # [B, L, D], no decoder positions
        positions = jnp.arange(mel_ids.shape[1])[None, :]
        mel = m.speech_decoder_model.embed(mel_ids, positions).astype(prompt.embeds.dtype)  # [B, M+2, D]
        hidden = jnp.concatenate([prompt.embeds, mel], axis=1)
        keep = jnp.concatenate([prompt.keep, mel_keep.astype(jnp.int32)], axis=1)
        logits = m.speech_decoder_model.forward_embeds(hidden, keep).logits  # [B, L+M+2, V]
        return logits[:, prompt.keep.shape[1] :]

    return model.apply({"params": params}, method=run)


def decoder_lm_loss(
    model: ClvpModelForConditionalGeneration,
    params: Params,
    input_features: jax.Array,  # [B or 1, F, N]
    text_ids: jax.Array,  # [B, T]
    text_mask: jax.Array | None,  # [B, T]
    speech_codes: jax.Array,  # [B, M] left-aligned codes
    speech_mask: jax.Array | None,  # [B, M]
) -> tuple[jax.Array, Metrics]:
    """Teacher-forced cross-entropy of the speech codes (and the stop token) given voice and text.

    Returns:
      (loss, {"loss", "accuracy": top-1 over real targets, "tokens": number of real targets}).
    """
    dec = model.config.decoder_config
    ids, keep, target_mask = mel_inputs(speech_codes, speech_mask, dec.bos_token_id, dec.eos_token_id)
    logits = decoder_lm_logits(model, params, input_features, text_ids, text_mask, ids, keep)[:, :-1]  # [B, M+1, V]
    targets = ids[:, 1:]  # [B, M+1]
    weights = target_mask.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    tokens = weights.sum()
    denominator = jnp.maximum(tokens, 1.0)
    loss = jnp.sum(ce * weights) / denominator
    accuracy = jnp.sum((jnp.argmax(logits, axis=-1) == targets) * weights) / denominator
    return loss, {"loss": loss, "accuracy": accuracy, "tokens": tokens}


def make_clvp_loss(model: ClvpModelForConditionalGeneration) -> LossFn:
    """`(params, batch, rng) -> (loss, metrics)` with batch keys text_ids, text_mask, speech_ids, speech_mask.

    The model is deterministic (no dropout is implemented), so `rng` is accepted and unused.
    """

    def loss_fn(params: Params, batch: Batch, rng: jax.Array) -> tuple[jax.Array, Metrics]:
        del rng
        return clvp_contrastive_loss(
            model, params, batch["text_ids"], batch["text_mask"], batch["speech_ids"], batch["speech_mask"]
        )

    return loss_fn


def make_lm_loss(model: ClvpModelForConditionalGeneration) -> LossFn:
    """As `make_clvp_loss` for `decoder_lm_loss`; the batch also carries `input_features` [B, F, N]."""

    def loss_fn(params: Params, batch: Batch, rng: jax.Array) -> tuple[jax.Array, Metrics]:
        del rng
        return decoder_lm_loss(
            model,
            params,
            batch["input_features"],
            batch["text_ids"],
            batch["text_mask"],
            batch["speech_ids"],
            batch["speech_mask"],
        )

    return loss_fn


def retrieval_accuracy(text_embeds: jax.Array, speech_embeds: jax.Array) -> jax.Array:
    """Top-1 text->speech retrieval accuracy of paired rows (row i of each belongs together), float32 scalar."""
    scores = text_embeds @ speech_embeds.T  # [N_t, N_s]
    return jnp.mean(jnp.argmax(scores, axis=1) == jnp.arange(scores.shape[0])).astype(jnp.float32)
