"""The byte-level BPE vocabulary files the CLVP tokenizer reads: GPT-2's byte table, `vocab.json` + `merges.txt`
(transformers' layout) and Tortoise's `tokenizer.json` (a `tokenizers` BPE file)."""

from __future__ import annotations

import json
import os
from pathlib import Path

VOCAB_FILES_NAMES = {"vocab_file": "vocab.json", "merges_file": "merges.txt"}
MERGES_HEADER = "#version: 0.2"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (printable Latin-1 bytes map to themselves)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    shifted = (byte for byte in range(256) if byte not in table)
    table.update({byte: chr(256 + n) for n, byte in enumerate(shifted)})
    return dict(sorted(table.items()))


def read_merges(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Read merges.txt: an optional `#version` header, then one "a b" pair per line (blank lines ignored)."""
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    pairs = [tuple(line.split()) for line in lines]
    return [pair for pair in pairs if len(pair) == 2]


def read_tortoise_json(path: str | os.PathLike) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of Tortoise's `tokenizer.json` (a `tokenizers` BPE file).

    Its symbols are printable ASCII, which the byte-level table maps to themselves, so they are used unchanged.
    """
    model = json.loads(Path(path).read_text(encoding="utf-8"))["model"]
    if model.get("type", "BPE") != "BPE":
        raise ValueError(f"{path}: expected a BPE tokenizer.json, found model type {model.get('type')!r}")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), [m for m in merges if len(m) == 2]
