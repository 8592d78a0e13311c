"""The one strict rule table between reference (HF PyTorch) state dicts and clvp-jax parameter trees.

Flax paths mirror the reference keys, so the mapping is a short list of rules, written once and used both ways
(by `from_pretrained`, the converter and the HF export):

  path segments   `layers_3` / `group_norms_0` / `mel_attn_blocks_1`  <->  `layers.3` / ...
  leaf names      `weight`, `embedding`, `scale` -> `weight`; `bias` -> `bias`; `logit_scale` as is
  weight layout   ours are torch's nn.Linear [out, in] (see `clvp_jax.layers.Linear`), so:
                  nn.Linear [out, in] -> copy
                  GPT-2 Conv1D [in, out] (`mlp.c_fc`, `mlp.c_proj` of the decoder) -> transpose
                  1x1 nn.Conv1d [out, in, 1] (`mel_conv`) -> squeeze

Buffers: the non-persistent causal masks (`*.attn.bias` of shape [1, 1, n, n], `mel_attn_blocks.*.bias` of that
rank) are never in a reference state dict and are ignored if present; the persistent rotary `inv_freq` buffers are
checked against the value the config implies on import and written on export.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from clvp_jax.config import ClvpConfig, ClvpEncoderConfig
from clvp_jax.layers import rotary_inv_freq, rotary_r0

_INDEXED = ("layers", "group_norms", "mel_attn_blocks")
_LEAF_NAMES = {"weight": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}
# (regex on the dotted HF key, layout of the torch tensor). First match wins.
_WEIGHT_LAYOUTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(^|\.)mlp\.c_(fc|proj)\.weight$"), "conv1d"),
    (re.compile(r"(^|\.)mel_conv\.weight$"), "conv1x1"),
]
_ENCODERS = {"text_encoder_model": "text_config", "speech_encoder_model": "speech_config"}
# Top-level parameter groups of the two halves that Tortoise ships as separate files. `parts=` below restricts the
# strict checks to some of them (e.g. a fine-tuned autoregressive checkpoint without the CLVP towers).
AUTOREGRESSIVE_PARTS = ("conditioning_encoder", "speech_decoder_model")
CLVP_PARTS = ("text_encoder_model", "speech_encoder_model", "logit_scale")
ALL_PARTS = AUTOREGRESSIVE_PARTS + CLVP_PARTS


class WeightsMismatchError(ValueError):
    """A state dict that does not fit the config; lists every missing, unexpected and mis-shaped key."""

    def __init__(self, missing=(), unexpected=(), mismatched=(), context: str = "") -> None:
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)
        lines = [f"checkpoint does not match the config{(' (' + context + ')') if context else ''}:"]
        if self.missing:
            lines.append(f"  missing ({len(self.missing)}): {', '.join(self.missing[:20])}")
        if self.unexpected:
            lines.append(f"  unexpected ({len(self.unexpected)}): {', '.join(self.unexpected[:20])}")
        for key, got, want in self.mismatched[:20]:
            lines.append(f"  mis-shaped: {key}: checkpoint {got}, config expects {want}")
        lines.append("Check that config.json belongs to these weights (layer counts, widths, vocabulary sizes).")
        super().__init__("\n".join(lines))


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


def _layout(key: str, path: tuple[str, ...]) -> str:
    if path[-1] != "weight":  # embeddings, norms, biases
        return "copy"
    for pattern, layout in _WEIGHT_LAYOUTS:
        if pattern.search(key):
            return layout
    return "copy"


_TO_TORCH: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "copy": lambda x: x,
    "conv1d": lambda x: x.T,
    "conv1x1": lambda x: x[:, :, None],
}
_FROM_TORCH: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "copy": lambda x: x,
    "conv1d": lambda x: x.T,
    "conv1x1": lambda x: x[:, :, 0],
}


def torch_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    if layout == "conv1d":
        return tuple(reversed(shape))
    if layout == "conv1x1":
        return (*shape, 1)
    return tuple(shape)


def rotary_buffers(config: ClvpConfig, parts: Collection[str] = ALL_PARTS) -> dict[str, np.ndarray]:
    """The persistent `rotary_pos_emb.inv_freq` buffers the reference state dict carries for `config`."""
    out = {}
    for name, field in _ENCODERS.items():
        enc: ClvpEncoderConfig = getattr(config, field)
        if enc.use_rotary_embedding and name in parts:
            r0 = rotary_r0(enc.projection_dim, enc.num_attention_heads)
            out[f"{name}.rotary_pos_emb.inv_freq"] = rotary_inv_freq(r0)
    return out


def _is_ignored_buffer(key: str, value_shape: tuple[int, ...]) -> bool:
    """The non-persistent causal-mask buffers (`...attn.bias`, `mel_attn_blocks.N.bias`), rank 4."""
    return bool(re.search(r"(\.attn|mel_attn_blocks\.\d+)\.(bias|masked_bias)$", key)) and len(value_shape) != 1


def expected_params(
    config: ClvpConfig, parts: Collection[str] = ALL_PARTS
) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    """Flat {path: ShapeDtypeStruct} of `config`'s parameters whose top-level group is in `parts`."""
    from clvp_jax.model import param_shapes  # local: model imports are heavier

    unknown = set(parts) - set(ALL_PARTS)
    if unknown:
        raise ValueError(f"unknown parameter group(s) {sorted(unknown)}; choose from {list(ALL_PARTS)}")
    return {p: s for p, s in flatten_dict(param_shapes(config)).items() if p[0] in parts}


