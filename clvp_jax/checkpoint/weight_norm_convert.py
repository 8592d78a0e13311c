"""The strict two-way rule table between weight-normed convolution state dicts (Tortoise's `vocoder.pth` and
`hifidecoder.pth`) and Flax parameter trees whose submodule names follow the torch keys.

The rules, the same for every model that uses this file:

  path      torch `res_stack.0.convt_pre.1.weight` <-> Flax `res_stack_0/convt_pre_1/weight`: an index segment joins
            the name before it with "_" (`residual_convs.2.3` <-> `residual_convs_2_3`, `convs1.0` <-> `convs1_0`)
  layout    none: the Flax modules hold torch's layouts (`clvp_jax.waveform.conv`)
  weights   a weight-normed conv stores `weight_g` [d0, 1, ..] and `weight_v` (torch's `weight_norm`, dim 0: the
            output channel of a Conv1d, the INPUT channel of a ConvTranspose1d); reading folds them into `weight`
            (`fold_weight_norm`); a state dict whose weight norm was already removed (`*.weight` only) is read as
            is. One form per state dict: a file that mixes them is reported.
  writing   folded `weight`s, or the weight-norm form with v = w and g = ||v|| (what the original modules load
            before `remove_weight_norm`; it folds back to w within float32 rounding, not bit for bit).

Every source key must be consumed; every target leaf filled with the shape and dtype of `jax.eval_shape` of the
model's init; everything wrong is reported at once in one `StateDictMismatchError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from clvp_jax.checkpoint.readers import tensor_to_numpy
from clvp_jax.waveform.conv import fold_weight_norm

Path = tuple[str, ...]
_INDEXED_SEGMENT = re.compile(r"(.+?)((?:_\d+)+)")


class StateDictMismatchError(ValueError):
    """A state dict (or parameter tree) that does not fit the model; lists every problem found."""

    def __init__(self, context: str, hint: str, problems: Mapping[str, list[str]]) -> None:
        self.problems = {kind: list(items) for kind, items in problems.items() if items}
        lines = [f"{context} does not match the model:"]
        for kind, items in self.problems.items():
            shown = ", ".join(items[:30]) + (f", ... ({len(items) - 30} more)" if len(items) > 30 else "")
            lines.append(f"  {kind} ({len(items)}): {shown}")
        lines.append(hint)
        super().__init__("\n".join(lines))


def flax_path(key: str) -> Path:
    """torch key -> Flax path: `res_stack.0.kernel_predictor.residual_convs.2.3.bias` ->
    (`res_stack_0`, `kernel_predictor`, `residual_convs_2_3`, `bias`)."""
    out: list[str] = []
    for part in key.split("."):
        if part.isdigit() and out:
            out[-1] += f"_{part}"
        else:
            out.append(part)
    return tuple(out)


def torch_key(path: Path) -> str:
    """Flax path -> torch key (the inverse of `flax_path`)."""
    parts = []
    for seg in path:
        m = _INDEXED_SEGMENT.fullmatch(seg)
        parts.append(m.group(1) + m.group(2).replace("_", ".") if m else seg)
    return ".".join(parts)


def as_numpy(value: Any) -> np.ndarray:
    """A numpy array or a CPU torch tensor -> numpy (no copy where possible)."""
    return tensor_to_numpy(value) if hasattr(value, "detach") else np.asarray(value)


def expected_leaves(init: Callable[..., Any], *inputs: Any) -> dict[Path, jax.ShapeDtypeStruct]:
    """Flat {path: ShapeDtypeStruct} of the params `init(key, *inputs)` makes (abstractly, no weights drawn)."""
    shapes = jax.eval_shape(init, jax.random.key(0), *inputs)["params"]
    return dict(flatten_dict(shapes))


def stored_shape(state_dict: Mapping[str, Any], module: str) -> tuple[int, ...] | None:
    """Shape of the weight of the conv at `module` (`weight_v` or the folded `weight`), None when absent.
    Reads only `.shape`, so arrays, tensors (meta ones too) and `jax.ShapeDtypeStruct`s all do."""
    for leaf in ("weight_v", "weight"):
        if f"{module}.{leaf}" in state_dict:
            return tuple(state_dict[f"{module}.{leaf}"].shape)
    return None


def indices(state_dict: Mapping[str, Any], pattern: str) -> list[int]:
    """The sorted distinct integers captured by `pattern` (one group) at the start of the keys."""
    return sorted({int(m.group(1)) for k in state_dict if (m := re.match(pattern, k))})


def _module(key: str) -> str:
    return key.rsplit(".", 1)[0]


def read(
    state_dict: Mapping[str, Any],
    expected: Mapping[Path, jax.ShapeDtypeStruct],
    weight_normed: Callable[[str], bool],
    *,
    context: str,
    hint: str,
) -> dict:
    """A weight-norm (or already folded) state dict -> the nested Flax params, strictly.

    Args:
      state_dict: torch key -> array (numpy or torch).
      expected: `expected_leaves` of the model.
      weight_normed: whether the conv at a module prefix (e.g. `ups.0`) is weight-normed in the original.
      context: what is read, for the error message (e.g. "vocoder.pth['model_g']").
      hint: what to do about a mismatch, appended to the error message.

    Returns:
      the params tree (float32 numpy leaves, the folded weights computed in float64 and rounded once).

    Raises:
      StateDictMismatchError: listing every missing, unexpected, mis-shaped and wrongly typed key.
    """
    values = {k: as_numpy(v) for k, v in state_dict.items()}
    folded_form = not any(k.endswith(".weight_g") or k.endswith(".weight_v") for k in values)
    missing: list[str] = []
    mis_shaped: list[str] = []
    wrong_dtype: list[str] = []
    consumed: set[str] = set()
    flat = {}

    def take(key: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
        if key not in values:
            missing.append(key)
            return None
        consumed.add(key)
        value = values[key]
        if tuple(value.shape) != tuple(shape):
            mis_shaped.append(f"{key}: file {tuple(value.shape)}, model {tuple(shape)}")
            return None
        if value.dtype != dtype:
            wrong_dtype.append(f"{key}: file {value.dtype}, model {np.dtype(dtype)}")
            return None
        return value

    for path, spec in expected.items():
        key = torch_key(path)
        shape, dtype = tuple(spec.shape), np.dtype(spec.dtype)
        if path[-1] == "weight" and weight_normed(_module(key)) and not folded_form:
            g_shape = (shape[0],) + (1,) * (len(shape) - 1)  # dim 0 of the stored weight, whatever the conv kind
            g = take(key + "_g", g_shape, dtype)
            v = take(key + "_v", shape, dtype)
            if g is not None and v is not None:
                flat[path] = fold_weight_norm(g, v)
        else:
            value = take(key, shape, dtype)
            if value is not None:
                flat[path] = np.array(value)  # own copy: the source may be a memory-mapped tensor
    unexpected = sorted(set(values) - consumed)
    if missing or unexpected or mis_shaped or wrong_dtype:
        problems = {"missing": missing, "unexpected": unexpected, "mis-shaped": mis_shaped, "wrong dtype": wrong_dtype}
        if not folded_form and any(k.endswith(".weight") and k + "_g" in missing for k in unexpected):
            problems["mixed forms"] = [k for k in unexpected if k.endswith(".weight") and k + "_g" in missing]
        if wrong_dtype:
            hint += " The models hold float32 weights: cast the tensors to float32 first."
        raise StateDictMismatchError(context, hint, problems)
    return unflatten_dict(flat)


def check_tree(params: Mapping[str, Any], expected: Mapping[Path, jax.ShapeDtypeStruct], *, context: str) -> dict:
    """Flat numpy view of `params`, after checking it holds exactly the `expected` leaves (shape and dtype)."""
    flat = {p: np.asarray(v) for p, v in flatten_dict(dict(params)).items()}
    problems = {
        "missing": sorted("/".join(p) for p in expected.keys() - flat.keys()),
        "unexpected": sorted("/".join(p) for p in flat.keys() - expected.keys()),
        "mis-shaped": [
            f"{'/'.join(p)}: params {tuple(flat[p].shape)}, model {tuple(s.shape)}"
            for p, s in expected.items()
            if p in flat and tuple(flat[p].shape) != tuple(s.shape)
        ],
        "wrong dtype": [
            f"{'/'.join(p)}: params {flat[p].dtype}, model {np.dtype(s.dtype)}"
            for p, s in expected.items()
            if p in flat and tuple(flat[p].shape) == tuple(s.shape) and flat[p].dtype != np.dtype(s.dtype)
        ],
    }
    if any(problems.values()):
        raise StateDictMismatchError(context, "Check that the params belong to this config.", problems)
    return flat


def _weight_norm_split(path: Path, weight_normed: Callable[[str], bool], weight_norm: bool) -> str | None:
    """The torch key of `path`'s weight when it is written as `_g` / `_v`, else None."""
    key = torch_key(path)
    return key if weight_norm and path[-1] == "weight" and weight_normed(_module(key)) else None


