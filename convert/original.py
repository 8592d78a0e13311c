"""Original Tortoise checkpoints -> HF-named weights and a `ClvpConfig`.

Reads `autoregressive.pth` (class `UnifiedVoice`) and/or `clvp2.pth` (class `CLVP`, x-transformers towers) and
presents them as a lazy, HF-named state dict, which `clvp_jax.weights.state_dict_to_params` (the one strict rule
table) then turns into parameters. Facts: shared/reference/tortoise_original.md §2-4.

Key mapping (rule table `_AR_RULES` / `_CLVP_RULES`; D = `speech_decoder_model.model.decoder`):
  conditioning_encoder.attn.{i}.qkv [3d, d, 1]  -> mel_attn_blocks.{i}.{q,k,v}_proj: squeeze, then de-interleave
                                                   per head: the rows are laid out [heads, (q|k|v), d/heads]
  gpt.h.{i}.attn.c_attn [d, 3d] (GPT-2 Conv1D)  -> D.layers.{i}.attn.{q,k,v}_proj: transpose, 3 contiguous blocks
  gpt.h.{i}.attn.c_proj [d, d] (Conv1D)          -> D.layers.{i}.attn.out_proj: transpose (HF uses nn.Linear)
  gpt.h.{i}.mlp.*                                -> D.layers.{i}.mlp.* unchanged (HF keeps Conv1D there)
  CLVP `...attn_layers.layers.{n}.*`             -> `{text,speech}_encoder_model.layers.{n // 2}.*` (entry 2i is
                                                   attention, 2i+1 feed-forward), everything else copied
Dropped, by exact name (`IGNORED`): the old GPT-2 buffers `gpt.h.{i}.attn.bias` / `.masked_bias` (note:
`gpt.h.{i}.attn.c_attn.bias` is a weight and is kept) and the training-only `text_head.*`. Every other key must
match a rule, or it is reported as unexpected.

Config (`convert.infer`): every size comes from the tensor shapes. What shapes cannot tell -- the autoregressive head count and the
special token ids -- comes from `original_config.json` (the constructors' keyword arguments, as in
shared/data/tortoise_tiny), else from the arguments here, else the real model's values (16 heads; text start =
rows - 1 of the text table, mel start/stop = the last two mel ids). Values given in `original_config.json` are
cross-checked against the shapes. The RMSNorm epsilon keeps HF's 1e-5: the original computes
x / max(rms, 1e-8), HF x * rsqrt(mean(x^2) + 1e-5); this moves CLVP scores by ~1e-5 and nothing else.

Halves: a folder (or file) with only the autoregressive model loads as the parameter groups
`conditioning_encoder` + `speech_decoder_model` (`parts`), which is all that conditioning and code generation
need; its config's CLVP towers come from `original_config.json` or the real CLVP's defaults. Pair a fine-tuned
autoregressive file with the stock CLVP by passing `clvp=` (CLI `--clvp`) to get a whole model.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from clvp_jax.config import ClvpConfig, ConfigError
from clvp_jax.loading import CheckpointError, tensor_to_numpy, torch_load_weights
from clvp_jax.weights import AUTOREGRESSIVE_PARTS, CLVP_PARTS, WeightsMismatchError
from convert.infer import CONFIG_FILE, infer_config

AR_FILE, CLVP_FILE = "autoregressive.pth", "clvp2.pth"
IGNORED = re.compile(r"gpt\.h\.\d+\.attn\.(bias|masked_bias)|text_head\.(weight|bias)")
# Constructor keyword arguments (tortoise-tts 8a2563e). Others are rejected, as the constructors would.
AR_KWARGS = frozenset(
    "layers model_dim heads max_text_tokens max_mel_tokens max_conditioning_inputs mel_length_compression "
    "number_text_tokens start_text_token number_mel_codes start_mel_token stop_mel_token train_solo_embeddings "
    "use_mel_codes_as_input checkpointing types".split()
)
CLVP_KWARGS = frozenset(
    "dim_text dim_speech dim_latent num_text_tokens text_enc_depth text_seq_len text_heads num_speech_tokens "
    "speech_enc_depth speech_heads speech_seq_len text_mask_percentage voice_mask_percentage "
    "wav_token_compression use_xformers".split()
)

Op = Callable[[np.ndarray], np.ndarray]
DEC = "speech_decoder_model.model.decoder"


def _copy(a: np.ndarray) -> np.ndarray:
    return a


def _squeeze_conv(a: np.ndarray) -> np.ndarray:
    return a[..., 0]  # 1x1 Conv1d [out, in, 1] -> Linear [out, in]


def _transpose(a: np.ndarray) -> np.ndarray:
    return a.T  # GPT-2 Conv1D [in, out] -> Linear [out, in]


def _qkv_heads(a: np.ndarray, j: int, heads: int) -> np.ndarray:
    """Block j (0 q, 1 k, 2 v) of the legacy fused qkv, whose 3d output rows are laid out [heads, 3, d/heads]."""
    a = a[..., 0] if a.ndim == 3 else a
    d = a.shape[0] // 3
    return a.reshape(heads, 3, d // heads, *a.shape[1:])[:, j].reshape(d, *a.shape[1:])


def _c_attn(a: np.ndarray, j: int) -> np.ndarray:
    """Block j of GPT-2's fused c_attn: weight [d, 3d] (Conv1D) -> [d, d] as a Linear; bias [3d] -> [d]."""
    d = a.shape[-1] // 3
    return a[..., j * d : (j + 1) * d].T if a.ndim == 2 else a[j * d : (j + 1) * d]


