"""Checkpoint I/O: HF -> Flax -> HF is bit-exact and loads strictly in transformers; clvp-jax checkpoints round-trip;
every bad-file case gives its documented error and leaves no partial output."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from reference_models import CONFIGS, reference_model
from safetensors.numpy import load_file

from clvp_jax.checkpoint import (
    CheckpointError,
    WeightsMismatchError,
    detect_format,
    export_hf,
    from_pretrained,
    load_checkpoint,
    load_params,
    save_checkpoint,
)
from clvp_jax.fs import OutputError


def _save_hf(folder: Path, name: str, layout: str) -> dict:
    """Write reference model `name` as an HF folder in `layout`; returns its numpy state dict."""
    import torch

    hf, state = reference_model(name)
    folder.mkdir(parents=True)
    if layout == "safetensors":
        hf.save_pretrained(folder)
    elif layout == "sharded":
        hf.save_pretrained(folder, max_shard_size="20KB")
        assert (folder / "model.safetensors.index.json").is_file()
    else:
        hf.config.save_pretrained(folder)
        sd = {k: v.detach().clone() for k, v in hf.state_dict().items()}
        if layout == "bin":
            torch.save(sd, folder / "pytorch_model.bin")
        else:  # sharded .bin
            keys = sorted(sd)
            halves = {"pytorch_model-00001-of-00002.bin": keys[::2], "pytorch_model-00002-of-00002.bin": keys[1::2]}
            for file, ks in halves.items():
                torch.save({k: sd[k] for k in ks}, folder / file)
            index = {"weight_map": {k: f for f, ks in halves.items() for k in ks}}
            (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return state


def _assert_trees_equal(a: dict, b: dict) -> None:
    fa, fb = flatten_dict(a), flatten_dict(b)
    assert fa.keys() == fb.keys()
    for path in fa:
        np.testing.assert_array_equal(np.asarray(fa[path]), np.asarray(fb[path]), err_msg="/".join(path))
        assert np.asarray(fa[path]).dtype == np.asarray(fb[path]).dtype


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hf_flax_hf_round_trip_is_bit_exact_and_loads_strictly(tmp_path, name):
    import torch
    from transformers import ClvpModelForConditionalGeneration as HFModel

    state = _save_hf(tmp_path / "src", name, "safetensors")
    assert detect_format(tmp_path / "src") == "hf"
    loaded = load_params(tmp_path / "src")
    export_hf(tmp_path / "out", loaded.config, loaded.params)
    exported = load_file(tmp_path / "out" / "model.safetensors")
    assert exported.keys() == state.keys()
    for key in state:  # every tensor identical, rotary buffers included
        np.testing.assert_array_equal(exported[key], state[key], err_msg=key)
        assert exported[key].dtype == state[key].dtype
    hf, _ = reference_model(name)
    again, info = HFModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    again.eval()
    cfg = loaded.config
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(1, cfg.text_config.vocab_size, (2, 5)))
    feats = torch.from_numpy(rng.normal(size=(2, cfg.decoder_config.feature_size, 12)).astype(np.float32))
    with torch.no_grad():
        a, b = hf(input_ids=ids, input_features=feats), again(input_ids=ids, input_features=feats)
    for field in ("logits_per_text", "logits_per_speech", "text_embeds", "speech_embeds", "speech_model_output"):
        np.testing.assert_array_equal(getattr(a, field).numpy(), getattr(b, field).numpy())  # same weights: identical


@pytest.mark.parametrize("layout", ["sharded", "bin", "sharded_bin"])
def test_all_hf_layouts_read_the_same(tmp_path, layout):
    name = "partial_rotary"
    _save_hf(tmp_path / "ref", name, "safetensors")
    _save_hf(tmp_path / layout, name, layout)
    _assert_trees_equal(load_params(tmp_path / layout).params, load_params(tmp_path / "ref").params)


def test_from_pretrained_matches_reference_forward(tmp_path):
    import torch

    name = "full_rotary"
    _save_hf(tmp_path / "src", name, "safetensors")
    model, params = from_pretrained(tmp_path / "src", masked_pooling=False)
    hf, _ = reference_model(name)
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 256, (2, 6))
    feats = rng.normal(size=(2, 80, 10)).astype(np.float32)
    ours = jax.jit(model.apply)({"params": params}, ids, feats)  # one compilation instead of op-by-op dispatch
    with torch.no_grad():
        theirs = hf(input_ids=torch.from_numpy(ids), input_features=torch.from_numpy(feats))
    # Whole-model fp32 parity (the core parity suite checks this to ~3e-7); a loose 1e-5 here suffices to show
    # that the right weights went to the right places.
    np.testing.assert_allclose(ours.logits_per_text, theirs.logits_per_text.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_clvp_jax_checkpoint_round_trip(tmp_path, dtype):
    _save_hf(tmp_path / "src", "no_rotary", "safetensors")
    loaded = load_params(tmp_path / "src", dtype=dtype)
    save_checkpoint(tmp_path / "ck", loaded.config, loaded.params, sources=loaded.sources, source_format="hf")
    assert detect_format(tmp_path / "ck") == "clvp-jax"
    back = load_checkpoint(tmp_path / "ck")
    assert back.config == loaded.config
    _assert_trees_equal(back.params, loaded.params)
    manifest = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    assert manifest["dtype"] == (dtype or "float32") and manifest["converter_version"].startswith("clvp-jax ")
    assert {s["file"] for s in manifest["sources"]} == {"config.json", "model.safetensors"}
    assert all(len(s["sha256"]) == 64 for s in manifest["sources"])
    model, params = from_pretrained(tmp_path / "ck")
    assert model.dtype == (None if dtype is None else jax.numpy.bfloat16)


def test_tampered_manifest_is_refused(tmp_path):
    _save_hf(tmp_path / "src", "no_rotary", "safetensors")
    loaded = load_params(tmp_path / "src")
    save_checkpoint(tmp_path / "ck", loaded.config, loaded.params)
    manifest = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    (tmp_path / "ck" / "manifest.json").write_text(json.dumps({**manifest, "dtype": "float16"}))
    with pytest.raises(CheckpointError, match="manifest says float16"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "ck")


def test_safetensors_read_casts_while_reading(tmp_path, monkeypatch):
    """`SafetensorsReader.read(key, dtype)` equals astype bit for bit, through a small buffer: no full-size copy in
    the stored dtype is ever allocated (loading float32 files as bf16 leaves no freed float32 holes behind)."""
    import tracemalloc

    import ml_dtypes
    from safetensors.numpy import save_file

    from clvp_jax.checkpoint import readers

    rng = np.random.default_rng(0)
    tensors = {
        "big": rng.standard_normal((257, 1031)).astype(np.float32) * 1e3,  # not a multiple of the buffer
        "scalar": np.asarray(2.5, np.float32),
        "empty": np.zeros((0, 3), np.float32),
        "half": rng.standard_normal((5, 7)).astype(np.float16),
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))
    monkeypatch.setattr(readers, "CAST_CHUNK_BYTES", 4096)
    reader = readers.SafetensorsReader([tmp_path / "model.safetensors"])
    for key, stored in tensors.items():
        for dtype in (None, np.float32, ml_dtypes.bfloat16, np.float16):
            got = reader.read(key, dtype)
            want = stored if dtype is None else stored.astype(dtype)
            assert got.dtype == want.dtype and got.shape == want.shape, (key, dtype)
            np.testing.assert_array_equal(got.reshape(-1).view(np.uint8), want.reshape(-1).view(np.uint8), err_msg=key)
    tracemalloc.start()
    try:
        reader.read("big", ml_dtypes.bfloat16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bf16_bytes = tensors["big"].size * 2
    assert peak < bf16_bytes + 4096 + (64 << 10), (peak, bf16_bytes)  # astype of a full read: 3x bf16_bytes
    # The HF load path uses it: a float32 folder loaded as bf16 is the float32 load, rounded once.
    _save_hf(tmp_path / "src", "no_rotary", "safetensors")
    f32, b16 = load_params(tmp_path / "src").params, load_params(tmp_path / "src", dtype="bfloat16").params
    _assert_trees_equal(b16, jax.tree.map(lambda x: x.astype(ml_dtypes.bfloat16), f32))


# ---- bad inputs ------------------------------------------------------------------------------------------------


def test_truncated_and_corrupt_safetensors(tmp_path):
    _save_hf(tmp_path / "src", "no_rotary", "safetensors")
    weights = tmp_path / "src" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_params(tmp_path / "src")
    weights.write_bytes(b"\xff" * 8 + data[8:])
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_params(tmp_path / "src")


def test_truncated_bin(tmp_path):
    _save_hf(tmp_path / "src", "no_rotary", "bin")
    weights = tmp_path / "src" / "pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[:-4000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_params(tmp_path / "src")


class _Evil:
    """Unpickling this would create a marker file (a stand-in for running arbitrary code)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("where", ["hf", "tortoise"])
