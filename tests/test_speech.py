"""The speech pipeline (`clvp_jax.speech`, `TextToSpeech`, `clvp-jax speak`): text + voice -> 24 kHz WAV.

Oracles: tests/data/tortoise_tiny (the ORIGINAL UnifiedVoice's `return_latent=True` output, `ar_latent`, and its
`fix_autoregressive_output` rows) and tests/data/tortoise_tiny_waveform (the original `do_spectrogram_diffusion` +
`vocoder.inference` end to end with every random draw recorded). The whole-pipeline tests run the tiny original AR
model (its 34-row text table makes a two-sentence text two chunks, and its 44 positions keep candidates short)
with the packaged default's random diffusion decoder and vocoder; the CLI test runs the packaged default itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clvp_jax.pipeline import ChunkResult
from clvp_jax.speech import SpeechResult, render_chunk, synthesize, voice_conditioning
from clvp_jax.speech_sample import output_frames, render_waveform
from clvp_jax.speech_scores import mix_scores
from clvp_jax.speech_settings import speech_settings
from clvp_jax.waveform.ar_latents import ar_latents, fixed_codes, trim_length
from clvp_jax.waveform.bundle import (
    MissingAudioModelsError,
    default_waveform_models,
    load_waveform_models,
    with_diffusion_dtype,
)
from clvp_jax.waveform.presets import speech_preset
from clvp_jax.waveform.sampler import SamplerConfig, SamplerNoise

DATA = Path(__file__).resolve().parent / "data"
TINY = DATA / "tortoise_tiny"
TINY_WAVEFORM = DATA / "tortoise_tiny_waveform"
ROOT = Path(__file__).resolve().parents[1]
torch = pytest.importorskip("torch")  # the original-format fixtures are .pth files

TWO_CHUNKS = "Hello world, this is the first sentence. And here is another one, a little longer than that."
# Small enough to be quick, big enough to rank: 3 candidates of at most 10 codes, 4 diffusion steps.
FAST = dict(preset="ultra_fast", candidates=3, diffusion_steps=4, max_new_tokens=10)


@pytest.fixture(scope="module")
def tiny():
    """The tiny original AR + CLVP model and the packaged default's waveform models (width 64 both)."""
    from clvp_jax.pipeline import load_model

    model, params = load_model(TINY)
    return model, params, default_waveform_models(model.config.decoder_config.hidden_size)


@pytest.fixture(scope="module")
def tiny_ref():
    return dict(np.load(TINY / "reference.npz"))


# ---- AR latents --------------------------------------------------------------------------------------------


def test_ar_latents_match_the_original_return_latent(tiny, tiny_ref):
    model, params, _ = tiny
    ref = tiny_ref
    for row in range(2):
        # api-style text ids end in the stop token 0, which generation's prefix adds itself: drop it.
        got = ar_latents(
            model,
            params,
            text_ids=ref["text_ids"][row, :-1],
            voice_latent=ref["cond_latents"][row],
            codes=ref["mel_codes"][row : row + 1],
        )
        assert got.shape == ref["ar_latent"][row : row + 1].shape
        # fp32 through 2 GPT-2 layers and two LayerNorms with O(1) random weights: 1.2e-6 seen; a state one
        # position off (the start token, a missing position, the prefix) moves them by O(1).
        np.testing.assert_allclose(got, ref["ar_latent"][row : row + 1], rtol=0, atol=1e-5)


def test_ar_latents_of_k_rows_equal_each_row_alone(tiny, tiny_ref):
    model, params, _ = tiny
    codes = tiny_ref["clvp_codes"][:, :20]  # four fixed rows (CLVP's vocabulary: 0..255)
    text = tiny_ref["clvp_text0_ids"][0, :-1]
    voice = tiny_ref["cond_latents"][0]
    batched = ar_latents(model, params, text_ids=text, voice_latent=voice, codes=codes)
    for j in range(codes.shape[0]):
        alone = ar_latents(model, params, text_ids=text, voice_latent=voice, codes=codes[j : j + 1])
        # The same float32 program on other batch sizes: summation order only (a few ulps of O(1) values).
        np.testing.assert_allclose(batched[j : j + 1], alone, rtol=0, atol=2e-6)
    assert np.abs(batched[0] - batched[1]).max() > 0.1  # the rows really differ


