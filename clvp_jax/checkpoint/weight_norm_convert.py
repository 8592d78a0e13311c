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
model's init; everything wrong is reported at once in one `StateDictMismatchError` (a `WeightsMismatchError`). The
machinery is `clvp_jax.checkpoint.strict`; this file adds the weight-norm table (`stored_targets`) and the fold.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax.traverse_util import unflatten_dict

from clvp_jax.checkpoint.errors import WeightsMismatchError
from clvp_jax.checkpoint.strict import PLAIN, Target, check_tree, flat_from_state_dict
from clvp_jax.waveform.conv import fold_weight_norm

Path = tuple[str, ...]


class StateDictMismatchError(WeightsMismatchError):
    """A vocoder state dict (or parameter tree) that does not fit the model (see `WeightsMismatchError`)."""


def flax_path(key: str) -> Path:
    """torch key -> Flax path: `res_stack.0.kernel_predictor.residual_convs.2.3.bias` ->
    (`res_stack_0`, `kernel_predictor`, `residual_convs_2_3`, `bias`)."""
    return PLAIN.flax_path(key)


def torch_key(path: Path) -> str:
    """Flax path -> torch key (the inverse of `flax_path`)."""
    return PLAIN.torch_key(path)


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


def stored_targets(
    expected: Mapping[Path, jax.ShapeDtypeStruct], weight_normed: Callable[[str], bool], *, weight_norm: bool
) -> dict[str, Target]:
    """{torch key: Target} of the stored form: with `weight_norm`, each weight-normed conv's `weight` is the two
    keys `weight_g` [d0, 1, ..] (dim 0 of the stored weight, whatever the conv kind) and `weight_v`, which fill
    the Flax paths `.../weight_g` and `.../weight_v` until `read` folds them."""
    out: dict[str, Target] = {}
    for path, spec in expected.items():
        key, shape, dtype = torch_key(path), tuple(spec.shape), np.dtype(spec.dtype)
        if weight_norm and path[-1] == "weight" and weight_normed(key.rsplit(".", 1)[0]):
            out[key + "_g"] = Target((*path[:-1], "weight_g"), (shape[0],) + (1,) * (len(shape) - 1), dtype)
            out[key + "_v"] = Target((*path[:-1], "weight_v"), shape, dtype)
        else:
            out[key] = Target(path, shape, dtype)
    return out


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
      expected: `strict.abstract_params` of the model.
      weight_normed: whether the conv at a module prefix (e.g. `ups.0`) is weight-normed in the original.
      context: what is read, for the error message (e.g. "vocoder.pth['model_g']").
      hint: what to do about a mismatch, appended to the error message.

    Returns:
      the params tree (float32 numpy leaves, the folded weights computed in float64 and rounded once).

    Raises:
      StateDictMismatchError: listing every missing, unexpected, mis-shaped and wrongly typed key, and the convs
        stored in the folded form in a weight-norm file ("mixed forms").
    """
    folded_form = not any(k.endswith((".weight_g", ".weight_v")) for k in state_dict)
    targets = stored_targets(expected, weight_normed, weight_norm=not folded_form)
    # A conv stored as `weight` where the file's form wants `weight_g` / `weight_v`.
    mixed = [k[: -len("_g")] for k in targets if k.endswith(".weight_g") and k not in state_dict]
    mixed = sorted(k for k in mixed if k in state_dict)
    stored = flat_from_state_dict(
        state_dict, targets, other={"mixed forms": mixed}, context=context, hint=hint, error=StateDictMismatchError
    )
    flat = {}
    for path in expected:
        if path[-1] == "weight" and (*path[:-1], "weight_g") in stored:
            flat[path] = fold_weight_norm(stored[(*path[:-1], "weight_g")], stored[(*path[:-1], "weight_v")])
        else:
            flat[path] = np.array(stored[path])  # own copy: the source may be a memory-mapped tensor
    return unflatten_dict(flat)


def state_dict_shapes(
    expected: Mapping[Path, jax.ShapeDtypeStruct], weight_normed: Callable[[str], bool], *, weight_norm: bool
) -> dict[str, tuple[int, ...]]:
    """{torch key: shape} of the state dict `write` makes for these leaves (no arrays needed)."""
    return {
        key: target.shape for key, target in stored_targets(expected, weight_normed, weight_norm=weight_norm).items()
    }


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
    hint = "Check that the params belong to this config."
    flat = check_tree(params, expected, context=context, hint=hint, error=StateDictMismatchError)
    out: dict[str, np.ndarray] = {}
    for key, target in stored_targets(expected, weight_normed, weight_norm=weight_norm).items():
        *module, leaf = target.path
        value = np.array(flat[(*module, "weight") if leaf in ("weight_g", "weight_v") else target.path], order="C")
        if leaf == "weight_g":
            w64 = value.astype(np.float64)
            norm = np.sqrt(np.sum(w64 * w64, axis=tuple(range(1, value.ndim)), keepdims=True))
            out[key] = norm.astype(value.dtype)
        else:
            out[key] = value
    return out
