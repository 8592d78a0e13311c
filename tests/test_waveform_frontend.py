"""The diffusion front end against the original's outputs: 22.05 -> 24 kHz resampling, the 100-bin log-mel, the
conditioning mels of voice clips, the mel normalisation pair, and the versioned latents file."""

from __future__ import annotations

import types

import jax.numpy as jnp
import librosa
import numpy as np
import pytest
from waveform_fixture import WAVEFORM_DIR, original_config, reference

from clvp_jax.audio import AudioError, load_audio
from clvp_jax.audio.diffusion_conditioning import CONDITIONING_SAMPLES, diffusion_conditioning_mels, pad_or_truncate
from clvp_jax.audio.resample import resample
from clvp_jax.audio.univnet_mel import (
    TACOTRON_MEL_MAX,
    TACOTRON_MEL_MIN,
    denormalize_tacotron_mel,
    normalize_tacotron_mel,
    slaney_mel_filters,
    univnet_log_mel,
)
from clvp_jax.generation.latents import (
    LatentsFileError,
    MissingDiffusionLatentError,
    load_conditioning_latents,
    load_voice_latents,
    save_conditioning_latents,
)

VOICES = WAVEFORM_DIR.parent / "tortoise" / "voices"


@pytest.fixture(scope="module")
def clips_22k() -> list[np.ndarray]:
    """The fixture's diffusion conditioning clips as `load_audio` gives them (int16 / 32768 for these wavs)."""
    files = {"lj/1.wav": None, "myself/3.wav": 60000}
    assert [c["first_samples"] for c in original_config()["fixture"]["diff_clips"]] == list(files.values())
    clips = [load_audio(VOICES / name)[:first] for name, first in files.items()]
    np.testing.assert_array_equal([len(c) for c in clips], reference()["diff_clip_samples_22k"])
    return clips


# Tolerances of the mel comparisons. The original's STFT is a float32 convolution (1024 products per bin), whose
# rounding is ~3e-6 absolute on mel values up to ~5 (measured 2.9e-6, about 6 float32 ulps of the largest value):
MEL_ATOL = 5e-6  # on exp(log-mel), i.e. the mel itself
# ... which the log amplifies where the mel is tiny (near the 1e-5 floor): measured 7.7e-5 from the resampled
# waveform (1.2e-4 with the FFT), 3.8e-4 from the clips, where the one-ulp resampling differences also enter.
LOG_MEL_ATOL = 1e-3


def _compare_mels(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    np.testing.assert_allclose(
        np.exp(ours.astype(np.float64)), np.exp(theirs.astype(np.float64)), rtol=0, atol=MEL_ATOL
    )
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=LOG_MEL_ATOL)


# ------------------------------------------------------------------------------------------------ resampling