def test_ar_latents_reject_codes_and_lengths_the_model_cannot_take(tiny):
    model, params, _ = tiny
    with pytest.raises(ValueError, match=r"codes must be in \[0, 258\)"):
        ar_latents(model, params, text_ids=[5, 6], voice_latent=np.zeros(64), codes=np.array([[3, 300]]))
    with pytest.raises(ValueError, match="the table has 44 rows"):
        ar_latents(model, params, text_ids=[5, 6], voice_latent=np.zeros(64), codes=np.zeros((1, 45), np.int64))


def test_fixed_codes_are_the_originals_fix_autoregressive_output(tiny_ref):
    raw = tiny_ref["clvp_codes_raw"]  # generate output padded with the stop token 257 to 24
    codes = [list(r[: np.flatnonzero(r == 257)[0]]) if (r == 257).any() else list(r) for r in raw]
    got = fixed_codes(codes, length=24, stop_token=257, fixing_codes=(83, 45, 45, 248))
    np.testing.assert_array_equal(got, tiny_ref["clvp_codes"])
    with pytest.raises(ValueError, match="more than the length 3"):
        fixed_codes([[1, 2, 3, 4]], length=3, stop_token=257, fixing_codes=(83, 45, 45, 248))


@pytest.mark.parametrize(
    "codes,keep",
    [
        ([5, 6, 7], 3),  # no calm code: everything
        ([5] + [83] * 8 + [6], 10),  # a run of exactly 8 is kept whole ("more than 8" cuts)
        ([5] + [83] * 9 + [6], 9),  # the 9th calm code is where it cuts: 8 of them stay
        ([83] * 12, 8),  # a run from the start
        ([1] + [83] * 8 + [2] + [83] * 20, 18),  # the first run is too short, the second cuts
        ([1, 2] + [83] * 5 + [45, 45, 248], 10),  # a fixed tail after a short run stays
    ],
)
def test_trim_length(codes, keep):
    assert trim_length(np.array(codes)) == keep
    assert trim_length(np.array(codes), max_run=100) == len(codes)  # a rule that never fires keeps all


# ---- the waveform stage against the original ---------------------------------------------------------------


def test_waveform_stage_matches_the_original_end_to_end():
    ref = dict(np.load(TINY_WAVEFORM / "reference.npz"))
    wm = load_waveform_models(TINY_WAVEFORM)  # also: the Tortoise-folder loader, kwargs from original_config.json
    cfg = SamplerConfig(kind="ddpm", steps=5, cond_free=True, cond_free_k=2.0, temperature=1.0)
    noise = SamplerNoise(init=ref["e2e_noise_init"], steps=ref["e2e_noises"])
    mel, wav = render_waveform(
        wm, ref["e2e_ar_latents"], ref["diff_cond_latent"], sampler=cfg, noise=noise, vocoder_noise=ref["e2e_voc_z"]
    )
    assert output_frames(13) == mel.shape[-1] == 56
    # The sampler's error budget (tests/test_waveform_sampler.py): the first step multiplies the model's 6e-5 by
    # sqrt(1/abar - 1) = 153 before clipping, the de-normalised mel takes x 6.9: 1.3e-3 seen. A wrong step,
    # table, guidance or noise order moves it by > 0.05.
    np.testing.assert_allclose(mel, ref["e2e_mel"], rtol=0, atol=7e-3)
    # The vocoder squashes that through tanh: 5.0e-5 seen on samples up to 1.0; a wrong mel frame or noise
    # moves samples by O(0.1).
    np.testing.assert_allclose(wav, ref["e2e_wav"], rtol=0, atol=5e-4)


