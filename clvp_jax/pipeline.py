"""The end-to-end jobs behind the `clvp-jax` command, as keyword-only library functions.

  rank_speech(text=..., voice=...)   long text -> chunks -> one batched compiled generation -> CLVP-ranked candidates
  compute_latents(voice=...)         voice clips -> one conditioning latent (averaged over clips, as Tortoise)
  score(text=..., speech_ids=...)    CLVP similarity of a text and speech-code sequences
  describe_checkpoint(path)          config, parameter count, dtype and provenance of a checkpoint
  load_model(checkpoint)             (model, params) of a folder or Hub repo id; None: the packaged default

With no checkpoint, everything runs on the packaged default: the real Tortoise vocabulary and mel norms, the
bundled LJ Speech clip, and a small deterministic random-weight model (`default_config()`, seed 0). Its outputs
are well-formed but meaningless; convert real weights with `clvp-jax convert` to get real speech codes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.config import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig
from clvp_jax.generation.options import SamplingOverrides
from clvp_jax.generation.presets import preset_options
from clvp_jax.model import ClvpModelForConditionalGeneration, init_params

__all__ = ["TEXT_NORMALIZER", "DEFAULT_NOTICE", "default_config", "load_model", "compute_latents"]
__all__ += ["Candidate", "ChunkResult", "RankResult", "rank_speech", "score", "describe_checkpoint"]

TEXT_NORMALIZER = "tortoise"
"""Text normaliser of every tokenizer built here: Tortoise's own (`english_cleaners`, what the real weights were
trained on), not transformers' default; `ClvpTokenizer(normalizer="hf")` gives transformers' ids."""

DEFAULT_NOTICE = (
    "using the packaged default model: RANDOM weights (real vocabulary and voice clip), so the codes and scores "
    "are meaningless. Real Tortoise weights: `clvp-jax convert Manmay/tortoise-tts OUT` (from the Hugging Face "
    "Hub, or a folder of autoregressive.pth + clvp2.pth) and pass --checkpoint OUT."
)


def default_config() -> ClvpConfig:
    """The packaged default: Tortoise's vocabularies, ids and positions at a small width (2 layers x 64)."""
    enc = dict(hidden_size=64, intermediate_size=128, projection_dim=64, num_hidden_layers=2, num_attention_heads=2)
    return ClvpConfig(
        text_config=ClvpEncoderConfig(vocab_size=256, **enc),
        speech_config=ClvpEncoderConfig(vocab_size=8192, bos_token_id=8192, eos_token_id=8193, **enc),
        decoder_config=ClvpDecoderConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_mel_attn_blocks=2
        ),
        projection_dim=64,
    )


def load_model(checkpoint: str | os.PathLike | None = None, *, dtype: str | None = None):
    """(model, params) from a checkpoint of any supported format or a Hub repo id (`Manmay/tortoise-tts`, see
    `clvp_jax.from_pretrained`), or the packaged default when None (random weights, `default_config()`, seed 0)."""
    if checkpoint is not None:
        from clvp_jax.checkpoint import from_pretrained

        return from_pretrained(checkpoint, dtype=dtype)
    config = default_config()
    params = init_params(config, jax.random.PRNGKey(0))
    compute = None
    if dtype not in (None, "float32"):
        compute = jnp.dtype(dtype)
        params = jax.tree_util.tree_map(lambda x: x.astype(compute), params)
    return ClvpModelForConditionalGeneration(config, dtype=compute), params


def _processor():
    from clvp_jax.processor import ClvpProcessor

    return ClvpProcessor.default(normalizer=TEXT_NORMALIZER)


