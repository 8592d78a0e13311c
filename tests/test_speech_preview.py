"""Per-stage progress (every diffusion step, reported from inside the compiled sampler loop) and the HiFiGAN
preview (api_fast's `hifidecoder.pth`: AR latents straight to audio, no diffusion) through the API
and `clvp-jax speak --vocoder hifigan`, on the packaged default (tiny random AR + a tiny random HiFiGAN) and on the
tiny original fixture's `hifidecoder.pth` (tests/data/tortoise_tiny_waveform).

The HiFiGAN module itself is checked against the original in tests/test_waveform_vocoder.py; here the wiring is: the
audio must be exactly `hifigan_inference` of the chosen candidate's trimmed AR latents with the voice's AR latent as
the speaker embedding.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from clvp_jax.speech_sample import output_frames
from clvp_jax.waveform.bundle import MissingAudioModelsError, load_waveform_models

DATA = Path(__file__).resolve().parent / "data"
TINY_WAVEFORM = DATA / "tortoise_tiny_waveform"
QUICK = dict(preset="ultra_fast", candidates=2, max_new_tokens=10, seed=1)


@pytest.fixture(scope="module")
def tts():
    from clvp_jax import TextToSpeech

    return TextToSpeech()


def test_the_preview_is_hifigan_of_the_best_candidates_latents(tts):
    from clvp_jax.waveform.ar_latents import ar_latents, fixed_codes
    from clvp_jax.waveform.hifigan import hifigan_inference

    stages = []
    result = tts.tts_with_preset("Hello there.", vocoder="hifigan", progress=lambda s, d, t: stages.append(s), **QUICK)
    assert result.settings["vocoder"] == "hifigan" and result.random_weights
    assert "diffusion" not in stages and {"candidates", "vocoder"} <= set(stages)  # no diffusion ran
    (chunk,) = result.chunks
    best = chunk.outputs[0]
    wav = best.waveform
    assert wav.dtype == np.float32 and wav.shape == (256 * output_frames(best.frames),)
    assert np.isfinite(wav).all() and np.abs(wav).max() <= 1.0 and wav.std() > 0
    # The same numbers from the parts: the voice's AR latent, the candidate's fixed codes, trimmed.
    voice = tts.get_conditioning_latents()
    dec = tts.model.config.decoder_config
    length = result.settings["latent_length"]
    codes = fixed_codes(
        [best.candidate.codes], length=length, stop_token=dec.eos_token_id, fixing_codes=dec.decoder_fixing_codes
    )
    from clvp_jax.pipeline import TEXT_NORMALIZER
    from clvp_jax.speech import TEXT_BUCKET, _bucket
    from clvp_jax.text import ClvpTokenizer

    enc = ClvpTokenizer.from_pretrained(normalizer=TEXT_NORMALIZER)([chunk.text], return_tensors="np")
    ids, mask = _bucket(np.asarray(enc["input_ids"]), np.asarray(enc["attention_mask"]), dec, TEXT_BUCKET)
    latents = ar_latents(
        tts.model, tts.params, text_ids=ids, text_mask=mask, voice_latent=voice.autoregressive, codes=codes
    )
    wm = tts.waveform_models()
    speaker = jnp.asarray(voice.autoregressive)[None]
    want = hifigan_inference(wm.hifigan_params, latents[:, : best.frames], speaker, config=wm.hifigan_config)
    np.testing.assert_array_equal(wav, np.asarray(want).reshape(-1))  # same function, same inputs: same bits


def test_bad_vocoder_and_a_checkpoint_without_hifidecoder_are_named(tts, tmp_path):
    with pytest.raises(ValueError, match="vocoder must be one of univnet, hifigan, got 'melgan'"):
        tts.tts_with_preset("Hi.", vocoder="melgan", **QUICK)
    for name in ("diffusion_decoder.pth", "vocoder.pth", "original_config.json"):
        (tmp_path / name).symlink_to(TINY_WAVEFORM / name)
    with pytest.raises(MissingAudioModelsError, match=r"has no hifidecoder.pth .*--vocoder univnet"):
        load_waveform_models(tmp_path, with_hifigan=True)
    (tmp_path / "hifidecoder.pth").symlink_to(TINY_WAVEFORM / "hifidecoder.pth")
    wm = load_waveform_models(tmp_path, with_hifigan=True)
    assert wm.hifigan_config.in_channels == 32 and len(wm.sources) == 3


def test_cli_speak_vocoder_hifigan(tmp_path, capsys):
    import soundfile as sf

    from clvp_jax.cli import main

    out = tmp_path / "preview.wav"
    args = ["speak", "Hello there.", "-o", str(out), "--quiet", "--vocoder", "hifigan", "--candidates", "2"]
    assert main([*args, "--max-new-tokens", "10"]) == 0, capsys.readouterr().err
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["settings"]["vocoder"] == "hifigan"
    frames = info["chunks"][0]["outputs"][0]["latent_frames"]
    with sf.SoundFile(out) as f:
        assert f.samplerate == 24000 and f.frames == 256 * output_frames(frames)


def test_progress_sees_every_diffusion_step(tts):
    events: list[tuple[str, int, int]] = []
    # QUICK's AR settings (compiled above); k = 2 samples of 3 steps.
    tts.tts_with_preset("Hello there.", progress=lambda *e: events.append(e), k=2, diffusion_steps=3, **QUICK)
    diffusion = [(done, total) for stage, done, total in events if stage == "diffusion"]
    assert {total for _, total in diffusion} == {2 * 3}
    done = [d for d, _ in diffusion]
    assert done == sorted(done) and sorted(set(done)) == list(range(0, 7))  # every step, none skipped or reversed
    assert [d for stage, d, _ in events if stage == "vocoder"] == [0, 1, 2]
    assert any(stage == "candidates" for stage, _, _ in events)
