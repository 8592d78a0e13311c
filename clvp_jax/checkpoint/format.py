"""Checkpoint formats on disk: detection, the clvp-jax manifest, and the dtype an HF folder declares.

Three formats are read, auto-detected by `detect_format`:

  "hf"        an HF folder: `config.json` + `model.safetensors`, a sharded `model.safetensors.index.json`,
              or `pytorch_model.bin` (also sharded, `pytorch_model.bin.index.json`).
  "clvp-jax"  our checkpoint: `config.json` + `manifest.json` (provenance: source sha256s, converter version,
              dtype, parameter groups) + `params/<group>/` (one orbax-checkpoint item per parameter group).
  "tortoise"  the original Tortoise files: a folder with `autoregressive.pth` and/or `clvp2.pth` (optionally
              `original_config.json`), or one such `.pth` file (see `clvp_jax.checkpoint.tortoise`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from clvp_jax.checkpoint.dtypes import DTYPES
from clvp_jax.checkpoint.errors import CheckpointError
from clvp_jax.checkpoint.hashing import source_record
from clvp_jax.version import __version__

Format = Literal["hf", "clvp-jax", "tortoise"]
CHECKPOINT_FORMAT = "clvp-jax"
# Version 2: linear weights are torch's [out, in] leaves named `weight` (version 1 stored Flax [in, out] `kernel`s).
CHECKPOINT_VERSION = 2
HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TORTOISE_FILES = ("autoregressive.pth", "clvp2.pth")


def converter_version() -> str:
    """The converter version recorded in manifests, e.g. 'clvp-jax 0.1.0'."""
    return f"clvp-jax {__version__}"


def detect_format(path: str | os.PathLike) -> Format:
    """'clvp-jax', 'hf' or 'tortoise' for a checkpoint folder (or a single original `.pth` file)."""
    path = Path(path)
    if path.is_file() and path.suffix in (".pth", ".pt"):
        return "tortoise"
    if not path.is_dir():
        raise CheckpointError(f"{path} does not exist or is not a checkpoint folder / .pth file")
    if (path / "manifest.json").is_file() and (path / "params").is_dir():
        return "clvp-jax"
    if (path / "config.json").is_file() and any((path / f).is_file() for f in HF_WEIGHT_FILES):
        return "hf"
    if any((path / f).is_file() for f in TORTOISE_FILES):
        return "tortoise"
    raise CheckpointError(
        f"{path} is not a known checkpoint: expected an HF folder (config.json + model.safetensors or "
        f"pytorch_model.bin), a clvp-jax checkpoint (manifest.json + params/), or original Tortoise files "
        f"({' / '.join(TORTOISE_FILES)})"
    )


def hf_stored_dtype(folder: Path) -> str:
    """The parameter dtype an HF folder's `config.json` declares (`dtype`, or the older `torch_dtype`).

    'float32' when it declares none (or 'auto'): what transformers then loads.
    """
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: bad JSON or bad UTF-8
        return "float32"  # the config reader reports a bad config.json with its own message
    if not isinstance(data, dict):
        return "float32"
    declared = data.get("dtype") or data.get("torch_dtype")
    return declared if declared in DTYPES else "float32"


def build_manifest(
    *, dtype: str, parts: Sequence[str], source_format: str | None, sources: Sequence[str | os.PathLike]
) -> dict:
    """The manifest of a clvp-jax checkpoint: format and version, converter, dtype, groups, hashed sources."""
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "converter_version": converter_version(),
        "dtype": dtype,
        "parts": list(parts),
        "source_format": source_format,
        "sources": [source_record(s) for s in sources],
    }


def read_manifest(folder: Path) -> dict:
    """`folder/manifest.json`, verified to be a clvp-jax checkpoint of the version this code reads."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:  # ValueError: bad JSON or bad UTF-8
        raise CheckpointError(
            f"{folder}/manifest.json is missing or corrupt ({err}); expected the JSON manifest clvp-jax writes: "
            "re-create the checkpoint"
        ) from err
    if manifest.get("format") != CHECKPOINT_FORMAT or manifest.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{folder} holds format {manifest.get('format')!r} version {manifest.get('format_version')!r}; this "
            f"clvp-jax reads {CHECKPOINT_FORMAT!r} version {CHECKPOINT_VERSION}: convert it again"
        )
    return manifest
