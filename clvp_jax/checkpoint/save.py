"""Writing checkpoints: clvp-jax checkpoints (`save_checkpoint`), the HF export (`export_hf`), streamed safetensors.

Every output goes through `clvp_jax.fs.output_folder`: it is built in a temporary sibling folder that replaces the
target only when complete (a failure or an interrupt leaves nothing), files and folders follow the user's umask,
and `force=True` replaces only a previous output of ours (`is_our_output`), never the sources, however spelled.
A clvp-jax manifest records the sha256 of every parameter file written, verified on load. The formats are described in `clvp_jax.checkpoint.format`.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from clvp_jax import fs
from clvp_jax.checkpoint.audio_models import AudioGroup, check_tree, manifest_entry
from clvp_jax.checkpoint.dtypes import SAFETENSORS_DTYPES, as_dtype, cast_floats, float_dtype
from clvp_jax.checkpoint.errors import CheckpointError
from clvp_jax.checkpoint.format import CHECKPOINT_FORMAT, build_manifest
from clvp_jax.checkpoint.hashing import folder_checksums
from clvp_jax.checkpoint.orbax_io import describe_os_error, save_groups
from clvp_jax.checkpoint.rules import ALL_PARTS, check_params, params_to_state_dict
from clvp_jax.config import ClvpConfig
from clvp_jax.processor import ClvpProcessor

_SAFETENSORS_CODES = {name: code for code, name in SAFETENSORS_DTYPES.items()}
# What an HF export may hold: its config and weights, and the tokenizer files written beside them.
_HF_EXPORT_FILES = frozenset(
    {"config.json", "model.safetensors", fs.OUTPUT_MARKER, "vocab.json", "merges.txt", "tokenizer.json"}
    | {"tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json", "processor_config.json"}
)


def is_our_output(folder: Path) -> bool:
    """Whether `folder` is a checkpoint or export written by clvp-jax (the one kind `force` may replace).

    New outputs carry `fs.OUTPUT_MARKER` (checked by `clvp_jax.fs`); this recognises older ones too: a folder with
    a clvp-jax manifest, or an HF export (only `config.json` of a CLVP model, `model.safetensors` and the
    tokenizer files an export adds).
    """
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if isinstance(manifest, dict) and manifest.get("format") == CHECKPOINT_FORMAT:
            return True
    except (OSError, ValueError):
        pass
    names = {p.name for p in folder.iterdir()}
    if not {"config.json", "model.safetensors"} <= names or not names <= _HF_EXPORT_FILES:
        return False
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("architectures") == ["ClvpModelForConditionalGeneration"]


def _checkpoint_folder(folder: str | os.PathLike, *, force: bool, protect: Sequence[str | os.PathLike]):
    """`fs.output_folder` for a checkpoint: never replaces its sources, only a previous output of ours."""
    return fs.output_folder(folder, force=force, protect=protect, is_ours=is_our_output)


def save_checkpoint(
    folder: str | os.PathLike,
    config: ClvpConfig,
    params: Mapping,
    *,
    sources: Sequence[str | os.PathLike] = (),
    dtype: Any = None,
    force: bool = False,
    source_format: str | None = None,
    protect: Sequence[str | os.PathLike] = (),
    audio: Mapping[str, AudioGroup] | None = None,
) -> Path:
    """Write a clvp-jax checkpoint: `config.json`, `params/` (orbax) and `manifest.json`, atomically.

    Args:
      folder: output folder; must not exist unless `force`.
      config: the model config.
      params: a full or partial (whole top-level groups) parameter tree; checked strictly against `config`.
      sources: files the weights came from; their sha256 goes into the manifest.
      dtype: cast floating params to this dtype first (default: keep; they must then share one dtype).
      force: replace an existing `folder`.
      source_format: recorded in the manifest ('hf', 'tortoise', ...).
      protect: paths the output must not be, contain or lie in (the inputs); `sources` are always protected.
      audio: the audio models to store beside them (`clvp_jax.checkpoint.audio_models.convert_folder`), each as
        the group `params/<name>/`, float32 whatever `dtype` is, listed with its kwargs in the manifest.
    Returns:
      The folder path.
    Raises:
      fs.OutputError: the folder cannot be written or must not be replaced (checked before any work).
      CheckpointError: writing failed (e.g. a full disk), in one line; nothing is left behind.
    """
    params = cast_floats(params, as_dtype(dtype))
    parts = tuple(p for p in ALL_PARTS if p in params)
    check_params(params, config, parts)
    audio = dict(audio or {})
    for name, group in audio.items():  # what a loader will insist on, checked before anything is written
        check_tree(name, group.kwargs, group.tree, f"audio model {name}")
    audio_sources = [g.source for g in audio.values() if g.source is not None]
    sources = [*sources, *audio_sources]
    manifest = build_manifest(dtype=float_dtype(params), parts=parts, source_format=source_format, sources=sources)
    if audio:
        manifest["audio_models"] = manifest_entry(audio)
    with _checkpoint_folder(folder, force=force, protect=[*sources, *protect]) as tmp:
        try:
            config.save_pretrained(tmp)
            save_groups(tmp / "params", params, parts)
            if audio:
                save_groups(tmp / "params", {name: g.tree for name, g in audio.items()}, list(audio))
            # The checksums of what was written, verified on load: a file altered on disk is named, not loaded.
            manifest["files"] = folder_checksums(tmp, "params")
            fs.write_text(tmp / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        except OSError as err:
            raise CheckpointError(f"cannot write the checkpoint {folder}: {describe_os_error(err)}") from err
        except CheckpointError as err:
            raise CheckpointError(f"cannot write the checkpoint {folder}: {err}") from err
    return Path(folder)


def write_safetensors(path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """Stream `tensors` into a safetensors file one tensor at a time (no whole-file buffer in memory)."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    keys = sorted(tensors)
    for key in keys:
        arr = tensors[key]
        nbytes = int(np.prod(arr.shape, dtype=np.int64)) * arr.dtype.itemsize
        header[key] = {
            "dtype": _SAFETENSORS_CODES[arr.dtype.name],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format pads the header to 8-byte alignment
    with fs.atomic_file(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for key in keys:
            f.write(np.ascontiguousarray(tensors[key]).tobytes())


def export_hf(
    folder: str | os.PathLike,
    config: ClvpConfig,
    params: Mapping,
    *,
    force: bool = False,
    processor: ClvpProcessor | None = None,
    protect: Sequence[str | os.PathLike] = (),
) -> Path:
    """Write an HF-format folder that transformers loads strictly: `config.json` + `model.safetensors`, and beside
    them the processor's files (vocab.json, merges.txt, tokenizer_config.json, preprocessor_config.json,
    processor_config.json), so `ClvpProcessor.from_pretrained(folder)` works there, transformers' and ours.

    Args:
      folder: output folder; must not exist unless `force`.
      config, params: the whole model (the HF class has no autoregressive-only variant).
      force, protect: as for `save_checkpoint`.
      processor: the front end to save (default: `ClvpProcessor.default()`, the packaged Tortoise vocabulary and
        mel norms with transformers' text normaliser, so both libraries give the same ids from the folder).
    """
    flat_parts = {p for p in ALL_PARTS if p in params}
    if flat_parts != set(ALL_PARTS):
        raise CheckpointError(
            f"an HF export needs the whole model, but these weights lack {sorted(set(ALL_PARTS) - flat_parts)}; "
            "add the missing half (e.g. --clvp clvp2.pth) or export to the clvp-jax format"
        )
    params = jax.tree_util.tree_map(np.asarray, dict(params))
    state = params_to_state_dict(params, config, copy=False)  # views: write_safetensors copies one at a time
    dtype = float_dtype(params)
    hf_config = config.to_dict()
    hf_config.update(architectures=["ClvpModelForConditionalGeneration"], dtype=dtype)
    with _checkpoint_folder(folder, force=force, protect=protect) as tmp:
        try:
            fs.write_text(tmp / "config.json", json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
            write_safetensors(tmp / "model.safetensors", state, {"format": "pt"})
            (processor or ClvpProcessor.default()).save_pretrained(tmp)
        except OSError as err:
            raise CheckpointError(f"cannot write the export {folder}: {describe_os_error(err)}") from err
    return Path(folder)
