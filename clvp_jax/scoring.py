"""CLVP scoring of text against speech codes, outside generation (`clvp-jax score`).

score(text=..., speech_ids=..., model=..., params=...)   CLVP similarity logits [texts, sequences]
score_limits(model)                                       the longest text and speech `score` takes
require_scoring(params)                                   `ValueError` unless the checkpoint has the CLVP towers
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from clvp_jax.model import ClvpModelForConditionalGeneration
from clvp_jax.pipeline_text import TEXT_NORMALIZER


def require_scoring(params) -> None:
    """`ValueError` unless `params` hold the CLVP towers (an autoregressive-only checkpoint cannot score or rank)."""
    missing = [p for p in ("text_encoder_model", "speech_encoder_model") if p not in params]
    if missing:
        raise ValueError(
            f"this checkpoint has no CLVP towers ({', '.join(missing)} missing): it can generate conditioning "
            "latents but not score or rank; convert it with its clvp2.pth (clvp-jax convert AR.pth --clvp clvp2.pth)"
        )


# The most speech codes `score` takes: Tortoise pads candidates to 500 codes before CLVP scores them, and the
# decoder's position table (604 codes at real size) bounds what generation makes; 1024 leaves room for both.
# The rotary CLVP towers have no position table, so only memory bounds them otherwise (unbounded input took 9.6 GB).
MAX_SCORE_SPEECH_CODES = 1024


def score_limits(model) -> tuple[int, int]:
    """(most text tokens, most speech codes) `score` takes: one chunk of text as generation makes it (the
    conditioning table less the start and stop tokens), and `MAX_SCORE_SPEECH_CODES` (or the decoder's table when
    larger). Longer input is refused with the limit, not chunked (a score of pieces is not the score of the whole)."""
    dec = model.config.decoder_config
    return dec.max_text_tokens - 1, max(MAX_SCORE_SPEECH_CODES, dec.max_position_embeddings - 2)


def score(*, text: str | Sequence[str], speech_ids: Sequence[Sequence[int]], model, params) -> np.ndarray:
    """CLVP similarity logits [texts, sequences] of texts against speech-code sequences.

    The codes are scored as generation scores them (`score_candidates`): a start token is put in front and
    `fix_speech_decoder_output` applied (a stop token and what follows become the fixing codes); the text gets the
    stop token appended as the reference's generate does. Sequences of different lengths are scored in separate
    groups (the speech tower mean-pools over every position, so padding would change the score).
    """
    from clvp_jax.text import ClvpTokenizer

    dec = model.config.decoder_config
    require_scoring(params)
    texts = [text] if isinstance(text, str) else list(text)
    enc = ClvpTokenizer.from_pretrained(normalizer=TEXT_NORMALIZER)(texts, padding=True, return_tensors="np")
    text_limit, speech_limit = score_limits(model)
    longest = int(np.asarray(enc["attention_mask"]).sum(axis=1).max())
    if longest > text_limit:
        raise ValueError(
            f"the text is {longest} tokens, more than the {text_limit} the CLVP text tower takes; score it in "
            "shorter pieces (split_text / the chunks of `clvp-jax generate`)"
        )
    rows = []
    for seq in speech_ids:
        seq = np.asarray(seq, np.int64).reshape(-1)
        if seq.size == 0:
            raise ValueError("an empty speech-code sequence cannot be scored")
        if seq.size > speech_limit:
            raise ValueError(
                f"a speech sequence of {seq.size} codes is longer than the {speech_limit} the CLVP speech tower takes; "
                "score its first codes, or the candidates of each text chunk (`clvp-jax generate`), instead"
            )
        if seq.min() < 0 or seq.max() >= dec.vocab_size:
            raise ValueError(f"speech codes must be in [0, {dec.vocab_size}), got {seq.min()}..{seq.max()}")
        rows.append(np.concatenate([[dec.bos_token_id], seq]))  # [1 + S]: the start token first, as generated
    logits = np.zeros((len(texts), len(rows)), np.float32)
    for length in sorted({len(r) for r in rows}):
        group = [j for j, r in enumerate(rows) if len(r) == length]
        _, scores = model.apply(
            {"params": params},
            jnp.asarray(enc["input_ids"]),
            jnp.asarray(enc["attention_mask"]),
            jnp.asarray(np.stack([rows[j] for j in group])),
            method=ClvpModelForConditionalGeneration.score_candidates,
        )
        logits[:, group] = np.asarray(scores.logits_per_text)
    if not np.isfinite(logits).all():
        raise FloatingPointError(
            "CLVP scores are not finite (NaN or inf): the weights are damaged; check the checkpoint "
            "(clvp-jax convert --dry-run)"
        )
    return logits
