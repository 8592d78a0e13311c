"""Checkpoints from the Hugging Face Hub, offline: the real `huggingface_hub` reads a cache folder these tests build.

No network and no mock: each test writes the cache layout `huggingface_hub` itself reads
(`models--owner--name/refs/<ref>` holding a commit, `snapshots/<commit>/<file>` linking to `blobs/<sha256>`) and
calls our loaders with `cache_dir=` and `local_files_only=True`; one subprocess runs the CLI with
`HF_HUB_OFFLINE=1` and `HF_HUB_CACHE` instead. Weights are the tiny original fixture (tests/data/tortoise_tiny) and
its HF export, and loading them through the Hub must give exactly what loading the folder gives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hub_cache import COMMIT, write_hub_cache

from clvp_jax.checkpoint import CheckpointError, WeightsMismatchError, export_hf, load_params
from clvp_jax.checkpoint.hub import TORTOISE_REPO, is_repo_id, resolve_checkpoint

ROOT = Path(__file__).resolve().parents[1]
HF_REPO = "someone/clvp-tiny"
TINY_FILES = ("autoregressive.pth", "clvp2.pth", "original_config.json")


def assert_same_tree(actual: dict, desired: dict) -> None:
    """Exactly equal numpy trees: the same bytes were read, only from another folder."""
    import jax

    flat_a, flat_d = jax.tree_util.tree_leaves_with_path(actual), jax.tree_util.tree_leaves_with_path(desired)
    assert [p for p, _ in flat_a] == [p for p, _ in flat_d]
    for (path, a), (_, d) in zip(flat_a, flat_d, strict=True):
        assert a.dtype == d.dtype, path
        np.testing.assert_array_equal(a, d, err_msg=str(path))


@pytest.fixture(scope="module")
def tiny_local(tortoise_tiny):
    """The tiny original checkpoint loaded from its folder: what every Hub load must reproduce."""
    return load_params(tortoise_tiny.folder)


@pytest.fixture(scope="module")
def tiny_hf_folder(tmp_path_factory, tiny_local) -> Path:
    """The tiny checkpoint exported to HF format (config.json + model.safetensors + processor files)."""
    return export_hf(tmp_path_factory.mktemp("hf") / "export", tiny_local.config, tiny_local.params)


def test_repo_ids_and_paths_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_repo_id("Manmay/tortoise-tts") and is_repo_id("susnato/clvp_dev")
    for path in ("ckpt", "ckpt/", "./a/b", "/a/b", "a/b/c", "models/autoregressive.pth", "a/model.safetensors"):
        assert not is_repo_id(path), path
    (tmp_path / "Manmay" / "tortoise-tts").mkdir(parents=True)
    assert not is_repo_id("Manmay/tortoise-tts")  # it exists here: a path that exists wins


def test_tortoise_repo_from_the_cache_loads_exactly_the_folder(tmp_path, tortoise_tiny, tiny_local):
    """Only the codes' files are in the cache (no diffusion, vocoder, cvvp): codes need no more, so none is asked."""
    snapshot = write_hub_cache(tmp_path, TORTOISE_REPO, {f: tortoise_tiny.folder / f for f in TINY_FILES})
    loaded = load_params(TORTOISE_REPO, cache_dir=tmp_path, local_files_only=True)
    assert loaded.format == "tortoise" and loaded.parts == tiny_local.parts
    assert [p.parent for p in loaded.sources] == [snapshot, snapshot]
    assert loaded.config == tiny_local.config  # original_config.json (2 heads) came along: it is optional
    assert_same_tree(loaded.params, tiny_local.params)


def test_from_pretrained_takes_a_repo_id_and_a_revision(tmp_path, tortoise_tiny, tiny_local):
    """The public entry point, at a tag and at a commit hash (both read through the library's own resolution)."""
    import jax

    import clvp_jax

    write_hub_cache(tmp_path, TORTOISE_REPO, {f: tortoise_tiny.folder / f for f in TINY_FILES}, refs=("v2",))
    for revision in ("v2", COMMIT):
        model, params = clvp_jax.from_pretrained(
            TORTOISE_REPO, revision=revision, cache_dir=tmp_path, local_files_only=True
        )
        assert model.config == tiny_local.config
        assert_same_tree(jax.tree_util.tree_map(np.asarray, params), tiny_local.params)
    with pytest.raises(CheckpointError, match=r"revision main\)?.*not in the Hub cache"):
        load_params(TORTOISE_REPO, revision="main", cache_dir=tmp_path, local_files_only=True)


def test_hf_repo_from_the_cache(tmp_path, tiny_hf_folder, tiny_local):
    """An HF CLVP repo: config.json decides the kind; its weights and nothing else are fetched."""
    files = {f: tiny_hf_folder / f for f in ("config.json", "model.safetensors")}
    snapshot = write_hub_cache(tmp_path, HF_REPO, files)
    loaded = load_params(HF_REPO, cache_dir=tmp_path, local_files_only=True)
    assert loaded.format == "hf" and loaded.sources == (snapshot / "config.json", snapshot / "model.safetensors")
    assert loaded.config == tiny_local.config
    assert_same_tree(loaded.params, tiny_local.params)


