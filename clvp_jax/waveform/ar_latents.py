"""The AR latents the diffusion decoder is conditioned on, and Tortoise's trim at a run of calm codes.

Axis letters: the package legend in `clvp_jax/__init__.py`; here also k chosen candidates, m codes per candidate
(Tortoise: 500).

As `api.tts` (spec `tortoise_original.md` §2.5): the chosen candidates, padded with the stop token to m codes and
fixed (`fix_autoregressive_output`: the stop and everything after it become the calm code 83, the last three
positions 45, 45, 248), are run teacher-forced through the decoder once more, and the latents are the final-norm
hidden states at the mel positions of [start, c_0 .. c_{m-2}], the states that *predict* c_0 .. c_{m-1}. The prefix
is the one generation decodes from ([voice latent, bos, text.., eos, eos]); the mel part carries decoder positions
in our default `position_convention` ("training": start at 0, c_j at j + 1, Tortoise's own layout).
Then each row is cut before the 9th consecutive calm code (`trim_length`): Tortoise's "breathing room" rule.

Why a second, teacher-forced pass rather than keeping the decode loop's hidden states: the two are not the same
states. After a candidate's stop token the original re-runs on calm codes 83 (and on 45, 45, 248 at the end),
which the loop never saw, and a row stopping within three codes of the end has real codes overwritten; keeping
every step's states would also cost [candidates, m, D] of memory for all candidates (96 x 500 x 1024 floats
= 197 MB at `fast`) to use k of them. The pass is batched over rows; the speech pipeline runs it one row at a
time (`speech.render_chunk`) so that a candidate's latents, and so its waveform, do not depend on k: batched
rows differ from single ones in the last float32 ulp, which the diffusion sampler amplifies to ~1e-2.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.conditioning import add_bos_eos
from clvp_jax.model import ClvpModelForConditionalGeneration, fix_speech_decoder_output

MAX_MEL_TOKENS = 500  # Tortoise pads every candidate to this many codes before fixing (api.tts max_mel_tokens)
CALM_RUN = 8  # a run of MORE than this many calm codes ends the speech (api.tts: `if ctokens > 8`)


def fixed_codes(
    candidates: Sequence[Sequence[int]], *, length: int, stop_token: int, fixing_codes: Sequence[int]
) -> np.ndarray:
    """Candidates' codes (without start or stop tokens) -> [k, length] int32, padded and fixed as `api.tts`.

    Each row is right-padded with the stop token to `length` and `fix_autoregressive_output` applied, so a row
    shorter than `length` ends in calm codes and the fixing tail; a row of exactly `length` codes is unchanged.

    Raises:
        ValueError: no candidates, or one longer than `length`.
    """
    if not candidates:
        raise ValueError("fixed_codes: no candidates given")
    too_long = [len(c) for c in candidates if len(c) > length]
    if too_long:
        raise ValueError(f"fixed_codes: a candidate has {max(too_long)} codes, more than the length {length}")
    rows = np.full((len(candidates), 1 + length), stop_token, np.int32)
    rows[:, 0] = 0  # the start column `fix_speech_decoder_output` drops; its value is never read
    for i, codes in enumerate(candidates):
        rows[i, 1 : 1 + len(codes)] = np.asarray(codes, np.int32)
    return np.asarray(fix_speech_decoder_output(jnp.asarray(rows), stop_token, tuple(fixing_codes)))


def trim_length(codes: Sequence[int] | np.ndarray, calm_code: int = 83, max_run: int = CALM_RUN) -> int:
    """Latent frames kept for one row of fixed codes: the index of the first code that makes a run of more than
    `max_run` consecutive `calm_code`s (so the run's first `max_run` codes are kept), else all of them."""
    codes = np.asarray(codes).reshape(-1)
    idx = np.arange(codes.size)
    last_other = np.maximum.accumulate(np.where(codes == calm_code, -1, idx))  # last non-calm index so far
    hits = np.flatnonzero(idx - last_other > max_run)  # idx - last_other: the calm run ending at idx
    return int(hits[0]) if hits.size else int(codes.size)


def _latents_program(
    m: ClvpModelForConditionalGeneration,
    text_ids: jax.Array,  # [1, T] tokenizer ids (no stop token), right-padded
    text_mask: jax.Array,  # [1, T]
    voice: jax.Array,  # [1, D] the AR conditioning latent
    codes: jax.Array,  # [k, m] fixed codes
    *,
    first_position: int,
) -> jax.Array:  # [k, m, D] float32
    cfg = m.config
    txt, dec = cfg.text_config, cfg.decoder_config
    k, n = codes.shape
    # The prefix exactly as generation builds it: [latent, bos, t.., eos, eos], no decoder positions.
    ids1, mask1 = add_bos_eos(text_ids, text_mask, txt.bos_token_id, txt.eos_token_id, add_bos=False)
    _, mask2 = add_bos_eos(ids1, mask1, txt.bos_token_id, txt.eos_token_id)  # [1, T + 3]
    text = m.conditioning_encoder.text_embeddings(ids1, mask1)  # [1, T + 3, D]
    prefix = jnp.concatenate([voice.astype(text.dtype)[:, None, :], text], axis=1)  # [1, P, D]
    prefix_mask = jnp.concatenate([jnp.ones((1, 1), mask2.dtype), mask2], axis=1)  # [1, P]
    # Mel part: [start, c_0 .. c_{m-2}] at positions [0, first, first + 1, ..]; causal, so c_{m-1} (and the
    # original's trailing stop) cannot change these states and is left out.
    mel_ids = jnp.concatenate([jnp.full((k, 1), dec.bos_token_id, codes.dtype), codes[:, :-1]], axis=1)  # [k, m]
    positions = jnp.concatenate([jnp.zeros((1,), jnp.int32), first_position + jnp.arange(n - 1, dtype=jnp.int32)])
    mel = m.speech_decoder_model.embed(mel_ids, positions[None, :]).astype(text.dtype)  # [k, m, D]
    hidden = jnp.concatenate([jnp.broadcast_to(prefix, (k, *prefix.shape[1:])), mel], axis=1)
    mask = jnp.concatenate([jnp.broadcast_to(prefix_mask, (k, prefix_mask.shape[1])), jnp.ones((k, n), jnp.int32)], 1)
    out = m.speech_decoder_model.forward_embeds(hidden, mask)
    return m.speech_decoder_model.final_norm(out.last_hidden_state[:, -n:].astype(jnp.float32))


@functools.lru_cache(maxsize=8)
def _latents_fn(model: ClvpModelForConditionalGeneration, first_position: int):
    def run(params, text_ids, text_mask, voice, codes):
        return model.apply(
            {"params": params},
            text_ids,
            text_mask,
            voice,
            codes,
            first_position=first_position,
            method=_latents_program,
        )

    return jax.jit(run)


def ar_latents(
    model: ClvpModelForConditionalGeneration,
    params,
    *,
    text_ids: np.ndarray,
    voice_latent: np.ndarray,
    codes: np.ndarray,
    text_mask: np.ndarray | None = None,
    first_position: int = 1,
) -> np.ndarray:
    """Final-norm decoder states of k fixed code rows of one text, teacher-forced (`return_latent=True`).

    Args:
        model, params: the composite model and its parameters.
        text_ids: [T] or [1, T] tokenizer ids of the text (no stop token: generation's prefix adds it), as
            `generate` takes them; `text_mask` [T] / [1, T] marks real tokens (None: all).
        voice_latent: [D] or [1, D] the AR conditioning latent.
        codes: [k, m] fixed codes (`fixed_codes`).
        first_position: decoder position of c_0 (1: the "training" convention; 2: "reference").
    Returns:
        float32 [k, m, D]: row j, frame i is the state that predicts codes[j, i].
    Raises:
        ValueError: codes outside the decoder's code range, or positions beyond its position table.
    """
    dec = model.config.decoder_config
    ids = np.asarray(text_ids).reshape(1, -1).astype(np.int32)
    mask = np.ones_like(ids) if text_mask is None else np.asarray(text_mask).reshape(ids.shape).astype(np.int32)
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.size == 0 or codes.dtype.kind not in "iu":
        raise ValueError(f"ar_latents: codes must be integer [candidates, codes], got {codes.dtype} {codes.shape}")
    if codes.min() < 0 or codes.max() >= dec.vocab_size:
        raise ValueError(f"ar_latents: codes must be in [0, {dec.vocab_size}), got {codes.min()}..{codes.max()}")
    last = first_position + codes.shape[1] - 2
    if last >= dec.max_position_embeddings:
        raise ValueError(
            f"ar_latents: {codes.shape[1]} codes need decoder position {last} but the table has "
            f"{dec.max_position_embeddings} rows; use fewer codes"
        )
    voice = np.asarray(voice_latent, np.float32).reshape(1, dec.hidden_size)
    fn = _latents_fn(model, int(first_position))
    return np.asarray(
        fn(params, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(voice), jnp.asarray(codes, jnp.int32))
    )
