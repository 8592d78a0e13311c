"""Helpers shared by the front-end tests: fixture paths (tests/data), transformers' reference objects, a synthetic vocab."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

TORTOISE = Path(__file__).resolve().parent / "data" / "tortoise"
VOICES = TORTOISE / "voices"
CLIP_FILES = [VOICES / "lj" / "1.wav", VOICES / "lj" / "2.wav", VOICES / "myself" / "3.wav"]
SIX_SECONDS = 132_300  # samples at 22.05 kHz

logging.getLogger("transformers").setLevel(logging.ERROR)  # the reference warns on every unbatched call


def reference_tokenizer(folder: Path):
    """transformers' slow ClvpTokenizer on a vocab.json + merges.txt folder."""
    from transformers import ClvpTokenizer

    return ClvpTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def reference_extractor(**kwargs):
    from transformers import ClvpFeatureExtractor

    return ClvpFeatureExtractor(**kwargs)


def packaged_mel_norms() -> np.ndarray:
    from clvp_jax import assets

    return np.load(assets.mel_norms_path())


# A small hand-made vocabulary that exercises every rule: "Ġ" itself is not in it but "[SPACE]" is, merged
# space tokens ("Ġa", "Ġthe") are, "x", "z" and "!" are unknown, and the merges ("q", "u") and ("e", "s", "t")
# produce tokens missing from the vocabulary (the reference gives "[UNK]" for them).
_SYNTHETIC_CHARS = list("abcdefghijklmnopqrstuvwy.,'?-")
SYNTHETIC_MERGES = [
    ("t", "h"), ("th", "e"), ("\u0120", "t"), ("\u0120", "the"), ("\u0120", "a"), ("e", "r"), ("i", "n"),
    ("in", "g"), ("o", "n"), ("a", "n"), ("an", "d"), ("\u0120", "an"), ("\u0120an", "d"), ("q", "u"),
    ("e", "s"), ("es", "t"), ("o", "u"), ("ou", "r"), ("\u0120", "o"),
]  # fmt: skip
_SYNTHETIC_RESULTS = ["th", "the", "\u0120t", "\u0120the", "\u0120a", "er", "in", "ing", "on", "an", "and",
                      "\u0120an", "\u0120and", "es", "ou", "our", "\u0120o"]  # fmt: skip


def write_synthetic_vocab(folder: Path) -> Path:
    """Write the synthetic vocab.json + merges.txt (with header and final newline) into `folder`."""
    tokens = ["[STOP]", "[UNK]", "[SPACE]", *_SYNTHETIC_CHARS, *_SYNTHETIC_RESULTS]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in SYNTHETIC_MERGES)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def first_mismatch(ours: list, theirs: list, inputs: list) -> str:
    """A readable description of the first differing row (for assertion messages)."""
    for text, a, b in zip(inputs, ours, theirs, strict=True):
        if a != b:
            return f"text {text!r}: ours {a} != reference {b}"
    return "no mismatch"
