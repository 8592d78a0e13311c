"""The `clvp-jax` command end to end, in subprocesses, on a tiny checkpoint; and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from clvp_jax.checkpoint import export_hf, save_checkpoint
from clvp_jax.checkpoint.hashing import sha256_file
from clvp_jax.config import ClvpConfig

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "clvp_jax.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or ROOT,
        timeout=600,
    )


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_model) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    model, params = tiny_model
    save_checkpoint(folder, model.config, jax.device_get(params), source_format="random")
    return folder


def test_generate_latents_score_info(tiny_checkpoint, tmp_path):
    ckpt = str(tiny_checkpoint)
    out = tmp_path / "out"
    gen = run_cli(
        "generate",
        "Hello world. This is the second sentence.",
        "--checkpoint",
        ckpt,
        "--num-samples",
        "3",
        "--max-new-tokens",
        "12",
        "--seed",
        "7",
        "--out",
        str(out),
        "--quiet",
    )
    assert gen.returncode == 0, gen.stderr
    assert "chunk 0:" in gen.stdout and "score" in gen.stdout
    result = json.loads((out / "candidates.json").read_text())
    chunk = result["chunks"][0]
    assert len(chunk["candidates"]) == 3
    scores = [c["score"] for c in chunk["candidates"]]
    assert scores == sorted(scores, reverse=True) and chunk["best"] == chunk["candidates"][0]
    arrays = np.load(out / "candidates.npz")
    assert arrays["sequences"].shape == (1, 3, 13)  # [chunks, candidates, 1 + max_new_tokens]
    np.testing.assert_allclose(arrays["candidate_scores"][0].max(), scores[0], rtol=1e-6, atol=1e-6)
    assert arrays["kept_index"].tolist() == [[c["index"] for c in chunk["candidates"]]]  # every drawn one kept
    # Readable JSON: a candidate's codes on one line, not one code a line.
    lines = (out / "candidates.json").read_text().splitlines()
    assert sum('"codes": [' in line and line.rstrip(",").endswith("]") for line in lines) == 3 + 1  # + "best"
    record = result["provenance"]
    assert record["checkpoint"] == ckpt and record["random_weights"] is False and record["seed"] == 7
    assert record["checkpoint_sha256"] == sha256_file(tiny_checkpoint / "manifest.json")
    assert record["voice"]["spec"] == "lj" and record["options"]["candidates"] == 3
    assert " ".join(c["normalized"] for c in record["chunks"]) == "hello world. this is the second sentence."

    # A rerun into the same output keeps the finished chunk (same text, voice, settings and weights: nothing is
    # generated) and rebuilds the same pair (long text resumes like Tortoise's read.py; tests/test_long_text.py).
    same = ["--num-samples", "3", "--max-new-tokens", "12", "--seed", "7", "--out", str(out), "--quiet"]
    again = run_cli("generate", "--checkpoint", ckpt, *same, stdin="Hello world. This is the second sentence.")
    assert again.returncode == 0 and "1 chunk(s), 1 kept" in again.stdout, again.stderr
    assert json.loads((out / "candidates.json").read_text())["chunks"] == result["chunks"]

    lat = tmp_path / "voice.npy"
    made = run_cli("latents", "--checkpoint", ckpt, "--out", str(lat))
    assert made.returncode == 0, made.stderr
    assert np.load(lat).shape == (ClvpConfig.tiny().decoder_config.hidden_size,)
    gen2 = run_cli(
        "generate",
        "Hello world.",
        "--checkpoint",
        ckpt,
        "--latents",
        str(lat),
        "--num-samples",
        "2",
        "--max-new-tokens",
        "8",
        "--out",
        str(tmp_path / "out2"),
        "--quiet",
    )
    assert gen2.returncode == 0, gen2.stderr

    codes = chunk["best"]["codes"] or [1, 2, 3]
    sc = run_cli("score", "Hello world.", "--checkpoint", ckpt, "--speech-ids", ",".join(map(str, codes)))
    assert sc.returncode == 0, sc.stderr
    assert sc.stdout.startswith("sequence 0:")

    info = run_cli("info", ckpt)
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["format"] == "clvp-jax" and described["parameters"] > 0


def test_convert_subcommand_round_trip(tiny_checkpoint, tmp_path):
    hf = tmp_path / "hf"
    res = run_cli("convert", str(tiny_checkpoint), str(hf), "--format", "hf")
    assert res.returncode == 0, res.stderr
    assert (hf / "model.safetensors").is_file() and (hf / "config.json").is_file()
    info = json.loads(run_cli("info", str(hf)).stdout)
    assert info["format"] == "hf"


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "hi", "--checkpoint", "/nonexistent/ckpt"], "no checkpoint at"),
        (["generate", "hi", "--voice", "/nonexistent.wav"], "no file or folder at /nonexistent.wav"),
        (["generate", "hi", "--preset", "warp_speed"], "unknown preset 'warp_speed'"),
        (["generate", "--text-file", "/nonexistent.txt"], "no text file at"),
        (["score", "hi", "--speech-ids", "1,x"], "comma-separated integers"),
        (["info", "/nonexistent"], "no checkpoint at"),
    ],
)
def test_errors_are_one_line_with_status_2(args, message):
    res = run_cli(*args)
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.startswith("clvp-jax: error:")]
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_undecodable_audio_and_unsplittable_text(tiny_checkpoint, tmp_path):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"RIFF not really a wav file")
    res = run_cli(
        "latents", "--checkpoint", str(tiny_checkpoint), "--voice", str(bad), "--out", str(tmp_path / "v.npy")
    )
    assert res.returncode == 2 and "could not decode" in res.stderr and "Traceback" not in res.stderr
    word = "a" * 400  # one 'word' far longer than the tiny model's 61-token text limit
    res = run_cli("generate", word, "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o"), "--quiet")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert not (tmp_path / "o" / "candidates.json").exists()


def test_incompatible_checkpoint(tmp_path, tiny_model):
    """An HF folder whose weights do not fit its config: one line naming the mismatch."""
    model, params = tiny_model
    export_hf(tmp_path / "hf", model.config, jax.device_get(params))
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg["decoder_config"]["num_hidden_layers"] = 3
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    res = run_cli("info", str(tmp_path / "hf"))
    assert res.returncode == 2 and "missing" in res.stderr and "Traceback" not in res.stderr


def test_score_refuses_what_is_not_a_code(tiny_checkpoint, tmp_path):
    dec = ClvpConfig.tiny().decoder_config
    floats, pickled = tmp_path / "codes.npy", tmp_path / "codes.json"
    np.save(floats, np.array([[1.7, 2.2, 3.9]]))  # was silently truncated to [1, 2, 3]
    pickled.write_text("[[1, 2.5]]")
    cases = [
        (["--speech-ids", f"1,{dec.bos_token_id},3"], f"the start token {dec.bos_token_id} is not a code"),  # was nan
        (["--speech-ids", "1,-4"], "holds [-4]"),
        (["--speech-file", str(floats)], "must hold integer speech codes"),
        (["--speech-file", str(pickled)], "speech codes must be integers"),
    ]
    for extra, message in cases:
        res = run_cli("score", "Hello world.", "--checkpoint", str(tiny_checkpoint), *extra)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, (extra, res.stderr)
