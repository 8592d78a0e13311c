"""One clvp-jax checkpoint for a whole Tortoise: `clvp-jax convert FOLDER OUT` stores the audio models too.

The Tortoise folder is built in tmp_path from the tiny original fixtures (tests/data/tortoise_tiny: AR + CLVP;
tests/data/tortoise_tiny_waveform: diffusion decoder, vocoder, CVVP, HiFiGAN) plus two tiny random-voice
generators made here with the original `RandomLatentConverter` (width 8: the real files are 1024 / 2048 wide).
Everything read back from the checkpoint must be exactly what the `.pth` path reads (same arrays, same configs):
both are the same converter's float32 output, stored and restored bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the original-format fixtures are .pth files

from hub_cache import COMMIT, write_hub_cache  # noqa: E402

from clvp_jax.checkpoint import audio_models, load_params  # noqa: E402
from clvp_jax.checkpoint.convert_cli import main as convert_main  # noqa: E402
from clvp_jax.checkpoint.hub import TORTOISE_REPO  # noqa: E402
from clvp_jax.waveform.bundle import MissingAudioModelsError, load_waveform_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
TINY, TINY_WAVEFORM = DATA / "tortoise_tiny", DATA / "tortoise_tiny_waveform"
RLG_WIDTH = 8


def _tiny_rlg(path: Path, seed: int) -> None:
    from tortoise.models.random_latent_generator import RandomLatentConverter

    torch.manual_seed(seed)
    torch.save(RandomLatentConverter(RLG_WIDTH).state_dict(), path)


@pytest.fixture(scope="module")
def tortoise_folder(tmp_path_factory) -> Path:
    """A whole tiny Tortoise models folder: every file `clvp-jax convert` reads."""
    folder = tmp_path_factory.mktemp("tortoise") / "models"
    folder.mkdir()
    for name in ("autoregressive.pth", "clvp2.pth"):
        (folder / name).symlink_to(TINY / name)
    for name in ("diffusion_decoder.pth", "vocoder.pth", "cvvp.pth", "hifidecoder.pth"):
        (folder / name).symlink_to(TINY_WAVEFORM / name)
    _tiny_rlg(folder / "rlg_auto.pth", 1)
    _tiny_rlg(folder / "rlg_diffuser.pth", 2)
    config = json.loads((TINY / "original_config.json").read_text())
    config |= json.loads((TINY_WAVEFORM / "original_config.json").read_text())
    config |= {"rlg_auto": {"channels": RLG_WIDTH}, "rlg_diffuser": {"channels": RLG_WIDTH}}
    (folder / "original_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def converted(tortoise_folder, tmp_path_factory) -> tuple[Path, str]:
    """(the checkpoint `clvp-jax-convert FOLDER OUT` wrote, its stderr)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("converted") / "whole"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert convert_main([str(tortoise_folder), str(out)]) == 0, err.getvalue()
    return out, err.getvalue()


def assert_same_tree(actual, desired) -> None:
    flat_a, flat_d = jax.tree_util.tree_leaves_with_path(actual), jax.tree_util.tree_leaves_with_path(desired)
    assert [p for p, _ in flat_a] == [p for p, _ in flat_d]
    for (path, a), (_, d) in zip(flat_a, flat_d, strict=True):
        assert np.asarray(a).dtype == np.asarray(d).dtype, path
        np.testing.assert_array_equal(np.asarray(a), np.asarray(d), err_msg=str(path))  # the same bytes


def test_every_model_of_the_folder_is_in_the_checkpoint_exactly(tortoise_folder, converted):
    out, log = converted
    assert audio_models.available(out) == tuple(audio_models.AUDIO_MODELS)  # all six
    for name in audio_models.AUDIO_MODELS:
        kwargs, tree = audio_models.read_model(out, name)
        want_kwargs, want_tree = audio_models.read_original(tortoise_folder, name)
        assert kwargs == json.loads(json.dumps(want_kwargs)), name  # the config survives (as JSON)
        assert_same_tree(tree, want_tree)
    # The AR + CLVP half as before.
    assert_same_tree(load_params(out).params, load_params(tortoise_folder).params)
    # Every audio parameter file is checksummed in the manifest, every source file recorded.
    manifest = json.loads((out / "manifest.json").read_text())
    for name in audio_models.AUDIO_MODELS:
        assert any(f.startswith(f"params/{name}/") for f in manifest["files"]), name
    recorded = {s["file"] for s in manifest["sources"]}
    assert {m.file for m in audio_models.AUDIO_MODELS.values()} <= recorded
    # Progress: one line per file read.
    for m in audio_models.AUDIO_MODELS.values():
        assert f"reading {m.file} (" in log, m.file
    assert "autoregressive.pth" in log and "done in" in log


