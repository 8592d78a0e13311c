"""`ClvpModelForConditionalGeneration`: conditioning encoder + speech decoder + the two CLVP towers.

Axis legend: B batch (B_t texts, B_a voices), T text tokens, S speech tokens, L prompt slots, D width,
P projection width, F mel bins, N mel frames.

Submodules are named as in the reference (`conditioning_encoder`, `speech_decoder_model`, `text_encoder_model`,
`speech_encoder_model`, plus the `logit_scale` parameter), so each can be applied alone, e.g.
`model.apply(variables, feats, ids, method=lambda m, *a: m.conditioning_encoder(*a))`.

The model owns the two things every caller needs: `decoder_prompt` builds the decoder's prompt (voice latent + text
with bos/eos, and its keep mask) and `score` / `score_candidates` score speech against text (CLVP similarity).
Generation, training, the pipeline and `__call__` all go through them.

`__call__` has the reference forward's semantics (spec §9.3): a teacher-free "fake decode" (argmax over the
conditioning prefix), fixed, then scored. Generation lives in `clvp_jax.generation`.
Where we deliberately differ: pooling respects the attention mask by default (see `clvp_jax.encoder`), and
`get_text_features` returns an array like `get_speech_features` (spec §14.5).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from clvp_jax.conditioning import ClvpConditioningEncoder, add_bos_eos
from clvp_jax.config import ClvpConfig
from clvp_jax.decoder import ClvpForCausalLM
from clvp_jax.encoder import ClvpEncoder
from clvp_jax.layers import Dtype
from clvp_jax.tuning import Tuning


@flax.struct.dataclass
class ClvpOutput:
    """Output of the forward pass (names as the reference's `ClvpOutput`).

    Attributes:
      loss: symmetric contrastive loss (only with `return_loss=True`), else None.
      speech_ids: the fixed decoder ids that were scored [B, S].
      logits_per_speech: [B_speech, B_text]; logits_per_text: [B_text, B_speech].
      text_embeds, speech_embeds: L2-normalised projections [B, P].
      text_model_output, speech_model_output: pooled encoder outputs [B, D].
      conditioning_embeds: the conditioning prefix [B, T+3, D_dec].
    """

    loss: jax.Array | None
    speech_ids: jax.Array
    logits_per_speech: jax.Array
    logits_per_text: jax.Array
    text_embeds: jax.Array
    speech_embeds: jax.Array
    text_model_output: jax.Array
    speech_model_output: jax.Array
    conditioning_embeds: jax.Array


@flax.struct.dataclass
class DecoderPrompt:
    """The decoder's prompt: what precedes the first speech code (built by `decoder_prompt`).

    Attributes:
      embeds: [B, L, D] inputs: `[latent, bos, t_1 .. t_n, eos, (pads)]` (L = T + 3) from the conditioning
        encoder, without decoder positions, then (with `start_token=True`) E_tok[start] + E_pos[0] (L = T + 4).
      keep: [B, L] int32: 1 on slots the decoder attends to, 0 on text padding.
    """

    embeds: jax.Array
    keep: jax.Array


@flax.struct.dataclass
class ClvpScores:
    """CLVP similarity of texts against speech (built by `score`).

    Attributes:
      logits_per_text: [B_t, B_s] float32, exp(logit_scale) * cosine similarity; logits_per_speech: its transpose.
      text_embeds: [B_t, P], speech_embeds: [B_s, P]: L2-normalised projections (float32).
      text_model_output: [B_t, D_t], speech_model_output: [B_s, D_s]: the towers' pooled outputs.
    """

    logits_per_text: jax.Array
    logits_per_speech: jax.Array
    text_embeds: jax.Array
    speech_embeds: jax.Array
    text_model_output: jax.Array
    speech_model_output: jax.Array


def fix_speech_decoder_output(ids: jax.Array, eos_token_id: int, fixing_codes: Sequence[int]) -> jax.Array:
    """Tortoise's `fix_autoregressive_output` as the reference applies it (spec §9.1); pure and jittable.

    Drops column 0, then in every row that contains `eos_token_id`: every position at or after
    min(first eos, max(0, T - 3)) becomes `fixing_codes[0]`, except that the last k = min(len(codes) - 1, T)
    positions take the last k entries of `fixing_codes[1:]`. Rows without eos are unchanged. Safe for T < 3.

    Args:
      ids: [B, 1 + T] decoder output (bos first).
      eos_token_id: the decoder's stop token.
      fixing_codes: e.g. (83, 45, 45, 248).
    Returns:
      [B, T] fixed ids, same dtype.
    """
    ids = ids[:, 1:]
    T = ids.shape[1]
    if T == 0:
        return ids
    is_stop = ids == eos_token_id
    filler = [fixing_codes[0]] * T
    k = min(len(fixing_codes) - 1, T)
    if k > 0:
        filler[T - k :] = list(fixing_codes[1:])[-k:]
    filler = jnp.asarray(filler, ids.dtype)
    boundary = jnp.minimum(jnp.argmax(is_stop, axis=1), max(0, T - 3))[:, None]
    replace = is_stop.any(axis=1, keepdims=True) & (jnp.arange(T)[None, :] >= boundary)
    return jnp.where(replace, filler[None, :], ids)


def l2_normalize(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def clip_similarity(
    text_embeds: jax.Array, speech_embeds: jax.Array, logit_scale: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Normalise both embeddings; logits_per_text = t . s^T * exp(logit_scale).

    Returns (logits_per_text [B_t, B_s], logits_per_speech [B_s, B_t], text_embeds, speech_embeds) normalised.
    """
    t, s = l2_normalize(text_embeds), l2_normalize(speech_embeds)
    logits_per_text = jnp.exp(logit_scale.astype(jnp.float32)) * t @ s.T
    return logits_per_text, logits_per_text.T, t, s


def contrastive_loss(logits_per_text: jax.Array) -> jax.Array:
    """0.5 * (CE(logits_per_text, arange) + CE(logits_per_text^T, arange)); needs a square matrix."""
    n = logits_per_text.shape[0]
    if logits_per_text.shape != (n, n):
        raise ValueError(f"the contrastive loss needs as many texts as clips, got logits {logits_per_text.shape}")
    import optax  # local: generation never needs it, and it adds ~10 MiB to every process

    labels = jnp.arange(n)
    ce = optax.softmax_cross_entropy_with_integer_labels
    return 0.5 * (ce(logits_per_text, labels).mean() + ce(logits_per_text.T, labels).mean())


class ClvpModelForConditionalGeneration(nn.Module):
    """The composite CLVP model.

    Attributes:
      config: the composite config.
      masked_pooling: encoders pool over kept tokens (default) or over all positions (reference behaviour).
      dtype: compute dtype (float32, or bfloat16 for speed); logits and similarities stay float32.
      scan_layers: run the CLVP towers as loops over their layers, each compiled once (`layers.loop_layers`):
        the same results from a smaller program. `generate` turns it on; leave it off to differentiate
        (training), where it would be slow. (The decoder stays unrolled: its few-row decode step would pay for
        copying each layer's weights, and scanning its prefill saved little compile time for 21 MB more
        temporary memory.)
      tuning: the backend's forms of the computation (`clvp_jax.tuning.Tuning`; default: the backend's own).
    """

    config: ClvpConfig
    masked_pooling: bool = True
    dtype: Dtype | None = None
    scan_layers: bool = False
    tuning: Tuning = dataclasses.field(default_factory=Tuning.for_backend)

    def setup(self) -> None:
        cfg, scan, kw = self.config, self.scan_layers, dict(dtype=self.dtype, tuning=self.tuning)
        self.conditioning_encoder = ClvpConditioningEncoder(cfg, **kw)
        self.speech_decoder_model = ClvpForCausalLM(cfg.decoder_config, **kw)
        self.text_encoder_model = ClvpEncoder(cfg.text_config, self.masked_pooling, scan=scan, **kw)
        self.speech_encoder_model = ClvpEncoder(cfg.speech_config, self.masked_pooling, scan=scan, **kw)
        self.logit_scale = self.param(
            "logit_scale", nn.initializers.constant(cfg.logit_scale_init_value), (), jnp.float32
        )

    def get_text_features(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """Un-normalised text embeddings [B, P]."""
        return self.text_encoder_model(input_ids, attention_mask).embeds

    def get_speech_features(self, speech_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """Un-normalised speech embeddings [B, P] of (fixed) speech ids."""
        return self.speech_encoder_model(speech_ids, attention_mask).embeds

    def similarity(
        self, text_embeds: jax.Array, speech_embeds: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """(logits_per_text, logits_per_speech, normalised text_embeds, normalised speech_embeds)."""
        return clip_similarity(text_embeds, speech_embeds, self.logit_scale)

    def fix_speech_decoder_output(self, ids: jax.Array) -> jax.Array:
        """`fix_speech_decoder_output` with this model's stop token and fixing codes: [B, 1 + S] -> [B, S]."""
        dec = self.config.decoder_config
        return fix_speech_decoder_output(ids, dec.eos_token_id, dec.decoder_fixing_codes)

    def text_with_eos(self, input_ids: jax.Array, attention_mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """The text as the reference composite's generate feeds it (spec §9.4): one eos after each text (no bos).

        Args:
          input_ids: [B, T] tokenizer ids, right-padded; attention_mask: [B, T] 1 keep / 0 pad (None: all kept).
        Returns:
          (ids [B, T+1], mask [B, T+1] int32): the eos sits at each row's first padding slot (or at the end).
        """
        text = self.config.text_config
        return add_bos_eos(input_ids, attention_mask, text.bos_token_id, text.eos_token_id, add_bos=False)

    def decoder_prompt(
        self,
        input_ids: jax.Array,  # [B_t, T]
        attention_mask: jax.Array | None = None,  # [B_t, T]
        input_features: jax.Array | None = None,  # [B_a, F, N]
        conditioning_latents: jax.Array | None = None,  # [B_a, D]
        *,
        start_token: bool = False,
    ) -> DecoderPrompt:
        """The decoder's prompt: voice latent, then the text with the conditioning encoder's bos and eos.

        The voice comes from log-mel `input_features` (through the conditioning encoder) or from given
        `conditioning_latents` (exactly one of the two). One text with many voices, or one voice with many texts,
        is broadcast; otherwise B_t must equal B_a. The text slots carry the conditioning encoder's own text
        positions and no decoder positions (the Tortoise input; spec §14.2).

        Args:
          input_ids, attention_mask: the text as it should reach the conditioning encoder (generation first adds
            the reference composite's extra eos, `text_with_eos`; training does not).
          input_features: log-mel [B_a, F, N]; conditioning_latents: [B_a, D].
          start_token: append the decoder's start token at mel position 0 (what generation decodes from;
            training feeds it with the codes instead).
        Returns:
          `DecoderPrompt` with B = max(B_t, B_a) rows and L = T + 3 slots (T + 4 with the start token).
        Raises:
          ValueError: both or neither voice inputs, text too long for the text positions, batches that do not
            broadcast.
        """
        if (input_features is None) == (conditioning_latents is None):
            raise ValueError("pass exactly one of input_features (log-mel) and conditioning_latents")
        dec, txt = self.config.decoder_config, self.config.text_config
        if input_ids.shape[1] + 2 > dec.max_text_tokens:
            raise ValueError(
                f"text of {input_ids.shape[1]} tokens does not fit: the conditioning encoder has "
                f"{dec.max_text_tokens} text positions and adds 2 tokens; split the text"
            )
        text = self.conditioning_encoder.text_embeddings(input_ids, attention_mask)  # [B_t, T+2, D]
        _, text_keep = add_bos_eos(input_ids, attention_mask, txt.bos_token_id, txt.eos_token_id)  # [B_t, T+2]
        if conditioning_latents is None:
            latents = self.conditioning_encoder.voice_latent(input_features)  # [B_a, D]
        else:
            latents = conditioning_latents
        latents = latents.astype(text.dtype)[:, None, :]  # [B_a, 1, D]
        b_t, b_a = text.shape[0], latents.shape[0]
        if b_t != b_a and 1 not in (b_t, b_a):
            raise ValueError(f"{b_t} texts and {b_a} audio clips: pass one text, one clip, or as many texts as clips")
        B = max(b_t, b_a)
        text = jnp.broadcast_to(text, (B,) + text.shape[1:])
        embeds = [jnp.broadcast_to(latents, (B,) + latents.shape[1:]), text]
        keep = [jnp.ones((B, 1), jnp.int32), jnp.broadcast_to(text_keep.astype(jnp.int32), (B, text_keep.shape[1]))]
        if start_token:
            zeros = jnp.zeros((B, 1), jnp.int32)
            embeds.append(self.speech_decoder_model.embed(zeros + dec.bos_token_id, zeros).astype(text.dtype))
            keep.append(jnp.ones((B, 1), jnp.int32))
        return DecoderPrompt(embeds=jnp.concatenate(embeds, axis=1), keep=jnp.concatenate(keep, axis=1))

    def score(
        self,
        input_ids: jax.Array,  # [B_t, T]
        attention_mask: jax.Array | None,  # [B_t, T]
        speech_ids: jax.Array,  # [B_s, S]
        speech_mask: jax.Array | None = None,  # [B_s, S]
    ) -> ClvpScores:
        """CLVP similarity of every text against every speech sequence: both towers, normalise, scale.

        Args:
          input_ids, attention_mask: text ids for the text tower (as given: no tokens are added here).
          speech_ids: (fixed) speech codes for the speech tower; speech_mask: their padding (None: none).
        Returns:
          `ClvpScores` (logits [B_t, B_s] float32).
        """
        text = self.text_encoder_model(input_ids, attention_mask)
        speech = self.speech_encoder_model(speech_ids, speech_mask)
        lpt, lps, t, s = self.similarity(text.embeds, speech.embeds)
        return ClvpScores(lpt, lps, t, s, text.pooler_output, speech.pooler_output)

    def score_candidates(
        self,
        input_ids: jax.Array,  # [B, T]
        attention_mask: jax.Array | None,  # [B, T]
        sequences: jax.Array,  # [R, 1 + S]
    ) -> tuple[jax.Array, ClvpScores]:
        """Score raw decoder outputs against their texts as generation ranks them (the reference composite's way).

        The texts get the extra eos (`text_with_eos`), the sequences are fixed (`fix_speech_decoder_output`: the
        start token dropped, the stop token and what follows replaced by the fixing codes), then `score`.

        Args:
          input_ids, attention_mask: tokenizer ids [B, T] and mask (None: no padding).
          sequences: [R, 1 + S] decoder output, start token first (already padded with the stop token if wanted).
        Returns:
          (speech_ids [R, S] as scored, `ClvpScores` with logits_per_text [B, R]).
        """
        speech_ids = self.fix_speech_decoder_output(sequences)
        return speech_ids, self.score(*self.text_with_eos(input_ids, attention_mask), speech_ids)

    def __call__(
        self,
        input_ids: jax.Array,  # [B, T]
        input_features: jax.Array,  # [B, F, N]
        attention_mask: jax.Array | None = None,  # [B, T]
        return_loss: bool = False,
    ) -> ClvpOutput:
        prompt = self.decoder_prompt(input_ids, attention_mask, input_features)  # [B, T+3, D]
        # As the reference: default positions 0..T+2 on the conditioning slots, causal, no padding mask.
        logits = self.speech_decoder_model(inputs_embeds=prompt.embeds).logits
        speech_ids = self.fix_speech_decoder_output(jnp.argmax(logits, axis=-1))
        scores = self.score(input_ids, attention_mask, speech_ids)
        return ClvpOutput(
            loss=contrastive_loss(scores.logits_per_text) if return_loss else None,
            speech_ids=speech_ids,
            logits_per_speech=scores.logits_per_speech,
            logits_per_text=scores.logits_per_text,
            text_embeds=scores.text_embeds,
            speech_embeds=scores.speech_embeds,
            text_model_output=scores.text_model_output,
            speech_model_output=scores.speech_model_output,
            conditioning_embeds=prompt.embeds,
        )

    def init_all(self, input_ids: jax.Array, input_features: jax.Array) -> ClvpOutput:
        """Touches every parameter (the forward alone never uses the decoder's token table)."""
        self.speech_decoder_model(input_ids=input_ids)
        return self(input_ids, input_features)


def init_params(config: ClvpConfig, rng: jax.Array, dtype=jnp.float32) -> dict:
    """Random parameters for `config` (the reference's init scales are not reproduced; use for tests/demos)."""
    return _init_params(config, rng, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init_params(config: ClvpConfig, rng: jax.Array, dtype) -> dict:
    # Jitted: one compilation instead of thousands of eager initialiser dispatches.
    model = ClvpModelForConditionalGeneration(config)
    ids = jnp.zeros((1, 4), jnp.int32)
    feats = jnp.zeros((1, config.decoder_config.feature_size, 8), jnp.float32)
    params = model.init(rng, ids, feats, method=model.init_all)["params"]
    return jax.tree_util.tree_map(lambda x: x.astype(dtype), params)


def param_shapes(config: ClvpConfig) -> dict:
    """The parameter tree of `config` as `jax.ShapeDtypeStruct`s, without allocating anything."""
    shapes = jax.eval_shape(lambda r: init_params(config, r), jax.random.PRNGKey(0))
    _init_params.clear_cache()  # the traced init of the whole model (~10 MiB at the real size) is not kept
    return shapes
