"""ClvpFeatureExtractor against transformers' extractor on real clips, plus our extensions and errors."""

from __future__ import annotations

import wave

import numpy as np
import pytest
from frontend_utils import CLIP_FILES, SIX_SECONDS, VOICES, packaged_mel_norms, reference_extractor

from clvp_jax import ClvpFeatureExtractor, assets, load_audio, load_voice
from clvp_jax.audio import AudioError, mel_filter_bank
from clvp_jax.audio.io import as_clips

# Our computation repeats the reference's float64 steps (and its complex64 rounding of the FFT) in a
# different order only inside BLAS sums; 1e-5 absolute is the bound (observed difference: 0.0).
ATOL = 1e-5


@pytest.fixture(scope="module")
def clips():
    return [load_audio(path) for path in CLIP_FILES]


@pytest.fixture(scope="module")
def extractors():
    norms = packaged_mel_norms()
    return ClvpFeatureExtractor.from_pretrained(), reference_extractor(mel_norms=norms.tolist())


def _compare(ours, ref, audio, **kwargs):
    a = ours(audio, sampling_rate=22050, return_tensors="np", **kwargs)
    b = ref(audio, sampling_rate=22050, return_tensors="np", **kwargs)
    assert a["input_features"].shape == b["input_features"].shape
    np.testing.assert_allclose(a["input_features"], b["input_features"], rtol=0, atol=ATOL)
    np.testing.assert_array_equal(a["attention_mask"], b["attention_mask"])  # integer mask: exact
    return a


def test_real_clips_match_reference(clips, extractors):
    ours, ref = extractors
    for clip in clips:
        out = _compare(ours, ref, clip[:SIX_SECONDS])
        assert out["input_features"].shape == (1, 80, 517)
        _compare(ours, ref, clip)  # longer than 6 s: truncated
        _compare(ours, ref, clip[:22050])  # 1 s: padded with silence


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"padding": "longest"},
        {"padding": True, "truncation": False},
        {"max_length": 100_000, "pad_to_multiple_of": 256},
        {"padding": "longest", "max_length": 40_000, "pad_to_multiple_of": 1000},
        {"return_attention_mask": True, "max_length": 5000},
    ],
)
def test_batches_of_different_lengths(clips, extractors, kwargs):
    ours, ref = extractors
    batch = [clips[0][:SIX_SECONDS], clips[1][:50_000], clips[2][10_000:], clips[0][:700]]
    _compare(ours, ref, batch, **kwargs)


def test_without_mel_norms_and_with_20_mels(clips):
    for settings in ({}, {"feature_size": 20}, {"feature_size": 20, "mel_norms": list(np.linspace(-9, -2, 20))}):
        ours, ref = ClvpFeatureExtractor(**settings), reference_extractor(**settings)
        np.testing.assert_allclose(ours.mel_filters, ref.mel_filters, rtol=0, atol=1e-15)  # same float64 formula
        out = _compare(ours, ref, [clips[0][:60_000], clips[2][:SIX_SECONDS]])
        assert out["input_features"].shape[1] == settings.get("feature_size", 80)


def test_filters_match_librosa():
    import librosa

    ours = mel_filter_bank()
    theirs = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0, fmax=8000, htk=True, norm="slaney").T
    # librosa uses sr / 2 exactly (not the integer 11025) and float32-friendly steps: ~2e-9 (spec section 10).
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-7)


def test_packaged_voice_is_the_first_six_seconds(clips):
    voice = load_audio(assets.default_voice_path())
    np.testing.assert_array_equal(voice, clips[0][:SIX_SECONDS])  # same 16-bit samples: exact
    with wave.open(str(assets.default_voice_path())) as handle:
        assert (handle.getnchannels(), handle.getsampwidth(), handle.getframerate()) == (1, 2, 22050)


def test_resampling_instead_of_raising(clips, extractors):
    import librosa

    ours, ref = extractors
    clip44 = librosa.resample(clips[0][:SIX_SECONDS], orig_sr=22050, target_sr=44100)
    with pytest.raises(ValueError):
        ref(clip44, sampling_rate=44100)  # the reference refuses other rates
    expected = ours(librosa.resample(clip44, orig_sr=44100, target_sr=22050), sampling_rate=22050)
    got = ours(clip44, sampling_rate=44100)
    np.testing.assert_array_equal(got["input_features"], expected["input_features"])  # same resampler: exact
    # Round trip through 44.1 kHz keeps the features close to the original (speech band < 8 kHz).
    direct = ours(clips[0][:SIX_SECONDS])["input_features"]
    assert np.median(np.abs(got["input_features"] - direct)) < 0.05


