"""Writing checkpoints: clvp-jax checkpoints (`save_checkpoint`), the HF export (`export_hf`), streamed safetensors.

Every output is written into a temporary sibling folder that replaces the target only when complete
(`atomic_output_folder`), so a failure never leaves a partial checkpoint; an existing output is replaced only with
`force=True`. The formats are described in `clvp_jax.checkpoint.format`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from clvp_jax.checkpoint.dtypes import SAFETENSORS_DTYPES, as_dtype, cast_floats, float_dtype
from clvp_jax.checkpoint.errors import CheckpointError
from clvp_jax.checkpoint.format import build_manifest
from clvp_jax.checkpoint.rules import ALL_PARTS, check_params, params_to_state_dict
from clvp_jax.config import ClvpConfig, write_text_atomic

_SAFETENSORS_CODES = {name: code for code, name in SAFETENSORS_DTYPES.items()}


@contextlib.contextmanager
def atomic_output_folder(target: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary sibling folder; on success it replaces `target`, on failure it is deleted.

    Raises FileExistsError up front when `target` exists and `force` is False.
    """
    target = Path(target).absolute()
    if target.exists() and not force:
        raise FileExistsError(f"{target} already exists; choose another output or pass --force (force=True)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_checkpoint(
    folder: str | os.PathLike,
    config: ClvpConfig,
    params: Mapping,
    *,
    sources: Sequence[str | os.PathLike] = (),
    dtype: Any = None,
    force: bool = False,
    source_format: str | None = None,
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
    Returns:
      The folder path.
    """
    import orbax.checkpoint as ocp  # local: orbax is slow to import and only this format needs it

    params = cast_floats(params, as_dtype(dtype))
    parts = tuple(p for p in ALL_PARTS if p in params)
    check_params(params, config, parts)
    manifest = build_manifest(dtype=float_dtype(params), parts=parts, source_format=source_format, sources=sources)
    with atomic_output_folder(folder, force=force) as tmp:
        config.save_pretrained(tmp)
        # One synchronous orbax item per parameter group (params/<group>): orbax copies whatever one save call
        # holds, so this bounds the extra memory by the largest group instead of the whole model.
        with ocp.Checkpointer(ocp.StandardCheckpointHandler(save_concurrent_gb=1)) as checkpointer:
            for part in parts:
                checkpointer.save(tmp / "params" / part, args=ocp.args.StandardSave({part: params[part]}))
        write_text_atomic(tmp / "manifest.json", json.dumps(manifest, indent=2) + "\n")
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
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for key in keys:
            f.write(np.ascontiguousarray(tensors[key]).tobytes())


def export_hf(folder: str | os.PathLike, config: ClvpConfig, params: Mapping, *, force: bool = False) -> Path:
    """Write an HF-format folder (`config.json` + `model.safetensors`) that transformers loads strictly.

    The params must hold the whole model (the HF class has no autoregressive-only variant).
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
    with atomic_output_folder(folder, force=force) as tmp:
        write_text_atomic(tmp / "config.json", json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
        write_safetensors(tmp / "model.safetensors", state, {"format": "pt"})
    return Path(folder)
