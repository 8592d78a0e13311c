"""Lazy tensor readers: safetensors files and torch `.bin`/`.pth` files as read-only numpy mappings.

Each reader is a `Mapping[str, np.ndarray]` whose `specs()` gives every tensor's shape and dtype without reading
data, so a strict check happens before any tensor is read; a tensor is read on access. `tensor_specs` gives the
same for any plain mapping of arrays. Torch is imported lazily, only for `.bin`/`.pth` files, which are always
read with `torch.load(..., weights_only=True, map_location="cpu")`, memory-mapped when the file allows it.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from clvp_jax.checkpoint.dtypes import SAFETENSORS_DTYPES
from clvp_jax.checkpoint.errors import CheckpointError, import_torch


class TensorSpec(NamedTuple):
    """A stored tensor's shape and numpy dtype (bfloat16 is ml_dtypes')."""

    shape: tuple[int, ...]
    dtype: np.dtype


def tensor_specs(state: Mapping[str, Any]) -> dict[str, TensorSpec]:
    """{key: TensorSpec} of a reader (from its `specs()`, reading nothing) or of a plain mapping of arrays."""
    if hasattr(state, "specs"):
        return dict(state.specs())
    return {k: TensorSpec(tuple(np.shape(v)), np.asarray(v).dtype) for k, v in state.items()}


CAST_CHUNK_BYTES = 4 << 20  # `SafetensorsReader.read`'s buffer for casting while reading


def read_tensor(state: Mapping[str, Any], key: str, dtype: Any = None) -> np.ndarray:
    """`state[key]` as numpy, cast to `dtype` (None: as stored), by the reader's own `read` where it has one
    (`SafetensorsReader.read` casts while reading, with no full-size copy in the stored dtype)."""
    if hasattr(state, "read"):
        return state.read(key, dtype)
    value = np.asarray(state[key])
    return value.astype(dtype) if dtype is not None and value.dtype != dtype else value


class SafetensorsReader(Mapping):
    """A lazy, read-only view of one or several (sharded) safetensors files as numpy arrays.

    `specs()` comes from the file headers. A header whose offsets run past the end of the file (a truncated
    download) raises `CheckpointError` at construction. Tensors are read with plain file reads into fresh arrays;
    `read(key, dtype)` casts while reading.
    """

    # Not safetensors.safe_open: reading 512 MiB peaked 1024 MiB above baseline with it kept open, 524 reopened per
    # tensor (16x slower on 800 tensors), 512 with these reads (benchmarks/read_safetensors_memory.py).

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        self.paths = tuple(Path(p) for p in paths)
        self._where: dict[str, tuple[Path, TensorSpec, int]] = {}
        for path in self.paths:
            data_start, header = _read_safetensors_header(path)
            for key, info in header.items():
                if key == "__metadata__":
                    continue
                if key in self._where:
                    raise CheckpointError(f"tensor {key!r} is stored twice ({self._where[key][0]} and {path})")
                try:
                    dtype = np.dtype(SAFETENSORS_DTYPES[info["dtype"]])
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
                self._where[key] = (path, TensorSpec(shape, dtype), data_start + begin)

    @classmethod
    def from_folder(cls, folder: Path) -> SafetensorsReader:
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            return cls([folder / f for f in shard_files(index)])
        return cls([folder / "model.safetensors"])

    def specs(self) -> dict[str, TensorSpec]:
        return {key: where[1] for key, where in self._where.items()}

    def __getitem__(self, key: str) -> np.ndarray:
        path, (shape, dtype), offset = self._where[key]
        count = int(np.prod(shape, dtype=np.int64))
        return np.fromfile(path, dtype=dtype, count=count, offset=offset).reshape(shape)

    def read(self, key: str, dtype: Any = None) -> np.ndarray:
        """Tensor `key` cast to `dtype` as it is read (None, or its stored dtype: the same as `self[key]`).

        The cast goes through one small buffer (`CAST_CHUNK_BYTES` of the stored dtype), reused, never through a
        full-size copy in the stored dtype: loading float32 files as bf16 allocates the bf16 tensors only, so
        the heap is left without the freed float32 tensors' holes (which glibc keeps resident until trimmed).
        """
        path, (shape, stored), offset = self._where[key]
        if dtype is None or np.dtype(dtype) == stored:
            return self[key]
        out = np.empty(shape, dtype)
        flat = out.reshape(-1)
        buf = np.empty(max(1, min(flat.size, CAST_CHUNK_BYTES // stored.itemsize)), stored)
        with open(path, "rb") as f:
            f.seek(offset)
            for start in range(0, flat.size, buf.size):
                part = buf[: min(buf.size, flat.size - start)]
                if f.readinto(part.view(np.uint8)) != part.nbytes:  # the header check makes this a race
                    raise CheckpointError(f"{path} was truncated while tensor {key!r} was read; re-download it")
                flat[start : start + part.size] = part  # the cast (numpy's, as astype's)
        return out

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


def shard_files(index: Path) -> list[str]:
    """The shard file names a `*.index.json` lists (sorted, each once)."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as err:
        raise CheckpointError(f"{index} is not a valid shard index ({err}); re-download it") from err
    return sorted(set(weight_map.values()))


_TORCH_FORM = "expected a file written by torch.save (a zip archive, or a legacy pickle)"
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = b"\x80"  # a pickle of protocol 2 or more opens with PROTO (0x80) and the protocol number