def test_resample_matches_torchaudio(clips_22k):
    ref = reference()["diff_cond_wav_24k"]
    for clip, want in zip(clips_22k, ref, strict=True):
        wav = resample(clip, 22050, 24000)
        assert wav.dtype == np.float32 and len(wav) == -(-len(clip) * 160 // 147)  # ceil(N * 160 / 147)
        # Same float32 kernel as torchaudio, float64 sums rounded once: one float32 ulp at the clips' peak (~0.9),
        # measured 1.2e-7; a float64 kernel would differ by 5e-6.
        np.testing.assert_allclose(pad_or_truncate(wav, CONDITIONING_SAMPLES), want, rtol=0, atol=2.5e-7)


def test_resample_is_band_limited_interpolation():
    """Independent of the fixture: a 1 kHz tone stays that tone at the new rate, for both reductions."""
    for orig, new in [(22050, 24000), (44100, 22050), (16000, 22050)]:
        t = np.arange(orig) / orig
        out = resample(np.sin(2 * np.pi * 1000 * t).astype(np.float32), orig, new)
        assert out.shape == (new,)
        want = np.sin(2 * np.pi * 1000 * np.arange(new) / new)
        inner = slice(new // 20, -new // 20)  # away from the zero-padded edges
        np.testing.assert_allclose(out[inner], want[inner], rtol=0, atol=2e-3)  # the 0.99 roll-off's passband ripple
    batch = np.stack([np.ones(300, np.float32), np.zeros(300, np.float32)])[None]  # [1, 2, N]: leading axes kept
    assert resample(batch, 22050, 24000).shape == (1, 2, 327)
    np.testing.assert_array_equal(resample(batch, 8000, 8000), batch)
    with pytest.raises(ValueError, match="positive integers"):
        resample(batch, 22050.5, 24000)
    with pytest.raises(ValueError, match="samples along the last axis"):
        resample(np.zeros((2, 0)), 22050, 24000)


# ------------------------------------------------------------------------------------------------ the mel


def test_mel_filters_are_librosa_slaney():
    want = librosa.filters.mel(sr=24000, n_fft=1024, n_mels=100, fmin=0, fmax=12000)  # what the original calls
    np.testing.assert_array_equal(slaney_mel_filters(), want)  # same float64 maths, same two float32 roundings


def test_mel_matches_the_original():
    ref = reference()
    mel = univnet_log_mel(ref["diff_cond_wav_24k"])
    assert mel.shape == (2, 100, 401)  # 1 + 102400 // 256 frames
    _compare_mels(mel, ref["diff_cond_mels"])
    np.testing.assert_array_equal(univnet_log_mel(ref["diff_cond_wav_24k"][1]), mel[1])  # one clip == its batch row


def test_conditioning_mels_from_the_voice_clips(clips_22k):
    """`get_conditioning_latents`'s diffusion input from the 22.05 kHz clips: resample, first 102 400, mel."""
    mels = diffusion_conditioning_mels(clips_22k)
    assert mels.shape == (2, 100, 401)
    _compare_mels(mels, reference()["diff_cond_mels"])
    np.testing.assert_array_equal(diffusion_conditioning_mels(clips_22k[1]), mels[1:])  # one clip -> [1, 100, 401]


def test_mel_and_conditioning_refuse_bad_input():
    with pytest.raises(ValueError, match=r"beyond \+-10"):
        univnet_log_mel(np.full(2048, 11.0, np.float32))
    with pytest.raises(ValueError, match="NaN or infinite"):
        univnet_log_mel(np.full(2048, np.nan, np.float32))
    with pytest.raises(ValueError, match="more than 512 samples"):
        univnet_log_mel(np.zeros(300, np.float32))
    with pytest.raises(ValueError, match=r"expected \[samples\] or \[clips, samples\]"):
        univnet_log_mel(np.zeros((1, 2, 2048), np.float32))
    with pytest.raises(AudioError, match="empty"):
        diffusion_conditioning_mels([np.zeros(0, np.float32)])
    with pytest.raises(AudioError, match="NaN or infinite"):
        diffusion_conditioning_mels([np.full(4000, np.inf, np.float32)])


def test_pad_or_truncate():
    x = np.arange(5.0)
    np.testing.assert_array_equal(pad_or_truncate(x, 3), [0, 1, 2])
    np.testing.assert_array_equal(pad_or_truncate(x, 7), [0, 1, 2, 3, 4, 0, 0])
    assert pad_or_truncate(np.ones((2, 4)), 6).shape == (2, 6)


def test_normalisation_round_trip():
    assert (TACOTRON_MEL_MIN, TACOTRON_MEL_MAX) == (-11.512925148010254, 2.3143386840820312)  # the original's
    mel = reference()["diff_cond_mels"]
    norm = normalize_tacotron_mel(mel)
    assert norm.dtype == np.float32 and -1 <= norm.min() and norm.max() <= 1  # the floor maps to -1
    np.testing.assert_allclose(
        normalize_tacotron_mel(np.array([TACOTRON_MEL_MIN, TACOTRON_MEL_MAX])), [-1, 1], atol=1e-15
    )
    # Two float32 affine maps of values up to ~11.5: a few ulps (1e-6) of the round trip.
    np.testing.assert_allclose(denormalize_tacotron_mel(norm), mel, rtol=0, atol=4e-6)
    np.testing.assert_allclose(np.asarray(denormalize_tacotron_mel(jnp.asarray(norm))), mel, rtol=0, atol=4e-6)


# ------------------------------------------------------------------------------------------------ latents file


def test_latents_file_new_version_holds_both(tmp_path):
    ar = np.linspace(-1, 1, 32, dtype=np.float32)
    diffusion = np.linspace(2, 3, 96, dtype=np.float32)[None]  # [1, W], as Tortoise's get_conditioning returns it
    path = save_conditioning_latents(tmp_path / "voice.npy", ar, diffusion)
    assert path.read_bytes().startswith(b"PK")  # an .npz archive, whatever the suffix
    latents = load_voice_latents(path, types.SimpleNamespace(config=_decoder(32)), diffusion_width=96)
    assert latents.version == 2
    np.testing.assert_array_equal(latents.autoregressive, ar)
    np.testing.assert_array_equal(latents.require_diffusion(), diffusion[0])
    np.testing.assert_array_equal(load_conditioning_latents(path), ar)  # codes-only readers get the AR latent

    _write_archive(tmp_path / "ar_only.npz", version=2, autoregressive=ar)  # a version-2 archive may omit it
    codes_only = load_voice_latents(tmp_path / "ar_only.npz")
    assert codes_only.version == 2 and codes_only.diffusion is None
    with pytest.raises(MissingDiffusionLatentError, match="ar_only.npz .latents file version 2. holds only"):
        codes_only.require_diffusion()


def test_latents_file_old_version_still_loads_for_codes(tmp_path):
    ar = np.arange(24, dtype=np.float32).reshape(2, 12)  # version 1 also allowed per-clip latents [n, D]
    np.save(tmp_path / "old.npy", ar)  # what clvp-jax wrote before the waveform stage
    # ... and still writes without a diffusion latent, byte for byte (older readers keep reading codes-only files).
    written = save_conditioning_latents(tmp_path / "new.npy", ar)
    assert written.read_bytes() == (tmp_path / "old.npy").read_bytes()
    latents = load_voice_latents(tmp_path / "old.npy")
    assert latents.version == 1 and latents.diffusion is None
    np.testing.assert_array_equal(latents.autoregressive, ar)
    np.testing.assert_array_equal(load_conditioning_latents(tmp_path / "old.npy"), ar)
    with pytest.raises(MissingDiffusionLatentError, match="version 1.*not for audio.*Recompute"):
        latents.require_diffusion()


def test_latents_file_errors(tmp_path):
    ar = np.ones(32, np.float32)
    good = save_conditioning_latents(tmp_path / "good.npz", ar, np.ones(96, np.float32)).read_bytes()

    (tmp_path / "garbage.npy").write_bytes(b"not a latents file at all")
    (tmp_path / "truncated.npz").write_bytes(good[: len(good) // 2])
    np.save(tmp_path / "short.npy", ar)
    (tmp_path / "short.npy").write_bytes((tmp_path / "short.npy").read_bytes()[:-7])
    for name in ["garbage.npy", "truncated.npz", "short.npy"]:
        with pytest.raises(LatentsFileError, match=f"{name} is not a readable clvp-jax latents file.*recompute"):
            load_voice_latents(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="no latents file"):
        load_voice_latents(tmp_path / "absent.npz")

    np.savez(tmp_path / "other.npz", weights=ar)  # some other archive
    with pytest.raises(LatentsFileError, match="without the latents header"):
        load_voice_latents(tmp_path / "other.npz")
    _write_archive(tmp_path / "newer.npz", version=3, autoregressive=ar)
    with pytest.raises(LatentsFileError, match="version-3 latents file, newer than this clvp-jax reads"):
        load_voice_latents(tmp_path / "newer.npz")

    # Wrong shapes and widths, on writing and on reading.
    with pytest.raises(LatentsFileError, match=r"autoregressive latent has shape \(2, 3, 4\)"):
        save_conditioning_latents(tmp_path / "bad.npz", np.ones((2, 3, 4), np.float32))
    _write_archive(tmp_path / "wide.npz", version=2, autoregressive=ar, diffusion=np.ones((2, 96), np.float32))
    with pytest.raises(LatentsFileError, match=r"diffusion latent has shape \(2, 96\), expected \[width\]"):
        load_voice_latents(tmp_path / "wide.npz")
    with pytest.raises(LatentsFileError, match="diffusion latent has width 96 but the model expects 2048"):
        load_voice_latents(tmp_path / "good.npz", diffusion_width=2048)
    with pytest.raises(LatentsFileError, match="autoregressive latent has width 32 but the model expects 1024"):
        load_conditioning_latents(tmp_path / "good.npz", types.SimpleNamespace(config=_decoder(1024)))
    with pytest.raises(LatentsFileError, match="NaN or infinite"):
        save_conditioning_latents(tmp_path / "nan.npz", np.full(4, np.nan, np.float32))


def _decoder(width: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(decoder_config=types.SimpleNamespace(hidden_size=width))


def _write_archive(path, **entries) -> None:
    np.savez(path, format=np.array("clvp-jax voice latents"), **{k: np.asarray(v) for k, v in entries.items()})