def test_waveform_models_from_the_checkpoint_equal_the_pth_path(tortoise_folder, converted):
    from clvp_jax.waveform.univnet import vocode

    out, _ = converted
    got = load_waveform_models(out, with_cvvp=True, with_hifigan=True)
    want = load_waveform_models(tortoise_folder, with_cvvp=True, with_hifigan=True)
    assert got.diffusion.config == want.diffusion.config and got.vocoder_config == want.vocoder_config
    assert got.cvvp.config == want.cvvp.config and got.hifigan_config == want.hifigan_config
    for a, d in (
        (got.diffusion_variables, want.diffusion_variables),
        (got.vocoder_params, want.vocoder_params),
        (got.cvvp_params, want.cvvp_params),
        (got.hifigan_params, want.hifigan_params),
    ):
        assert_same_tree(a, d)
    # And an output: the vocoder on the same mel and noise gives the same samples, bit for bit.
    rng = np.random.default_rng(0)
    mel = rng.standard_normal((1, want.vocoder_config.n_mel_channels, 12), dtype=np.float32)
    z = rng.standard_normal((1, want.vocoder_config.noise_dim, 22), dtype=np.float32)
    np.testing.assert_array_equal(
        np.asarray(vocode(got.vocoder_params, mel, config=got.vocoder_config, z=z)),
        np.asarray(vocode(want.vocoder_params, mel, config=want.vocoder_config, z=z)),
    )


