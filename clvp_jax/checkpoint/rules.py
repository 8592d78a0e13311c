"""The one strict rule table between reference (HF PyTorch) state dicts and clvp-jax parameter trees.

Flax paths mirror the reference keys, so the mapping is a short list of rules, used both ways (by
`from_pretrained`, the converter and the HF export):

  path segments   `layers_3` / `group_norms_0` / `mel_attn_blocks_1`  <->  `layers.3` / ...
  leaf names      `weight`, `embedding`, `scale` -> `weight`; `bias` -> `bias`; `logit_scale` as is
  tensor layout   ours are torch's nn.Linear [out, in] (see `clvp_jax.layers.Linear`); one `Layout` record
                  (`clvp_jax.checkpoint.layouts`) per key: SAME, except
                  GPT-2 Conv1D [in, out] (`mlp.c_fc`, `mlp.c_proj` of the decoder) -> TRANSPOSED
                  1x1 nn.Conv1d [out, in, 1] (`mel_conv`) -> TRAILING_UNIT

Shapes and dtypes are checked together, before any tensor is read: a tensor of another floating dtype than the
checkpoint declares is listed as mis-typed unless a cast is asked for, a non-floating one always is.

Buffers: the non-persistent causal masks (`*.attn.bias` of shape [1, 1, n, n], `mel_attn_blocks.*.bias` of that
rank) are never in a reference state dict and are ignored if present; the persistent rotary `inv_freq` buffers are
checked against the value the config implies on import and written on export.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from clvp_jax.checkpoint.dtypes import is_float
from clvp_jax.checkpoint.errors import WeightsMismatchError
from clvp_jax.checkpoint.layouts import SAME, TRAILING_UNIT, TRANSPOSED, Layout
from clvp_jax.checkpoint.readers import read_tensor, tensor_specs
from clvp_jax.config import ClvpConfig, ClvpEncoderConfig
from clvp_jax.layers import rotary_inv_freq, rotary_r0
from clvp_jax.model import param_shapes

_INDEXED = ("layers", "group_norms", "mel_attn_blocks")
_LEAF_NAMES = {"weight": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}
# (regex on the dotted HF key of a `weight`, its layout). First match wins; other keys are SAME.
_WEIGHT_LAYOUTS: list[tuple[re.Pattern[str], Layout]] = [
    (re.compile(r"(^|\.)mlp\.c_(fc|proj)\.weight$"), TRANSPOSED),
    (re.compile(r"(^|\.)mel_conv\.weight$"), TRAILING_UNIT),
]
_ENCODERS = {"text_encoder_model": "text_config", "speech_encoder_model": "speech_config"}
# Top-level parameter groups of the two halves that Tortoise ships as separate files. `parts=` below restricts the
# strict checks to some of them (e.g. a fine-tuned autoregressive checkpoint without the CLVP towers).
AUTOREGRESSIVE_PARTS = ("conditioning_encoder", "speech_decoder_model")
CLVP_PARTS = ("text_encoder_model", "speech_encoder_model", "logit_scale")
ALL_PARTS = AUTOREGRESSIVE_PARTS + CLVP_PARTS


def hf_key(path: tuple[str, ...]) -> str:
    """Flax param path -> reference state-dict key."""
    parts = []
    for seg in path[:-1]:
        m = re.fullmatch(r"(.+)_(\d+)", seg)
        if m and m.group(1) in _INDEXED:
            parts += [m.group(1), m.group(2)]
        else:
            parts.append(seg)
    leaf = path[-1]
    parts.append(_LEAF_NAMES.get(leaf, leaf) if len(path) > 1 else leaf)
    return ".".join(parts)


def layout_of(key: str, path: tuple[str, ...]) -> Layout:
    """The layout of the reference tensor `key` (our leaf `path`) relative to ours."""
    if path[-1] != "weight":  # embeddings, norms, biases
        return SAME
    return next((layout for pattern, layout in _WEIGHT_LAYOUTS if pattern.search(key)), SAME)


def rotary_buffers(config: ClvpConfig, parts: Collection[str] = ALL_PARTS) -> dict[str, np.ndarray]:
    """The persistent `rotary_pos_emb.inv_freq` buffers the reference state dict carries for `config`."""
    out = {}
    for name, field in _ENCODERS.items():
        enc: ClvpEncoderConfig = getattr(config, field)
        if enc.use_rotary_embedding and name in parts:
            r0 = rotary_r0(enc.projection_dim, enc.num_attention_heads)
            out[f"{name}.rotary_pos_emb.inv_freq"] = rotary_inv_freq(r0)
    return out


def is_ignored_buffer(key: str, shape: tuple[int, ...]) -> bool:
    """The non-persistent causal-mask buffers (`...attn.bias`, `mel_attn_blocks.N.bias`), rank 4."""
    return bool(re.search(r"(\.attn|mel_attn_blocks\.\d+)\.(bias|masked_bias)$", key)) and len(shape) != 1


def expected_params(
    config: ClvpConfig, parts: Collection[str] = ALL_PARTS
) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    """Flat {path: ShapeDtypeStruct} of `config`'s parameters whose top-level group is in `parts`."""
    unknown = set(parts) - set(ALL_PARTS)
    if unknown:
        raise ValueError(f"unknown parameter group(s) {sorted(unknown)}; choose from {list(ALL_PARTS)}")
    return {p: s for p, s in flatten_dict(param_shapes(config)).items() if p[0] in parts}


def _type_problem(got: np.dtype, want: np.dtype | None) -> bool:
    """Whether a leaf of dtype `got` cannot fill a floating parameter expected as `want` (None: any float)."""
    return not is_float(got) or (want is not None and got != want)