@pytest.mark.parametrize("amount", [0.0, 0.25, 1.0])
def test_cvvp_is_mixed_into_the_ranking_as_tortoise_mixes_it(amount):
    ref = dict(np.load(TINY_WAVEFORM / "reference.npz"))
    wm = load_waveform_models(TINY_WAVEFORM, with_cvvp=True)  # cvvp.pth read only when asked for
    assert wm.cvvp is not None and load_waveform_models(TINY_WAVEFORM).cvvp is None
    clvp = np.array([1.0, -2.0, 0.5, 3.0])
    scores, cvvp = mix_scores(clvp, ref["cvvp_codes"], ref["cvvp_cond_mels"], wm, amount)
    if amount == 0:
        assert cvvp is None
        np.testing.assert_array_equal(scores, clvp)
        return
    # CVVP's own parity budget against the original (tests/test_waveform_cvvp.py): 2e-5 on scores of O(1);
    # the mix scales it by amount <= 1. Mixing the wrong way round, or averaging the wrong axis, moves it by O(1).
    np.testing.assert_allclose(cvvp, ref["cvvp_scores"], rtol=0, atol=2e-5)
    np.testing.assert_allclose(scores, amount * ref["cvvp_scores"] + (1 - amount) * clvp, rtol=0, atol=2e-5)


# ---- the whole pipeline ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spoken(tiny) -> SpeechResult:
    model, params, wm = tiny
    return synthesize(text=TWO_CHUNKS, model=model, params=params, waveform_models=wm, k=2, seed=3, **FAST)


def test_pipeline_writes_finite_24khz_audio_of_the_expected_length(spoken):
    assert len(spoken.chunks) == 2  # the tiny model's 31 text tokens split the text
    assert spoken.sampling_rate == 24000 and spoken.random_weights
    for chunk in spoken.chunks:
        assert len(chunk.outputs) == 2 and len(chunk.ranked) == 3
        assert chunk.scores == sorted(chunk.scores, reverse=True)
        assert [o.candidate.index for o in chunk.outputs] == [c.index for c in chunk.ranked[:2]]
        for out in chunk.outputs:
            # <= 10 codes, then calm codes from the padding: the trim keeps the codes and 8 calm frames.
            assert out.frames == trim_length(
                fixed_codes([out.candidate.codes], length=44, stop_token=257, fixing_codes=(83, 45, 45, 248))[0]
            )
            assert out.frames <= 10 + 8
            wav = out.waveform
            assert wav.dtype == np.float32 and wav.shape == (256 * output_frames(out.frames),)
            assert np.isfinite(wav).all() and np.abs(wav).max() <= 1.0 and wav.std() > 1e-3
    joined = spoken.waveforms
    assert len(joined) == 2
    np.testing.assert_array_equal(joined[0], np.concatenate([c.waveform for c in spoken.chunks]))


def test_same_seed_same_waveform_other_seed_other_waveform(tiny, spoken):
    model, params, wm = tiny
    again = synthesize(text=TWO_CHUNKS, model=model, params=params, waveform_models=wm, k=2, seed=3, **FAST)
    for a, b in zip(again.waveforms, spoken.waveforms, strict=True):
        np.testing.assert_array_equal(a, b)
    other = synthesize(text=TWO_CHUNKS, model=model, params=params, waveform_models=wm, k=1, seed=4, **FAST)
    first = spoken.chunks[0].outputs[0]
    assert other.chunks[0].outputs[0].waveform.shape != first.waveform.shape or not np.array_equal(
        other.chunks[0].outputs[0].waveform, first.waveform
    )


def test_a_chunks_waveform_does_not_depend_on_the_other_chunks_or_k(tiny, spoken):
    model, params, wm = tiny
    voice = voice_conditioning(model=model, params=params, waveform_models=wm)
    settings = speech_settings(k=1, seed=3, **FAST)  # only the best: rank 0 of k = 2 must not change
    chunk = spoken.chunks[1]
    alone = render_chunk(
        ChunkResult(chunk.text, chunk.ranked),
        index=1,
        model=model,
        params=params,
        waveform_models=wm,
        voice=voice,
        settings=settings,
        length=44,
    )
    np.testing.assert_array_equal(alone.waveform, chunk.waveform)


def test_saved_latents_give_the_waveform_of_the_clips(tiny, spoken, tmp_path):
    from clvp_jax.generation.latents import save_conditioning_latents

    model, params, wm = tiny
    voice = voice_conditioning(model=model, params=params, waveform_models=wm)
    path = save_conditioning_latents(tmp_path / "voice.npz", voice.autoregressive, voice.diffusion)
    from_file = synthesize(
        text=TWO_CHUNKS, model=model, params=params, waveform_models=wm, k=2, seed=3, voice=path, **FAST
    )
    np.testing.assert_array_equal(from_file.waveform, spoken.waveform)
    codes_only = save_conditioning_latents(tmp_path / "voice.npy", voice.autoregressive)
    with pytest.raises(ValueError, match="diffusion conditioning latent"):
        synthesize(text="Hi.", model=model, params=params, waveform_models=wm, voice=codes_only, **FAST)