def test_stereo_layouts(clips, extractors):
    ours, ref = extractors
    left, right = clips[0][:SIX_SECONDS], clips[1][:SIX_SECONDS]
    mono = ((left.astype(np.float64) + right) / 2).astype(np.float32)
    expected = ours(mono)["input_features"]
    last = np.stack([left, right], axis=1)  # (N, 2): read as one stereo clip by layout="auto"
    np.testing.assert_array_equal(ours(last)["input_features"], expected)
    np.testing.assert_array_equal(ours(last.T, layout="channels_first")["input_features"], expected)
    np.testing.assert_array_equal(ours([last])["input_features"], expected)  # a 2-D clip inside a list
    # (2, N) stays a batch of two clips, as in the reference.
    _compare(ours, ref, last.T)
    assert ours(last.T)["input_features"].shape == (2, 80, 517)
    # An (N, 1) column is one mono clip; the reference would read 132300 one-sample clips.
    np.testing.assert_array_equal(ours(left[:, None])["input_features"], ours(left)["input_features"])
    assert len(as_clips(last, "batch")) == SIX_SECONDS  # the reference's reading, on request only


def test_unpadded_ragged_batch_gives_a_list(clips, extractors):
    ours, _ = extractors
    out = ours([clips[0][:30_000], clips[1][:50_000]], padding=False)
    assert [f.shape for f in out["input_features"]] == [(80, 118), (80, 196)]
    with pytest.raises(ValueError, match="different lengths"):
        ours([clips[0][:30_000], clips[1][:50_000]], padding=False, return_tensors="np")


def test_jax_output(clips, extractors):
    import jax.numpy as jnp

    ours, _ = extractors
    out = ours(clips[0][:SIX_SECONDS], return_tensors="jax")
    assert isinstance(out["input_features"], jnp.ndarray) and out["input_features"].dtype == jnp.float32


@pytest.mark.parametrize(
    "audio, message",
    [
        (np.zeros(0, np.float32), "empty"),
        ([np.ones(100, np.float32), np.zeros(0, np.float32)], "clip 1 is empty"),
        ([], "batch of audio clips is empty"),
        (np.array([0.1, np.nan, 0.2] * 100, np.float32), "NaN or infinite"),
        (np.array([0.1, np.inf] * 100), "NaN or infinite"),
        (np.zeros((2, 3, 100), np.float32), "3 dimensions"),
        (np.zeros(100, np.complex64), "complex"),
        (np.array(["a", "b"]), "non-numeric"),
        (np.float32(0.5), "single number"),
        ([np.zeros((50, 50), np.float32)], "not \\(samples, channels\\)"),
        (np.zeros(100, np.int64), "int64 have no PCM scale"),
        (np.zeros(100, bool), "bool have no PCM scale"),
    ],
)
def test_bad_audio_raises_audio_error(extractors, audio, message):
    ours, _ = extractors
    with pytest.raises(AudioError, match=message):
        ours(audio)
    assert issubclass(AudioError, ValueError)


@pytest.mark.parametrize("dtype, scale", [(np.int16, 2**15), (np.int32, 2**31), (np.int8, 2**7), (np.uint8, None)])
def test_integer_pcm_is_scaled_as_audio_libraries_read_it(clips, extractors, dtype, scale):
    ours, _ = extractors
    clip = np.clip(clips[0][:22050], -1, 1 - 1 / 128)  # one second; full scale is 1 - 2^-(bits-1)
    if scale is None:  # 8-bit WAV: unsigned, centred on 128
        pcm = np.round(clip * 128 + 128).astype(np.uint8)
        back = (pcm.astype(np.float32) - 128) / 128
    else:
        pcm = np.round(clip * scale).astype(dtype)
        back = (pcm / scale).astype(np.float32)
    got = ours(pcm, return_tensors="np")["input_features"]
    want = ours(back, return_tensors="np")["input_features"]
    # The same float32 samples as the reference scaling: the same features bit for bit.
    np.testing.assert_array_equal(got, want)
    unscaled = ours(pcm.astype(np.float32), return_tensors="np")["input_features"]
    assert np.abs(unscaled - want).max() > 1.0  # what unscaled integers gave before


def test_load_audio_resamples_and_downmixes(tmp_path, clips):
    import soundfile

    stereo = np.stack([clips[0][:44_100], clips[1][:44_100]], axis=1)
    soundfile.write(tmp_path / "stereo.flac", stereo, 44_100)
    loaded = load_audio(tmp_path / "stereo.flac")
    assert loaded.dtype == np.float32 and loaded.ndim == 1 and len(loaded) == 22_050  # 1 s at 22.05 kHz
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 22_050)
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="could not decode"):
        load_audio(tmp_path / "bad.wav")
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "missing.wav")


def test_load_voice(tmp_path, clips):
    voice = load_voice(VOICES / "lj")
    assert len(voice) == 2
    np.testing.assert_array_equal(voice[0], clips[0])
    assert len(load_voice([CLIP_FILES[2]])) == 1
    with pytest.raises(AudioError, match="no audio files"):
        load_voice(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_voice(tmp_path / "nobody")


def test_config_round_trip(tmp_path, extractors):
    ours, _ = extractors
    ours.save_pretrained(tmp_path)
    again = ClvpFeatureExtractor.from_pretrained(tmp_path)
    assert again.to_dict() == ours.to_dict()
    from transformers import ClvpFeatureExtractor as Reference

    assert Reference.from_pretrained(str(tmp_path)).mel_norms == ours.mel_norms