Targets = list[tuple[str, Op]]


def _one(template: str, op: Op = _copy) -> Callable[[re.Match, int], Targets]:
    return lambda m, heads: [(m.expand(template), op)]


_AR_RULES: list[tuple[re.Pattern[str], Callable[[re.Match, int], Targets]]] = [
    (r"conditioning_encoder\.init\.(weight|bias)", _one(r"conditioning_encoder.mel_conv.\1")),
    (r"conditioning_encoder\.attn\.(\d+)\.norm\.(weight|bias)", _one(r"conditioning_encoder.group_norms.\1.\2")),
    (
        r"conditioning_encoder\.attn\.(\d+)\.qkv\.(weight|bias)",
        lambda m, heads: [
            (
                f"conditioning_encoder.mel_attn_blocks.{m[1]}.{n}_proj.{m[2]}",
                functools.partial(_qkv_heads, j=j, heads=heads),
            )
            for j, n in enumerate("qkv")
        ],
    ),
    (
        r"conditioning_encoder\.attn\.(\d+)\.proj_out\.weight",
        _one(r"conditioning_encoder.mel_attn_blocks.\1.out_proj.weight", _squeeze_conv),
    ),
    (
        r"conditioning_encoder\.attn\.(\d+)\.proj_out\.bias",
        _one(r"conditioning_encoder.mel_attn_blocks.\1.out_proj.bias"),
    ),
    (r"text_embedding\.weight", _one("conditioning_encoder.text_token_embedding.weight")),
    (r"text_pos_embedding\.emb\.weight", _one("conditioning_encoder.text_position_embedding.weight")),
    (r"mel_embedding\.weight", _one(f"{DEC}.input_embeds_layer.weight")),
    (r"mel_pos_embedding\.emb\.weight", _one(f"{DEC}.position_embeds_layer.weight")),
    (r"gpt\.h\.(\d+)\.ln_1\.(weight|bias)", _one(DEC + r".layers.\1.input_layernorm.\2")),
    (r"gpt\.h\.(\d+)\.ln_2\.(weight|bias)", _one(DEC + r".layers.\1.post_attention_layernorm.\2")),
    (
        r"gpt\.h\.(\d+)\.attn\.c_attn\.(weight|bias)",
        lambda m, heads: [
            (f"{DEC}.layers.{m[1]}.attn.{n}_proj.{m[2]}", functools.partial(_c_attn, j=j)) for j, n in enumerate("qkv")
        ],
    ),
    (r"gpt\.h\.(\d+)\.attn\.c_proj\.weight", _one(DEC + r".layers.\1.attn.out_proj.weight", _transpose)),
    (r"gpt\.h\.(\d+)\.attn\.c_proj\.bias", _one(DEC + r".layers.\1.attn.out_proj.bias")),
    (r"gpt\.h\.(\d+)\.mlp\.(c_fc|c_proj)\.(weight|bias)", _one(DEC + r".layers.\1.mlp.\2.\3")),
    (r"gpt\.ln_f\.(weight|bias)", _one(DEC + r".layer_norm.\1")),
    (r"final_norm\.(weight|bias)", _one(r"speech_decoder_model.final_norm.\1")),
    (r"mel_head\.(weight|bias)", _one(r"speech_decoder_model.lm_head.\1")),
]