def state_dict_shapes(
    expected: Mapping[Path, jax.ShapeDtypeStruct], weight_normed: Callable[[str], bool], *, weight_norm: bool
) -> dict[str, tuple[int, ...]]:
    """{torch key: shape} of the state dict `write` makes for these leaves (no arrays needed)."""
    out: dict[str, tuple[int, ...]] = {}
    for path, spec in expected.items():
        shape = tuple(spec.shape)
        if (key := _weight_norm_split(path, weight_normed, weight_norm)) is not None:
            out[key + "_g"] = (shape[0],) + (1,) * (len(shape) - 1)
            out[key + "_v"] = shape
        else:
            out[torch_key(path)] = shape
    return out


def write(
    params: Mapping[str, Any],
    expected: Mapping[Path, jax.ShapeDtypeStruct],
    weight_normed: Callable[[str], bool],
    *,
    weight_norm: bool,
    context: str,
) -> dict[str, np.ndarray]:
    """Flax params -> the torch state dict (numpy, C-ordered copies), strictly checked first.

    With `weight_norm`, every weight-normed conv is written as `weight_g` = ||w|| (over all axes but 0, float64
    rounded once) and `weight_v` = w; otherwise as the folded `weight`.
    """
    flat = check_tree(params, expected, context=context)
    out: dict[str, np.ndarray] = {}
    for path in expected:
        value = np.array(flat[path], order="C")
        if (key := _weight_norm_split(path, weight_normed, weight_norm)) is not None:
            w64 = value.astype(np.float64)
            norm = np.sqrt(np.sum(w64 * w64, axis=tuple(range(1, value.ndim)), keepdims=True))
            out[key + "_g"] = norm.astype(value.dtype)
            out[key + "_v"] = value
        else:
            out[torch_key(path)] = value
    return out
