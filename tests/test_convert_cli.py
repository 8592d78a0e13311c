"""`clvp-jax-convert`: conversions end to end, the dry-run report, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from clvp_jax.checkpoint import load_checkpoint, load_params
from clvp_jax.checkpoint.convert_cli import main


@pytest.fixture(scope="module")
def tiny_dir(tortoise_tiny) -> Path:
    """The tiny original-format checkpoint folder (tests/data/tortoise_tiny)."""
    return tortoise_tiny.folder


@pytest.fixture(scope="module")
def tiny_params(tiny_dir):
    return load_params(tiny_dir).params


def _equal(a: dict, b: dict) -> bool:
    fa, fb = flatten_dict(a), flatten_dict(b)
    return fa.keys() == fb.keys() and all(np.array_equal(np.asarray(fa[p]), np.asarray(fb[p])) for p in fa)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def test_console_script_is_registered():
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["clvp-jax-convert"] == "clvp_jax.checkpoint.convert_cli:main"
    # The repository's convert/ folder is a script, not a package the wheel installs into site-packages.
    assert pyproject["tool"]["setuptools"]["packages"]["find"]["include"] == ["clvp_jax*"]


def test_original_to_clvp_jax_to_hf(tmp_path, tiny_params, capsys, tiny_dir):
    from transformers import ClvpModelForConditionalGeneration as HFModel

    assert main([str(tiny_dir), str(tmp_path / "ck")]) == 0
    ck = load_checkpoint(tmp_path / "ck")
    assert _equal(ck.params, tiny_params)
    sources = {s["file"]: s["sha256"] for s in ck.manifest["sources"]}
    meta = json.loads((tiny_dir / "meta.json").read_text())
    assert set(sources) == {"autoregressive.pth", "clvp2.pth"} and ck.manifest["source_format"] == "tortoise"
    assert all(v in json.dumps(meta) for v in sources.values())  # the fixture's own record of its file hashes
    assert main([str(tmp_path / "ck"), str(tmp_path / "hf"), "--format", "hf"]) == 0
    _, info = HFModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert _equal(load_params(tmp_path / "hf").params, tiny_params)


def test_dtype_flag(tmp_path, tiny_params, tiny_dir):
    assert main([str(tiny_dir), str(tmp_path / "ck"), "--dtype", "bfloat16"]) == 0
    ck = load_checkpoint(tmp_path / "ck")
    assert ck.manifest["dtype"] == "bfloat16"
    leaf = ck.params["speech_decoder_model"]["lm_head"]["weight"]
    assert leaf.dtype.name == "bfloat16"
    np.testing.assert_array_equal(leaf, tiny_params["speech_decoder_model"]["lm_head"]["weight"].astype(leaf.dtype))


def test_dry_run_reports_and_writes_nothing(tmp_path, capsys, tiny_dir):
    assert main([str(tiny_dir), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "ignored by name (6)" in out and "OK: every key consumed" in out
    folder = tmp_path / "src"
    folder.mkdir()
    shutil.copy(tiny_dir / "autoregressive.pth", folder)
    shutil.copy(tiny_dir / "original_config.json", folder)
    cfg = {"autoregressive": json.loads((tiny_dir / "original_config.json").read_text())["autoregressive"]}
    cfg["autoregressive"]["max_text_tokens"] = 30  # shapes say 32: the JSON disagrees
    (folder / "original_config.json").write_text(json.dumps(cfg))
    assert main([str(folder), str(tmp_path / "out"), "--dry-run"]) == 2
    assert "max_text_tokens + 2 = 32, but the weights have 34" in _error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_dry_run_lists_missing_and_misshaped_keys(tmp_path, capsys, tiny_dir):
    import torch

    folder = tmp_path / "src"
    folder.mkdir()
    sd = torch.load(tiny_dir / "clvp2.pth", weights_only=True)
    del sd["text_transformer.transformer.norm.bias"]
    sd["to_speech_latent.weight"] = torch.zeros(64, 32)
    sd["speech_transformer.transformer.unknown"] = torch.zeros(1)
    sd["to_text_latent.weight"] = sd["to_text_latent.weight"].half()  # float16 in a float32 checkpoint
    torch.save(sd, folder / "clvp2.pth")
    assert main([str(folder), "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert "mis-typed (1; --dtype casts floating tensors):\n  text_encoder_model.projection.weight: checkpoint " in out
    assert "4 problem(s)" in out
    assert "unexpected original keys (1):\n  clvp2.pth:speech_transformer.transformer.unknown" in out
    assert "missing (1):\n  text_encoder_model.final_layer_norm.bias" in out
    assert "speech_encoder_model.projection.weight: checkpoint (64, 32), config expects (64, 64)" in out
    assert main([str(folder), str(tmp_path / "out")]) == 2
    line = _error_line(capsys)
    assert "speech_transformer.transformer.unknown" in line and "--dry-run" in line
    assert not (tmp_path / "out").exists()


def test_errors_are_one_line_with_status_2(tmp_path, capsys, tiny_dir):
    (tmp_path / "ck").mkdir()
    assert main([str(tiny_dir), str(tmp_path / "ck")]) == 2
    line = _error_line(capsys)
    assert "already exists" in line and "--force" in line
    assert list((tmp_path / "ck").iterdir()) == []
    assert main([str(tiny_dir), str(tmp_path / "ck"), "--force", "--heads", "8"]) == 2  # contradicts the JSON
    assert "heads = 8, but the weights have 4" in _error_line(capsys)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "autoregressive.pth").write_bytes((tiny_dir / "autoregressive.pth").read_bytes()[:5000])
    assert main([str(bad), str(tmp_path / "out")]) == 2
    assert "truncated or corrupt" in _error_line(capsys)
    assert main([str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "does not exist" in _error_line(capsys)
    assert main([str(tiny_dir)]) == 2
    assert "output folder is needed" in _error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_force_replaces_and_autoregressive_only_converts(tmp_path, tiny_params, tiny_dir):
    folder = tmp_path / "ft"
    folder.mkdir()
    shutil.copy(tiny_dir / "autoregressive.pth", folder)
    assert main([str(folder), str(tmp_path / "ck"), "--heads", "4"]) == 0
    ck = load_checkpoint(tmp_path / "ck")
    assert ck.parts == ("conditioning_encoder", "speech_decoder_model")
    assert _equal(ck.params["speech_decoder_model"], tiny_params["speech_decoder_model"])
    assert main([str(folder), str(tmp_path / "hf"), "--heads", "4", "--format", "hf"]) == 2  # HF needs both halves
    assert not (tmp_path / "hf").exists()
    argv = [str(folder), str(tmp_path / "ck"), "--heads", "4", "--clvp", str(tiny_dir / "clvp2.pth"), "--force"]
    assert main(argv) == 0
    assert _equal(load_checkpoint(tmp_path / "ck").params, tiny_params)