def _unpickler_detail(err: BaseException) -> str:
    """The line of torch's weights-only refusal that says what it met ('Unsupported global: ...'), else its first."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or line.startswith(("Unsupported", "Trying to", "Can only")):
            return line[:200]
    return lines[0][:200] if lines else type(err).__name__


def _first_sentence(err: BaseException) -> str:
    """The first sentence of an error (torch appends paragraphs of advice that do not fit one line)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.split(". ")[0][:200]


def _check_torch_file(path: Path) -> None:
    """Refuse, before torch parses it, a file that cannot be a torch checkpoint (empty, or another kind of file)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes); {_TORCH_FORM}: re-download it")
    if head != _ZIP_MAGIC and not (head[:1] == _PICKLE_PROTOCOL and 2 <= head[1] <= 5):
        raise CheckpointError(
            f"{path} is not a torch checkpoint (it starts with bytes {head.hex()}); {_TORCH_FORM}: check the file "
            "name, or re-download it"
        )


def torch_load(path: str | os.PathLike) -> Any:
    """`torch.load(path, weights_only=True, map_location="cpu")`, memory-mapped when possible: whatever plain
    containers and tensors the file holds (`torch_load_weights` for a state dict).

    Raises `MissingTorchError` (an ImportError) naming the `[torch]` extra when torch is not installed, and
    `CheckpointError` for a missing, truncated or corrupt file and for a pickle that would need to run code
    (refused by torch's weights-only unpickler).
    """
    import pickle

    path = Path(path)
    # torch is an optional extra, needed only for .bin / .pth files: MissingTorchError (an ImportError) names it.
    torch = import_torch(path)
    if not path.is_file():
        raise CheckpointError(f"missing weights file {path}")
    _check_torch_file(path)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) files cannot be mmapped
    except pickle.UnpicklingError as err:
        detail = _unpickler_detail(err)
        if "GLOBAL" not in str(err) and "Unsupported global" not in str(err):  # an unknown opcode: damage
            raise CheckpointError(
                f"cannot read {path}: its pickle is damaged ({detail}); {_TORCH_FORM}: re-download it"
            ) from err
        raise CheckpointError(
            f"refused to load {path}: it is not a plain tensor checkpoint (its pickle asks to run or build "
            f"arbitrary objects, which weights_only loading forbids: {detail}). Only load files from sources you "
            "trust; re-save it as a plain state dict"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"cannot read {path}: truncated or corrupt ({_first_sentence(err)}); {_TORCH_FORM}: re-download it"
        ) from err


def torch_load_weights(path: str | os.PathLike) -> dict[str, Any]:
    """The state dict (name -> torch tensor) of a `.bin` / `.pth` file, read by `torch_load`.

    A common training-script wrapper (`{"state_dict": ...}`, `{"model": ...}`) around it is removed. Raises
    what `torch_load` raises, and `CheckpointError` for content that is not a mapping of names to tensors.
    """
    obj = torch_load(path)  # first: it names the [torch] extra when torch is missing
    import torch

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
        return tensor.view(torch.int16).numpy().view(np.dtype("bfloat16"))
    return tensor.numpy()


def torch_spec(tensor: Any) -> TensorSpec:
    """A torch tensor's TensorSpec, without reading its data."""
    name = str(tensor.dtype).removeprefix("torch.")
    try:
        return TensorSpec(tuple(tensor.shape), np.dtype(name))
    except TypeError as err:
        raise CheckpointError(
            f"a tensor of dtype {name} (shape {tuple(tensor.shape)}) has no numpy equivalent; re-save the "
            "checkpoint in float32, bfloat16 or float16"
        ) from err


class TorchReader(Mapping):
    """torch state dict file(s) (loaded weights-only and mmapped) as a lazy numpy mapping with `.specs()`."""

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        self.paths = tuple(Path(p) for p in paths)
        self._tensors: dict[str, Any] = {}
        for path in self.paths:
            for key, value in torch_load_weights(path).items():
                if key in self._tensors:
                    raise CheckpointError(f"tensor {key!r} is stored twice (again in {path})")
                self._tensors[key] = value

    @classmethod
    def from_folder(cls, folder: Path) -> TorchReader:
        index = folder / "pytorch_model.bin.index.json"
        if index.is_file():
            return cls([folder / f for f in shard_files(index)])
        return cls([folder / "pytorch_model.bin"])

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Any], paths: Sequence[str | os.PathLike] = ()) -> TorchReader:
        """A reader over already loaded torch tensors (e.g. from `torch_load_weights`)."""
        reader = cls(())
        reader.paths, reader._tensors = tuple(Path(p) for p in paths), dict(tensors)
        return reader

    def specs(self) -> dict[str, TensorSpec]:
        return {k: torch_spec(v) for k, v in self._tensors.items()}

    def __getitem__(self, key: str) -> np.ndarray:
        return tensor_to_numpy(self._tensors[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def open_hf_state_dict(folder: Path) -> SafetensorsReader | TorchReader:
    """The lazy state-dict reader of an HF folder (safetensors preferred over .bin)."""
    if (folder / "model.safetensors.index.json").is_file() or (folder / "model.safetensors").is_file():
        return SafetensorsReader.from_folder(folder)
    return TorchReader.from_folder(folder)
