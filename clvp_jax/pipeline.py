"""The end-to-end jobs behind the `clvp-jax` command, as keyword-only library functions.

  rank_speech(text=..., voice=...)   long text -> chunks -> one batched compiled generation -> CLVP-ranked candidates
  compute_latents(voice=...)         voice clips -> one conditioning latent (averaged over clips, as Tortoise)
  score(text=..., speech_ids=...)    CLVP similarity of a text and speech-code sequences
  describe_checkpoint(path)          config, parameter count, dtype and provenance of a checkpoint
  load_model(checkpoint)             (model, params) of a folder or Hub repo id; None: the packaged default
`score` lives in `clvp_jax.scoring`, `describe_checkpoint` in `clvp_jax.checkpoint_info` and the settings of
`rank_speech` (`RankSettings`, what `plan_ranking` takes) in `clvp_jax.rank_settings`; all are part of this API.

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

from clvp_jax.checkpoint_info import describe_checkpoint
from clvp_jax.config import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig
from clvp_jax.generation.options import GenerationOptions, SamplingOverrides
from clvp_jax.model import ClvpModelForConditionalGeneration, init_params
from clvp_jax.pipeline_text import TEXT_NORMALIZER
from clvp_jax.rank_settings import SEED_RANGE, RankSettings, check_seed
from clvp_jax.scoring import MAX_SCORE_SPEECH_CODES, require_scoring, score, score_limits

__all__ = ["TEXT_NORMALIZER", "DEFAULT_NOTICE", "default_config", "load_model", "compute_latents"]
__all__ += ["Candidate", "ChunkResult", "RankResult", "rank_speech", "score", "describe_checkpoint"]
__all__ += ["RankPlan", "RankSettings", "plan_ranking", "chunk_groups", "rank_group", "stack_arrays"]
# Defined in their own modules, and part of this one's API as before they moved:
__all__ += ["MAX_SCORE_SPEECH_CODES", "SEED_RANGE", "check_seed", "require_scoring", "score_limits"]

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
CHUNKS_PER_CALL = 8
"""Chunks of a text generated together: at most this many texts x `CANDIDATES_PER_CALL` rows per call, so a long
text runs in bounded memory (all chunks of a 50,000-character text in one call took 7.6 GB at the small default)."""


@dataclasses.dataclass(frozen=True)
class RankPlan:
    """A text prepared for generation (`plan_ranking`): its chunks and what every group of them is generated with.

    Attributes:
      chunks: the text's chunks in reading order (`split_at_marks`: `|` marks manual split points).
      options: the generation options of every call (`candidates` per call, at most `CANDIDATES_PER_CALL`).
      candidates: C, candidates kept per chunk.
      text_length: the padded token length of every call (the longest chunk's), so every group runs one program.
      latents: float32 [D], the voice's conditioning latent; seed: the seed of every draw.
      settings: what the results record (preset, candidates, max_new_tokens, seed, dtype, sampling settings).
    """

    chunks: list[str]
    options: GenerationOptions
    candidates: int
    text_length: int
    latents: np.ndarray
    seed: int
    settings: dict[str, Any]


def plan_ranking(*, text: str, model, params, latents: np.ndarray, settings: RankSettings) -> RankPlan:
    """Check the inputs and split `text` into chunks (nothing is generated yet): the plan `rank_group` runs.

    Args:
      text: the text (`|` marks manual split points); latents: the voice's conditioning latent [D].
      settings: preset, candidates, length, seed, dtype and sampling knobs (`RankSettings`, checked when built).
    Raises:
      ValueError: a checkpoint without the CLVP towers, bad latents, or a text with nothing to say.
    """
    from clvp_jax.generation.latents import check_latent_values
    from clvp_jax.text import ClvpTokenizer
    from clvp_jax.text.speakable import require_speakable
    from clvp_jax.text.splitter import split_at_marks

    config: ClvpConfig = model.config
    options = settings.options(config)
    require_scoring(params)
    latents = np.asarray(check_latent_values(latents, "latents"), np.float32).reshape(-1)
    tokenizer = ClvpTokenizer.from_pretrained(normalizer=TEXT_NORMALIZER)
    require_speakable(text, tokenizer.normalize)
    chunks = split_at_marks(text, tokenizer, max_tokens=config.decoder_config.max_text_tokens - 3)
    if not chunks:
        raise ValueError("the text has nothing to say (no letters or digits)")
    lengths = [len(ids) for ids in tokenizer(chunks, return_attention_mask=False)["input_ids"]]
    C = options.num_return_sequences
    call_options = options.replace(num_return_sequences=min(C, CANDIDATES_PER_CALL))
    return RankPlan(chunks, call_options, C, max(lengths), latents, settings.seed, settings.record(options))


def chunk_groups(indices: Sequence[int], size: int = 0) -> list[list[int]]:
    """`indices` in groups of at most `size` (default `CHUNKS_PER_CALL`), all of one size but the last's rows,
    which `rank_group` pads to it: ceil(n / ceil(n / size)) each, so padding never costs a whole group."""
    size = size or CHUNKS_PER_CALL
    indices = list(indices)
    if not indices:
        return []
    per = -(-len(indices) // -(-len(indices) // size))
    return [indices[i : i + per] for i in range(0, len(indices), per)]


def rank_group(
    plan: RankPlan,
    indices: Sequence[int],
    *,
    model,
    params,
    rows: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[ChunkResult, dict[str, np.ndarray]]]:
    """Generate and rank the chunks `indices` of `plan` together: per chunk its `ChunkResult` and its arrays
    (sequences [C, 1 + M], candidate_scores [C], num_generated [C], text_ids [T], text_mask [T]).

    Chunk i, candidate c draws from fold_in(fold_in(key(seed), i), c) whatever group it is in: the result of a
    chunk does not depend on which chunks are generated with it, nor on `rows`. `rows` pads the group (repeating
    its last chunk, whose extra results are dropped) so that groups of one size share one compiled program.
    `progress(done, total)` counts this group's candidates.
    """
    from clvp_jax.generation import generate
    from clvp_jax.text import ClvpTokenizer

    config: ClvpConfig = model.config
    indices = list(indices)
    n = len(indices)
    B = max(rows or n, n)
    texts = [plan.chunks[i] for i in indices] + [plan.chunks[indices[-1]]] * (B - n)
    tokenizer = ClvpTokenizer.from_pretrained(normalizer=TEXT_NORMALIZER)
    enc = tokenizer(texts, padding="max_length", max_length=plan.text_length, return_tensors="np")
    text_indices = np.asarray(indices + [indices[-1]] * (B - n), np.int32)
    C, per_call = plan.candidates, plan.options.num_return_sequences
    sequences, scores, generated = [], [], []  # per call: [B, per_call, ...]
    for k in range(-(-C // per_call)):
        out = generate(
            model,
            params,
            enc["input_ids"],
            attention_mask=enc["attention_mask"],
            conditioning_latents=plan.latents.reshape(1, -1),
            rng=jax.random.key(plan.seed),
            options=plan.options,
            candidate_offset=k * per_call,
            text_indices=text_indices,
        )
        out = jax.device_get(out)
        sequences.append(np.asarray(out.sequences).reshape(B, per_call, -1))
        scores.append(np.asarray(out.candidate_scores))
        generated.append(np.asarray(out.num_generated).reshape(B, per_call))
        if progress is not None:
            progress(min((k + 1) * per_call, C) * n, C * n)
    # The last call may run past C candidates (same shapes, no recompilation); the extras are dropped.
    sequences = np.concatenate(sequences, axis=1)[:n, :C]
    scores = np.concatenate(scores, axis=1)[:n, :C]
    if not np.isfinite(scores).all():  # a NaN score makes the "best" candidate arbitrary: never write it as a result
        bad = sorted({indices[int(i)] for i in np.argwhere(~np.isfinite(scores))[:, 0]})
        raise FloatingPointError(
            f"CLVP scores of chunk(s) {bad[:10]} are not finite (NaN or inf): the weights or the voice latents are "
            "damaged; check the checkpoint (clvp-jax convert --dry-run) and recompute the latents"
        )
    generated = np.concatenate(generated, axis=1)[:n, :C]
    stop = plan.options.stop_token(config)
    results = []
    for row, i in enumerate(indices):
        cands = []
        for c in range(C):
            codes = [int(x) for x in sequences[row, c, 1 : 1 + int(generated[row, c])]]
            stopped = bool(codes) and codes[-1] == stop
            cands.append(Candidate(c, float(scores[row, c]), codes[:-1] if stopped else codes, stopped))
        arrays = {
            "sequences": sequences[row],
            "candidate_scores": scores[row],
            "num_generated": generated[row],
            "text_ids": np.asarray(enc["input_ids"][row]),
            "text_mask": np.asarray(enc["attention_mask"][row]),
        }
        results.append((ChunkResult(plan.chunks[i], sorted(cands, key=lambda x: -x.score)), arrays))
    return results


def stack_arrays(per_chunk: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The .npz arrays of a whole text from its chunks' (`rank_group`): each stacked over chunks, plus
    best_index [chunks]."""
    arrays = {key: np.stack([a[key] for a in per_chunk]) for key in per_chunk[0]}
    return arrays | {"best_index": arrays["candidate_scores"].argmax(axis=1)}


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

    Long text is split with `split_at_marks` (`|` marks manual split points) so that every chunk fits the model.
    Chunks are generated in groups of up to `CHUNKS_PER_CALL`, in calls of up to 16 candidates per chunk (one
    compiled program, reused; `progress(done, total)` counts candidates over all chunks). Chunk i, candidate c
    draws its randomness from fold_in(fold_in(key(seed), i), c), so results do not depend on how chunks and
    candidates are grouped into calls. `sampling` overrides the preset's temperature, top-p, top-k and
    repetition penalty (`GenerationOptions.tortoise` has Tortoise's); its counts are the caller's. (To write
    each chunk as it finishes, see `clvp_jax.long_text`.)
    """
    settings = RankSettings(
        preset=preset, candidates=candidates, max_new_tokens=max_new_tokens, seed=seed, dtype=dtype, sampling=sampling
    )
    plan = plan_ranking(text=text, model=model, params=params, latents=latents, settings=settings)
    groups = chunk_groups(range(len(plan.chunks)))
    results, total, done = [], len(plan.chunks) * plan.candidates, 0
    for group in groups:

        def group_progress(d: int, t: int, before=done) -> None:
            if progress is not None:
                progress(before + d, total)

        results += rank_group(plan, group, model=model, params=params, rows=len(groups[0]), progress=group_progress)
        done += len(group) * plan.candidates
    return RankResult([r for r, _ in results], plan.settings, stack_arrays([a for _, a in results]))
