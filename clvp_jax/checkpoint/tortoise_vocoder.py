"""Tortoise's `vocoder.pth` (`UnivNetGenerator`, saved as `{"model_g": state_dict}` with weight norm) <->
`clvp_jax.waveform.univnet` params.

Rules (see `clvp_jax.checkpoint.weight_norm_convert`): keys map to Flax paths by joining index segments
(`res_stack.0.kernel_predictor.residual_convs.2.3.weight` <-> `res_stack_0/kernel_predictor/residual_convs_2_3/
weight`); every conv of the generator is weight-normed (132 entries at real size: `bias`, `weight_g`, `weight_v`
per conv), and is folded at load into the 88 plain entries that `eval(inference=True)` leaves. A state dict whose
weight norm was already removed is read too. Nothing is ignored: the generator has no buffers, and other
top-level entries of the file next to `model_g` (a training script may store the discriminator or optimiser
there) are not read, as api.py reads only `model_g`.

The inverse (`params_to_state_dict`) writes the folded form by default (what the original generator holds after
`eval(inference=True)`; load it into a fresh `UnivNetGenerator` after calling its `remove_weight_norm()`), or the
weight-norm form api.py loads strictly (`weight_norm=True`: v = w, g = ||w||; it folds back to w within float32
rounding).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.checkpoint.errors import CheckpointError
from clvp_jax.checkpoint.progress import report, size_of
from clvp_jax.checkpoint.readers import torch_load
from clvp_jax.checkpoint.strict import abstract_params
from clvp_jax.checkpoint.weight_norm_convert import (
    StateDictMismatchError,
    indices,
    read,
    state_dict_shapes,
    stored_shape,
    write,
)
from clvp_jax.waveform.univnet import UnivNetConfig, UnivNetGenerator

__all__ = ["StateDictMismatchError", "expected_params", "infer_config", "load_vocoder"]
__all__ += ["original_shapes", "params_to_state_dict", "state_dict_to_params", "unwrap"]

WRAPPER_KEY = "model_g"  # api.py: torch.load(vocoder.pth)["model_g"]
_HINT = (
    "Check that this is Tortoise's vocoder.pth (UnivNetGenerator) and that the config matches it "
    "(infer_config(state_dict) reads it from the shapes; dilations, lReLU_slope and hop_length are not in them)."
)


def _weight_normed(module: str) -> bool:
    return True  # every conv of UnivNetGenerator (conv_pre, conv_post.1, all of res_stack) is weight-normed


def expected_params(config: UnivNetConfig) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    """Flat {path: ShapeDtypeStruct} of `config`'s generator params (float32)."""
    return dict(_expected(config))  # a copy: the cached table is shared


@functools.cache
def _expected(config: UnivNetConfig) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    frames = 8  # any length works; conv_pre's reflect padding needs more than 3 frames
    mel = jax.ShapeDtypeStruct((1, config.n_mel_channels, frames), jnp.float32)
    z = jax.ShapeDtypeStruct((1, config.noise_dim, frames), jnp.float32)
    return abstract_params(UnivNetGenerator(config).init, mel, z)


