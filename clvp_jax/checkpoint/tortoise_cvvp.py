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
checked against `jax.eval_shape` of the model's init; all problems are reported together in one error.
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
from flax.traverse_util import flatten_dict, unflatten_dict

from clvp_jax.layers import rotary_inv_freq
from clvp_jax.waveform.cvvp import CVVP, HEAD_DIM, ROTARY_DIM, CvvpConfig

_INDEX = re.compile(r"\d+")
_LEAF_RENAMES = {("norm", "weight"): "scale"}  # (module, torch leaf) -> flax leaf
_ROTARY_BUFFER = re.compile(r"^(conditioning|speech)_transformer\.transformer\.attn_layers\.rotary_pos_emb\.inv_freq$")
_ENCODERS = ("conditioning_transformer", "speech_transformer")


class CvvpCheckpointError(ValueError):
    """A CVVP state dict that does not fit the model: every problem listed at once."""

    def __init__(self, problems: list[str], context: str = "") -> None:
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:40])
        more = f"\n  ... and {len(self.problems) - 40} more" if len(self.problems) > 40 else ""
        where = f" ({context})" if context else ""
        super().__init__(
            f"cvvp checkpoint does not match the model{where}: {len(self.problems)} problem(s)\n  {shown}{more}\n"
            "Check that the file is Tortoise's cvvp.pth (or a CVVP state dict) and that the config fits it."
        )


def flax_path(key: str) -> tuple[str, ...]:
    """torch key -> Flax parameter path (the module docstring's rules)."""
    path: list[str] = []
    for seg in key.split("."):
        if _INDEX.fullmatch(seg) and path:
            path[-1] = f"{path[-1]}_{seg}"
        else:
            path.append(seg)
    if len(path) >= 2 and (path[-2], path[-1]) in _LEAF_RENAMES:
        path[-1] = _LEAF_RENAMES[(path[-2], path[-1])]
    return tuple(path)


def torch_key(path: tuple[str, ...]) -> str:
    """Flax parameter path -> torch key (the inverse of `flax_path`)."""
    parts: list[str] = []
    for seg in path:
        pieces = seg.split("_")
        tail = []
        while len(pieces) > 1 and _INDEX.fullmatch(pieces[-1]):
            tail.insert(0, pieces.pop())
        parts += ["_".join(pieces), *tail]
    for (module, leaf), renamed in _LEAF_RENAMES.items():
        if len(parts) >= 2 and parts[-2] == module and parts[-1] == renamed:
            parts[-1] = leaf
    return ".".join(parts)


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


def _count_layers(state_dict: Mapping[str, np.ndarray], encoder: str) -> int:
    pattern = re.compile(rf"^{encoder}\.transformer\.attn_layers\.layers\.(\d+)\.")
    entries = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
    if not entries or len(entries) % 2 or entries != set(range(len(entries))):
        raise CvvpCheckpointError(
            [f"{encoder}: layer entries {sorted(entries)} are not 0..2n-1 (attention and feed-forward pairs)"],
            "config inference",
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
        raise CvvpCheckpointError([f"missing {k}" for k in missing], "config inference")
    model_dim, mel_channels = state_dict["cond_emb.1.weight"].shape[0], state_dict["cond_emb.0.weight"].shape[1]
    inner = state_dict[needed[3]].shape[0]
    if inner % HEAD_DIM:
        raise CvvpCheckpointError([f"to_q has {inner} outputs, not a multiple of the head dim {HEAD_DIM}"])
    return CvvpConfig(
        model_dim=int(model_dim),
        transformer_heads=int(inner // HEAD_DIM),
        conditioning_enc_depth=_count_layers(state_dict, "conditioning_transformer"),
        speech_enc_depth=_count_layers(state_dict, "speech_transformer"),
        mel_channels=int(mel_channels),
        mel_codes=int(state_dict["speech_emb.emb.weight"].shape[0]),
    )


def state_dict_to_params(state_dict: Mapping[str, np.ndarray], config: CvvpConfig | None = None) -> dict:
    """The Flax params of a CVVP state dict (numpy arrays; `config` inferred from the shapes when None).

    Raises:
        CvvpCheckpointError: unexpected, missing, mis-shaped or mis-typed entries, or rotary buffers that differ
            from the recomputed ones (all listed together).
    """
    config = config or infer_config(state_dict)
    expected = expected_params(config)
    problems: list[str] = []
    flat: dict[tuple[str, ...], np.ndarray] = {}
    seen: set[tuple[str, ...]] = set()
    for key, value in state_dict.items():
        value = np.asarray(value)
        if _ROTARY_BUFFER.match(key):
            if value.shape != rotary_buffer().shape or not np.array_equal(value, rotary_buffer()):
                problems.append(f"{key}: rotary table differs from 1 / 10000^(2j / {ROTARY_DIM}) (shape {value.shape})")
            continue
        path = flax_path(key)
        want = expected.get(path)
        if want is None:
            problems.append(f"unexpected {key} (no model parameter {'/'.join(path)})")
            continue
        seen.add(path)
        if value.shape != tuple(want.shape) or value.dtype != want.dtype:
            problems.append(f"{key}: checkpoint {value.dtype}{list(value.shape)}, model {want.dtype}{list(want.shape)}")
            continue
        flat[path] = value
    for encoder in _ENCODERS:
        key = f"{encoder}.transformer.attn_layers.rotary_pos_emb.inv_freq"
        if key not in state_dict:
            problems.append(f"missing {key}")
    problems += [f"missing {torch_key(path)}" for path in expected if path not in seen]
    if problems:
        raise CvvpCheckpointError(problems)
    return unflatten_dict(flat)


def params_to_state_dict(params: Mapping, config: CvvpConfig) -> dict[str, np.ndarray]:
    """The original state dict (torch key order is not kept; values and buffers are) of checked `params`."""
    expected = expected_params(config)
    flat = flatten_dict(dict(params))
    problems = [f"unexpected parameter {'/'.join(p)}" for p in flat if p not in expected]
    problems += [f"missing parameter {'/'.join(p)}" for p in expected if p not in flat]
    problems += [
        f"{'/'.join(p)}: {np.shape(v)} but the model expects {tuple(expected[p].shape)}"
        for p, v in flat.items()
        if p in expected and tuple(np.shape(v)) != tuple(expected[p].shape)
    ]
    if problems:
        raise CvvpCheckpointError(problems, "export")
    out = {torch_key(p): np.asarray(v) for p, v in flat.items()}
    for encoder in _ENCODERS:
        out[f"{encoder}.transformer.attn_layers.rotary_pos_emb.inv_freq"] = rotary_buffer()
    return out


def load_cvvp(path: str | os.PathLike, config: CvvpConfig | None = None) -> tuple[CvvpConfig, dict]:
    """Read `cvvp.pth` (a plain state dict, `torch.load(weights_only=True)`) -> (config, params)."""
    import torch  # local: only the converter reads torch files

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CVVP checkpoint at {path}")
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(loaded, Mapping) or not all(hasattr(v, "numpy") for v in loaded.values()):
        raise CvvpCheckpointError([f"{path} is not a plain state dict of tensors (got {type(loaded).__name__})"])
    state_dict = {k: v.detach().cpu().numpy() for k, v in loaded.items()}
    config = config or infer_config(state_dict)
    return config, state_dict_to_params(state_dict, config)
