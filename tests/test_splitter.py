"""split_text: sentence-aware chunks with a token guarantee."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from text_corpus import corpus

from clvp_jax import ClvpTokenizer, split_text
from clvp_jax.text import TextTooLongError

TOKENIZER = ClvpTokenizer.from_pretrained()
STORY = (
    "It was the best of times, it was the worst of times. It was the age of wisdom; it was the age of "
    'foolishness. He said "Stop. Wait. Go." and left! Did Dr. Watson see him? Nobody knows. '
    "In 1,234 years, $1,234,567.89 will be paid to Mr. Holmes, who will, of course, refuse it. "
) * 6


def _check(text, chunks, max_tokens, max_length=300):
    assert " ".join(chunks).split() == text.split()  # nothing lost, nothing reordered
    for chunk in chunks:
        assert len(TOKENIZER.encode(chunk)) <= max_tokens
        assert len(chunk) <= max_length or " " not in chunk


def test_short_text_is_one_chunk():
    assert split_text("  Hello   world. ", TOKENIZER, 399) == ["Hello world."]
    assert split_text("... !", TOKENIZER, 399) == []


@pytest.mark.parametrize("max_tokens", [399, 150, 70])
def test_long_text_fits(max_tokens):
    chunks = split_text(STORY, TOKENIZER, max_tokens)
    _check(STORY, chunks, max_tokens)
    assert len(chunks) > 1


def test_prefers_sentence_ends_and_keeps_quotes_and_abbreviations():
    chunks = split_text(STORY, TOKENIZER, 399, desired_length=60, max_length=200)
    assert sum(chunk[-1] in '.!?"' for chunk in chunks) >= len(chunks) - 1
    assert not any(chunk.endswith(("Dr.", "Mr.", '"Stop.', "Wait.")) for chunk in chunks)
    assert any('"Stop. Wait. Go."' in chunk for chunk in chunks)


def test_character_limits_without_punctuation():
    text = "word " * 400
    chunks = split_text(text, TOKENIZER, 399, desired_length=100, max_length=150)
    _check(text, chunks, 399, 150)


def test_unbreakable_word_raises():
    with pytest.raises(TextTooLongError, match=r"'x{80}'.* 5 the model accepts") as info:
        split_text("fine words " + "x" * 500, TOKENIZER, 5)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="max_tokens"):
        split_text("hi", TOKENIZER, 0)
    with pytest.raises(ValueError, match="desired_length"):
        split_text("hi", TOKENIZER, 10, desired_length=400, max_length=300)


def test_whole_corpus_as_one_text():
    text = " ".join(t for t in corpus(200) if t.strip() and "a" * 300 not in t)  # that word alone is 300 tokens
    # 200: the longest remaining word (18 nines, spelled out) is 121 tokens.
    chunks = split_text(text, TOKENIZER, 200)
    assert len(chunks) > 5
    for chunk in chunks:
        assert len(TOKENIZER.encode(chunk)) <= 200


_WORDS = st.sampled_from(["the", "voice", "Dr.", "quickly", "1984", "$3.50", "well,", "end.", "why?", '"yes', 'no"'])


@settings(max_examples=60, deadline=None)
@given(st.lists(_WORDS, min_size=1, max_size=200), st.integers(min_value=25, max_value=400))
def test_property_every_chunk_fits(words, max_tokens):
    text = " ".join(words)
    _check(text, split_text(text, TOKENIZER, max_tokens), max_tokens)
