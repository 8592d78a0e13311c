"""Checkpoint formats: detection, `from_pretrained`, lazy tensor readers and clvp-jax checkpoint loading.

Three on-disk formats are read, auto-detected by `detect_format`:

  "hf"        an HF folder: `config.json` + `model.safetensors`, a sharded `model.safetensors.index.json`,
              or `pytorch_model.bin` (also sharded, `pytorch_model.bin.index.json`).
  "clvp-jax"  our checkpoint: `config.json` + `manifest.json` (provenance: source sha256s, converter version,
              dtype, parameter groups) + `params/<group>/` (one orbax-checkpoint item per parameter group).
  "tortoise"  the original Tortoise files: a folder with `autoregressive.pth` and/or `clvp2.pth` (optionally
              `original_config.json`), or one such `.pth` file; converted on the fly by `convert.original`.

Every name -> parameter mapping goes through the strict rule table in `clvp_jax.weights`. Torch is imported
lazily, only to read `.bin`/`.pth` files, always with `torch.load(..., weights_only=True, map_location="cpu")`,
memory-mapped when the file allows it. Writing (clvp-jax checkpoints, the HF export) is in `clvp_jax.writing`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np

from clvp_jax.config import ClvpConfig
from clvp_jax.host_memory import release_freed_memory
from clvp_jax.weights import (
    ALL_PARTS,
    check_params,
    state_dict_to_params,
)

Format = Literal["hf", "clvp-jax", "tortoise"]
CHECKPOINT_FORMAT = "clvp-jax"
# Version 2: linear weights are torch's [out, in] leaves named `weight` (version 1 stored Flax [in, out] `kernel`s).
CHECKPOINT_VERSION = 2
DTYPES = ("float32", "bfloat16", "float16")
_ST_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


class CheckpointError(ValueError):
    """A checkpoint file or folder that cannot be read or written safely; the message says what to do."""


def converter_version() -> str:
    from clvp_jax import __version__  # local: the package imports this module

    return f"clvp-jax {__version__}"


def as_dtype(dtype: Any) -> np.dtype | None:
    """None, 'float32'|'bfloat16'|'float16', or a numpy/jax dtype -> numpy dtype (None stays None)."""
    if dtype is None:
        return None
    dt = jax.numpy.dtype(dtype)
    if dt.name not in DTYPES:
        raise CheckpointError(f"unsupported dtype {dt.name!r}; use one of {', '.join(DTYPES)}")
    return dt


def _is_float(dtype: Any) -> bool:
    return bool(jax.numpy.issubdtype(dtype, jax.numpy.floating))  # numpy's own test misses ml_dtypes' bfloat16


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Lazy readers (Mapping[str, np.ndarray] with `.shapes()`, read tensor by tensor)


class SafetensorsReader(Mapping):
    """A lazy, read-only view of one or several (sharded) safetensors files as numpy arrays.

    `shapes()` comes from the file headers, so a strict shape check happens before any tensor is read. A header
    whose offsets run past the end of the file (a truncated download) raises `CheckpointError` at construction.
    Tensors are read with plain file reads into fresh arrays, not through a memory map: mapped pages would stay
    resident (and count in the process's memory) until the reader is gone, doubling the peak while loading.
    """

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        self.paths = tuple(Path(p) for p in paths)
        self._where: dict[str, tuple[Path, np.dtype, tuple[int, ...], int]] = {}
        for path in self.paths:
            data_start, header = _read_safetensors_header(path)
            for key, info in header.items():
                if key == "__metadata__":
                    continue
                if key in self._where:
                    raise CheckpointError(f"tensor {key!r} is stored twice ({self._where[key][0]} and {path})")
                try:
                    dtype = np.dtype(jax.numpy.dtype(_ST_DTYPES[info["dtype"]]))
                    shape = tuple(int(d) for d in info["shape"])
                    begin, stop = (int(o) for o in info["data_offsets"])
                except (KeyError, TypeError, ValueError) as err:
                    raise CheckpointError(
                        f"{path} is not a valid safetensors file (tensor {key!r}: {err}); it is corrupt, re-download it"
                    ) from err
                if stop - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
                    raise CheckpointError(
                        f"{path} is not a valid safetensors file (tensor {key!r}: {stop - begin} bytes for shape "
                        f"{shape} of {dtype.name}); it is corrupt, re-download it"
                    )
                self._where[key] = (path, dtype, shape, data_start + begin)

    @classmethod
    def from_folder(cls, folder: Path) -> SafetensorsReader:
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            return cls([folder / f for f in _shard_files(index)])
        return cls([folder / "model.safetensors"])

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: where[2] for key, where in self._where.items()}

    def __getitem__(self, key: str) -> np.ndarray:
        path, dtype, shape, offset = self._where[key]
        count = int(np.prod(shape, dtype=np.int64))
        return np.fromfile(path, dtype=dtype, count=count, offset=offset).reshape(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def _read_safetensors_header(path: Path) -> tuple[int, dict[str, Any]]:
    """(offset of the data section, header dict); fails clearly on a truncated or corrupt file."""
    size = path.stat().st_size if path.is_file() else -1
    if size < 0:
        raise CheckpointError(f"missing weights file {path}")
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, struct.error) as err:
        raise CheckpointError(f"{path} is not a valid safetensors file ({err}); it is corrupt, re-download it") from err
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path} is truncated: its header describes {8 + n + end} bytes but the file has {size}; re-download it"
        )
    return 8 + n, header


def _shard_files(index: Path) -> list[str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as err:
        raise CheckpointError(f"{index} is not a valid shard index ({err}); re-download it") from err
    return sorted(set(weight_map.values()))


def torch_load_weights(path: str | os.PathLike) -> dict[str, Any]:
    """`torch.load(path, weights_only=True, map_location="cpu")`, memory-mapped when possible.

    Returns the dict of tensors. Raises `CheckpointError` for a missing, truncated or corrupt file, for a pickle
    that would need to run code (refused by torch's weights-only unpickler), and for content that is not tensors.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing weights file {path}")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) files cannot be mmapped
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refused to load {path}: it is not a plain tensor checkpoint (its pickle asks to run or build "
            f"arbitrary objects, which weights_only loading forbids). Only load files from sources you trust; "
            f"re-save it as a plain state dict. Details: {str(err).splitlines()[0]}"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(
            f"cannot read {path}: truncated or corrupt ({str(err).splitlines()[0]}); re-download it"
        ) from err
    if isinstance(obj, Mapping) and not any(torch.is_tensor(v) for v in obj.values()):
        for wrapper in ("state_dict", "model"):  # common training-script wrappers around the state dict
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(obj)


def tensor_to_numpy(tensor: Any) -> np.ndarray:
    """A CPU torch tensor -> numpy without a copy where possible (bfloat16 via a bit view to ml_dtypes)."""
    import torch

    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(jax.numpy.bfloat16)
    return tensor.numpy()


class TorchReader(Mapping):
    """`pytorch_model.bin` file(s) (loaded weights-only and mmapped) as a lazy numpy mapping with `.shapes()`."""

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        self.paths = tuple(Path(p) for p in paths)
        self._tensors: dict[str, Any] = {}
        for path in paths:
            for key, value in torch_load_weights(path).items():
                if key in self._tensors:
                    raise CheckpointError(f"tensor {key!r} is stored twice (again in {path})")
                self._tensors[key] = value

    @classmethod
    def from_folder(cls, folder: Path) -> TorchReader:
        index = folder / "pytorch_model.bin.index.json"
        if index.is_file():
            return cls([folder / f for f in _shard_files(index)])
        return cls([folder / "pytorch_model.bin"])

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self._tensors.items()}

    def __getitem__(self, key: str) -> np.ndarray:
        return tensor_to_numpy(self._tensors[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


# ----------------------------------------------------------------------------------------------------------------
# Detection and loading

_HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_TORTOISE_FILES = ("autoregressive.pth", "clvp2.pth")


def detect_format(path: str | os.PathLike) -> Format:
    """'clvp-jax', 'hf' or 'tortoise' for a checkpoint folder (or a single original `.pth` file)."""
    path = Path(path)
    if path.is_file() and path.suffix in (".pth", ".pt"):
        return "tortoise"
    if not path.is_dir():
        raise CheckpointError(f"{path} does not exist or is not a checkpoint folder / .pth file")
    if (path / "manifest.json").is_file() and (path / "params").is_dir():
        return "clvp-jax"
    if (path / "config.json").is_file() and any((path / f).is_file() for f in _HF_WEIGHTS):
        return "hf"
    if any((path / f).is_file() for f in _TORTOISE_FILES):
        return "tortoise"
    raise CheckpointError(
        f"{path} is not a known checkpoint: expected an HF folder (config.json + model.safetensors or "
        f"pytorch_model.bin), a clvp-jax checkpoint (manifest.json + params/), or original Tortoise files "
        f"({' / '.join(_TORTOISE_FILES)})"
    )


@dataclasses.dataclass(frozen=True)
class LoadedCheckpoint:
    """What `load_params` read. Attributes: config; params (numpy tree); format; sources (files read);
    parts (top-level parameter groups present, see `clvp_jax.weights.ALL_PARTS`); manifest (clvp-jax only)."""

    config: ClvpConfig
    params: dict
    format: Format
    sources: tuple[Path, ...]
    parts: tuple[str, ...]
    manifest: dict | None = None


def open_hf_state_dict(folder: Path) -> Mapping:
    """The lazy state-dict reader of an HF folder (safetensors preferred over .bin)."""
    if (folder / "model.safetensors.index.json").is_file() or (folder / "model.safetensors").is_file():
        return SafetensorsReader.from_folder(folder)
    return TorchReader.from_folder(folder)


def load_params(path: str | os.PathLike, *, dtype: Any = None, **original_options: Any) -> LoadedCheckpoint:
    """Read any supported checkpoint into a config and a strict numpy parameter tree.

    Args:
      path: a checkpoint folder (any format) or an original `.pth` file.
      dtype: cast floating parameters to 'float32' | 'bfloat16' | 'float16' (default: as stored).
      **original_options: for the original format only, see `convert.original.load_original` (e.g. `heads`).
    Raises:
      CheckpointError, WeightsMismatchError, ConfigError: with a message naming the problem.
    """
    path = Path(path)
    fmt = detect_format(path)
    dt = as_dtype(dtype)
    if original_options and fmt != "tortoise":
        raise CheckpointError(f"options {sorted(original_options)} only apply to original Tortoise checkpoints")
    if fmt == "clvp-jax":
        return load_checkpoint(path, dtype=dt)
    if fmt == "hf":
        config = ClvpConfig.from_pretrained(path)
        reader = open_hf_state_dict(path)
        params = state_dict_to_params(reader, config, dtype=dt)
        sources = (path / "config.json", *reader.paths)
        return LoadedCheckpoint(config, params, "hf", sources, ALL_PARTS)
    from convert.original import load_original  # local: the converter package sits above the library

    orig = load_original(path, **original_options)
    params = state_dict_to_params(orig.state_dict, orig.config, dtype=dt, parts=orig.parts)
    return LoadedCheckpoint(orig.config, params, "tortoise", orig.sources, orig.parts)


def from_pretrained(
    path: str | os.PathLike, *, dtype: Any = None, masked_pooling: bool = True, **original_options: Any
):
    """Load a model from an HF folder, a clvp-jax checkpoint or original Tortoise files (auto-detected).

    Args:
      path: see `load_params`.
      dtype: parameter and compute dtype ('float32', 'bfloat16', 'float16'); default: as stored.
      masked_pooling: see `ClvpModelForConditionalGeneration`.
      **original_options: original format only (e.g. `heads=16`), see `convert.original.load_original`.
    Returns:
      (ClvpModelForConditionalGeneration, params) with params as jax arrays. An autoregressive-only checkpoint
      gives params with `conditioning_encoder`, `speech_decoder_model` and a placeholder `logit_scale` (the
      config's initial value), no CLVP towers: conditioning and code generation work, scoring does not.
    """
    from clvp_jax.model import ClvpModelForConditionalGeneration

    loaded = load_params(path, dtype=dtype, **original_options)
    params = _to_device(loaded.params)
    if "logit_scale" not in params:
        # The composite module creates `logit_scale` eagerly in setup, so even its conditioning encoder and decoder
        # cannot run without one. An autoregressive-only checkpoint has none: use the config's initial value (it
        # only scales CLVP scores, which need the missing towers anyway).
        params["logit_scale"] = jax.numpy.asarray(loaded.config.logit_scale_init_value, jax.numpy.float32)
    stored = {leaf.dtype for leaf in jax.tree_util.tree_leaves(params) if _is_float(leaf.dtype)}
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


def _cast(params: Mapping, dt: np.dtype | None) -> dict:
    def cast(x):
        x = np.asarray(x)
        return x.astype(dt) if dt is not None and _is_float(x.dtype) and x.dtype != dt else x

    return jax.tree_util.tree_map(cast, dict(params))


def _float_dtype(params: Mapping) -> str:
    kinds = {np.asarray(x).dtype.name for x in jax.tree_util.tree_leaves(params) if _is_float(x.dtype)}
    if len(kinds) != 1:
        raise CheckpointError(f"parameters mix floating dtypes {sorted(kinds)}; pass dtype= to pick one")
    return kinds.pop()


def load_checkpoint(folder: str | os.PathLike, *, dtype: Any = None) -> LoadedCheckpoint:
    """Read a clvp-jax checkpoint, verifying its manifest (format, version, dtype, parameter groups) and tree."""
    import orbax.checkpoint as ocp

    folder = Path(folder).absolute()
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"{folder}/manifest.json is missing or corrupt ({err}); re-create the checkpoint"
        ) from err
    if manifest.get("format") != CHECKPOINT_FORMAT or manifest.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{folder} holds format {manifest.get('format')!r} version {manifest.get('format_version')!r}; this "
            f"clvp-jax reads {CHECKPOINT_FORMAT!r} version {CHECKPOINT_VERSION}: convert it again"
        )
    config = ClvpConfig.from_pretrained(folder)
    parts = tuple(manifest.get("parts", ()))
    try:
        with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
            params = {}
            for part in parts:
                params.update(checkpointer.restore(folder / "params" / part))
    except Exception as err:  # orbax/tensorstore raise many types for damaged data
        raise CheckpointError(
            f"cannot read the parameters in {folder}/params ({err}); re-create the checkpoint"
        ) from err
    params = jax.tree_util.tree_map(np.asarray, dict(params))
    check_params(params, config, parts)
    if _float_dtype(params) != manifest.get("dtype"):
        raise CheckpointError(
            f"{folder}: parameters are {_float_dtype(params)} but the manifest says {manifest.get('dtype')}"
        )
    params = _cast(params, as_dtype(dtype))
    # Re-converting records this checkpoint's own files, whose manifest names the original sources.
    sources = (folder / "config.json", folder / "manifest.json")
    return LoadedCheckpoint(config, params, "clvp-jax", sources, parts, manifest)