def check_params(params: Mapping, config: ClvpConfig, parts: Collection[str] = ALL_PARTS, *, dtype: Any = None) -> None:
    """Raise `WeightsMismatchError` unless `params` holds exactly the groups `parts` with the config's shapes.

    Every leaf must be floating, and of `dtype` when one is given.
    """
    flat = flatten_dict(dict(params))
    expected = expected_params(config, parts)
    want = None if dtype is None else np.dtype(dtype)
    missing = sorted("/".join(p) for p in expected.keys() - flat.keys())
    unexpected = sorted("/".join(p) for p in flat.keys() - expected.keys())
    common = sorted(expected.keys() & flat.keys())
    mismatched = [
        ("/".join(p), tuple(np.shape(flat[p])), tuple(expected[p].shape))
        for p in common
        if tuple(np.shape(flat[p])) != tuple(expected[p].shape)
    ]
    mistyped = [
        ("/".join(p), np.dtype(flat[p].dtype).name, want.name if want is not None else "a floating dtype")
        for p in common
        if _type_problem(np.dtype(flat[p].dtype), want)
    ]
    if missing or unexpected or mismatched or mistyped or not parts:
        raise WeightsMismatchError(missing, unexpected, mismatched, "parameter tree", mistyped)


def params_to_state_dict(
    params: Mapping[str, Any], config: ClvpConfig, *, parts: Collection[str] = ALL_PARTS, copy: bool = True
) -> dict[str, np.ndarray]:
    """clvp-jax params -> a reference state dict (numpy, same dtypes), buffers included. Strict.

    `parts` (default: all) names the top-level groups `params` must hold exactly (see `ALL_PARTS`).
    `copy=False` returns (possibly transposed) views of numpy params instead of C-ordered copies, so that a
    streaming writer can serialise a large model one tensor at a time.
    """
    check_params(params, config, parts)
    out = {}
    for path, value in flatten_dict(dict(params)).items():
        key = hf_key(path)
        view = layout_of(key, path).to_torch(np.asarray(value))
        out[key] = np.array(view, order="C") if copy else view
    out.update(rotary_buffers(config, parts))
    return out


def check_state_dict(
    state_dict: Mapping[str, Any],
    config: ClvpConfig,
    *,
    dtype: Any = None,
    parts: Collection[str] = ALL_PARTS,
    stored_dtype: Any = "float32",
) -> list[tuple[tuple[str, ...], str, Layout]]:
    """The strict check of `state_dict_to_params` (same arguments), reading no tensor but the rotary buffers.

    Returns:
      (param path, state-dict key, layout) of every parameter to fill.
    Raises:
      WeightsMismatchError: listing every missing, unexpected, mis-shaped and mis-typed key.
    """
    specs = tensor_specs(state_dict)
    expected = expected_params(config, parts)
    buffers = rotary_buffers(config, parts)
    want_dtype = None if dtype is not None else np.dtype(stored_dtype)
    missing, mismatched, mistyped, consumed, todo = [], [], [], set(), []
    for path, spec in expected.items():
        key = hf_key(path)
        layout = layout_of(key, path)
        if key not in specs:
            missing.append(key)
            continue
        consumed.add(key)
        want, got = layout.torch_shape(spec.shape), specs[key]
        if tuple(got.shape) != want:
            mismatched.append((key, tuple(got.shape), want))
        elif _type_problem(got.dtype, want_dtype):
            mistyped.append((key, got.dtype.name, want_dtype.name if want_dtype is not None else "a floating dtype"))
        else:
            todo.append((path, key, layout))
    unexpected = []
    for key in specs.keys() - consumed:
        if key in buffers:
            stored = np.asarray(state_dict[key], np.float32)
            if stored.shape != buffers[key].shape or not np.allclose(stored, buffers[key], rtol=1e-6, atol=1e-7):
                mismatched.append((key, stored.shape, buffers[key].shape))
        elif not is_ignored_buffer(key, specs[key].shape):
            unexpected.append(key)
    if missing or unexpected or mismatched or mistyped:
        raise WeightsMismatchError(sorted(missing), sorted(unexpected), mismatched, mistyped=mistyped)
    return todo


def state_dict_to_params(
    state_dict: Mapping[str, Any],
    config: ClvpConfig,
    *,
    dtype: Any = None,
    parts: Collection[str] = ALL_PARTS,
    stored_dtype: Any = "float32",
) -> dict:
    """A reference state dict -> clvp-jax params, strictly.

    Every parameter must be present with the shape the config implies and a floating dtype; every key must be
    consumed, or be a known buffer (causal masks are skipped, rotary `inv_freq` must equal the config's).
    Otherwise raises `WeightsMismatchError` listing everything that is wrong, before any tensor is read.

    Args:
      state_dict: key -> numpy array. A lazy reader (`clvp_jax.checkpoint.readers`) provides `specs()`, so that
        tensors are read one by one, only once every shape and dtype has been checked.
      config: the model config.
      dtype: cast floating params to this dtype (default: keep the stored dtype).
      parts: the top-level parameter groups to fill (default: all, see `ALL_PARTS`); keys of other groups are
        then unexpected.
      stored_dtype: the floating dtype the checkpoint declares; without `dtype`, a parameter of another dtype is
        listed as mis-typed (a float16 tensor in a float32 checkpoint is a damaged or mislabelled file).
    """
    todo = check_state_dict(state_dict, config, dtype=dtype, parts=parts, stored_dtype=stored_dtype)
    flat = {}
    for path, key, layout in todo:
        flat[path] = layout.to_flax(read_tensor(state_dict, key, dtype))
    return unflatten_dict(flat)