def unwrap(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    """The generator state dict of a vocoder checkpoint: `checkpoint["model_g"]`, or `checkpoint` itself when it
    is already a flat state dict (e.g. re-saved without the wrapper)."""
    inner = checkpoint.get(WRAPPER_KEY)
    if isinstance(inner, Mapping):
        return inner
    if inner is not None or not all(hasattr(v, "shape") for v in checkpoint.values()):
        raise CheckpointError(
            f"not a UnivNet vocoder checkpoint: expected {{'{WRAPPER_KEY}': state_dict}} or a flat state dict, got "
            f"top-level entries {sorted(checkpoint)[:10]}"
        )
    return checkpoint


def infer_config(
    state_dict: Mapping[str, Any],
    *,
    dilations: Sequence[int] | None = None,
    lrelu_slope: float = 0.2,
    hop_length: int | None = None,
) -> UnivNetConfig:
    """The `UnivNetConfig` a generator state dict (weight-norm or folded form; `unwrap` first) was built with.

    From the shapes: noise_dim and channel_size (conv_pre), n_mel_channels (the kernel predictor's input conv),
    the strides (ConvTranspose kernel = 2 x stride), the number of LVC layers and kpnet_conv_size. Not in the
    shapes, so given here: `dilations` (default 3^l for the l found, the original's [1, 3, 9, 27] pattern),
    `lrelu_slope` (default 0.2) and `hop_length` (default the strides' product).

    Raises:
      CheckpointError: the keys that the shapes are read from are missing.
    """
    blocks = indices(state_dict, r"res_stack\.(\d+)\.")
    needed = {"conv_pre": stored_shape(state_dict, "conv_pre")}
    if blocks:
        prefix = f"res_stack.{blocks[0]}"
        needed["kernel_predictor.input_conv.0"] = stored_shape(state_dict, f"{prefix}.kernel_predictor.input_conv.0")
        needed["kernel_predictor.residual_convs.0.1"] = stored_shape(
            state_dict, f"{prefix}.kernel_predictor.residual_convs.0.1"
        )
    convt = [stored_shape(state_dict, f"res_stack.{b}.convt_pre.1") for b in blocks]
    absent = [name for name, shape in needed.items() if shape is None]
    if not blocks or absent or any(s is None for s in convt):
        raise CheckpointError(
            f"cannot infer the UnivNet config: no res_stack blocks or missing {absent or 'convt_pre.1'} weights; "
            "is this Tortoise's vocoder.pth (UnivNetGenerator)? Pass the config explicitly otherwise."
        )
    if any(s[2] % 2 for s in convt):
        raise CheckpointError(
            f"cannot infer the UnivNet strides: ConvTranspose kernels {[s[2] for s in convt]} are not 2 x stride"
        )
    layers = len(indices(state_dict, rf"res_stack\.{blocks[0]}\.conv_blocks\.(\d+)\."))
    strides = tuple(s[2] // 2 for s in convt)
    return UnivNetConfig(
        noise_dim=needed["conv_pre"][1],
        channel_size=needed["conv_pre"][0],
        dilations=tuple(dilations) if dilations is not None else tuple(3**i for i in range(layers)),
        strides=strides,
        lrelu_slope=lrelu_slope,
        kpnet_conv_size=needed["kernel_predictor.residual_convs.0.1"][2],
        hop_length=hop_length if hop_length is not None else int(np.prod(strides)),
        n_mel_channels=needed["kernel_predictor.input_conv.0"][1],
    )


def original_shapes(config: UnivNetConfig, *, weight_norm: bool = False) -> dict[str, tuple[int, ...]]:
    """{key: shape} of the state dict `params_to_state_dict` writes for `config` (132 / 88 entries at real size
    with / without weight norm), without building any weights."""
    return state_dict_shapes(expected_params(config), _weight_normed, weight_norm=weight_norm)


def state_dict_to_params(state_dict: Mapping[str, Any], config: UnivNetConfig | None = None) -> dict:
    """A vocoder state dict (`{"model_g": ...}` or flat; weight-norm or folded form) -> params, strictly.

    Args:
      state_dict: the checkpoint as loaded (numpy arrays or torch tensors).
      config: the generator's config; default `infer_config` of the state dict.

    Raises:
      StateDictMismatchError: listing every missing, unexpected, mis-shaped and wrongly typed (not float32) key.
    """
    state_dict = unwrap(state_dict)
    config = config if config is not None else infer_config(state_dict)
    return read(state_dict, expected_params(config), _weight_normed, context="vocoder state dict", hint=_HINT)


def params_to_state_dict(
    params: Mapping[str, Any], config: UnivNetConfig, *, weight_norm: bool = False
) -> dict[str, np.ndarray]:
    """Params -> the generator state dict (flat; `torch.save({"model_g": it})` makes a vocoder.pth).

    `weight_norm=False` (default): the folded form, 88 entries at real size; the exact inverse of
    `state_dict_to_params`. `weight_norm=True`: the 132-entry form of the real file, which api.py loads strictly.
    """
    return write(params, expected_params(config), _weight_normed, weight_norm=weight_norm, context="vocoder params")


def load_vocoder(path: str | os.PathLike, config: UnivNetConfig | None = None) -> tuple[dict, UnivNetConfig]:
    """Read a `vocoder.pth` (with `torch.load(weights_only=True)`) -> (params, config).

    Raises:
      ImportError: without torch.
      CheckpointError: a missing or unreadable file, or one that is not a vocoder checkpoint.
      StateDictMismatchError: the weights do not fit the (given or inferred) config.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing vocoder file {path} (Tortoise's vocoder.pth)")
    report(f"reading {path.name} ({size_of(path)})")
    checkpoint = torch_load(path)  # not torch_load_weights: the state dict sits under "model_g"
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{path} does not hold a mapping ({{'model_g': state_dict}} expected)")
    state_dict = unwrap(checkpoint)
    config = config if config is not None else infer_config(state_dict)
    return state_dict_to_params(state_dict, config), config
