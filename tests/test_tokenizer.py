"""ClvpTokenizer against transformers' ClvpTokenizer: ids, tokens, padding, decoding, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from frontend_utils import TORTOISE, first_mismatch, reference_tokenizer, write_synthetic_vocab
from hypothesis import given, settings
from hypothesis import strategies as st
from text_corpus import corpus

from clvp_jax import ClvpTokenizer, assets
from clvp_jax.text.tokenizer import read_merges

HF_FOLDER = TORTOISE / "hf_tokenizer"


@pytest.fixture(scope="module")
def texts():
    texts = corpus()
    assert len(texts) >= 500
    return texts


@pytest.fixture(scope="module")
def real():
    return ClvpTokenizer.from_pretrained(), reference_tokenizer(HF_FOLDER)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = write_synthetic_vocab(tmp_path_factory.mktemp("synthetic"))
    return ClvpTokenizer.from_pretrained(folder), reference_tokenizer(folder)


@pytest.mark.parametrize("pair", ["real", "synthetic"])
def test_ids_match_reference_on_corpus(pair, texts, request):
    ours, ref = request.getfixturevalue(pair)
    theirs = [ref(t)["input_ids"] for t in texts]
    mine = ours(texts)["input_ids"]
    assert mine == theirs, first_mismatch(mine, theirs, texts)
    assert [ours.encode(t) for t in texts[:50]] == theirs[:50]  # the one-text path too


@pytest.mark.parametrize("pair", ["real", "synthetic"])
def test_tokens_match_reference(pair, texts, request):
    ours, ref = request.getfixturevalue(pair)
    sample = texts[:40] + texts[-160:]
    assert [ours.tokenize(t) for t in sample] == [ref.tokenize(t) for t in sample]


def test_synthetic_vocab_exercises_unk_and_space_rules(synthetic):
    ours, _ = synthetic
    unk, space = ours.unk_token_id, ours.encoder["[SPACE]"]
    ids = ours.encode("quest zax the  a")
    assert ours.tokenize("quest zax the") == ["qu", "est", "[SPACE]", "z", "a", "x", "\u0120the"]
    assert ids[:2] == [unk, unk]  # merge results missing from the vocabulary
    assert ids.count(space) >= 1 and ours.encoder["\u0120the"] in ids


def test_published_ids_and_special_tokens(real):
    ours, ref = real
    assert ours("Hello world")["input_ids"] == [62, 84, 28, 2, 179, 79]
    assert ours.encode("This is an example text.") == [147, 2, 54, 2, 43, 2, 169, 122, 29, 64, 2, 136, 37, 33, 9]
    assert (ours.vocab_size, len(ours), ours.bos_token_id) == (ref.vocab_size, len(ref), 255) == (255, 256, 255)
    assert ours.all_special_ids == ref.all_special_ids
    assert ours.get_vocab() == ref.get_vocab()


def test_tortoise_json_gives_the_same_tokenizer(real, texts):
    ours, _ = real
    from_json = ClvpTokenizer.from_pretrained(assets.tortoise_tokenizer_path())
    assert from_json.encoder == ours.encoder and from_json.merges == ours.merges
    assert from_json(texts)["input_ids"] == ours(texts)["input_ids"]


def test_matches_tortoise_original_path(real):
    # Tortoise: lowercase, " " -> "[SPACE]", then tokenizers' own Tokenizer on tokenizer.json.
    from tokenizers import Tokenizer

    original = Tokenizer.from_file(str(TORTOISE / "tokenizer.json"))
    ours, _ = real
    for text in ["hello world", "this is an example text.", "the quick brown fox; jumps, over it's dog?"]:
        assert ours.encode(text) == original.encode(text.replace(" ", "[SPACE]")).ids


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"padding": True},
        {"padding": "longest", "return_tensors": "np"},
        {"padding": "max_length", "max_length": 40, "truncation": True},
        {"truncation": True, "max_length": 5},
        {"max_length": 7},
        {"padding": True, "pad_to_multiple_of": 8, "return_tensors": "np"},
        {"padding": True, "return_attention_mask": False},
    ],
)
def test_call_options_match_reference(real, kwargs):
    ours, ref = real
    batch = ["Hello world", "", "A longer sentence, with 12 words and $3.50!", "[STOP] hi"]
    for inputs in (batch, batch[2]):
        a, b = ours(inputs, **kwargs), ref(inputs, **kwargs)
        assert list(a) == list(b)
        for key in b:
            if kwargs.get("return_tensors"):
                assert a[key].dtype == b[key].dtype
                np.testing.assert_array_equal(a[key], b[key])
            else:
                assert a[key] == b[key], key


def test_jax_tensors_and_errors(real):
    import jax.numpy as jnp

    ours, _ = real
    out = ours(["hi", "hello there"], padding=True, return_tensors="jax")
    assert isinstance(out.input_ids, jnp.ndarray) and out.input_ids.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(out.attention_mask), [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match="padding=True"):
        ours(["hi", "hello there"], return_tensors="np")
    with pytest.raises(ValueError, match="max_length"):
        ours("hi", padding="max_length")
    with pytest.raises(TypeError):
        ours(3)


@pytest.mark.parametrize("pair", ["real", "synthetic"])
def test_decode_matches_reference(pair, texts, request):
    ours, ref = request.getfixturevalue(pair)
    rows = ours(texts[:60] + texts[-140:])["input_ids"]
    for kwargs in ({}, {"skip_special_tokens": True}, {"clean_up_tokenization_spaces": True},
                   {"skip_special_tokens": True, "clean_up_tokenization_spaces": True}):  # fmt: skip
        assert ours.batch_decode(rows, **kwargs) == ref.batch_decode(rows, **kwargs), kwargs
    assert ours.decode(np.asarray(rows[5])) == ref.decode(rows[5])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours.decode([5, 9999])


def test_save_round_trips_both_ways(real, texts, tmp_path):
    from transformers import ClvpTokenizer as Reference

    ours, ref = real
    ours.save_pretrained(tmp_path / "ours")
    assert read_merges(tmp_path / "ours" / "merges.txt") == ours.merges  # nothing lost
    reloaded = ClvpTokenizer.from_pretrained(tmp_path / "ours")
    assert (reloaded.encoder, reloaded.merges) == (ours.encoder, ours.merges)
    by_reference = Reference.from_pretrained(str(tmp_path / "ours"))
    assert len(by_reference.bpe_ranks) == len(ours.merges) == 215  # the reference reads every merge we write
    assert [by_reference(t)["input_ids"] for t in texts[:100]] == ours(texts[:100])["input_ids"]
    # The reference's own save drops the header, so it loses the first merge on reload (spec 14.12); we don't.
    ref.save_pretrained(str(tmp_path / "theirs"))
    assert len(Reference.from_pretrained(str(tmp_path / "theirs")).bpe_ranks) == 214
    assert ClvpTokenizer.from_pretrained(tmp_path / "theirs").merges == ours.merges
    assert not list((tmp_path / "ours").glob("*.tmp"))


def test_merges_file_without_header_or_final_newline(tmp_path):
    lines = (HF_FOLDER / "merges.txt").read_text(encoding="utf-8").rstrip("\n").split("\n")
    (tmp_path / "no_newline.txt").write_text("\n".join(lines), encoding="utf-8")
    (tmp_path / "no_header.txt").write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")
    expected = [tuple(line.split()) for line in lines[1:]]
    assert read_merges(tmp_path / "no_newline.txt") == expected
    assert read_merges(tmp_path / "no_header.txt") == expected


def test_tokenizer_config_options(tmp_path):
    tok = ClvpTokenizer.from_pretrained(ascii_mode="transliterate", model_max_length=10)
    tok.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["ascii_mode"] == "transliterate"
    again = ClvpTokenizer.from_pretrained(tmp_path)
    assert (again.ascii_mode, again.model_max_length) == ("transliterate", 10)
    assert len(again("word " * 20, truncation=True)["input_ids"]) == 10


def test_transliteration_option(real):
    ours, _ = real
    translit = ClvpTokenizer.from_pretrained(ascii_mode="transliterate")
    assert translit.encode("caf\u00e9 \u00a35") == ours.encode("cafe five pounds")
    assert ours.encode("caf\u00e9") == ours.encode("caf")  # the reference's rule: deleted


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_never_crashes(text):
    tok = ClvpTokenizer.from_pretrained() if not hasattr(test_never_crashes, "tok") else test_never_crashes.tok
    test_never_crashes.tok = tok
    ids = tok.encode(text)
    assert all(0 <= i < len(tok) for i in ids)
    tok.decode(ids, clean_up_tokenization_spaces=True)


_IN_VOCAB = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 .,'!?-;:()\"", max_size=80)


@settings(max_examples=200, deadline=None)
@given(_IN_VOCAB)
def test_decode_recovers_normalized_text(text):
    tok = ClvpTokenizer.from_pretrained() if not hasattr(test_never_crashes, "tok") else test_never_crashes.tok
    test_never_crashes.tok = tok
    # Every character the normaliser can make from this alphabet is in the vocabulary, so nothing becomes [UNK].
    assert tok.decode(tok.encode(text)).replace("[SPACE]", " ") == tok.normalize(text)


def test_ill_formed_merge_table_warns():
    vocab = {"[STOP]": 0, "[UNK]": 1, "a": 2, "b": 3, "ab": 4}
    with pytest.warns(UserWarning, match="no earlier merge produces"):
        ClvpTokenizer(vocab=vocab, merges=[("ab", "c"), ("a", "b")])
