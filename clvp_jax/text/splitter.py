"""Split long text into chunks that each fit the model, preferring sentence ends.

The idea follows Tortoise's `split_and_recombine_text` (chunks of about `desired_length` characters, at most
`max_length`, cut at sentence ends first, then at clause punctuation, then between words, never at a sentence
end inside double quotes), re-implemented here with one addition: a guarantee in *tokens*. Every returned chunk
encodes to at most `max_tokens` ids with the given tokenizer (callers pass `max_text_tokens - 3`, the room the
model leaves for its start/stop tokens); a chunk that is still too long is cut again between words, and a
single word that cannot fit raises `TextTooLongError`.

Characters: chunks are at most `max_length` characters, except a single word longer than that, which stands
alone. Whitespace runs become one space; chunks without any letter or digit (e.g. "...") are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from clvp_jax.text.normalizer import ABBREVIATIONS

_SENTENCE_END = re.compile(r"[.!?]+[\"\u201d\u2019')\]]*(?=\s|$)")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+|\s+(?=[-\u2013\u2014]+\s)")
_SPEAKABLE = re.compile(r"[^\W_]")
_LAST_WORD = re.compile(r"(?<![^\W\d_])[^\W\d_]+$")  # the letters just before a period
# Abbreviations the normaliser expands, and single letters (initials): a period after them ends no sentence.
_NOT_SENTENCE_ENDS = {abbr for abbr, _ in ABBREVIATIONS} | set("abcdefghijklmnopqrstuvwxyz")


class TextTooLongError(ValueError):
    """A piece of text without any place to cut it encodes to more tokens than the model accepts."""


def _inside_quotes(text: str) -> bool:
    """Whether the end of `text` is inside a double quotation (straight quotes pair up; curly ones nest)."""
    return text.count('"') % 2 == 1 or text.count("\u201c") > text.count("\u201d")


def _sentences(text: str) -> Iterator[str]:
    start = 0
    for match in _SENTENCE_END.finditer(text):
        word = _LAST_WORD.search(text, 0, match.start())
        if word and word.group(0).lower() in _NOT_SENTENCE_ENDS and match.group(0) == ".":
            continue  # "Dr. Who", "J. R. R. Tolkien"
        if _inside_quotes(text[: match.end()]):
            continue
        yield text[start : match.end()].strip()
        start = match.end()
    yield text[start:].strip()


def _pack(pieces: list[str], desired_length: int, max_length: int) -> list[str]:
    """Join consecutive pieces with spaces into chunks: emit once a chunk reaches `desired_length` characters,
    and before it would pass `max_length`."""
    chunks, current = [], ""
    for piece in pieces:
        if current and len(current) + 1 + len(piece) > max_length:
            chunks.append(current)
            current = ""
        current = f"{current} {piece}" if current else piece
        if len(current) >= desired_length:
            chunks.append(current)
            current = ""
    return [*chunks, current] if current else chunks


def _by_characters(sentence: str, max_length: int) -> list[str]:
    """Cut a sentence longer than `max_length` at clause punctuation, then between words."""
    if len(sentence) <= max_length:
        return [sentence]
    pieces = []
    for clause in _pack(_CLAUSE_END.split(sentence), max_length, max_length):
        pieces += [clause] if len(clause) <= max_length else _pack(clause.split(" "), max_length, max_length)
    return pieces


def _token_counts(tokenizer, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(texts, return_attention_mask=False)["input_ids"]] if texts else []


def _units(text: str, level: int) -> list[str]:
    """`text` cut at sentence ends (level 0), clause punctuation (1) or spaces (2)."""
    if level == 0:
        return [sentence for sentence in _sentences(text) if sentence]
    return _CLAUSE_END.split(text) if level == 1 else text.split(" ")


def _by_tokens(text: str, tokenizer, max_tokens: int, level: int = 0) -> list[str]:
    """Cut `text` into pieces of at most `max_tokens` tokens, at sentence ends where possible, then at clause
    punctuation, then between words. Each piece is checked with an exact count."""
    units = _units(text, level)
    costs = _token_counts(tokenizer, units)
    fitted: list[tuple[str, int]] = []
    for unit, cost in zip(units, costs, strict=True):
        if cost <= max_tokens:
            fitted.append((unit, cost))
        elif level < 2:
            pieces = _by_tokens(unit, tokenizer, max_tokens, level + 1)
            fitted += zip(pieces, _token_counts(tokenizer, pieces), strict=True)
        else:
            raise TextTooLongError(
                f"the word {unit[:80]!r} encodes to {cost} tokens, more than the {max_tokens} the model accepts "
                "in one chunk; shorten it or insert spaces"
            )
    # Greedy packing on per-unit costs (+1 for the joining space), then an exact check of each piece.
    pieces, current, used = [], [], 0
    for unit, cost in fitted:
        extra = cost + (1 if current else 0)
        if current and used + extra > max_tokens:
            pieces.append(" ".join(current))
            current, used, extra = [], 0, cost
        current.append(unit)
        used += extra
    pieces.append(" ".join(current))
    out = []
    for piece, count in zip(pieces, _token_counts(tokenizer, pieces), strict=True):
        if count <= max_tokens or " " not in piece:
            out.append(piece)
        else:  # the estimate was low (rare): halve at a word boundary and check again
            words = piece.split(" ")
            middle = len(words) // 2
            out += _by_tokens(" ".join(words[:middle]), tokenizer, max_tokens, 2)
            out += _by_tokens(" ".join(words[middle:]), tokenizer, max_tokens, 2)
    return out


def split_text(
    text: str, tokenizer=None, max_tokens: int = 399, desired_length: int = 200, max_length: int = 300
) -> list[str]:
    """Split `text` into chunks that each fit the model.

    Args:
        text: any length of text.
        tokenizer: a `ClvpTokenizer` (None: the packaged Tortoise vocabulary) used to count tokens.
        max_tokens: the most ids a chunk may encode to; pass the model's `max_text_tokens - 3`
            (402 - 3 = 399 for Tortoise).
        desired_length: a chunk is closed at the first sentence end after this many characters.
        max_length: chunks never pass this many characters (unless a single word is longer).

    Returns:
        chunks in reading order; empty when the text has nothing to say.

    Raises:
        TextTooLongError: a single word encodes to more than `max_tokens` tokens.
        ValueError: inconsistent limits.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if not 0 < desired_length <= max_length:
        raise ValueError(f"need 0 < desired_length <= max_length, got {desired_length} and {max_length}")
    if tokenizer is None:
        from clvp_jax.text.tokenizer import ClvpTokenizer

        tokenizer = ClvpTokenizer.from_pretrained()
    text = re.sub(r"\s+", " ", text).strip()
    pieces = [piece for sentence in _sentences(text) if sentence for piece in _by_characters(sentence, max_length)]
    chunks = [chunk for chunk in _pack(pieces, desired_length, max_length) if _SPEAKABLE.search(chunk)]
    out = []
    for chunk, count in zip(chunks, _token_counts(tokenizer, chunks), strict=True):
        out += [chunk] if count <= max_tokens else _by_tokens(chunk, tokenizer, max_tokens)
    return out