def test_a_bf16_diffusion_decoder_renders_the_float32_mel_to_bf16_accuracy(tiny, spoken):
    import jax
    import jax.numpy as jnp

    model, params, wm = tiny
    bf16 = with_diffusion_dtype(wm, "bfloat16")
    assert with_diffusion_dtype(wm, "float32") is wm and with_diffusion_dtype(bf16, "bfloat16") is bf16
    kernels = jax.tree_util.tree_leaves(bf16.diffusion_variables)
    assert {x.dtype for x in kernels} == {jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)}  # norms stay float32
    voice = voice_conditioning(model=model, params=params, waveform_models=wm)
    latents = np.asarray(jax.random.normal(jax.random.key(0), (1, 12, 64)), np.float32)
    sampler = speech_preset("ultra_fast", diffusion_steps=4).sampler
    mel32, _ = render_waveform(wm, latents, voice.diffusion, sampler=sampler, key=jax.random.key(1))
    mel16, wav16 = render_waveform(bf16, latents, voice.diffusion, sampler=sampler, key=jax.random.key(1))
    assert mel16.dtype == np.float32 and np.isfinite(wav16).all() and np.abs(wav16).max() <= 1.0
    rel = np.sqrt(np.mean((mel16 - mel32) ** 2) / np.mean(mel32**2))
    # Measured 0.0097 (fp32 with only the weights rounded to bf16: 0.0038). bf16 keeps 8 significant bits (2^-8 =
    # 0.0039 relative per rounding) and every matmul input of the 4 DDPM steps is rounded, then the sampler carries
    # the error on; 0.03 = 3x the measurement. The lower bound proves the decoder did compute in bf16.
    assert 1e-4 < rel < 0.03, rel
    # Wired through synthesize: same AR stage (same candidates and ranking), bf16 recorded, audio of the same size.
    # (The waveforms themselves are not compared: the tiny random UnivNet is far more sensitive than the real one.)
    result = synthesize(
        text=TWO_CHUNKS, model=model, params=params, waveform_models=wm, k=2, seed=3, diffusion_dtype="bfloat16", **FAST
    )
    assert result.settings["diffusion_dtype"] == "bfloat16" and spoken.settings["diffusion_dtype"] == "float32"
    for a, b in zip(result.chunks, spoken.chunks, strict=True):
        assert [c.index for c in a.ranked] == [c.index for c in b.ranked]
        assert [o.waveform.shape for o in a.outputs] == [o.waveform.shape for o in b.outputs]
    with pytest.raises(ValueError, match="diffusion dtype must be one of float32, bfloat16, got 'float16'"):
        with_diffusion_dtype(wm, "float16")
    with pytest.raises(ValueError, match="already bfloat16"):
        with_diffusion_dtype(bf16, "float32")


def test_bad_settings_are_named(tiny):
    model, params, wm = tiny
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        synthesize(text="Hi.", model=model, params=params, waveform_models=wm, sampler="euler")
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, candidates = 3\]"):
        synthesize(text="Hi.", model=model, params=params, waveform_models=wm, k=4, **FAST)
    with pytest.raises(ValueError, match="cvvp.pth"):
        synthesize(text="Hi.", model=model, params=params, waveform_models=wm, cvvp_amount=0.5, **FAST)


