"""Converter between Tortoise's random latent generators (`rlg_auto.pth`, `rlg_diffuser.pth`) and clvp-jax params.

Each file is the state dict of one `RandomLatentConverter(channels)`: `layers.{0..4}.weight` [C, C] and
`layers.{0..4}.bias` [C] (EqualLinear, unscaled, as stored), then `layers.5.weight` [C, C] / `layers.5.bias` [C]
(nn.Linear). The Flax module keeps torch's names and layouts, so the table is one rule (`layers_N/leaf` <->
`layers.N.leaf`) and no transposes; EqualLinear's `scale` and `lr_mul` are plain attributes in the original,
not buffers, so nothing is ignored.

Strict both ways: the target tree comes from `jax.eval_shape` of the model's init, every source key must be
consumed, every leaf filled, every shape and dtype (float32) must match, and all problems are reported together
in one `RlgCheckpointError`. The width is inferred from `layers.5.weight` when not given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import jax
import numpy as np

from clvp_jax.waveform.random_latents import AUTO_CHANNELS, DIFFUSION_CHANNELS, NUM_EQUAL_LAYERS, param_shapes

# Keys of the source that are deliberately not loaded, with the reason: none (the original has no buffers).
IGNORED_KEYS: dict[str, str] = {}
_INDEXED = re.compile(r"^(.*)_(\d+)$")
_WIDTH_KEY = f"layers.{NUM_EQUAL_LAYERS}.weight"  # [C, C], the final nn.Linear


class RlgCheckpointError(ValueError):
    """A state dict that does not fit the model: lists every missing, unexpected, mis-shaped and mis-typed key."""

    def __init__(self, missing=(), unexpected=(), mismatched=(), context: str = "random latent generator") -> None:
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)
        lines = [f"{context}: checkpoint does not match the RandomLatentConverter model:"]
        if self.missing:
            lines.append(f"  missing ({len(self.missing)}): {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected ({len(self.unexpected)}): {', '.join(self.unexpected)}")
        for key, got, want in self.mismatched:
            lines.append(f"  mismatched: {key}: checkpoint {got}, model expects {want}")
        lines.append("Pass the state dict of rlg_auto.pth (1024 channels) or rlg_diffuser.pth (2048), float32.")
        super().__init__("\n".join(lines))


def torch_key(path: tuple[str, ...]) -> str:
    """The torch state-dict key of a Flax parameter path (without 'params'): ('layers_3', 'bias') -> 'layers.3.bias'."""
    *modules, leaf = path
    segments = []
    for name in modules:
        match = _INDEXED.match(name)
        segments.extend(match.groups() if match else (name,))
    return ".".join([*segments, leaf])


def _target_leaves(channels: int) -> dict[str, tuple[tuple[str, ...], jax.ShapeDtypeStruct]]:
    """torch key -> (Flax path, expected shape/dtype) for every parameter of the model."""
    flat = jax.tree_util.tree_flatten_with_path(param_shapes(channels)["params"])[0]
    return {torch_key(path): (path, leaf) for path, leaf in ((tuple(e.key for e in kp), leaf) for kp, leaf in flat)}


def infer_channels(state_dict: Mapping[str, np.ndarray]) -> int:
    """The width C the weights determine (from `layers.5.weight` [C, C])."""
    if _WIDTH_KEY not in state_dict:
        raise RlgCheckpointError(missing=[_WIDTH_KEY], context="width inference")
    shape = tuple(np.shape(state_dict[_WIDTH_KEY]))
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 1:
        raise RlgCheckpointError(mismatched=[(_WIDTH_KEY, f"shape {shape}", "shape [C, C]")], context="width inference")
    return int(shape[0])


def params_from_original(state_dict: Mapping[str, np.ndarray], channels: int | None = None) -> tuple[int, dict]:
    """Converts a RandomLatentConverter state dict (numpy arrays) to (channels, {'params': ...}), checked.

    Args:
        state_dict: the original keys -> arrays (`torch.load(..., weights_only=True)` then `.numpy()`).
        channels: the expected width (1024 for rlg_auto, 2048 for rlg_diffuser); inferred when None.
    Raises:
        RlgCheckpointError listing every missing, unexpected, mis-shaped or mis-typed key.
    """
    channels = infer_channels(state_dict) if channels is None else channels
    targets = _target_leaves(channels)
    missing = sorted(set(targets) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(targets) - set(IGNORED_KEYS))
    mismatched = []
    params: dict = {}
    for key in sorted(set(targets) & set(state_dict)):
        path, want = targets[key]
        value = np.asarray(state_dict[key])
        if value.shape != want.shape:
            mismatched.append((key, f"shape {value.shape}", f"shape {want.shape}"))
        elif value.dtype != want.dtype:
            mismatched.append((key, f"dtype {value.dtype}", f"dtype {np.dtype(want.dtype)}"))
        node = params
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    if missing or unexpected or mismatched:
        raise RlgCheckpointError(missing, unexpected, mismatched)
    return channels, {"params": params}


def original_from_params(variables: Mapping, channels: int) -> dict[str, np.ndarray]:
    """The inverse: {'params': ...} -> the original state dict (numpy arrays), checked against the width."""
    targets = _target_leaves(channels)
    flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    state = {torch_key(tuple(entry.key for entry in key_path)): np.asarray(leaf) for key_path, leaf in flat}
    missing = sorted(set(targets) - set(state))
    unexpected = sorted(set(state) - set(targets))
    mismatched = [
        (key, f"{state[key].dtype}{state[key].shape}", f"{np.dtype(targets[key][1].dtype)}{targets[key][1].shape}")
        for key in sorted(set(targets) & set(state))
        if state[key].shape != targets[key][1].shape or state[key].dtype != targets[key][1].dtype
    ]
    if missing or unexpected or mismatched:
        raise RlgCheckpointError(missing, unexpected, mismatched, context="parameter tree")
    return state


def load_original(path: str | PathLike, channels: int | None = None) -> tuple[int, dict]:
    """Reads `rlg_auto.pth` or `rlg_diffuser.pth` (`torch.load(weights_only=True)`; torch is only needed here)."""
    try:
        import torch
    except ImportError as error:  # torch is an optional extra
        raise ImportError(
            f"reading the original checkpoint {path} needs torch: pip install 'clvp-jax[torch]'"
        ) from error
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(loaded, Mapping):
        raise RlgCheckpointError(context=f"{path}: expected a state dict, got {type(loaded).__name__}")
    # A value that is no tensor is passed on as is and reported as mis-shaped by the strict check.
    state = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in loaded.items()}
    return params_from_original(state, channels)


FILES = {"rlg_auto.pth": AUTO_CHANNELS, "rlg_diffuser.pth": DIFFUSION_CHANNELS}  # file -> the width it must have


def load_random_voice_generators(folder: str | PathLike) -> tuple[dict, dict]:
    """Reads both generators of Tortoise's `random` voice from a folder of its checkpoints.

    Returns:
        (rlg_auto variables, rlg_diffuser variables), ready for `random_voice_latents(key, auto, diffusion)`.
    Raises:
        FileNotFoundError naming the missing files and where Tortoise keeps them; RlgCheckpointError when a file
        does not hold a generator of the width its name says (e.g. the two swapped).
    """
    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the random voice needs {' and '.join(missing)} in {folder}; they are Tortoise's random latent "
            "generators, in the Hugging Face Hub repo Manmay/tortoise-tts beside its other checkpoints"
        )
    return tuple(load_original(folder / name, channels)[1] for name, channels in FILES.items())