def _clvp_layer(m: re.Match, heads: int) -> Targets:
    """x-transformers entry n -> HF layer n // 2 (even entries are attention, odd ones feed-forward)."""
    tower, n, rest = m["tower"], int(m["n"]), m["rest"]
    attention = n % 2 == 0
    base = f"{tower}_encoder_model.layers.{n // 2}."
    if rest == "0.0.g":
        return [(base + ("input_rmsnorm" if attention else "post_attention_rmsnorm") + ".weight", _copy)]
    body = re.fullmatch(r"1\.(?:wrap\.)?(.+)", rest)  # `.wrap.`: tortoise's CheckpointedLayer wrapper
    if body is None:
        return []
    name = body[1]
    if attention and (a := re.fullmatch(r"to_(q|k|v)\.weight", name)):
        return [(base + f"self_attn.{a[1]}_proj.weight", _copy)]
    if attention and (a := re.fullmatch(r"to_out\.(weight|bias)", name)):
        return [(base + f"self_attn.out_proj.{a[1]}", _copy)]
    if not attention and (a := re.fullmatch(r"net\.0\.proj\.(weight|bias)", name)):
        return [(base + f"mlp.fc1.proj.{a[1]}", _copy)]
    if not attention and (a := re.fullmatch(r"net\.3\.(weight|bias)", name)):
        return [(base + f"mlp.fc2.{a[1]}", _copy)]
    return []


_XT = r"(?P<tower>text|speech)_transformer\.transformer\."
_CLVP_RULES: list[tuple[re.Pattern[str], Callable[[re.Match, int], Targets]]] = [
    (r"(text|speech)_emb\.weight", _one(r"\1_encoder_model.token_embedding.weight")),
    (r"to_(text|speech)_latent\.weight", _one(r"\1_encoder_model.projection.weight")),
    (r"temperature", _one("logit_scale")),
    (_XT + r"attn_layers\.layers\.(?P<n>\d+)\.(?P<rest>.+)", _clvp_layer),
    (_XT + r"attn_layers\.rotary_pos_emb\.inv_freq", _one(r"\g<tower>_encoder_model.rotary_pos_emb.inv_freq")),
    (_XT + r"norm\.(weight|bias)", _one(r"\g<tower>_encoder_model.final_layer_norm.\2")),
]
_AR_RULES = [(re.compile(p), f) for p, f in _AR_RULES]
_CLVP_RULES = [(re.compile(p), f) for p, f in _CLVP_RULES]


