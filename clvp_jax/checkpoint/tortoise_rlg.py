"""Converter between Tortoise's random latent generators (`rlg_auto.pth`, `rlg_diffuser.pth`) and clvp-jax params.

Each file is the state dict of one `RandomLatentConverter(channels)`: `layers.{0..4}.weight` [C, C] and
`layers.{0..4}.bias` [C] (EqualLinear, unscaled, as stored), then `layers.5.weight` [C, C] / `layers.5.bias` [C]
(nn.Linear). The Flax module keeps torch's names and layouts, so the table is one rule (`layers_N/leaf` <->
`layers.N.leaf`) and no transposes; EqualLinear's `scale` and `lr_mul` are plain attributes in the original,
not buffers, so nothing is ignored.

Strict both ways (`clvp_jax.checkpoint.strict`): the target tree comes from `jax.eval_shape` of the model's init,
every source key must be consumed, every leaf filled, every shape and dtype (float32) must match, and all problems
are reported together in one `RlgCheckpointError` (a `WeightsMismatchError`). The width is inferred from `layers.5.weight` when not given.
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import numpy as np
from flax.traverse_util import flatten_dict

from clvp_jax.checkpoint.errors import WeightsMismatchError
from clvp_jax.checkpoint.strict import PLAIN, key_table, load_pth, state_dict_from_tree, tree_from_state_dict
from clvp_jax.waveform.random_latents import AUTO_CHANNELS, DIFFUSION_CHANNELS, NUM_EQUAL_LAYERS, param_shapes

# Keys of the source that are deliberately not loaded, with the reason: none (the original has no buffers).
IGNORED_KEYS: dict[str, str] = {}
_WIDTH_KEY = f"layers.{NUM_EQUAL_LAYERS}.weight"  # [C, C], the final nn.Linear


class RlgCheckpointError(WeightsMismatchError):
    """A state dict that does not fit the RandomLatentConverter model (see `WeightsMismatchError`)."""

    HINT = "Pass the state dict of rlg_auto.pth (1024 channels) or rlg_diffuser.pth (2048), float32."


def torch_key(path: tuple[str, ...]) -> str:
    """The torch state-dict key of a Flax parameter path (without 'params'): ('layers_3', 'bias') -> 'layers.3.bias'."""
    return PLAIN.torch_key(path)


def infer_channels(state_dict: Mapping[str, np.ndarray]) -> int:
    """The width C the weights determine (from `layers.5.weight` [C, C])."""
    if _WIDTH_KEY not in state_dict:
        raise RlgCheckpointError(missing=[_WIDTH_KEY], context="width inference")
    shape = tuple(np.shape(state_dict[_WIDTH_KEY]))
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 1:
        raise RlgCheckpointError(mismatched=[(_WIDTH_KEY, shape, "[C, C]")], context="width inference")
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
    targets = key_table(flatten_dict(param_shapes(channels)["params"]))
    params = tree_from_state_dict(
        state_dict, targets, ignored=IGNORED_KEYS, context="random latent generator", error=RlgCheckpointError
    )
    return channels, {"params": params}


def original_from_params(variables: Mapping, channels: int) -> dict[str, np.ndarray]:
    """The inverse: {'params': ...} -> the original state dict (numpy arrays), checked against the width.

    Raises:
        RlgCheckpointError listing every missing, unexpected, mis-shaped or mis-typed leaf (by Flax path).
    """
    leaves = flatten_dict(param_shapes(channels)["params"])
    return state_dict_from_tree(variables["params"], leaves, error=RlgCheckpointError)


def load_original(path: str | PathLike, channels: int | None = None) -> tuple[int, dict]:
    """Reads `rlg_auto.pth` or `rlg_diffuser.pth` (`torch.load(weights_only=True)`; torch is only needed here).

    Raises:
        ImportError without torch; CheckpointError for a missing, corrupt or non-state-dict file;
        RlgCheckpointError for weights that do not fit.
    """
    return params_from_original(load_pth(path), channels)


FILES = {"rlg_auto.pth": AUTO_CHANNELS, "rlg_diffuser.pth": DIFFUSION_CHANNELS}  # file -> the width it must have


def load_random_voice_generators(folder: str | PathLike) -> tuple[dict, dict]:
    """Reads both generators of Tortoise's `random` voice from a folder of its checkpoints.

    Returns:
        (rlg_auto variables, rlg_diffuser variables), ready for `random_voice_latents(key, auto, diffusion)`.
    Raises:
        FileNotFoundError naming the missing files and where Tortoise keeps them; CheckpointError for a file that is
        no state dict; RlgCheckpointError when a file does not hold a generator of the width its name says (e.g.
        the two swapped).
    """
    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the random voice needs {' and '.join(missing)} in {folder}; they are Tortoise's random latent "
            "generators, in the Hugging Face Hub repo Manmay/tortoise-tts beside its other checkpoints"
        )
    return tuple(load_original(folder / name, channels)[1] for name, channels in FILES.items())