def params_to_state_dict(
    params: Mapping[str, Any], config: ClvpConfig, *, parts: Collection[str] = ALL_PARTS, copy: bool = True
) -> dict[str, np.ndarray]:
    """clvp-jax params -> a reference state dict (numpy, same dtypes), buffers included. Strict.

    `parts` (default: all) names the top-level groups `params` must hold exactly (see `ALL_PARTS`).
    `copy=False` returns (possibly transposed) views of numpy params instead of C-ordered copies, so that a
    streaming writer can serialise a large model one tensor at a time.
    """
    check_params(params, config, parts)
    flat = flatten_dict(dict(params))
    out = {}
    for path, value in flat.items():
        key = hf_key(path)
        view = _TO_TORCH[_layout(key, path)](np.asarray(value))
        out[key] = np.array(view, order="C") if copy else view
    out.update(rotary_buffers(config, parts))
    return out


def check_params(params: Mapping, config: ClvpConfig, parts: Collection[str] = ALL_PARTS) -> None:
    """Raise `WeightsMismatchError` unless `params` holds exactly the groups `parts` with the config's shapes."""
    flat = flatten_dict(dict(params))
    expected = expected_params(config, parts)
    missing = sorted("/".join(p) for p in expected.keys() - flat.keys())
    unexpected = sorted("/".join(p) for p in flat.keys() - expected.keys())
    mismatched = [
        ("/".join(p), tuple(np.shape(flat[p])), tuple(expected[p].shape))
        for p in expected.keys() & flat.keys()
        if tuple(np.shape(flat[p])) != tuple(expected[p].shape)
    ]
    if missing or unexpected or mismatched or not parts:
        raise WeightsMismatchError(missing, unexpected, mismatched, "parameter tree")


def state_dict_to_params(
    state_dict: Mapping[str, Any], config: ClvpConfig, *, dtype: Any = None, parts: Collection[str] = ALL_PARTS
) -> dict:
    """A reference state dict -> clvp-jax params, strictly.

    Every parameter must be present with the shape the config implies; every key must be consumed, or be a
    known buffer (causal masks are skipped, rotary `inv_freq` must equal the config's). Otherwise raises
    `WeightsMismatchError` listing everything that is wrong.

    Args:
      state_dict: key -> numpy array. A lazy mapping (e.g. `clvp_jax.loading.SafetensorsReader`) may provide
        `shapes() -> {key: shape}` so that tensors are read one by one, only once their shape has been checked.
      config: the model config.
      dtype: cast floating params to this dtype (default: keep the stored dtype).
      parts: the top-level parameter groups to fill (default: all, see `ALL_PARTS`); keys of other groups are
        then unexpected.
    """
    shapes = state_dict.shapes() if hasattr(state_dict, "shapes") else {k: np.shape(v) for k, v in state_dict.items()}
    shapes = {k: tuple(v) for k, v in shapes.items()}

    def get(key: str) -> np.ndarray:
        return np.asarray(state_dict[key])

    expected = expected_params(config, parts)
    buffers = rotary_buffers(config, parts)
    missing, mismatched, consumed = [], [], set()
    flat = {}
    for path, spec in expected.items():
        key = hf_key(path)
        layout = _layout(key, path)
        if key not in shapes:
            missing.append(key)
            continue
        consumed.add(key)
        want = torch_shape(tuple(spec.shape), layout)
        got = shapes[key]
        if got != want:
            mismatched.append((key, got, want))
            continue
        value = _FROM_TORCH[layout](get(key))
        if dtype is not None and jax.numpy.issubdtype(value.dtype, jax.numpy.floating):  # bfloat16 too
            value = value.astype(dtype)
        flat[path] = value
    unexpected = []
    for key in shapes.keys() - consumed:
        if key in buffers:
            stored = np.asarray(get(key), np.float32)
            if stored.shape != buffers[key].shape or not np.allclose(stored, buffers[key], rtol=1e-6, atol=1e-7):
                mismatched.append((key, stored.shape, buffers[key].shape))
        elif not _is_ignored_buffer(key, shapes[key]):
            unexpected.append(key)
    if missing or unexpected or mismatched:
        raise WeightsMismatchError(sorted(missing), sorted(unexpected), mismatched)
    return unflatten_dict(flat)
