"""ClvpProcessor against transformers' ClvpProcessor, files, voices and the flat-padding fix."""

from __future__ import annotations

import numpy as np
import pytest
from frontend_utils import SIX_SECONDS, VOICES

from clvp_jax import ClvpProcessor, assets, load_audio


@pytest.fixture(scope="module")
def processors(tmp_path_factory):
    from transformers import ClvpProcessor as Reference

    ours = ClvpProcessor.default()
    folder = tmp_path_factory.mktemp("processor")
    ours.save_pretrained(folder)
    return ours, Reference.from_pretrained(str(folder)), folder


@pytest.fixture(scope="module")
def voice():
    return load_audio(assets.default_voice_path())


def test_text_and_audio_match_reference(processors, voice):
    ours, ref, _ = processors
    texts = ["Hello world", "It cost $3.50 in 1984.", "[STOP] hi"]
    a = ours(text=texts, audio=[voice, voice[:40_000]], sampling_rate=22050, padding=True, return_tensors="np")
    b = ref(text=texts, audio=[voice, voice[:40_000]], sampling_rate=22050, text_kwargs={"padding": True},
            return_tensors="np")  # fmt: skip
    assert sorted(a) == sorted(b) == ["attention_mask", "input_features", "input_ids"]
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    np.testing.assert_array_equal(a["attention_mask"], b["attention_mask"])  # the text mask
    # Same computation as the reference extractor (see test_features): 1e-5 is the bound.
    np.testing.assert_allclose(a["input_features"], b["input_features"], rtol=0, atol=1e-5)


def test_flat_padding_reaches_text_only(processors, voice):
    ours, ref, _ = processors
    short = voice[:40_000]
    a = ours(text=["a", "longer text"], audio=short, padding=True, return_tensors="np")
    assert a["input_features"].shape == (1, 80, 517)  # audio still padded to 6 s
    b = ref(text=["a", "longer text"], audio=short, sampling_rate=22050, padding=True, return_tensors="np")
    assert b["input_features"].shape == (1, 80, 157)  # the reference's flat padding also shortens the audio
    c = ours(text="a", audio=short, audio_kwargs={"padding": "longest"}, return_tensors="np")
    assert c["input_features"].shape == (1, 80, 157)


def test_audio_only_and_text_only(processors, voice):
    ours, ref, _ = processors
    a, b = ours(audio=voice, return_tensors="np"), ref(audio=voice, sampling_rate=22050, return_tensors="np")
    assert a["attention_mask"].shape == b["attention_mask"].shape == (1, SIX_SECONDS)
    assert ours(raw_speech=voice)["input_features"].shape == (1, 80, 517)
    assert ours(text="Hello world")["input_ids"] == ref(text="Hello world")["input_ids"]
    with pytest.raises(ValueError, match="text=, audio="):
        ours()


def test_decode_forwarding(processors):
    ours, ref, _ = processors
    ids = ours(text=["Hello world [STOP]", "hi"], padding=True)["input_ids"]
    assert ours.batch_decode(ids, skip_special_tokens=True) == ref.batch_decode(ids, skip_special_tokens=True)
    assert ours.decode(ids[0]) == ref.decode(ids[0])


def test_folder_round_trips(processors, tmp_path, voice):
    ours, ref, folder = processors
    again = ClvpProcessor.from_pretrained(folder)
    assert again.feature_extractor.to_dict() == ours.feature_extractor.to_dict()
    assert (again.tokenizer.encoder, again.tokenizer.merges) == (ours.tokenizer.encoder, ours.tokenizer.merges)
    ref.save_pretrained(str(tmp_path))  # processor_config.json only, merges without header
    theirs = ClvpProcessor.from_pretrained(tmp_path)
    assert theirs.feature_extractor.mel_norms == ours.feature_extractor.mel_norms
    assert theirs.tokenizer.merges == ours.tokenizer.merges
    np.testing.assert_array_equal(theirs(audio=voice)["input_features"], ours(audio=voice)["input_features"])
    assert not list(folder.glob(".*.tmp"))
    with pytest.raises(FileNotFoundError):
        ClvpProcessor.from_pretrained(tmp_path / "missing")


def test_voice_from_folder_and_files(processors):
    ours, _, _ = processors
    features = ours.voice_features(VOICES / "lj")
    assert features.shape == (2, 80, 517)
    files = sorted((VOICES / "lj").glob("*.wav"))
    np.testing.assert_array_equal(ours.voice_features(files), features)  # same clips, same computation
    clips = [load_audio(f) for f in files]
    np.testing.assert_array_equal(ours.voice_features(clips), features)