class OriginalStateDict(Mapping):
    """HF-named, lazily converted view of original tensors; `.shapes()` needs no tensor data."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Mapping, str, Op, tuple[int, ...]]] = {}

    def add(self, hf_key: str, source: Mapping, src_key: str, op: Op, src_shape: tuple[int, ...]) -> None:
        if hf_key in self._entries:
            raise CheckpointError(f"two original tensors map to {hf_key!r} (the second is {src_key!r})")
        # The output shape from a zero-stride stand-in: every op is a view, so this allocates nothing.
        shape = tuple(op(np.broadcast_to(np.zeros((), np.float32), src_shape)).shape)
        self._entries[hf_key] = (source, src_key, op, shape)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: e[3] for k, e in self._entries.items()}

    def __getitem__(self, key: str) -> np.ndarray:
        source, src_key, op, _ = self._entries[key]
        return op(source[src_key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class _TensorView(Mapping):
    """torch tensors -> numpy on access (no copy for mmapped float32)."""

    def __init__(self, tensors: Mapping[str, Any]) -> None:
        self._t = tensors

    def __getitem__(self, key: str) -> np.ndarray:
        return tensor_to_numpy(self._t[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._t)

    def __len__(self) -> int:
        return len(self._t)


@dataclasses.dataclass(frozen=True)
class OriginalCheckpoint:
    """Attributes: state_dict (lazy, HF-named), config, parts (parameter groups present), sources (files read),
    ignored (original keys dropped by name), unexpected (original keys no rule matched)."""

    state_dict: OriginalStateDict
    config: ClvpConfig
    parts: tuple[str, ...]
    sources: tuple[Path, ...]
    ignored: tuple[str, ...]
    unexpected: tuple[str, ...]


def _kind(tensors: Mapping[str, Any], path: Path) -> str:
    if any(k.startswith(("gpt.h.", "mel_head.", "conditioning_encoder.")) for k in tensors):
        return "autoregressive"
    if any(k.startswith(("text_transformer.", "speech_transformer.", "to_text_latent")) for k in tensors):
        return "clvp"
    raise CheckpointError(
        f"{path} is neither a Tortoise autoregressive (UnifiedVoice) nor a CLVP state dict (first keys: "
        f"{sorted(tensors)[:5]})"
    )


def _read_kwargs(original_config: str | Path | Mapping | None, folder: Path | None) -> dict[str, dict]:
    if original_config is None and folder is not None and (folder / CONFIG_FILE).is_file():
        original_config = folder / CONFIG_FILE
    if original_config is None:
        return {}
    if not isinstance(original_config, Mapping):
        try:
            original_config = json.loads(Path(original_config).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read {original_config} ({err}); fix or remove it") from err
    out = {}
    for section, known in (("autoregressive", AR_KWARGS), ("clvp", CLVP_KWARGS)):
        kwargs = dict(original_config.get(section) or {})
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigError(
                f"{CONFIG_FILE} [{section}]: unknown constructor argument(s) {unknown}; known: {sorted(known)}"
            )
        out[section] = kwargs
    return out


def load_original(
    source: str | Path,
    *,
    clvp: str | Path | None = None,
    original_config: str | Path | Mapping | None = None,
    heads: int | None = None,
    start_text_token: int | None = None,
    start_mel_token: int | None = None,
    stop_mel_token: int | None = None,
    strict: bool = True,
) -> OriginalCheckpoint:
    """Open original Tortoise weights as an HF-named lazy state dict plus the matching config.

    Args:
      source: a folder holding `autoregressive.pth` and/or `clvp2.pth` (and optionally `original_config.json`),
        or one `.pth` file of either kind (recognised by its keys).
      clvp: an extra CLVP file, e.g. the stock `clvp2.pth` next to a fine-tuned autoregressive file.
      original_config: the constructors' kwargs ({"autoregressive": {...}, "clvp": {...}}) or a JSON path;
        default: `source/original_config.json` when present.
      heads: autoregressive attention heads (not recoverable from shapes); default: the kwargs, else 16.
      start_text_token, start_mel_token, stop_mel_token: special ids; default: kwargs, else inferred.
      strict: raise `WeightsMismatchError` when an original key matches no rule (else only report it).
    Raises:
      CheckpointError (unreadable or unsafe file), ConfigError (kwargs that contradict the weights),
      WeightsMismatchError (keys without a rule, when strict).
    """
    source = Path(source)
    files: dict[str, tuple[Path, Mapping]] = {}
    candidates = [source / f for f in (AR_FILE, CLVP_FILE) if (source / f).is_file()] if source.is_dir() else [source]
    if not candidates:
        raise CheckpointError(f"{source} holds neither {AR_FILE} nor {CLVP_FILE}")
    if clvp is not None:
        candidates.append(Path(clvp))
    for path in candidates:
        tensors = torch_load_weights(path)
        kind = _kind(tensors, path)
        if kind in files:
            raise CheckpointError(f"two {kind} checkpoints given ({files[kind][0]} and {path}); pass one")
        files[kind] = (path, tensors)
    kwargs = _read_kwargs(original_config, source if source.is_dir() else None)
    ar = files.get("autoregressive", (None, None))[1]
    cl = files.get("clvp", (None, None))[1]
    config = infer_config(
        {k: tuple(v.shape) for k, v in ar.items()} if ar is not None else None,
        {k: tuple(v.shape) for k, v in cl.items()} if cl is not None else None,
        kwargs.get("autoregressive", {}),
        kwargs.get("clvp", {}),
        heads=heads,
        start_text_token=start_text_token,
        start_mel_token=start_mel_token,
        stop_mel_token=stop_mel_token,
    )
    state, ignored, unexpected = OriginalStateDict(), [], []
    for kind, rules in (("autoregressive", _AR_RULES), ("clvp", _CLVP_RULES)):
        if kind not in files:
            continue
        path, tensors = files[kind]
        view = _TensorView(tensors)
        for key, tensor in tensors.items():
            if kind == "autoregressive" and IGNORED.fullmatch(key):
                ignored.append(key)
                continue
            targets = next(
                (
                    fn(m, config.decoder_config.num_attention_heads)
                    for pattern, fn in rules
                    if (m := pattern.fullmatch(key))
                ),
                [],
            )
            if not targets:
                unexpected.append(f"{path.name}:{key}")
            for hf_key, op in targets:
                state.add(hf_key, view, key, op, tuple(tensor.shape))
    if unexpected and strict:
        raise WeightsMismatchError(unexpected=unexpected, context="original keys that no conversion rule matches")
    parts = (AUTOREGRESSIVE_PARTS if "autoregressive" in files else ()) + (CLVP_PARTS if "clvp" in files else ())
    sources = tuple(files[k][0] for k in ("autoregressive", "clvp") if k in files)
    return OriginalCheckpoint(state, config, parts, sources, tuple(ignored), tuple(unexpected))