def test_an_altered_audio_file_is_named_and_the_codes_half_still_loads(converted, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(converted[0], out)
    victim = sorted(p for p in (out / "params" / "vocoder").rglob("*") if p.is_file() and p.stat().st_size > 0)[0]
    victim.write_bytes(victim.read_bytes()[:-1] + bytes([victim.read_bytes()[-1] ^ 1]))
    with pytest.raises(ValueError, match=r"altered after it was written: params/vocoder/"):
        load_waveform_models(out)
    load_params(out)  # the AR + CLVP groups are verified on their own and are intact


def test_a_codes_only_checkpoint_names_the_missing_models_and_the_remedy(tmp_path):
    assert convert_main([str(TINY), str(tmp_path / "codes"), "-q"]) == 0
    with pytest.raises(MissingAudioModelsError) as err:
        load_waveform_models(tmp_path / "codes")
    message = str(err.value)
    assert "diffusion_decoder.pth or vocoder.pth" in message and "clvp-jax convert FOLDER OUT" in message
    assert "\n" not in message


def test_dry_run_lists_the_audio_models(tortoise_folder, converted, capsys):
    assert convert_main([str(tortoise_folder), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "audio models (read and checked by the conversion itself): diffusion_decoder.pth, vocoder.pth" in printed
    assert convert_main([str(converted[0]), "--dry-run"]) == 0
    assert f"audio models: {', '.join(audio_models.AUDIO_MODELS)}" in capsys.readouterr().out


def test_quiet_and_hf_export(tortoise_folder, tmp_path, capsys):
    assert convert_main([str(TINY), str(tmp_path / "q"), "-q"]) == 0
    assert capsys.readouterr().err == ""
    assert convert_main([str(tortoise_folder), str(tmp_path / "hf"), "--format", "hf"]) == 0
    assert "the audio models are not exported" in capsys.readouterr().err


def test_reconverting_a_checkpoint_keeps_its_audio_models(converted, tmp_path):
    out = tmp_path / "again"
    assert convert_main([str(converted[0]), str(out), "-q"]) == 0
    for name in audio_models.AUDIO_MODELS:
        assert_same_tree(audio_models.read_model(out, name)[1], audio_models.read_model(converted[0], name)[1])


def test_convert_a_hub_repo_fetches_every_audio_model(tortoise_folder, converted, tmp_path):
    """`clvp-jax convert Manmay/tortoise-tts OUT` from a Hub cache the test builds (HF_HUB_OFFLINE=1)."""
    files = {p.name: p.resolve() for p in tortoise_folder.iterdir()}
    write_hub_cache(tmp_path / "cache", TORTOISE_REPO, files)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    env |= {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "clvp_jax.checkpoint.convert_cli", TORTOISE_REPO, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"snapshots/{COMMIT}" in done.stderr
    assert audio_models.available(tmp_path / "out") == tuple(audio_models.AUDIO_MODELS)
    for name in audio_models.AUDIO_MODELS:
        want = audio_models.read_model(converted[0], name)[1]
        assert_same_tree(audio_models.read_model(tmp_path / "out", name)[1], want)


def test_the_audio_models_convert_back_to_the_original_files(converted, tmp_path):
    out = tmp_path / "back"
    out.mkdir()
    written = audio_models.export_tortoise_files(converted[0], out)
    assert sorted(p.name for p in written) == sorted(m.file for m in audio_models.AUDIO_MODELS.values())
    for name in audio_models.AUDIO_MODELS:
        kwargs, tree = audio_models.read_original(out, name)  # the strict .pth converter reads them back
        want_kwargs, want = audio_models.read_model(converted[0], name)
        assert kwargs == want_kwargs, name
        for (path, a), (_, d) in zip(
            jax.tree_util.tree_leaves_with_path(tree), jax.tree_util.tree_leaves_with_path(want), strict=True
        ):
            # Exact, but for the vocoders' weight norm: written as v = w, g = ||w||, folded back as g v / ||v||,
            # which rounds w by a few float32 ulps.
            tol = dict(rtol=1e-6, atol=1e-7) if name in ("vocoder", "hifigan") else dict(rtol=0, atol=0)
            np.testing.assert_allclose(a, d, **tol, err_msg=f"{name} {path}")


def test_speak_on_a_clvp_jax_checkpoint_gives_the_audio_of_the_models_it_holds(tmp_path):
    """`speak --checkpoint OUT` end to end. The two tiny fixtures are separate models (AR width 64, diffusion
    latents 32), so this checkpoint holds the tiny AR + CLVP and the packaged default's width-64 audio models,
    stored with the same save machinery; its WAV (32-bit float) must equal `synthesize` with those models."""
    import soundfile as sf

    from clvp_jax.checkpoint import save_checkpoint
    from clvp_jax.checkpoint.audio_models import AudioGroup
    from clvp_jax.cli import main
    from clvp_jax.pipeline import load_model
    from clvp_jax.speech import synthesize
    from clvp_jax.waveform.bundle import default_waveform_models

    loaded = load_params(TINY)
    wm = default_waveform_models(64)
    numpy_tree = lambda tree: jax.tree_util.tree_map(np.asarray, tree)  # noqa: E731
    audio = {
        "diffusion": AudioGroup(wm.diffusion.config.to_original_kwargs(), numpy_tree(wm.diffusion_variables)),
        "vocoder": AudioGroup(wm.vocoder_config.to_original(), numpy_tree(wm.vocoder_params)),
    }
    save_checkpoint(tmp_path / "ckpt", loaded.config, loaded.params, audio=audio)
    out = tmp_path / "hi.wav"
    settings = ["--num-samples", "2", "--max-new-tokens", "10", "--diffusion-steps", "3", "--seed", "4"]
    assert (
        main(["speak", "Hello there.", "--checkpoint", str(tmp_path / "ckpt"), "-o", str(out), "--quiet", *settings])
        == 0
    )
    model, params = load_model(TINY)
    want = synthesize(
        text="Hello there.", model=model, params=params, waveform_models=wm, preset="ultra_fast", candidates=2,
        max_new_tokens=10, diffusion_steps=3, seed=4,
    )  # fmt: skip
    np.testing.assert_array_equal(sf.read(out, dtype="float32")[0], want.waveform)  # same models, same bits
