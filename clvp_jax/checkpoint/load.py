"""Loading: any supported checkpoint -> a strict numpy parameter tree (`load_params`) or a model (`from_pretrained`).

The formats are described in `clvp_jax.checkpoint.format`. Every name -> parameter mapping goes through the strict
rule table of `clvp_jax.checkpoint.rules`; original Tortoise files go through `clvp_jax.checkpoint.tortoise` first.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from clvp_jax.checkpoint.audio_models import group_files
from clvp_jax.checkpoint.dtypes import as_dtype, float_dtype, is_float
from clvp_jax.checkpoint.errors import CheckpointError
from clvp_jax.checkpoint.format import Format, detect_format, hf_stored_dtype, read_manifest
from clvp_jax.checkpoint.hashing import NO_VERIFY_ENV, find_altered, verify_requested
from clvp_jax.checkpoint.hub import resolve_checkpoint
from clvp_jax.checkpoint.orbax_io import restore_groups
from clvp_jax.checkpoint.progress import report, size_of
from clvp_jax.checkpoint.readers import open_hf_state_dict
from clvp_jax.checkpoint.rules import ALL_PARTS, check_params, state_dict_to_params
from clvp_jax.checkpoint.tortoise import load_original
from clvp_jax.config import ClvpConfig
from clvp_jax.model import ClvpModelForConditionalGeneration
from clvp_jax.tuning import Tuning


@dataclasses.dataclass(frozen=True)
class LoadedCheckpoint:
    """What `load_params` read. Attributes: config; params (numpy tree); format; sources (files read);
    parts (top-level parameter groups present, see `clvp_jax.checkpoint.ALL_PARTS`); manifest (clvp-jax only)."""

    config: ClvpConfig
    params: dict
    format: Format
    sources: tuple[Path, ...]
    parts: tuple[str, ...]
    manifest: dict | None = None


def load_params(
    path: str | os.PathLike,
    *,
    dtype: Any = None,
    verify: bool | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    **original_options: Any,
) -> LoadedCheckpoint:
    """Read any supported checkpoint into a config and a strict numpy parameter tree.

    Args:
      path: a checkpoint folder (any format), an original `.pth` file, or a Hugging Face Hub repo id
        (`susnato/clvp_dev`, `Manmay/tortoise-tts`: only the files the model needs are fetched, see
        `clvp_jax.checkpoint.hub`); a path that exists wins over a repo id.
      revision, cache_dir, local_files_only: for a repo id, see `clvp_jax.checkpoint.hub.resolve_checkpoint`.
      dtype: cast floating parameters to 'float32' | 'bfloat16' | 'float16' (default: as stored; tensors must
        then have the dtype the checkpoint declares).
      verify: check a clvp-jax checkpoint's parameter files against the sha256s its manifest records (default:
        yes, unless the environment sets `CLVP_JAX_NO_VERIFY=1`).
      **original_options: for the original format only, see `clvp_jax.checkpoint.tortoise.load_original`
        (e.g. `heads`).
    Raises:
      CheckpointError, WeightsMismatchError, ConfigError: with a message naming the problem.
    """
    path = resolve_checkpoint(path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    fmt = detect_format(path)
    dt = as_dtype(dtype)
    if original_options and fmt != "tortoise":
        raise CheckpointError(f"options {sorted(original_options)} only apply to original Tortoise checkpoints")
    if fmt == "clvp-jax":
        return load_checkpoint(path, dtype=dt, verify=verify)
    if fmt == "hf":
        config = ClvpConfig.from_pretrained(path)
        reader = open_hf_state_dict(path)
        report(f"reading {', '.join(p.name for p in reader.paths)} ({size_of(list(reader.paths))})")
        params = state_dict_to_params(reader, config, dtype=dt, stored_dtype=hf_stored_dtype(path))
        sources = (path / "config.json", *reader.paths)
        return LoadedCheckpoint(config, params, "hf", sources, ALL_PARTS)
    orig = load_original(path, **original_options)
    params = state_dict_to_params(orig.state_dict, orig.config, dtype=dt, parts=orig.parts)
    return LoadedCheckpoint(orig.config, params, "tortoise", orig.sources, orig.parts)


def load_checkpoint(folder: str | os.PathLike, *, dtype: Any = None, verify: bool | None = None) -> LoadedCheckpoint:
    """Read a clvp-jax checkpoint, verifying its manifest (format, version, dtype, parameter groups), the sha256 of
    every parameter file it records (unless `verify` is False or `CLVP_JAX_NO_VERIFY=1`), and the tree."""
    folder = Path(folder).absolute()
    manifest = read_manifest(folder)
    config = ClvpConfig.from_pretrained(folder)
    parts = tuple(manifest.get("parts", ()))
    recorded = manifest.get("files")
    if verify_requested(verify) and isinstance(recorded, dict):  # manifests before checksums have no "files"
        # The audio models' groups are verified when they are read (`audio_models.read_checkpoint_model`).
        audio = list(manifest.get("audio_models") or {})
        checked = {k: v for k, v in recorded.items() if k not in group_files(recorded, audio)}
        report(f"verifying {len(checked)} parameter files ({size_of([folder / k for k in checked])})")
        altered = find_altered(folder, checked)
        if altered:
            raise CheckpointError(
                f"{folder} was altered after it was written: {', '.join(altered[:5])}"
                f"{f' and {len(altered) - 5} more' if len(altered) > 5 else ''}; re-create the checkpoint (or "
                f"skip this check with --no-verify / verify=False / {NO_VERIFY_ENV}=1)"
            )
    # Group by group, each cast leaf by leaf as it is read: loading float32 files as bf16 holds the bf16 tree
    # plus one float32 leaf, never both trees (1.5x the float32 size).
    target, params = as_dtype(dtype), {}
    for group in parts or (None,):
        report(f"reading {group or 'parameters'}")
        restored = restore_groups(folder / "params", parts if group is None else (group,))
        restored = jax.tree_util.tree_map(np.asarray, dict(restored))
        stored = float_dtype(restored)
        if stored != manifest.get("dtype"):
            raise CheckpointError(f"{folder}: parameters are {stored} but the manifest says {manifest.get('dtype')}")
        params.update(cast_leaf_by_leaf(restored, target))
        del restored
    check_params(params, config, parts, dtype=target or manifest.get("dtype"))
    # Re-converting records this checkpoint's own files, whose manifest names the original sources.
    sources = (folder / "config.json", folder / "manifest.json")
    return LoadedCheckpoint(config, params, "clvp-jax", sources, parts, manifest)


def cast_leaf_by_leaf(tree: dict, dtype: np.dtype | None) -> dict:
    """`tree` (nested dicts of numpy leaves) with its floating leaves cast to `dtype` in place, one at a time: each
    original is dropped as soon as its cast exists, so the peak is the cast tree plus one original leaf."""
    for key in list(tree):
        value = tree[key]
        if isinstance(value, dict):
            cast_leaf_by_leaf(value, dtype)
        elif dtype is not None and is_float(value.dtype) and value.dtype != dtype:
            tree[key] = value.astype(dtype)
        del value
    return tree


def from_pretrained(
    path: str | os.PathLike,
    *,
    dtype: Any = None,
    masked_pooling: bool = True,
    verify: bool | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    **original_options: Any,
) -> tuple[ClvpModelForConditionalGeneration, dict]:
    """Load a model from an HF folder, a clvp-jax checkpoint, original Tortoise files or a Hub repo (auto-detected).

    Args:
      path: see `load_params`: a folder, a `.pth`, or a Hub repo id such as `Manmay/tortoise-tts`.
      dtype: parameter and compute dtype ('float32', 'bfloat16', 'float16'); default: as stored.
      masked_pooling: see `ClvpModelForConditionalGeneration`.
      revision, cache_dir, local_files_only: for a repo id, see `clvp_jax.checkpoint.hub.resolve_checkpoint`.
      verify: see `load_params`.
      **original_options: original format only (e.g. `heads=16`), see `load_original`.
    Returns:
      (ClvpModelForConditionalGeneration, params) with params as jax arrays. An autoregressive-only checkpoint
      gives params with `conditioning_encoder`, `speech_decoder_model` and a placeholder `logit_scale` (the
      config's initial value), no CLVP towers: conditioning and code generation work, scoring does not.
    """
    hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    loaded = load_params(path, dtype=dtype, verify=verify, **hub, **original_options)
    report("moving the parameters to the device")
    params = _to_device(loaded.params)
    if "logit_scale" not in params:
        # The composite module creates `logit_scale` eagerly in setup, so even its conditioning encoder and decoder
        # cannot run without one. An autoregressive-only checkpoint has none: use the config's initial value (it
        # only scales CLVP scores, which need the missing towers anyway).
        params["logit_scale"] = jax.numpy.asarray(loaded.config.logit_scale_init_value, jax.numpy.float32)
    stored = {leaf.dtype for leaf in jax.tree_util.tree_leaves(params) if is_float(leaf.dtype)}
    compute = as_dtype(dtype) or (next(iter(stored)) if len(stored) == 1 else None)
    model = ClvpModelForConditionalGeneration(
        loaded.config, masked_pooling=masked_pooling, dtype=None if compute == np.float32 else compute
    )
    return model, params


def _to_device(tree: dict) -> dict:
    """Move a nested dict of numpy leaves to the default device one leaf at a time, dropping each host copy as it
    goes (the tree is emptied): peak host memory stays near one copy of the parameters, not two or three
    (`jnp.asarray` of a whole tree holds the numpy tree, a staging copy and the device copy at once).

    Each transfer is waited for (`device_put` returns before its copy is done; a backlog of leaves would keep
    their host copies alive at once), and the freed host copies are handed back to the OS every 64 MiB
    (glibc keeps them in its heap otherwise: measured 0.2-0.5 GiB above the parameters at real size).
    """
    freed = 0

    release_freed_memory = Tuning.for_backend().release_freed_memory  # a no-op off CPU

    def move(tree: dict) -> dict:
        nonlocal freed
        out = {}
        for key in list(tree):
            value = tree.pop(key)
            if isinstance(value, dict):
                out[key] = move(value)
                continue
            out[key] = jax.device_put(value).block_until_ready()
            freed += getattr(value, "nbytes", 0)  # no np.asarray: a device leaf would be copied back
            del value
            if freed >= 1 << 26:
                release_freed_memory()
                freed = 0
        return out

    out = move(tree)
    release_freed_memory()
    return out
