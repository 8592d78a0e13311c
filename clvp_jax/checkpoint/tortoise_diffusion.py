"""Converter between Tortoise's `diffusion_decoder.pth` (a `DiffusionTts` state dict) and clvp-jax params.

The Flax modules are named after the torch keys and hold torch's layouts (Conv1d [out, in, k], Linear [out, in],
Embedding [vocab, C], the unconditioned embedding [1, C, 1]), so the mapping is two rules and no transposes:

* each Flax path segment `name_N` is the torch segment pair `name.N` (`layers_3/resblk/in_layers_2/weight` ->
  `layers.3.resblk.in_layers.2.weight`);
* leaf renames (`LEAF_RENAMES`): GroupNorm `scale` -> `weight`, Embed `embedding` -> `weight`, the relative
  bias table `relative_attention_bias` -> `relative_attention_bias.weight`.

The target tree comes from `jax.eval_shape` of the model's init, so every leaf is filled, every source key is
consumed (the original has no buffers, so nothing is ignored), and every shape and dtype is checked; all problems
are reported together in one `DiffusionCheckpointError`. The config is inferred from the weights' shapes
(`infer_config`), including the head count, which the relative-bias tables ([32, heads]) carry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from os import PathLike

import jax
import numpy as np

from clvp_jax.checkpoint.errors import import_torch
from clvp_jax.waveform.diffusion import param_shapes
from clvp_jax.waveform.diffusion_config import TRAILING_RESBLOCKS, DiffusionConfig

LEAF_RENAMES = {
    "scale": "weight",  # GroupNorm gain
    "embedding": "weight",  # nn.Embed table (code_embedding)
    "relative_attention_bias": "relative_attention_bias.weight",  # the nn.Embedding of RelativePositionBias
}
# Keys of the source that are deliberately not loaded, with the reason. DiffusionTts registers no buffers, so a
# real checkpoint consumes every key; anything else is reported as unexpected.
IGNORED_KEYS: dict[str, str] = {}
_INDEXED = re.compile(r"^(.*)_(\d+)$")
_HEADS_KEY = "latent_conditioner.1.relative_pos_embeddings.relative_attention_bias.weight"


class DiffusionCheckpointError(ValueError):
    """A state dict that does not fit the model: lists every missing, unexpected, mis-shaped and mis-typed key."""

    def __init__(self, missing=(), unexpected=(), mismatched=(), context: str = "diffusion_decoder") -> None:
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)
        lines = [f"{context}: checkpoint does not match the DiffusionTts model:"]
        if self.missing:
            lines.append(f"  missing ({len(self.missing)}): {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected ({len(self.unexpected)}): {', '.join(self.unexpected)}")
        for key, got, want in self.mismatched:
            lines.append(f"  mismatched: {key}: checkpoint {got}, model expects {want}")
        lines.append("Pass the DiffusionTts state dict of diffusion_decoder.pth (plain state dict, float32).")
        super().__init__("\n".join(lines))


def torch_key(path: tuple[str, ...]) -> str:
    """The torch state-dict key of a Flax parameter path (without the leading 'params')."""
    *modules, leaf = path
    segments = []
    for name in modules:
        match = _INDEXED.match(name)
        segments.extend(match.groups() if match else (name,))
    segments.append(LEAF_RENAMES.get(leaf, leaf) if modules else leaf)
    return ".".join(segments)


def _target_leaves(config: DiffusionConfig) -> dict[str, tuple[tuple[str, ...], jax.ShapeDtypeStruct]]:
    """torch key -> (Flax path, expected shape/dtype) for every parameter of the model."""
    flat = jax.tree_util.tree_flatten_with_path(param_shapes(config)["params"])[0]
    table = {}
    for key_path, leaf in flat:
        path = tuple(entry.key for entry in key_path)
        table[torch_key(path)] = (path, leaf)
    return table


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
    targets = _target_leaves(config)
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
        raise DiffusionCheckpointError(missing, unexpected, mismatched)
    return config, {"params": params}


def original_from_params(variables: Mapping, config: DiffusionConfig) -> dict[str, np.ndarray]:
    """The inverse: {'params': ...} -> the original state dict (numpy arrays), checked against the config."""
    targets = _target_leaves(config)
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
        raise DiffusionCheckpointError(missing, unexpected, mismatched, context="parameter tree")
    return state


def load_original(
    path: str | PathLike, config: DiffusionConfig | None = None, *, num_heads: int | None = None
) -> tuple[DiffusionConfig, dict]:
    """Reads `diffusion_decoder.pth` (`torch.load(weights_only=True)`; torch is only needed here) and converts it."""
    torch = import_torch(path)  # torch is an optional extra
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(loaded, Mapping):
        raise DiffusionCheckpointError(context=f"{path}: expected a state dict, got {type(loaded).__name__}")
    return params_from_original({k: v.numpy() for k, v in loaded.items()}, config, num_heads=num_heads)
