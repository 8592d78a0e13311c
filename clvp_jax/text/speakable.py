"""Refusing text that leaves nothing for the model to say: binary data, or nothing Latin after normalisation.

The models read English (Tortoise's vocabulary is lower-case Latin letters, digits and punctuation). The
normaliser transliterates other scripts (CJK becomes pinyin-like syllables) and drops what it cannot spell
(emoji), so text of another script comes out as sounds nobody wrote, and emoji or binary as nothing: generation
then runs on garbage and exits 0. `require_speakable` turns both into an error that shows what was left.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

# Control characters that text may hold (tab, newlines, carriage return); any other C0/C1 control is binary.
_TEXT_CONTROLS = frozenset("\t\n\r\f\v")


def _is_latin_or_digit(ch: str) -> bool:
    if ch.isdigit():
        return True
    return ch.isalpha() and unicodedata.name(ch, "").startswith("LATIN")


def require_speakable(text: str, normalize: Callable[[str], str], *, where: str = "the text") -> str:
    """Return `normalize(text)`, or raise `ValueError` if `text` is binary or has nothing the model can say.

    Args:
      text: the raw text.
      normalize: the tokenizer's normaliser (`ClvpTokenizer.normalize`).
      where: how to name the text in messages ('standard input', a file name).
    Raises:
      ValueError: control characters (binary data), no Latin letter or digit in the text, or none left after
        normalisation; the message quotes what normalisation left.
    """
    controls = sorted({f"U+{ord(c):04X}" for c in text if unicodedata.category(c) == "Cc" and c not in _TEXT_CONTROLS})
    if controls:
        raise ValueError(
            f"{where} holds control characters ({', '.join(controls[:5])}): it looks like binary data, not text; "
            "give plain UTF-8 text"
        )
    normalized = normalize(text)
    left = " ".join(normalized.split())
    if not any(_is_latin_or_digit(c) for c in text) or not any(_is_latin_or_digit(c) for c in normalized):
        shown = repr(left[:60]) if left else "nothing"
        raise ValueError(
            f"{where} has nothing the model can say: it holds no Latin letters or digits, and normalisation left "
            f"{shown}; the models read English text"
        )
    return normalized
