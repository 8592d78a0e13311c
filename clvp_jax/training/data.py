"""(text, speech-codes) pairs: the JSONL file format, validation, and deterministic padded batches.

File format (UTF-8 JSON Lines, one pair per line; blank lines are skipped):

    {"text_ids": [12, 40, 7], "speech_codes": [83, 83, 1021, 7]}
    {"text": "Hello world.", "speech_codes": [5, 17, 17, 230]}

* `text_ids`: CLVP text-token ids as the tokenizer gives them (no bos/eos; the text tower sees them as they are).
  Or `text`: a string, tokenized by the caller's `tokenize` function (the experiment uses the packaged CLVP
  tokenizer). A line with both uses `text_ids`.
* `speech_codes`: the discrete speech (mel) codes of the clip, e.g. Tortoise's autoregressive codes, each in
  [0, speech vocab_size). Clean codes (no start/stop tokens).
* Any other key (e.g. "id", "audio") is ignored.

Batches are right-padded with id 0 to fixed lengths (so one compiled step serves every batch) with 1/0 masks.
Which pairs form step s's batch is a pure function of (seed, s): a fresh permutation per epoch, remainder
dropped, so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from clvp_jax.config import write_text_atomic


class DataError(ValueError):
    """A malformed data file; the message names the file, the line and what to fix."""


@dataclasses.dataclass(frozen=True)
class Pair:
    """Attributes: text_ids, speech_codes (tuples of ints)."""

    text_ids: tuple[int, ...]
    speech_codes: tuple[int, ...]


def parse_pair(record: dict, tokenize: Callable[[str], Sequence[int]] | None, where: str) -> Pair:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object with text_ids/text and speech_codes, got {type(record)}")
    if "text_ids" in record:
        text = record["text_ids"]
    elif "text" in record:
        if tokenize is None:
            raise DataError(f"{where}: has 'text' but no tokenizer was given; pass tokenize= or store 'text_ids'")
        text = list(tokenize(str(record["text"])))
    else:
        raise DataError(f"{where}: needs 'text_ids' (list of ints) or 'text' (string); keys are {sorted(record)}")
    codes = record.get("speech_codes")
    for name, value in (("text_ids", text), ("speech_codes", codes)):
        if not isinstance(value, list) or not value or not all(isinstance(v, int) and v >= 0 for v in value):
            raise DataError(f"{where}: '{name}' must be a non-empty list of non-negative ints, got {value!r:.80}")
    return Pair(tuple(text), tuple(codes))


def read_pairs(path: str | os.PathLike, tokenize: Callable[[str], Sequence[int]] | None = None) -> list[Pair]:
    """Read a JSONL pair file (see module docstring). Raises `DataError` naming the bad line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {path}: expected JSON Lines of text_ids/text + speech_codes")
    pairs = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not valid JSON ({err})") from err
            pairs.append(parse_pair(record, tokenize, f"{path}:{number}"))
    if not pairs:
        raise DataError(f"{path} holds no pairs")
    return pairs


def write_pairs(path: str | os.PathLike, pairs: Iterable[Pair]) -> Path:
    """Write pairs as JSONL (`text_ids` + `speech_codes`), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"text_ids": list(p.text_ids), "speech_codes": list(p.speech_codes)}) for p in pairs]
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def check_pairs(
    pairs: Sequence[Pair], *, max_text: int, max_speech: int, text_vocab: int, speech_vocab: int, name: str
) -> None:
    """Every pair fits the padded lengths and the vocabularies; otherwise one `DataError` listing the first few."""
    problems = []
    for i, p in enumerate(pairs):
        if len(p.text_ids) > max_text:
            problems.append(f"pair {i}: {len(p.text_ids)} text tokens > max_text_tokens {max_text}")
        if len(p.speech_codes) > max_speech:
            problems.append(f"pair {i}: {len(p.speech_codes)} speech codes > max_speech_codes {max_speech}")
        if max(p.text_ids) >= text_vocab:
            problems.append(f"pair {i}: text id {max(p.text_ids)} >= text vocab_size {text_vocab}")
        if max(p.speech_codes) >= speech_vocab:
            problems.append(f"pair {i}: speech code {max(p.speech_codes)} >= speech vocab_size {speech_vocab}")
    if problems:
        raise DataError(
            f"{name}: {len(problems)} problem(s), e.g. " + "; ".join(problems[:5]) + ". Raise the maximum lengths "
            "(--max-text-tokens / --max-speech-codes), drop the long pairs, or check the model config's vocabularies"
        )


def pad_batch(pairs: Sequence[Pair], max_text: int, max_speech: int) -> dict[str, np.ndarray]:
    """Pairs -> {text_ids, text_mask [B, max_text], speech_ids, speech_mask [B, max_speech]} int32, 0-padded."""
    B = len(pairs)
    out = {
        "text_ids": np.zeros((B, max_text), np.int32),
        "text_mask": np.zeros((B, max_text), np.int32),
        "speech_ids": np.zeros((B, max_speech), np.int32),
        "speech_mask": np.zeros((B, max_speech), np.int32),
    }
    for i, p in enumerate(pairs):
        out["text_ids"][i, : len(p.text_ids)] = p.text_ids
        out["text_mask"][i, : len(p.text_ids)] = 1
        out["speech_ids"][i, : len(p.speech_codes)] = p.speech_codes
        out["speech_mask"][i, : len(p.speech_codes)] = 1
    return out


def batch_indices(num_pairs: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices of step `step`'s batch: epoch e = step // (num_pairs // batch_size) uses permutation (seed, e)."""
    per_epoch = num_pairs // batch_size
    if per_epoch < 1:
        raise DataError(f"{num_pairs} training pairs cannot fill one batch of {batch_size}; lower --batch-size")
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_pairs)
    return order[k * batch_size : (k + 1) * batch_size]


def train_batch(
    pairs: Sequence[Pair], batch_size: int, seed: int, step: int, max_text: int, max_speech: int
) -> dict[str, np.ndarray]:
    """The padded batch of step `step` (see `batch_indices`)."""
    return pad_batch([pairs[i] for i in batch_indices(len(pairs), batch_size, seed, step)], max_text, max_speech)
