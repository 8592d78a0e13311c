"""The one strict machinery of the waveform-stage converters: torch state dicts <-> Flax trees named after them.

Used by `tortoise_diffusion`, `tortoise_rlg`, `tortoise_cvvp` and `weight_norm_convert` (the vocoders); each of
those is then a small table (its leaf renames, its buffers, its weight-norm rule) over this file.

  naming     `Naming`: a Flax path segment `name_N_M` is the torch segments `name.N.M` (`layers_3/resblk/
             in_layers_2/weight` <-> `layers.3.resblk.in_layers.2.weight`), and a model's `LeafRename`s map a
             Flax leaf tail to its torch one (GroupNorm `scale` <-> `weight`), each one record for both directions
  targets    `abstract_params` (`jax.eval_shape` of the model's init: no weight is drawn) -> `key_table`:
             {torch key: `Target(path, shape, dtype)`}, the stored shape and dtype every key must have
  reading    `tree_from_state_dict`: every target filled, every source key consumed, ignored by name, or a buffer
             equal to the one the model recomputes; shapes and dtypes checked before any tensor is read
  writing    `state_dict_from_tree`: the tree must hold exactly the model's leaves, with their shapes and dtypes

Every problem is listed in one `WeightsMismatchError` (or the converter's subclass of it), keys by their torch
names on reading and by their Flax paths on writing. Values may be numpy arrays, torch tensors (CPU, memory-mapped
ones too) or a lazy reader with `specs()` (`clvp_jax.checkpoint.readers`). `load_pth` reads a `.pth` state dict.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from clvp_jax.checkpoint.errors import WeightsMismatchError
from clvp_jax.checkpoint.progress import report, size_of
from clvp_jax.checkpoint.readers import TensorSpec, tensor_to_numpy, torch_load_weights, torch_spec

Path = tuple[str, ...]
_INDEXED = re.compile(r"(.+?)((?:_\d+)+)")  # `residual_convs_2_3` -> `residual_convs`, `_2_3`


@dataclasses.dataclass(frozen=True)
class LeafRename:
    """One leaf whose Flax name differs from torch's, both ways.

    Applies to a leaf inside a submodule (a parameter of the root keeps its name).

    Attributes:
      flax: the Flax path's tail, e.g. ("scale",) (a GroupNorm gain) or ("norm", "scale") (only a `norm`'s).
      torch: the torch key's tail it stands for, e.g. "weight" or "norm.weight".
    """

    flax: Path
    torch: str


@dataclasses.dataclass(frozen=True)
class Naming:
    """torch key <-> Flax path: index segments joined with "_", then the model's leaf renames (first match wins).

    `torch_key` is what converters use (through `key_table`), so it is exact for any model. `flax_path` inverts it
    where each renamed torch tail only ever comes from a rename (CVVP: every `norm.weight` is a norm's `scale`); a
    model whose renames are not one-to-one (DiffusionTts: `scale` and `embedding` both become `weight`) has no
    inverse by name, only by its target table.
    """

    renames: tuple[LeafRename, ...] = ()

    def torch_key(self, path: Path) -> str:
        """Flax parameter path (below 'params') -> torch state-dict key."""
        head, tail = path[:-1], path[-1]
        for rename in self.renames:
            n = len(rename.flax)
            if len(path) >= 2 and len(path) >= n and path[-n:] == rename.flax:
                head, tail = path[:-n], rename.torch
                break
        segments = []
        for seg in head:
            m = _INDEXED.fullmatch(seg)
            segments += [m.group(1), *m.group(2)[1:].split("_")] if m else [seg]
        return ".".join([*segments, tail])

    def flax_path(self, key: str) -> Path:
        """torch state-dict key -> Flax parameter path (the inverse of `torch_key`, see the class docstring)."""
        tail: Path = ()
        for rename in self.renames:
            if key == rename.torch or key.endswith("." + rename.torch):
                rest = key[: -len(rename.torch)].rstrip(".")
                if len(_join_indices(rest)) + len(rename.flax) >= 2:
                    key, tail = rest, rename.flax
                    break
        return (*_join_indices(key), *tail)


PLAIN = Naming()  # no leaf renames


def _join_indices(key: str) -> Path:
    path: list[str] = []
    for seg in key.split(".") if key else ():
        if seg.isdigit() and path:
            path[-1] = f"{path[-1]}_{seg}"
        else:
            path.append(seg)
    return tuple(path)


class Target(NamedTuple):
    """What one stored key must hold: the Flax leaf it fills, its stored shape and dtype."""

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype


def abstract_params(init: Callable[..., Any], *inputs: Any) -> dict[Path, jax.ShapeDtypeStruct]:
    """Flat {path: ShapeDtypeStruct} of the 'params' that `init(key, *inputs)` makes (abstractly: no weight drawn)."""
    return dict(flatten_dict(jax.eval_shape(init, jax.random.key(0), *inputs)["params"]))


def key_table(leaves: Mapping[Path, jax.ShapeDtypeStruct], naming: Naming = PLAIN) -> dict[str, Target]:
    """{torch key: Target} of a model's leaves (stored as held: no layout change). Raises ValueError if two leaves
    would share a key (a naming rule that cannot be inverted: a bug of the converter, not of a checkpoint)."""
    table: dict[str, Target] = {}
    for path, spec in leaves.items():
        key = naming.torch_key(path)
        if key in table:
            raise ValueError(f"Flax leaves {'/'.join(table[key].path)} and {'/'.join(path)} both name torch key {key}")
        table[key] = Target(path, tuple(spec.shape), np.dtype(spec.dtype))
    return table


def as_numpy(value: Any) -> np.ndarray:
    """A numpy array, a CPU torch tensor (bfloat16 too) or anything array-like -> numpy, without a copy if possible."""
    return tensor_to_numpy(value) if hasattr(value, "detach") else np.asarray(value)


def _specs(state_dict: Mapping[str, Any]) -> dict[str, TensorSpec]:
    if hasattr(state_dict, "specs"):  # a lazy reader: nothing is read
        return dict(state_dict.specs())
    out = {}
    for key, value in state_dict.items():
        if hasattr(value, "detach"):
            out[key] = torch_spec(value)
        else:  # a value that is no array (a number, a string) gets a 0-d spec and fails the shape check
            array = np.asarray(value)
            out[key] = TensorSpec(tuple(array.shape), array.dtype)
    return out


def _raise(
    error: type[WeightsMismatchError],
    hint: str | None,
    context: str,
    missing: list[str],
    unexpected: list[str],
    mismatched: list[tuple[str, tuple, tuple]],
    mistyped: list[tuple[str, str, str]],
    other: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Raise `error` if anything is listed; a mis-typed entry adds the advice to cast to the hint."""
    other = {kind: list(entries) for kind, entries in (other or {}).items() if entries}
    if not (missing or unexpected or mismatched or mistyped or other):
        return
    hint = hint if hint is not None else (error.HINT or "")
    if mistyped:  # these converters cannot cast (the models are float32 throughout), so the user must
        wanted = "/".join(sorted({want for _, _, want in mistyped}))
        hint = f"The model holds {wanted} weights: cast the tensors to {wanted} first.\n{hint}"
    raise error(missing, unexpected, mismatched, context, mistyped, other=other, hint=hint.strip())


def flat_from_state_dict(
    state_dict: Mapping[str, Any],
    targets: Mapping[str, Target],
    *,
    ignored: Collection[str] = (),
    buffers: Mapping[str, np.ndarray] | None = None,
    other: Mapping[str, Sequence[str]] | None = None,
    context: str = "",
    hint: str | None = None,
    error: type[WeightsMismatchError] = WeightsMismatchError,
) -> dict[Path, np.ndarray]:
    """A state dict -> flat {Flax path: numpy array} (views where possible), strictly.

    Args:
      state_dict: torch key -> numpy array or torch tensor, or a lazy reader with `specs()`.
      targets: `key_table` of the model (or a converter's own table of stored keys, e.g. `weight_g`/`weight_v`).
      ignored: keys deliberately not loaded (none of the five waveform-stage files has any).
      buffers: keys that must hold exactly these values (what the model recomputes, e.g. rotary tables); they are
        checked and not returned.
      other: further problems the caller found, {kind: entries}, raised together with these.
      context: what is read, for the message's first line.
      hint: what to do, the message's last line (default `error.HINT`).
      error: `WeightsMismatchError` or a converter's subclass of it.
    Returns:
      {path: array} for every target, in the order of `targets`.
    Raises:
      error: listing every missing, unexpected, mis-shaped and mis-typed key, buffer of another value and `other`.
    """
    buffers = buffers or {}
    specs = _specs(state_dict)
    missing = sorted(k for k in (*targets, *buffers) if k not in specs)
    unexpected = sorted(k for k in specs if k not in targets and k not in buffers and k not in ignored)
    mismatched, mistyped, wrong_value = [], [], []
    wanted = {k: (t.shape, t.dtype) for k, t in targets.items()}
    wanted |= {k: (tuple(v.shape), v.dtype) for k, v in buffers.items()}
    for key in sorted(wanted.keys() & specs.keys()):
        (shape, dtype), got = wanted[key], specs[key]
        if tuple(got.shape) != shape:
            mismatched.append((key, tuple(got.shape), shape))
        elif got.dtype != dtype:
            mistyped.append((key, np.dtype(got.dtype).name, np.dtype(dtype).name))
        elif key in buffers and not np.array_equal(as_numpy(state_dict[key]), buffers[key]):
            wrong_value.append(f"{key} (not the buffer the model computes)")
    kinds = {"wrong value": wrong_value, **(other or {})}
    _raise(error, hint, context, missing, unexpected, mismatched, mistyped, kinds)
    return {target.path: as_numpy(state_dict[key]) for key, target in targets.items()}


def tree_from_state_dict(state_dict: Mapping[str, Any], targets: Mapping[str, Target], **kwargs: Any) -> dict:
    """`flat_from_state_dict` (same arguments) as a nested params tree."""
    return unflatten_dict(flat_from_state_dict(state_dict, targets, **kwargs))


def check_tree(
    tree: Mapping[str, Any],
    leaves: Mapping[Path, jax.ShapeDtypeStruct],
    *,
    context: str = "parameter tree",
    hint: str | None = None,
    error: type[WeightsMismatchError] = WeightsMismatchError,
) -> dict[Path, np.ndarray]:
    """Flat numpy view of a params tree, after checking it holds exactly `leaves` (shapes, dtypes); the errors name
    Flax paths ("a/b/weight")."""
    flat = {p: np.asarray(v) for p, v in flatten_dict(dict(tree)).items()}
    missing = sorted("/".join(p) for p in leaves if p not in flat)
    unexpected = sorted("/".join(p) for p in flat if p not in leaves)
    mismatched, mistyped = [], []
    for path in sorted(leaves.keys() & flat.keys()):
        got, want = flat[path], leaves[path]
        if got.shape != tuple(want.shape):
            mismatched.append(("/".join(path), got.shape, tuple(want.shape)))
        elif got.dtype != want.dtype:
            mistyped.append(("/".join(path), got.dtype.name, np.dtype(want.dtype).name))
    _raise(error, hint, context, missing, unexpected, mismatched, mistyped)
    return flat


def state_dict_from_tree(
    tree: Mapping[str, Any],
    leaves: Mapping[Path, jax.ShapeDtypeStruct],
    naming: Naming = PLAIN,
    *,
    buffers: Mapping[str, np.ndarray] | None = None,
    **kwargs: Any,
) -> dict[str, np.ndarray]:
    """A params tree -> the torch state dict (fresh C-ordered numpy arrays, in the order of `leaves`), with
    `buffers` added; checked first by `check_tree` (keyword arguments go to it)."""
    flat = check_tree(tree, leaves, **kwargs)
    out = {naming.torch_key(path): np.array(flat[path], order="C") for path in leaves}
    return out | {key: np.array(value) for key, value in (buffers or {}).items()}


def load_pth(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A `.pth` holding a plain state dict -> {key: numpy array} (views of the memory-mapped tensors).

    Read by `readers.torch_load_weights` (`torch.load(weights_only=True)`): raises ImportError naming the
    `[torch]` extra without torch, `CheckpointError` for a missing, corrupt or non-state-dict file.
    """
    report(f"reading {os.path.basename(path)} ({size_of(path)})")
    return {key: tensor_to_numpy(value) for key, value in torch_load_weights(path).items()}
