"""Strict two-way converter between Tortoise's `cvvp.pth` state dict and `clvp_jax.waveform.cvvp.CVVP` params.

The Flax tree mirrors the torch keys, so the mapping is two rules and one rename:
  path      split the torch key at dots; an integer segment joins the one before it with "_"
            (`cond_emb.0.weight` -> cond_emb_0/weight, `attn_layers.layers.3.0.0.g` -> attn_layers/layers_3_0_0/g,
            `pre_combiner.1.qkv.weight` -> pre_combiner_1/qkv/weight)
  leaf      `norm.weight` (LayerNorm, GroupNorm) -> `norm/scale`; every other leaf keeps its torch name
  layout    none: every tensor is copied as is (Linear [out, in], Conv1d [out, in, k], Embedding [vocab, D])
Buffers: the rotary `*.rotary_pos_emb.inv_freq` tables are compared with the ones the model recomputes (they must
agree exactly) and then dropped; `params_to_state_dict` writes them back, so a round trip gives the original file.
Every other source key must land on a model parameter, every parameter must be filled, and shapes and dtypes are
checked against `jax.eval_shape` of the model's init (`clvp_jax.checkpoint.strict`); all problems are reported
together in one `CvvpCheckpointError` (a `WeightsMismatchError`), both ways.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict

from clvp_jax.checkpoint.errors import WeightsMismatchError
from clvp_jax.checkpoint.strict import (
    LeafRename,
    Naming,
    key_table,
    load_pth,
    state_dict_from_tree,
    tree_from_state_dict,
)
from clvp_jax.layers import rotary_inv_freq
from clvp_jax.waveform.cvvp import CVVP, HEAD_DIM, ROTARY_DIM, CvvpConfig

NAMING = Naming((LeafRename(("norm", "scale"), "norm.weight"),))  # LayerNorm / GroupNorm gains
_ENCODERS = ("conditioning_transformer", "speech_transformer")


class CvvpCheckpointError(WeightsMismatchError):
    """A CVVP state dict (or params tree) that does not fit the model (see `WeightsMismatchError`)."""

    HINT = "Check that the file is Tortoise's cvvp.pth (or a CVVP state dict) and that the config fits it."


def flax_path(key: str) -> tuple[str, ...]:
    """torch key -> Flax parameter path (the module docstring's rules)."""
    return NAMING.flax_path(key)


def torch_key(path: tuple[str, ...]) -> str:
    """Flax parameter path -> torch key (the inverse of `flax_path`)."""
    return NAMING.torch_key(path)


@functools.cache
def expected_params(config: CvvpConfig) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    """Every parameter of the model for `config`, by path, as `jax.eval_shape` of its init gives it."""
    model = CVVP(config)
    mels = jax.ShapeDtypeStruct((1, config.mel_channels, 8), jnp.float32)
    codes = jax.ShapeDtypeStruct((1, 4), jnp.int32)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(mels.shape), jnp.zeros(codes.shape, jnp.int32))
    )
    return flatten_dict(shapes["params"])


def rotary_buffer() -> np.ndarray:
    """The `inv_freq` table both encoders hold (rotary width 32 -> 16 entries), as torch computes it."""
    return rotary_inv_freq(ROTARY_DIM)


def _buffers() -> dict[str, np.ndarray]:
    """The persistent buffers of the state dict: each encoder's rotary table."""
    return {f"{encoder}.transformer.attn_layers.rotary_pos_emb.inv_freq": rotary_buffer() for encoder in _ENCODERS}


def _count_layers(state_dict: Mapping[str, np.ndarray], encoder: str) -> int:
    pattern = re.compile(rf"^{encoder}\.transformer\.attn_layers\.layers\.(\d+)\.")
    entries = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
    if not entries or len(entries) % 2 or entries != set(range(len(entries))):
        raise CvvpCheckpointError(
            context="config inference",
            other={"layer entries": [f"{encoder}: {sorted(entries)}, not 0..2n-1 (attention, feed-forward pairs)"]},
        )
    return len(entries) // 2


def infer_config(state_dict: Mapping[str, np.ndarray]) -> CvvpConfig:
    """The config the weights imply: widths from `cond_emb`, heads from `to_q` (64 per head), depths from the
    layer entries, the code vocabulary from `speech_emb`."""
    needed = [
        "cond_emb.0.weight",
        "cond_emb.1.weight",
        "speech_emb.emb.weight",
        "conditioning_transformer.transformer.attn_layers.layers.0.1.to_q.weight",
    ]
    missing = [k for k in needed if k not in state_dict]
    if missing:
        raise CvvpCheckpointError(missing, context="config inference")
    model_dim, mel_channels = state_dict["cond_emb.1.weight"].shape[0], state_dict["cond_emb.0.weight"].shape[1]
    inner = state_dict[needed[3]].shape[0]
    if inner % HEAD_DIM:
        raise CvvpCheckpointError(mismatched=[(needed[3], (inner,), f"a multiple of the head dim {HEAD_DIM} rows")])
    return CvvpConfig(
        model_dim=int(model_dim),
        transformer_heads=int(inner // HEAD_DIM),
        conditioning_enc_depth=_count_layers(state_dict, "conditioning_transformer"),
        speech_enc_depth=_count_layers(state_dict, "speech_transformer"),
        mel_channels=int(mel_channels),
        mel_codes=int(state_dict["speech_emb.emb.weight"].shape[0]),
    )


def state_dict_to_params(state_dict: Mapping[str, np.ndarray], config: CvvpConfig | None = None) -> dict:
    """The Flax params of a CVVP state dict (numpy arrays or torch tensors; `config` inferred from the shapes when
    None).

    Raises:
        CvvpCheckpointError: unexpected, missing, mis-shaped or mis-typed entries, or rotary buffers that differ
            from the recomputed ones (all listed together).
    """
    config = config or infer_config(state_dict)
    targets = key_table(expected_params(config), NAMING)
    return tree_from_state_dict(state_dict, targets, buffers=_buffers(), context="cvvp", error=CvvpCheckpointError)


def params_to_state_dict(params: Mapping, config: CvvpConfig) -> dict[str, np.ndarray]:
    """The original state dict (torch key order is not kept; values and buffers are) of checked `params`.

    Raises:
        CvvpCheckpointError: missing, unexpected, mis-shaped or mis-typed leaves (by Flax path).
    """
    leaves = expected_params(config)
    return state_dict_from_tree(params, leaves, NAMING, buffers=_buffers(), context="export", error=CvvpCheckpointError)


def load_cvvp(path: str | os.PathLike, config: CvvpConfig | None = None) -> tuple[CvvpConfig, dict]:
    """Read `cvvp.pth` (a plain state dict, `torch.load(weights_only=True)`) -> (config, params)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CVVP checkpoint at {path}")
    state_dict = load_pth(path)
    config = config or infer_config(state_dict)
    return config, state_dict_to_params(state_dict, config)