def test_presets_carry_both_stages():
    fast = speech_preset("fast")
    assert (fast.candidates, fast.sampler.steps, fast.sampler.cond_free, fast.sampler.kind) == (96, 80, True, "ddpm")
    ultra = speech_preset("ultra_fast", sampler="dpm++2m", diffusion_steps=12)
    assert (ultra.candidates, ultra.sampler.steps, ultra.sampler.cond_free, ultra.sampler.kind) == (
        16,
        12,
        False,
        "dpm++2m",
    )
    # DPM++ for speech runs on the log-SNR grid with the timestep ramp; the original's samplers keep its grid.
    assert (ultra.sampler.spacing, ultra.sampler.cond_free_ramp) == ("logsnr", "timestep")
    assert (fast.sampler.spacing, fast.sampler.cond_free_ramp) == ("tortoise", "spaced")
    ddim = speech_preset("fast", sampler="ddim").sampler
    assert (ddim.spacing, ddim.cond_free_ramp) == ("tortoise", "spaced")
    assert speech_preset("standard").sampler.steps == 200 and speech_preset("high_quality").sampler.steps == 400
    with pytest.raises(ValueError, match="unknown preset 'slow'"):
        speech_preset("slow")


# ---- checkpoints without audio files -----------------------------------------------------------------------


def test_an_ar_clvp_only_checkpoint_names_the_missing_audio_files(tmp_path):
    with pytest.raises(MissingAudioModelsError, match="diffusion_decoder.pth or vocoder.pth") as err:
        load_waveform_models(TINY)
    assert "makes speech codes" in str(err.value)
    # One of the two present: only the other is named.
    (tmp_path / "vocoder.pth").write_bytes((TINY_WAVEFORM / "vocoder.pth").read_bytes())
    with pytest.raises(MissingAudioModelsError, match=r"has no diffusion_decoder.pth:"):
        load_waveform_models(tmp_path)


def test_a_full_tortoise_folder_loads_both_halves_and_mismatched_files_are_named(tmp_path):
    from clvp_jax import TextToSpeech

    for name in ("autoregressive.pth", "clvp2.pth"):
        (tmp_path / name).symlink_to(TINY / name)
    for name in ("diffusion_decoder.pth", "vocoder.pth", "cvvp.pth"):
        (tmp_path / name).symlink_to(TINY_WAVEFORM / name)
    config = json.loads((TINY / "original_config.json").read_text())
    config |= json.loads((TINY_WAVEFORM / "original_config.json").read_text())
    (tmp_path / "original_config.json").write_text(json.dumps(config))
    tts = TextToSpeech(tmp_path)
    wm = tts.waveform_models(with_cvvp=True)
    assert wm.cvvp is not None and not wm.random_weights and len(wm.sources) == 3
    # The two fixtures are separate tiny models (AR width 64, diffusion latents 32): refused, files named.
    with pytest.raises(ValueError, match=r"width 32 but the AR model's are 64.*diffusion_decoder.pth"):
        tts.tts_with_preset("Hi.", **FAST)
    # diffusion_dtype: the decoder's weights cast once at load, the vocoder's left float32; a bad name is refused.
    half = TextToSpeech(tmp_path, diffusion_dtype="bfloat16").waveform_models()
    assert np.dtype(half.diffusion.dtype) == "bfloat16" and np.dtype(wm.diffusion.dtype) == "float32"
    assert half.diffusion_variables["params"]["inp_block"]["weight"].dtype == "bfloat16"
    assert {str(x.dtype) for x in jax_leaves(half.vocoder_params)} == {"float32"}
    with pytest.raises(ValueError, match="diffusion_dtype must be one of float32, bfloat16, got 'half'"):
        TextToSpeech(tmp_path, diffusion_dtype="half")


def jax_leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def test_speak_has_the_diffusion_dtype_flag():
    from clvp_jax.cli import build_parser

    assert build_parser().parse_args(["speak", "Hi."]).diffusion_dtype == "float32"
    assert build_parser().parse_args(["speak", "Hi.", "--diffusion-dtype", "bfloat16"]).diffusion_dtype == "bfloat16"


