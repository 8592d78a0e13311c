"""The package as a user installs it: the built wheel (licence, py.typed, metadata, extras), the README's Python
snippet run as written, the missing-torch message, `scripts/setup.sh`'s extras, and the HF export's processor."""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel built from a copy of the sources (no network: the venv's setuptools, no build isolation)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "clvp_jax", src / "clvp_jax", ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "--no-index"]
    done = subprocess.run([*command, "-w", str(tmp / "out"), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (path,) = (tmp / "out").glob("clvp_jax-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_ships_the_licence_py_typed_and_assets_only_under_clvp_jax(wheel):
    names = wheel.namelist()
    assert "clvp_jax/py.typed" in names
    assert any(re.fullmatch(r"clvp_jax-[^/]+\.dist-info/licenses/LICENSE", n) for n in names)
    for asset in ("tokenizer.json", "vocab.json", "merges.txt", "mel_norms.npy", "voices/lj/1.wav", "README.md"):
        assert f"clvp_jax/assets/{asset}" in names, asset
    # One top-level package: no `convert/` (a repository script) or `tests/` lands in site-packages.
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"clvp_jax"}
    top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert wheel.read(top_level).decode().split() == ["clvp_jax"]


def test_wheel_metadata(wheel):
    meta = email.message_from_bytes(wheel.read(next(n for n in wheel.namelist() if n.endswith("/METADATA"))))
    assert meta["License-Expression"] == "Apache-2.0" and meta["License-File"] == "LICENSE"
    classifiers = meta.get_all("Classifier")
    assert "Typing :: Typed" in classifiers and "Programming Language :: Python :: 3.11" in classifiers
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert urls["Tortoise weights (Hub)"] == "https://huggingface.co/Manmay/tortoise-tts"
    assert "Homepage" not in urls  # the project has no public address yet: none is invented
    assert set(meta.get_all("Provides-Extra")) == {"torch", "cuda12", "tpu", "test", "bench"}
    requires = meta.get_all("Requires-Dist")
    assert 'jax[cuda12]>=0.4.30; extra == "cuda12"' in requires and 'jax[tpu]>=0.4.30; extra == "tpu"' in requires
    assert "huggingface_hub>=1.0" in requires
    # The default install stays JAX's CPU build and torch-free.
    assert not [r for r in requires if "extra ==" not in r and (r.startswith("torch") or "cuda" in r)]


def test_licence_is_apache_and_credits_the_packaged_data():
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "END OF TERMS AND CONDITIONS" in text
    assert "neonbjb/tortoise-tts" in text and "8a2563ecabe93c4fb626f876dd0c52c966edef2f" in text
    assert "LJ Speech" in text and "public domain" in text
    listed = re.findall(r"^\| `([^`]+)` \|", (ROOT / "clvp_jax/assets/README.md").read_text(), re.M)
    assert listed and all(name in text for name in listed), listed


def readme_python_snippet() -> str:
    """The first ```python block of the README's "Python" section, verbatim."""
    match = re.search(r"^## Python\n\n```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
    assert match, "the README has no Python snippet under '## Python'"
    return match.group(1)


def test_readme_python_snippet_runs_as_written(tmp_path):
    """In a fresh interpreter, away from the repository (no relative path may leak in), on the packaged default.

    Heavy-ish (~30 s of CPU: the snippet samples 2 texts x 16 candidates x 500 codes), and worth it: it is the
    first code a new user runs."""
    snippet = readme_python_snippet()
    assert "pipeline.load_model()" in snippet  # it runs on the packaged default as written
    check = "\nassert out.best_speech_ids.shape[0] == 2 and out.candidate_scores.shape == (2, 16)\nprint('ran')\n"
    done = subprocess.run(
        [sys.executable, "-c", snippet + check],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env(CLVP_JAX_CACHE=str(tmp_path / "xla")),
        timeout=600,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ran"), done.stderr[-3000:]


def test_readme_speech_snippet_runs_as_written(tmp_path):
    """The waveform stage's snippet (TextToSpeech on the packaged random models) in a fresh interpreter."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Speech: the waveform stage\n.*?```python\n(.*?)^```", text, re.M | re.S)
    assert match, "the README has no Python snippet under '## Speech: the waveform stage'"
    check = "\nassert result.waveform.ndim == 1 and abs(result.waveform).max() <= 1.0\nprint('ran')\n"
    done = subprocess.run(
        [sys.executable, "-c", match.group(1) + check],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env(CLVP_JAX_CACHE=str(tmp_path / "xla")),
        timeout=600,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ran"), done.stderr[-3000:]


MISSING_TORCH = """
import sys
sys.modules["torch"] = None  # torch made unimportable, as on an install without the [torch] extra
from clvp_jax.checkpoint import CheckpointError, load_params
from clvp_jax.checkpoint.convert_cli import main
try:
    load_params(sys.argv[1])
except ImportError as err:  # MissingTorchError is an ImportError and a CheckpointError
    assert isinstance(err, CheckpointError)
    print("library:", err)
sys.exit(main([sys.argv[1], sys.argv[2]]))
"""


def test_missing_torch_names_the_extra(tmp_path, tortoise_tiny):
    folder = tortoise_tiny.folder
    done = subprocess.run(
        [sys.executable, "-c", MISSING_TORCH, str(folder), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert done.returncode == 2, done.stderr  # the CLI's one-line error status
    assert f"library: reading {folder / 'autoregressive.pth'} needs torch" in done.stdout
    assert "pip install 'clvp-jax[torch]'" in done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and "error: reading" in lines[1] and "'clvp-jax[torch]'" in lines[1], done.stderr
    assert not (tmp_path / "out").exists()


FAKE_PYTHON = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls.log"
"""


def _setup(tmp_path: Path, want: str | None, extra: str | None) -> tuple[int, str, list[str]]:
    """Run scripts/setup.sh in a copy whose .venv/bin/python only records its arguments (nothing is installed)."""
    work = tmp_path / f"repo-{want}-{extra}"
    (work / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts/setup.sh", work / "scripts/setup.sh")
    shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")
    python = work / ".venv/bin/python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CLVP_JAX_EXTRA"} | ({"CLVP_JAX_EXTRA": extra} if extra else {})
    done = subprocess.run(
        ["bash", str(work / "scripts/setup.sh"), *([want] if want else [])],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    log = python.parent / "calls.log"
    calls = [line for line in log.read_text().splitlines() if "pip install" in line] if log.exists() else []
    return done.returncode, done.stderr, calls


def test_setup_script_honours_clvp_jax_extra(tmp_path):
    assert _setup(tmp_path, None, None)[2] == ["-m pip install -q --upgrade pip", "-m pip install -q -e ."]
    assert _setup(tmp_path, None, "cuda12")[2][-1] == "-m pip install -q -e .[cuda12]"
    assert _setup(tmp_path, "test", None)[2][-3:] == [
        "-m pip install -q torch==2.13.0",
        "-m pip install -q -e .[test]",
        "-m pip install -q --no-deps tortoise-tts==3.0.0",
    ]
    assert _setup(tmp_path, "test", "tpu,torch")[2][-2] == "-m pip install -q -e .[test,tpu,torch]"
    rc, stderr, calls = _setup(tmp_path, None, "gpu")
    assert rc == 2 and calls == [] and "unknown extra 'gpu'; choose from cuda12, tpu, torch" in stderr


def test_hf_export_carries_the_processor(tmp_path, tortoise_tiny):
    """transformers' and our ClvpProcessor.from_pretrained both work on an export, and agree."""
    from transformers import ClvpProcessor as Reference

    from clvp_jax import ClvpProcessor, assets, load_audio
    from clvp_jax.checkpoint import export_hf, load_params

    loaded = load_params(tortoise_tiny.folder)
    folder = export_hf(tmp_path / "hf", loaded.config, loaded.params)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "preprocessor_config.json"):
        assert (folder / name).is_file(), name
    ours, theirs = ClvpProcessor.from_pretrained(folder), Reference.from_pretrained(str(folder))
    texts = ["Hello world.", "It cost $3.50 in 1984, on the 2nd of May."]
    clip = load_audio(assets.default_voice_path())
    a = ours(text=texts, audio=clip, sampling_rate=22050, padding=True, return_tensors="np")
    b = theirs(text=texts, audio=clip, sampling_rate=22050, text_kwargs={"padding": True}, return_tensors="np")
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])  # the default (transformers') normaliser
    np.testing.assert_array_equal(a["input_ids"], ClvpProcessor.default()(text=texts, padding=True)["input_ids"])
    # One computation, two implementations (float32 STFT and log): the bound the feature tests use.
    np.testing.assert_allclose(a["input_features"], b["input_features"], rtol=0, atol=1e-5)