def test_code_running_pickle_is_refused(tmp_path, where):
    import torch

    marker = tmp_path / "pwned"
    payload = {"weight": torch.zeros(2), "evil": _Evil(str(marker))}
    folder = tmp_path / "src"
    if where == "hf":
        _save_hf(folder, "no_rotary", "bin")
        torch.save(payload, folder / "pytorch_model.bin")
    else:
        folder.mkdir()
        torch.save(payload, folder / "autoregressive.pth")
    with pytest.raises(CheckpointError, match="refused to load"):
        load_params(folder)
    assert not marker.exists()


def test_config_that_does_not_fit_the_weights(tmp_path):
    _save_hf(tmp_path / "src", "full_rotary", "safetensors")
    cfg = json.loads((tmp_path / "src" / "config.json").read_text())
    cfg["decoder_config"]["num_hidden_layers"] = 3
    cfg["text_config"]["hidden_size"] = 64
    (tmp_path / "src" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsMismatchError) as err:
        load_params(tmp_path / "src")
    assert any("layers.2" in k for k in err.value.missing)
    assert any(k.startswith("text_encoder_model.token_embedding") for k, _, _ in err.value.mismatched)


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_outputs_are_atomic_and_never_overwritten_silently(tmp_path, monkeypatch):
    _save_hf(tmp_path / "src", "no_rotary", "safetensors")
    loaded = load_params(tmp_path / "src")
    out = tmp_path / "ck"
    save_checkpoint(out, loaded.config, loaded.params)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    with pytest.raises(OutputError, match="--force"):
        save_checkpoint(out, loaded.config, loaded.params)
    with pytest.raises(OutputError):
        export_hf(out, loaded.config, loaded.params)
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    # A failure while writing (here: params that do not fit the config) leaves neither output nor temporaries.
    broken = jax.tree_util.tree_map(lambda x: x, loaded.params)
    del broken["speech_encoder_model"]["projection"]
    with pytest.raises(WeightsMismatchError):
        save_checkpoint(tmp_path / "ck2", loaded.config, broken)
    with pytest.raises(WeightsMismatchError):
        export_hf(tmp_path / "hf2", loaded.config, broken)
    assert not (tmp_path / "ck2").exists() and not (tmp_path / "hf2").exists()

    def crash(path, tensors, metadata):  # dies half-way through writing the weights
        path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("clvp_jax.checkpoint.save.write_safetensors", crash)
    # A write failure becomes one CheckpointError naming the output and the cause.
    with pytest.raises(CheckpointError, match="cannot write the export .*hf3: disk full"):
        export_hf(tmp_path / "hf3", loaded.config, loaded.params)
    with pytest.raises(CheckpointError, match="disk full"):
        export_hf(out, loaded.config, loaded.params, force=True)  # the old output survives a failed replace
    assert not (tmp_path / "hf3").exists() and _siblings(tmp_path / "hf3") == []
    assert load_checkpoint(out).manifest["dtype"] == "float32"
    save_checkpoint(out, loaded.config, loaded.params, dtype="float16", force=True)
    assert load_checkpoint(out).manifest["dtype"] == "float16"
    assert _siblings(out) == [] and _siblings(tmp_path / "ck2") == []


def test_unknown_folder_is_explained(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(CheckpointError, match="not a known checkpoint"):
        detect_format(tmp_path / "x")
    shutil.rmtree(tmp_path / "x")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_params(tmp_path / "x")
    assert os.listdir(tmp_path) == []