def test_the_strict_loader_checks_what_arrives(tmp_path, tortoise_tiny):
    """A cached file of the wrong kind is refused by the strict loader, as it is in a folder."""
    import torch

    state = torch.load(tortoise_tiny.folder / "clvp2.pth", weights_only=True)
    state["surprise.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "clvp2.pth")
    files = {"autoregressive.pth": tortoise_tiny.folder / "autoregressive.pth", "clvp2.pth": tmp_path / "clvp2.pth"}
    write_hub_cache(tmp_path / "cache", TORTOISE_REPO, files)
    with pytest.raises(WeightsMismatchError, match="surprise.weight"):
        load_params(TORTOISE_REPO, cache_dir=tmp_path / "cache", local_files_only=True)


def test_jobs_fetch_their_files(tmp_path, tortoise_tiny, data_dir):
    """need= picks the files: audio adds the diffusion decoder and vocoder, cvvp only when asked."""
    waveform = data_dir / "tortoise_tiny_waveform"
    files = {f: tortoise_tiny.folder / f for f in TINY_FILES}
    files |= {f: waveform / f for f in ("diffusion_decoder.pth", "vocoder.pth", "cvvp.pth")}
    snapshot = write_hub_cache(tmp_path, TORTOISE_REPO, files)
    folder = resolve_checkpoint(TORTOISE_REPO, need=("audio", "cvvp"), cache_dir=tmp_path, local_files_only=True)
    assert folder == snapshot
    with pytest.raises(CheckpointError, match=r"rlg_auto\.pth, rlg_diffuser\.pth not in the Hub cache"):
        resolve_checkpoint(TORTOISE_REPO, need=("random_voice",), cache_dir=tmp_path, local_files_only=True)
    with pytest.raises(CheckpointError, match="not a job"):
        resolve_checkpoint(TORTOISE_REPO, need=("speech",), cache_dir=tmp_path)


def test_missing_file_is_one_line_naming_repo_files_and_remedies(tmp_path, tortoise_tiny):
    write_hub_cache(tmp_path, TORTOISE_REPO, {"autoregressive.pth": tortoise_tiny.folder / "autoregressive.pth"})
    with pytest.raises(CheckpointError) as err:
        load_params(TORTOISE_REPO, cache_dir=tmp_path, local_files_only=True)
    message = str(err.value)
    assert "\n" not in message
    assert f"Hub repo {TORTOISE_REPO}: clvp2.pth not in the Hub cache {tmp_path}" in message
    assert "local_files_only=True" in message
    assert f"`hf download {TORTOISE_REPO} clvp2.pth`" in message and "local folder" in message


def test_missing_repo_names_both_layouts(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_params("nobody/nothing", cache_dir=tmp_path, local_files_only=True)
    message = str(err.value)
    assert "\n" not in message
    assert "Hub repo nobody/nothing: config.json + model.safetensors (HF CLVP) or autoregressive.pth" in message
    assert "`hf download nobody/nothing`" in message


def test_an_existing_path_wins_over_a_repo_id(tmp_path, monkeypatch, tortoise_tiny, tiny_hf_folder):
    """The cache holds the HF export under the same id, the working directory the original files: they win."""
    write_hub_cache(tmp_path / "cache", TORTOISE_REPO, {f: tiny_hf_folder / f for f in ("config.json",)})
    local = tmp_path / "work" / TORTOISE_REPO
    shutil.copytree(tortoise_tiny.folder, local, ignore=shutil.ignore_patterns("*.npz"))
    monkeypatch.chdir(tmp_path / "work")
    assert load_params(TORTOISE_REPO, cache_dir=tmp_path / "cache", local_files_only=True).format == "tortoise"
    with pytest.raises(CheckpointError, match="revision='v1' applies to a Hub repo id, but .* is an existing local"):
        load_params(TORTOISE_REPO, revision="v1")
    with pytest.raises(CheckpointError, match=r"but 'ckpt' is not a repo id \(owner/name\)"):
        load_params("ckpt", revision="v1")


def _cli(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "clvp_jax.checkpoint.convert_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_convert_cli_reads_the_cache_with_hf_hub_offline(tmp_path, tortoise_tiny):
    """The environment variables, as a user sets them: HF_HUB_OFFLINE=1 and HF_HUB_CACHE (read at import)."""
    write_hub_cache(tmp_path / "cache", TORTOISE_REPO, {f: tortoise_tiny.folder / f for f in TINY_FILES})
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    done = _cli([TORTOISE_REPO, "--dry-run"], env)
    assert done.returncode == 0, done.stderr
    assert "OK: every key consumed" in done.stdout and f"snapshots/{COMMIT}/autoregressive.pth" in done.stdout
    failed = _cli([TORTOISE_REPO, str(tmp_path / "out"), "--revision", "v9"], env)
    assert failed.returncode == 2
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and "downloads are off (HF_HUB_OFFLINE=1)" in lines[0], failed.stderr
    assert f"`hf download {TORTOISE_REPO} autoregressive.pth clvp2.pth --revision v9`" in lines[0]
    assert not (tmp_path / "out").exists()


def test_sharded_hf_repo_fetches_the_index_and_its_shards(tmp_path, tiny_hf_folder, tiny_local):
    """A sharded repo (no model.safetensors): the index and exactly the shards it lists; a missing shard is named."""
    import json

    from clvp_jax.checkpoint.readers import open_hf_state_dict

    shard = "model-00001-of-00001.safetensors"
    keys = sorted(open_hf_state_dict(tiny_hf_folder).specs())
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": dict.fromkeys(keys, shard)}))
    files = {"config.json": tiny_hf_folder / "config.json", "model.safetensors.index.json": index}
    write_hub_cache(tmp_path / "partial", HF_REPO, files)
    with pytest.raises(CheckpointError, match=rf"Hub repo {HF_REPO}: {shard} not in the Hub cache"):
        load_params(HF_REPO, cache_dir=tmp_path / "partial", local_files_only=True)
    write_hub_cache(tmp_path / "whole", HF_REPO, files | {shard: tiny_hf_folder / "model.safetensors"})
    loaded = load_params(HF_REPO, cache_dir=tmp_path / "whole", local_files_only=True)
    assert [p.name for p in loaded.sources] == ["config.json", shard]
    assert_same_tree(loaded.params, tiny_local.params)
