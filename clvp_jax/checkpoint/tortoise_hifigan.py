"""api_fast's `hifidecoder.pth` (`HifiganGenerator`, a plain state dict in weight-norm form) <->
`clvp_jax.waveform.hifigan` params.

Rules (see `clvp_jax.checkpoint.weight_norm_convert`): keys map to Flax paths by joining index segments
(`resblocks.4.convs1.2.weight_v` <-> `resblocks_4/convs1_2/weight`); every conv is weight-normed (`bias`,
`weight_g`, `weight_v`; 236 entries at real size) except `cond_layer` (plain `weight`, `bias`), and `conv_pre` /
`conv_post` when the config says the original was built without their weight norm. Weight norm is folded at load
(the ConvTranspose `ups.*` ones per input channel); a state dict whose weight norm was already removed (158 entries)
is read too. Nothing is ignored.

api_fast loads this file with `strict=False`, so a renamed or missing key there silently leaves random weights;
here every missing, unexpected, mis-shaped or wrongly typed key is listed in one error instead.

The inverse (`params_to_state_dict`) writes the weight-norm form by default (v = w, g = ||w||), which is what the
original `HifiganGenerator` holds and loads, strictly or not (it folds back to w within float32 rounding), or the
folded form (`weight_norm=False`: the exact inverse of `state_dict_to_params`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.checkpoint.errors import CheckpointError
from clvp_jax.checkpoint.strict import abstract_params, load_pth
from clvp_jax.checkpoint.weight_norm_convert import (
    StateDictMismatchError,
    indices,
    read,
    state_dict_shapes,
    stored_shape,
    write,
)
from clvp_jax.waveform.hifigan import HifiganConfig, HifiganGenerator

__all__ = ["StateDictMismatchError", "expected_params", "infer_config", "load_hifigan"]
__all__ += ["original_shapes", "params_to_state_dict", "state_dict_to_params"]

_HINT = (
    "Check that this is api_fast's hifidecoder.pth (HifiganGenerator) and that the config matches it "
    "(infer_config(state_dict) reads it from the shapes; upsample_factors and the dilations are not in them)."
)


def _weight_normed(config: HifiganConfig):
    def rule(module: str) -> bool:
        if module == "cond_layer":
            return False  # a plain nn.Conv1d in the original
        if module == "conv_pre":
            return config.conv_pre_weight_norm
        if module == "conv_post":
            return config.conv_post_weight_norm
        return True  # ups.*, resblocks.*.convs{1,2}.*

    return rule


def expected_params(config: HifiganConfig) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    """Flat {path: ShapeDtypeStruct} of `config`'s generator params (float32)."""
    return dict(_expected(config))  # a copy: the cached table is shared


@functools.cache
def _expected(config: HifiganConfig) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    x = jax.ShapeDtypeStruct((1, config.in_channels, 8), jnp.float32)
    g = jax.ShapeDtypeStruct((1, config.cond_channels), jnp.float32) if config.cond_channels else None
    return abstract_params(HifiganGenerator(config).init, x, g)