SPLIT_MARK = "|"  # a manual split point, as in Tortoise's read.py


def split_at_marks(text: str, tokenizer=None, max_tokens: int = 399, **limits) -> list[str]:
    """`split_text`, but with `|` marking manual split points (as Tortoise's `read.py` reads them).

    Without a `|` this is `split_text(text, ...)`. With one, the text is cut at every `|` and each piece is one
    chunk as written (whitespace runs made one space), whatever its length in characters, as long as it fits
    `max_tokens`; a piece that does not fit is split by `split_text`, and pieces with nothing to say are dropped.

    Raises:
        TextTooLongError, ValueError: as `split_text`.
    """
    if SPLIT_MARK not in text:
        return split_text(text, tokenizer, max_tokens, **limits)
    if tokenizer is None:
        from clvp_jax.text.tokenizer import ClvpTokenizer

        tokenizer = ClvpTokenizer.from_pretrained()
    pieces = [re.sub(r"\s+", " ", piece).strip() for piece in text.split(SPLIT_MARK)]
    pieces = [piece for piece in pieces if _SPEAKABLE.search(piece)]
    out = []
    for piece, count in zip(pieces, _token_counts(tokenizer, pieces), strict=True):
        out += [piece] if count <= max_tokens else split_text(piece, tokenizer, max_tokens, **limits)
    return out
