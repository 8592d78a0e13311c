"""Converter between Tortoise's `diffusion_decoder.pth` (a `DiffusionTts` state dict) and clvp-jax params.

The Flax modules are named after the torch keys and hold torch's layouts (Conv1d [out, in, k], Linear [out, in],
Embedding [vocab, C], the unconditioned embedding [1, C, 1]), so the mapping is two rules and no transposes:

* each Flax path segment `name_N` is the torch segment pair `name.N` (`layers_3/resblk/in_layers_2/weight` ->
  `layers.3.resblk.in_layers.2.weight`);
* leaf renames (`NAMING`): GroupNorm `scale` -> `weight`, Embed `embedding` -> `weight`, the relative
  bias table `relative_attention_bias` -> `relative_attention_bias.weight`.

The machinery is `clvp_jax.checkpoint.strict`: the target tree comes from `jax.eval_shape` of the model's init, so
every leaf is filled, every source key is consumed (the original has no buffers, so nothing is ignored), and every
shape and dtype is checked; all problems are reported together in one `DiffusionCheckpointError` (a
`WeightsMismatchError`). The config is inferred from the weights' shapes
(`infer_config`), including the head count, which the relative-bias tables ([32, heads]) carry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from os import PathLike

import numpy as np
from flax.traverse_util import flatten_dict

from clvp_jax.checkpoint.errors import WeightsMismatchError
from clvp_jax.checkpoint.strict import (
    LeafRename,
    Naming,
    Target,
    key_table,
    load_pth,
    state_dict_from_tree,
    tree_from_state_dict,
)
from clvp_jax.waveform.diffusion import param_shapes
from clvp_jax.waveform.diffusion_config import TRAILING_RESBLOCKS, DiffusionConfig

NAMING = Naming(
    (
        LeafRename(("scale",), "weight"),  # GroupNorm gain
        LeafRename(("embedding",), "weight"),  # nn.Embed table (code_embedding)
        LeafRename(("relative_attention_bias",), "relative_attention_bias.weight"),  # RelativePositionBias's Embedding
    )
)
# Keys of the source that are deliberately not loaded, with the reason. DiffusionTts registers no buffers, so a
# real checkpoint consumes every key; anything else is reported as unexpected.
IGNORED_KEYS: dict[str, str] = {}
_HEADS_KEY = "latent_conditioner.1.relative_pos_embeddings.relative_attention_bias.weight"


class DiffusionCheckpointError(WeightsMismatchError):
    """A state dict that does not fit the DiffusionTts model (see `WeightsMismatchError`)."""

    HINT = "Pass the DiffusionTts state dict of diffusion_decoder.pth (plain state dict, float32)."


def torch_key(path: tuple[str, ...]) -> str:
    """The torch state-dict key of a Flax parameter path (without the leading 'params')."""
    return NAMING.torch_key(path)


def _targets(config: DiffusionConfig) -> dict[str, Target]:
    """torch key -> Target for every parameter of the model."""
    return key_table(flatten_dict(param_shapes(config)["params"]), NAMING)


def infer_config(state_dict: Mapping[str, np.ndarray], num_heads: int | None = None) -> DiffusionConfig:
    """The config the weights' shapes determine: widths, vocabulary, layer count, and the head count.

    The heads are read from the relative-bias tables ([32, heads]: the original builds them with the attention's
    `num_heads`), so `num_heads` need not be given; if it is, it must agree with the tables. Raises a
    `DiffusionCheckpointError` naming the keys it needs when they are absent or have the wrong rank.
    """
    ranks = {
        "inp_block.weight": 3,  # [C, in_channels, 3]
        "out.2.weight": 3,  # [out_channels, C, 3]
        "latent_conditioner.0.weight": 3,  # [C, in_latent_channels, 3]
        "code_embedding.weight": 2,  # [in_tokens, C]
        _HEADS_KEY: 2,  # [32, heads]
    }
    missing = [key for key in ranks if key not in state_dict]
    bad = [
        (key, f"shape {np.shape(state_dict[key])}", f"{rank} dims")
        for key, rank in ranks.items()
        if key in state_dict and np.ndim(state_dict[key]) != rank
    ]
    indices = {int(m.group(1)) for key in state_dict if (m := re.match(r"^layers\.(\d+)\.", key))}
    if not indices:
        missing.append("layers.0.*")
    if missing or bad:
        raise DiffusionCheckpointError(missing, (), bad, context="config inference")
    table_heads = int(np.shape(state_dict[_HEADS_KEY])[1])
    if num_heads is not None and num_heads != table_heads:
        raise ValueError(
            f"diffusion_decoder: num_heads={num_heads} was asked for, but the relative-bias tables of these weights "
            f"are [32, {table_heads}], i.e. {table_heads} heads; omit num_heads to use the weights' value"
        )
    shape = {key: np.shape(state_dict[key]) for key in ranks}
    try:
        return DiffusionConfig(
            model_channels=int(shape["inp_block.weight"][0]),
            num_layers=max(indices) + 1 - TRAILING_RESBLOCKS,
            in_channels=int(shape["inp_block.weight"][1]),
            in_latent_channels=int(shape["latent_conditioner.0.weight"][1]),
            in_tokens=int(shape["code_embedding.weight"][0]),
            out_channels=int(shape["out.2.weight"][0]),
            num_heads=table_heads,
        )
    except ValueError as error:
        raise ValueError(f"diffusion_decoder: the weights' shapes give no valid config: {error}") from None


def params_from_original(
    state_dict: Mapping[str, np.ndarray], config: DiffusionConfig | None = None, *, num_heads: int | None = None
) -> tuple[DiffusionConfig, dict]:
    """Converts a DiffusionTts state dict (numpy arrays) to ({'params': ...}, checked) with its config.

    Args:
        state_dict: the original keys -> arrays (`torch.load(..., weights_only=True)` then `.numpy()`).
        config: the expected config; inferred from the shapes when None.
        num_heads: for the inference only: the head count to insist on (it is read from the weights anyway).
    Returns:
        (config, variables) where variables = {'params': nested dict of numpy arrays}.
    Raises:
        DiffusionCheckpointError listing every missing, unexpected, mis-shaped or mis-typed key.
    """
    config = config or infer_config(state_dict, num_heads)
    params = tree_from_state_dict(
        state_dict, _targets(config), ignored=IGNORED_KEYS, context="diffusion_decoder", error=DiffusionCheckpointError
    )
    return config, {"params": params}


def original_from_params(variables: Mapping, config: DiffusionConfig) -> dict[str, np.ndarray]:
    """The inverse: {'params': ...} -> the original state dict (numpy arrays), checked against the config.

    Raises:
        DiffusionCheckpointError listing every missing, unexpected, mis-shaped or mis-typed leaf (by Flax path).
    """
    leaves = flatten_dict(param_shapes(config)["params"])
    return state_dict_from_tree(variables["params"], leaves, NAMING, error=DiffusionCheckpointError)


def load_original(
    path: str | PathLike, config: DiffusionConfig | None = None, *, num_heads: int | None = None
) -> tuple[DiffusionConfig, dict]:
    """Reads `diffusion_decoder.pth` (`torch.load(weights_only=True)`; torch is only needed here) and converts it.

    Raises:
        ImportError without torch; CheckpointError for a missing, corrupt or non-state-dict file;
        DiffusionCheckpointError for weights that do not fit.
    """
    return params_from_original(load_pth(path), config, num_heads=num_heads)