def test_speak_on_a_codes_only_checkpoint_is_a_one_line_error(tmp_path, capsys):
    from clvp_jax.cli import main

    code = main(["speak", "Hello.", "--checkpoint", str(TINY), "-o", str(tmp_path / "x.wav"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "diffusion_decoder.pth or vocoder.pth" in err and "Traceback" not in err
    assert not (tmp_path / "x.wav").exists()


# ---- the CLI, packaged default ------------------------------------------------------------------------------


def test_cli_speak_writes_the_wav_with_the_packaged_default(tmp_path):
    import soundfile as sf

    out = tmp_path / "hello.wav"
    cmd = [sys.executable, "-m", "clvp_jax.cli", "speak", "Hello there.", "-o", str(out), "--quiet", "--voice", "lj"]
    cmd += ["--num-samples", "2", "--max-new-tokens", "12", "--diffusion-steps", "3", "--sampler", "ddim"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM weights" in proc.stderr and "RANDOM weights" in proc.stdout
    with sf.SoundFile(out) as f:
        assert (f.samplerate, f.channels) == (24000, 1)
        assert "RANDOM weights" in f.comment
        # The provenance digest follows the label: version, checkpoint, voice, seed, the normalised text.
        assert "clvp-jax 0.1.0; checkpoint packaged default" in f.comment and "voice lj; seed 0" in f.comment
        assert f.comment.endswith("text: hello there.")
        wav = f.read(dtype="float32")
    info = json.loads(out.with_suffix(".json").read_text())
    frames = info["chunks"][0]["outputs"][0]["latent_frames"]
    assert wav.shape == (256 * output_frames(frames),) and frames <= 12 + 8
    assert np.isfinite(wav).all() and np.abs(wav).max() <= 1.0
    assert info["settings"]["sampler"] == "ddim" and info["settings"]["diffusion_steps"] == 3
    assert info["settings"]["candidates"] == 2 and info["settings"]["k"] == 1  # --num-samples drawn, 1 kept
    record = info["provenance"]
    assert record["random_weights"] is True and record["voice"]["spec"] == "lj" and record["seed"] == 0
    assert record["chunks"] == [{"text": "Hello there.", "normalized": "hello there."}]
    # A rerun into the same output keeps the finished chunk (its key is unchanged) and rebuilds the joined WAV;
    # a WAV that is not one of ours (no chunk folder beside it) is not replaced without --force.
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and "1 kept" in proc.stdout, proc.stderr
    np.testing.assert_array_equal(sf.read(out, dtype="float32")[0], wav)
    shutil.rmtree(out.with_suffix(".chunks"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 2 and "--force" in proc.stderr


def test_output_files_per_rank_and_the_chunk_folder():
    from clvp_jax.long_text import speech_paths

    assert speech_paths(Path("o/a.wav"), 1) == {
        "0": Path("o/a.wav"),
        "json": Path("o/a.json"),
        "chunks": Path("o/a.chunks"),
    }
    paths = speech_paths(Path("o/a.wav"), 2)
    assert paths["1"] == Path("o/a.rank1.wav") and len(paths) == 4


def test_voice_samples_as_arrays_equal_the_files(tiny):
    from clvp_jax.assets import default_voice_path
    from clvp_jax.audio import load_audio

    model, params, wm = tiny
    from_file = voice_conditioning(model=model, params=params, waveform_models=wm, voice=str(default_voice_path()))
    clip = load_audio(default_voice_path(), 22050)
    from_array = voice_conditioning(model=model, params=params, waveform_models=wm, voice=[clip])
    np.testing.assert_array_equal(from_array.autoregressive, from_file.autoregressive)
    np.testing.assert_array_equal(from_array.diffusion, from_file.diffusion)
    assert from_file.diffusion.shape == (wm.diffusion_width,) and from_file.cvvp_mels.shape[:2] == (1, 80)


def test_latents_command_saves_both_latents_when_the_checkpoint_can_speak(tmp_path):
    from clvp_jax.cli import main
    from clvp_jax.generation.latents import load_voice_latents

    out = tmp_path / "voice.npz"
    assert main(["latents", "--voice", str(DATA / "tortoise" / "voices" / "lj"), "--out", str(out)]) == 0
    saved = load_voice_latents(out)  # the packaged default has a diffusion decoder: a version-2 file
    assert saved.version == 2 and saved.diffusion.shape == (64,) and saved.autoregressive.shape == (64,)
    assert np.isfinite(saved.diffusion).all() and np.abs(saved.diffusion).max() > 0
    # A codes-only checkpoint writes the AR latent alone (version 1), as before.
    out1 = tmp_path / "voice1.npy"
    assert main(["latents", "--checkpoint", str(TINY), "--out", str(out1)]) == 0
    assert load_voice_latents(out1).version == 1