def infer_config(
    state_dict: Mapping[str, Any],
    *,
    upsample_factors: Sequence[int] | None = None,
    resblock_dilation_sizes: Sequence[Sequence[int]] | None = None,
) -> HifiganConfig:
    """The `HifiganConfig` a generator state dict (weight-norm or folded form) was built with.

    From the shapes and keys: in_channels and upsample_initial_channel (conv_pre), the upsample kernel sizes,
    the resblock kernel sizes and count, out_channels and conv_post_bias, cond_channels (cond_layer; 0 without
    one), the resblock type (`convs1`/`convs2` keys: type 1) and which of conv_pre / conv_post carry weight norm.
    Not in the shapes, so given here: `upsample_factors` (default kernel // 2 each, HiFi-GAN's kernel = 2 x stride,
    which api_fast's [16, 16, 4, 4] -> [8, 8, 2, 2] follows) and `resblock_dilation_sizes` (default [1, 3, 5]
    for every resblock kernel).

    Raises:
      CheckpointError: the keys that the shapes are read from are missing.
    """
    pre, post = stored_shape(state_dict, "conv_pre"), stored_shape(state_dict, "conv_post")
    ups = indices(state_dict, r"ups\.(\d+)\.")
    up_shapes = [stored_shape(state_dict, f"ups.{i}") for i in ups]
    blocks = indices(state_dict, r"resblocks\.(\d+)\.")
    if pre is None or post is None or not ups or any(s is None for s in up_shapes) or not blocks:
        raise CheckpointError(
            "cannot infer the HiFiGAN config: conv_pre, conv_post, ups.* or resblocks.* weights are missing; is this "
            "api_fast's hifidecoder.pth (HifiganGenerator)? Pass the config explicitly otherwise."
        )
    if len(blocks) % len(ups):
        raise CheckpointError(f"cannot infer the HiFiGAN config: {len(blocks)} resblocks for {len(ups)} upsamplers")
    per_level = len(blocks) // len(ups)
    type_1 = any(k.startswith("resblocks.0.convs1.") for k in state_dict)
    kernels = []
    for j in range(per_level):
        shape = stored_shape(state_dict, f"resblocks.{j}.{'convs1.0' if type_1 else 'convs.0'}")
        if shape is None:
            raise CheckpointError(f"cannot infer the HiFiGAN config: resblocks.{j} has no first conv weight")
        kernels.append(shape[2])
    up_kernels = tuple(s[2] for s in up_shapes)
    cond = stored_shape(state_dict, "cond_layer")
    weight_norm_form = any(k.endswith(".weight_g") for k in state_dict)
    return HifiganConfig(
        in_channels=pre[1],
        out_channels=post[0],
        resblock_type="1" if type_1 else "2",
        resblock_dilation_sizes=(
            tuple(tuple(d) for d in resblock_dilation_sizes) if resblock_dilation_sizes is not None
            else ((1, 3, 5),) * per_level
        ),
        resblock_kernel_sizes=tuple(kernels),
        upsample_kernel_sizes=up_kernels,
        upsample_initial_channel=pre[0],
        upsample_factors=tuple(upsample_factors) if upsample_factors is not None else tuple(k // 2 for k in up_kernels),
        cond_channels=cond[1] if cond is not None else 0,
        conv_pre_weight_norm="conv_pre.weight_g" in state_dict or not weight_norm_form,
        conv_post_weight_norm="conv_post.weight_g" in state_dict or not weight_norm_form,
        conv_post_bias="conv_post.bias" in state_dict,
    )  # fmt: skip


def original_shapes(config: HifiganConfig, *, weight_norm: bool = True) -> dict[str, tuple[int, ...]]:
    """{key: shape} of the state dict `params_to_state_dict` writes for `config` (236 / 158 entries at real size
    with / without weight norm), without building any weights."""
    return state_dict_shapes(expected_params(config), _weight_normed(config), weight_norm=weight_norm)


def state_dict_to_params(state_dict: Mapping[str, Any], config: HifiganConfig | None = None) -> dict:
    """A `hifidecoder.pth` state dict (weight-norm or folded form) -> params, strictly.

    Args:
      state_dict: the checkpoint as loaded (numpy arrays or torch tensors).
      config: the generator's config; default `infer_config` of the state dict.

    Raises:
      StateDictMismatchError: listing every missing, unexpected, mis-shaped and wrongly typed (not float32) key.
    """
    config = config if config is not None else infer_config(state_dict)
    rule = _weight_normed(config)
    return read(state_dict, expected_params(config), rule, context="hifidecoder state dict", hint=_HINT)


def params_to_state_dict(
    params: Mapping[str, Any], config: HifiganConfig, *, weight_norm: bool = True
) -> dict[str, np.ndarray]:
    """Params -> the `HifiganGenerator` state dict: the weight-norm form of the file (default; 236 entries at
    real size) or, with `weight_norm=False`, the folded form (158 entries; the exact inverse of
    `state_dict_to_params`)."""
    rule = _weight_normed(config)
    return write(params, expected_params(config), rule, weight_norm=weight_norm, context="hifigan params")


def load_hifigan(path: str | os.PathLike, config: HifiganConfig | None = None) -> tuple[dict, HifiganConfig]:
    """Read a `hifidecoder.pth` (with `torch.load(weights_only=True)`) -> (params, config).

    Raises:
      ImportError: without torch.
      CheckpointError: a missing or unreadable file.
      StateDictMismatchError: the weights do not fit the (given or inferred) config.
    """
    state_dict = load_pth(path)
    config = config if config is not None else infer_config(state_dict)
    return state_dict_to_params(state_dict, config), config