def compute_latents(
    *, model, params, voice: str | os.PathLike | Sequence[str | os.PathLike] | None = None
) -> np.ndarray:
    """Voice clips (a file, a folder of clips, a list of files; None: the bundled LJ clip) -> latent [D].

    Each clip is cut or padded to Tortoise's 6 s, turned into a log-mel, encoded, and the latents are averaged.
    A `.npy` file is taken as saved latents and returned as is (after a width check).
    """
    from clvp_jax.generation.latents import get_conditioning_latents, load_conditioning_latents

    if voice is None:
        from clvp_jax.assets import default_voice_path

        voice = default_voice_path()
    if isinstance(voice, (str, os.PathLike)) and Path(voice).suffix == ".npy":
        return np.asarray(load_conditioning_latents(voice, model)).reshape(-1)
    features = _processor().voice_features(voice)  # [clips, F, frames]
    return get_conditioning_latents(model, params, list(features))


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One generated candidate: its CLVP score, the codes up to its stop token, and whether it stopped."""

    index: int
    score: float
    codes: list[int]
    stopped: bool


@dataclasses.dataclass(frozen=True)
class ChunkResult:
    """One text chunk: its candidates sorted by score (best first)."""

    text: str
    candidates: list[Candidate]

    @property
    def best(self) -> Candidate:
        return self.candidates[0]


@dataclasses.dataclass(frozen=True)
class RankResult:
    """Everything `rank_speech` produced; `arrays` holds the raw outputs for the .npz file."""

    chunks: list[ChunkResult]
    settings: dict[str, Any]
    arrays: dict[str, np.ndarray]

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "chunks": [
                {
                    "text": c.text,
                    "best": dataclasses.asdict(c.best),
                    "candidates": [dataclasses.asdict(x) for x in c.candidates],
                }
                for c in self.chunks
            ],
        }


CANDIDATES_PER_CALL = 16


def rank_speech(
    *,
    text: str,
    model,
    params,
    latents: np.ndarray,
    preset: str = "ultra_fast",
    candidates: int | None = None,
    max_new_tokens: int | None = None,
    seed: int = 0,
    dtype: str = "float32",
    progress: Callable[[int, int], None] | None = None,
    sampling: SamplingOverrides | None = None,
) -> RankResult:
    """Generate candidates for every chunk of `text` and rank them with CLVP.

    Long text is split with `split_text` so that every chunk fits the model. All chunks are generated together,
    in calls of up to 16 candidates per chunk (one compiled program, reused; `progress(done, total)` is called
    after each). Chunk i, candidate c draws its randomness from fold_in(fold_in(key(seed), i), c), so results do
    not depend on how candidates are grouped into calls. `sampling` overrides the preset's temperature, top-p,
    top-k and repetition penalty (`GenerationOptions.tortoise` has Tortoise's); its counts are the caller's.
    """
    from clvp_jax.generation import generate
    from clvp_jax.generation.latents import check_latent_values
    from clvp_jax.text import ClvpTokenizer, split_text
    from clvp_jax.text.speakable import require_speakable

    config: ClvpConfig = model.config
    check_seed(seed)
    options = preset_options(
        preset, config=config, candidates=candidates, max_new_tokens=max_new_tokens, dtype=dtype, sampling=sampling
    )
    require_scoring(params)
    latents = check_latent_values(latents, "latents")
    tokenizer = ClvpTokenizer.from_pretrained(normalizer=TEXT_NORMALIZER)
    require_speakable(text, tokenizer.normalize)
    chunks = split_text(text, tokenizer, max_tokens=config.decoder_config.max_text_tokens - 3)
    if not chunks:
        raise ValueError("the text has nothing to say (no letters or digits)")
    enc = tokenizer(chunks, padding=True, return_tensors="np")
    C = options.num_return_sequences
    per_call = min(C, CANDIDATES_PER_CALL)
    calls = -(-C // per_call)
    call_options = options.replace(num_return_sequences=per_call)
    sequences, scores, generated = [], [], []  # per call: [B, per_call, ...]
    for k in range(calls):
        out = generate(
            model,
            params,
            enc["input_ids"],
            attention_mask=enc["attention_mask"],
            conditioning_latents=np.asarray(latents, np.float32).reshape(1, -1),
            rng=jax.random.key(seed),
            options=call_options,
            candidate_offset=k * per_call,
        )
        out = jax.device_get(out)
        B = len(chunks)
        sequences.append(np.asarray(out.sequences).reshape(B, per_call, -1))
        scores.append(np.asarray(out.candidate_scores))
        generated.append(np.asarray(out.num_generated).reshape(B, per_call))
        if progress is not None:
            progress(min((k + 1) * per_call, C), C)
    # The last call may run past C candidates (same shapes, no recompilation); the extras are dropped.
    sequences = np.concatenate(sequences, axis=1)[:, :C]
    scores = np.concatenate(scores, axis=1)[:, :C]
    if not np.isfinite(scores).all():  # a NaN score makes the "best" candidate arbitrary: never write it as a result
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(scores))[:, 0]})
        raise FloatingPointError(
            f"CLVP scores of chunk(s) {bad[:10]} are not finite (NaN or inf): the weights or the voice latents are "
            "damaged; check the checkpoint (clvp-jax convert --dry-run) and recompute the latents"
        )
    generated = np.concatenate(generated, axis=1)[:, :C]
    stop = options.stop_token(config)
    results = []
    for i, chunk in enumerate(chunks):
        cands = []
        for c in range(C):
            codes = [int(x) for x in sequences[i, c, 1 : 1 + int(generated[i, c])]]
            stopped = bool(codes) and codes[-1] == stop
            cands.append(Candidate(c, float(scores[i, c]), codes[:-1] if stopped else codes, stopped))
        results.append(ChunkResult(chunk, sorted(cands, key=lambda x: -x.score)))
    settings = {
        "preset": preset,
        "candidates": C,
        "max_new_tokens": options.max_new_tokens,
        "seed": seed,
        "dtype": dtype,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "top_k": options.top_k,
        "repetition_penalty": options.repetition_penalty,
        "length_penalty": 1.0 if sampling is None or sampling.length_penalty is None else sampling.length_penalty,
        "pad_to_max_mel_tokens": options.pad_to_max_mel_tokens,
    }
    arrays = {
        "sequences": sequences,
        "candidate_scores": scores,
        "best_index": scores.argmax(axis=1),
        "num_generated": generated,
        "text_ids": np.asarray(enc["input_ids"]),
        "text_mask": np.asarray(enc["attention_mask"]),
    }
    return RankResult(results, settings, arrays)


# Seeds are the 32-bit keys of `jax.random.key`: larger values alias a smaller seed (2^32 gave seed 0's output).
SEED_RANGE = (0, 2**32)


def check_seed(seed: int) -> int:
    """`seed`, or `ValueError` with the range when it is not an integer in [0, 2^32)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not SEED_RANGE[0] <= seed < SEED_RANGE[1]:
        raise ValueError(f"the seed must be an integer in [0, 2^32) = [0, {SEED_RANGE[1] - 1}], got {seed!r}")
    return int(seed)


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
                f"a speech sequence of {seq.size} codes is longer than the {speech_limit} the CLVP speech tower takes"
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


def describe_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """What a checkpoint holds: format, config summary, parameter count and dtype, provenance."""
    from clvp_jax.checkpoint import load_params

    loaded = load_params(path)
    leaves = jax.tree_util.tree_leaves(loaded.params)
    dtypes = sorted({str(np.asarray(x).dtype) for x in leaves})
    cfg = loaded.config
    dec, text, speech = cfg.decoder_config, cfg.text_config, cfg.speech_config
    return {
        "path": str(path),
        "format": loaded.format,
        "parts": list(loaded.parts),
        "parameters": int(sum(np.size(x) for x in leaves)),
        "dtypes": dtypes,
        "decoder": f"{dec.num_hidden_layers} layers x {dec.hidden_size}, {dec.num_attention_heads} heads, vocab {dec.vocab_size}",
        "text_encoder": f"{text.num_hidden_layers} layers x {text.hidden_size}, vocab {text.vocab_size}",
        "speech_encoder": f"{speech.num_hidden_layers} layers x {speech.hidden_size}, vocab {speech.vocab_size}",
        "sources": [str(s) for s in loaded.sources],
        "manifest": loaded.manifest,
    }
