"""Original Tortoise checkpoints <-> HF-named weights, one two-way rule table; `load_original` reads the files.

Reads `autoregressive.pth` (class `UnifiedVoice`) and/or `clvp2.pth` (class `CLVP`, x-transformers towers) and
presents them as a lazy, HF-named state dict, which `clvp_jax.checkpoint.rules.state_dict_to_params` (the one
strict HF rule table) then turns into parameters. `to_original` runs the same table backwards. Facts:
shared/reference/tortoise_original.md §2-4.

Key mapping (`Rule`s of `AR_RULES` / `CLVP_RULES`; D = `speech_decoder_model.model.decoder`):
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

Config (`clvp_jax.checkpoint.infer`): every size comes from the tensor shapes. What shapes cannot tell -- the
autoregressive head count and the special token ids -- comes from `original_config.json` (the constructors' keyword
arguments, as in tests/data/tortoise_tiny), else from the arguments here, else the real model's values (16 heads;
text start = rows - 1 of the text table, mel start/stop = the last two mel ids). Values given in
`original_config.json` are cross-checked against the shapes. The RMSNorm epsilon keeps HF's 1e-5: the original
computes x / max(rms, 1e-8), HF x * rsqrt(mean(x^2) + 1e-5); this moves CLVP scores by ~1e-5 and nothing else.

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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from clvp_jax.checkpoint.errors import CheckpointError, WeightsMismatchError
from clvp_jax.checkpoint.infer import CONFIG_FILE, infer_config
from clvp_jax.checkpoint.layouts import TRAILING_UNIT, TRANSPOSED, Split
from clvp_jax.checkpoint.progress import report, size_of
from clvp_jax.checkpoint.readers import TensorSpec, TorchReader, tensor_specs, torch_load_weights
from clvp_jax.checkpoint.rules import AUTOREGRESSIVE_PARTS, CLVP_PARTS, is_ignored_buffer
from clvp_jax.config import ClvpConfig, ConfigError

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

# Template fields: {name} matches this regex in a key. `att` / `ff` are x-transformers entry numbers (even:
# attention, odd: feed-forward), whose HF layer is `layer` = entry // 2; `wrap.` is tortoise's CheckpointedLayer
# wrapper segment, optional when reading and written when going back.
_FIELDS = {
    "i": r"\d+",
    "leaf": r"weight|bias",
    "tower": r"text|speech",
    "n": r"q|k|v",
    "conv": r"c_fc|c_proj",
    "att": r"\d*[02468]",
    "ff": r"\d*[13579]",
    "layer": r"\d+",
    "wrap": r"(?:wrap\.)?",
}


@functools.cache
def _regex(template: str) -> re.Pattern[str]:
    pieces = re.split(r"\{(\w+)\}", template)  # literal, field, literal, field, ...
    return re.compile("".join(re.escape(p) if k % 2 == 0 else f"(?P<{p}>{_FIELDS[p]})" for k, p in enumerate(pieces)))


@dataclasses.dataclass(frozen=True)
class Rule:
    """One original key template and the HF key templates it fills, with the tensor `split` between them.

    Attributes:
      original: template of the original key, e.g. "gpt.h.{i}.ln_1.{leaf}" (fields: `_FIELDS`).
      targets: templates of the HF keys, in the order of the split's parts (several for a fused tensor).
      split: how the original tensor holds the HF ones (default: one tensor, same layout).
    """

    original: str
    targets: tuple[str, ...]
    split: Split = Split()

    def hf_keys(self, key: str) -> list[str] | None:
        """The HF keys that original `key` fills, or None if this rule does not match it."""
        m = _regex(self.original).fullmatch(key)
        if m is None:
            return None
        fields = m.groupdict()
        for entry in ("att", "ff"):
            if entry in fields:
                fields["layer"] = str(int(fields[entry]) // 2)
        return [t.format(**fields) for t in self.targets]

    def original_key(self, hf_key: str) -> tuple[str, int] | None:
        """(the original key holding `hf_key`, its part index), or None if this rule does not produce `hf_key`."""
        for j, template in enumerate(self.targets):
            m = _regex(template).fullmatch(hf_key)
            if m is not None:
                fields = {"wrap": "wrap.", **m.groupdict()}
                if "layer" in fields:
                    fields["att"], fields["ff"] = 2 * int(fields["layer"]), 2 * int(fields["layer"]) + 1
                return self.original.format(**fields), j
        return None


_WHOLE = Split()  # one tensor, same layout


def _r(original: str, *targets: str, split: Split = _WHOLE) -> Rule:
    return Rule(original, targets, split)


def _qkv(prefix: str, leaf: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{n}_proj.{leaf}" for n in "qkv")


D = "speech_decoder_model.model.decoder."
C = "conditioning_encoder."
AR_RULES: tuple[Rule, ...] = (
    _r(C + "init.{leaf}", C + "mel_conv.{leaf}"),
    _r(C + "attn.{i}.norm.{leaf}", C + "group_norms.{i}.{leaf}"),
    _r(C + "attn.{i}.qkv.weight", *_qkv(C + "mel_attn_blocks.{i}.", "weight"), split=Split(3, TRAILING_UNIT, None)),
    _r(C + "attn.{i}.qkv.bias", *_qkv(C + "mel_attn_blocks.{i}.", "bias"), split=Split(3, heads=None)),
    _r(C + "attn.{i}.proj_out.weight", C + "mel_attn_blocks.{i}.out_proj.weight", split=Split(1, TRAILING_UNIT)),
    _r(C + "attn.{i}.proj_out.bias", C + "mel_attn_blocks.{i}.out_proj.bias"),
    _r("text_embedding.weight", C + "text_token_embedding.weight"),
    _r("text_pos_embedding.emb.weight", C + "text_position_embedding.weight"),
    _r("mel_embedding.weight", D + "input_embeds_layer.weight"),
    _r("mel_pos_embedding.emb.weight", D + "position_embeds_layer.weight"),
    _r("gpt.h.{i}.ln_1.{leaf}", D + "layers.{i}.input_layernorm.{leaf}"),
    _r("gpt.h.{i}.ln_2.{leaf}", D + "layers.{i}.post_attention_layernorm.{leaf}"),
    _r("gpt.h.{i}.attn.c_attn.weight", *_qkv(D + "layers.{i}.attn.", "weight"), split=Split(3, TRANSPOSED)),
    _r("gpt.h.{i}.attn.c_attn.bias", *_qkv(D + "layers.{i}.attn.", "bias"), split=Split(3)),
    _r("gpt.h.{i}.attn.c_proj.weight", D + "layers.{i}.attn.out_proj.weight", split=Split(1, TRANSPOSED)),
    _r("gpt.h.{i}.attn.c_proj.bias", D + "layers.{i}.attn.out_proj.bias"),
    _r("gpt.h.{i}.mlp.{conv}.{leaf}", D + "layers.{i}.mlp.{conv}.{leaf}"),
    _r("gpt.ln_f.{leaf}", D + "layer_norm.{leaf}"),
    _r("final_norm.{leaf}", "speech_decoder_model.final_norm.{leaf}"),
    _r("mel_head.{leaf}", "speech_decoder_model.lm_head.{leaf}"),
)
X = "{tower}_transformer.transformer."
E = "{tower}_encoder_model."
CLVP_RULES: tuple[Rule, ...] = (
    _r("{tower}_emb.weight", E + "token_embedding.weight"),
    _r("to_{tower}_latent.weight", E + "projection.weight"),
    _r("temperature", "logit_scale"),
    _r(X + "attn_layers.layers.{att}.0.0.g", E + "layers.{layer}.input_rmsnorm.weight"),
    _r(X + "attn_layers.layers.{ff}.0.0.g", E + "layers.{layer}.post_attention_rmsnorm.weight"),
    _r(X + "attn_layers.layers.{att}.1.{wrap}to_{n}.weight", E + "layers.{layer}.self_attn.{n}_proj.weight"),
    _r(X + "attn_layers.layers.{att}.1.{wrap}to_out.{leaf}", E + "layers.{layer}.self_attn.out_proj.{leaf}"),
    _r(X + "attn_layers.layers.{ff}.1.{wrap}net.0.proj.{leaf}", E + "layers.{layer}.mlp.fc1.proj.{leaf}"),
    _r(X + "attn_layers.layers.{ff}.1.{wrap}net.3.{leaf}", E + "layers.{layer}.mlp.fc2.{leaf}"),
    _r(X + "attn_layers.rotary_pos_emb.inv_freq", E + "rotary_pos_emb.inv_freq"),
    _r(X + "norm.{leaf}", E + "final_layer_norm.{leaf}"),
)
RULES = {"autoregressive": AR_RULES, "clvp": CLVP_RULES}


class OriginalStateDict(Mapping):
    """HF-named, lazily converted view of original tensors; `.specs()` needs no tensor data."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Mapping, str, Split, int, TensorSpec]] = {}

    def add(self, hf_key: str, source: Mapping, src_key: str, split: Split, j: int, spec: TensorSpec) -> None:
        """Map `hf_key` to part `j` of `source[src_key]` (stored as `spec`); a key may be filled only once."""
        if hf_key in self._entries:
            raise CheckpointError(f"two original tensors map to {hf_key!r} (the second is {src_key!r})")
        self._entries[hf_key] = (source, src_key, split, j, TensorSpec(split.part_shape(spec.shape), spec.dtype))

    def specs(self) -> dict[str, TensorSpec]:
        return {k: e[4] for k, e in self._entries.items()}

    def __getitem__(self, key: str) -> np.ndarray:
        source, src_key, split, j, _ = self._entries[key]
        return split.part(source[src_key], j)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


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


def _kind(keys: list[str], path: Path) -> str:
    if any(k.startswith(("gpt.h.", "mel_head.", "conditioning_encoder.")) for k in keys):
        return "autoregressive"
    if any(k.startswith(("text_transformer.", "speech_transformer.", "to_text_latent")) for k in keys):
        return "clvp"
    raise CheckpointError(
        f"{path} is neither a Tortoise autoregressive (UnifiedVoice) nor a CLVP state dict (first keys: "
        f"{sorted(keys)[:5]})"
    )


def _read_kwargs(original_config: str | Path | Mapping | None, folder: Path | None) -> dict[str, dict]:
    if original_config is None and folder is not None and (folder / CONFIG_FILE).is_file():
        original_config = folder / CONFIG_FILE
    if original_config is None:
        return {}
    if not isinstance(original_config, Mapping):
        try:
            original_config = json.loads(Path(original_config).read_text(encoding="utf-8"))
            if not isinstance(original_config, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:  # ValueError: bad JSON or bad UTF-8
            raise ConfigError(
                f"cannot read {original_config} ({err}); expected a JSON object of constructor arguments "
                '({"autoregressive": {...}, "clvp": {...}}): fix or remove it'
            ) from err
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
    files: dict[str, TorchReader] = {}
    candidates = [source / f for f in (AR_FILE, CLVP_FILE) if (source / f).is_file()] if source.is_dir() else [source]
    if not candidates:
        raise CheckpointError(f"{source} holds neither {AR_FILE} nor {CLVP_FILE}")
    if clvp is not None:
        candidates.append(Path(clvp))
    for path in candidates:
        report(f"reading {path.name} ({size_of(path)})")
        reader = TorchReader.from_tensors(torch_load_weights(path), [path])
        kind = _kind(list(reader), path)
        if kind in files:
            raise CheckpointError(f"two {kind} checkpoints given ({files[kind].paths[0]} and {path}); pass one")
        files[kind] = reader
    kwargs = _read_kwargs(original_config, source if source.is_dir() else None)
    specs = {kind: {k: s.shape for k, s in reader.specs().items()} for kind, reader in files.items()}
    config = infer_config(
        specs.get("autoregressive"),
        specs.get("clvp"),
        kwargs.get("autoregressive", {}),
        kwargs.get("clvp", {}),
        heads=heads,
        start_text_token=start_text_token,
        start_mel_token=start_mel_token,
        stop_mel_token=stop_mel_token,
    )
    heads = config.decoder_config.num_attention_heads
    state, ignored, unexpected = OriginalStateDict(), [], []
    for kind, reader in files.items():
        for key, spec in reader.specs().items():
            if kind == "autoregressive" and IGNORED.fullmatch(key):
                ignored.append(key)
                continue
            found = next(((rule, keys) for rule in RULES[kind] if (keys := rule.hf_keys(key)) is not None), None)
            if found is None:
                unexpected.append(f"{reader.paths[0].name}:{key}")
                continue
            rule, keys = found
            for j, hf_key in enumerate(keys):
                state.add(hf_key, reader, key, rule.split.with_heads(heads), j, spec)
    if unexpected and strict:
        raise WeightsMismatchError(unexpected=unexpected, context="original keys that no conversion rule matches")
    parts = (AUTOREGRESSIVE_PARTS if "autoregressive" in files else ()) + (CLVP_PARTS if "clvp" in files else ())
    sources = tuple(files[k].paths[0] for k in ("autoregressive", "clvp") if k in files)
    return OriginalCheckpoint(state, config, parts, sources, tuple(ignored), tuple(unexpected))


def to_original(state_dict: Mapping[str, Any], config: ClvpConfig) -> dict[str, dict[str, np.ndarray]]:
    """A reference (HF-named) state dict -> the original files' state dicts, by the same rules run backwards.

    Args:
      state_dict: HF key -> array (numpy or anything `np.asarray` takes), as `params_to_state_dict` gives;
        non-persistent causal-mask buffers are skipped.
      config: its config (the head count de-interleaves the conditioning encoder's fused qkv).
    Returns:
      {"autoregressive": {key: array}, "clvp": {key: array}} (fresh C-ordered numpy arrays; a half is empty when
      the state dict has none of its keys). Not included: what the original has and HF does not (the GPT-2
      causal-mask buffers and the training-only `text_head`).
    Raises:
      WeightsMismatchError: a key no rule produces, or a fused tensor with some of its parts missing.
    """
    heads = config.decoder_config.num_attention_heads
    pending: dict[tuple[str, str], tuple[Split, dict[int, np.ndarray]]] = {}
    unexpected = []
    shapes = {k: s.shape for k, s in tensor_specs(state_dict).items()}
    for key in state_dict:
        if is_ignored_buffer(key, shapes[key]):
            continue
        found = next(
            ((kind, rule, hit) for kind, rules in RULES.items() for rule in rules if (hit := rule.original_key(key))),
            None,
        )
        if found is None:
            unexpected.append(key)
            continue
        kind, rule, (original_key, j) = found
        split, parts = pending.setdefault((kind, original_key), (rule.split.with_heads(heads), {}))
        parts[j] = np.asarray(state_dict[key])
    incomplete = [f"{key} ({len(p)} of {s.n} parts)" for (_, key), (s, p) in pending.items() if len(p) != s.n]
    if unexpected or incomplete:
        raise WeightsMismatchError(incomplete, sorted(unexpected), context="HF keys -> original keys")
    out: dict[str, dict[str, np.ndarray]] = {kind: {} for kind in RULES}
    for (kind, original_key), (split, parts) in pending.items():
        out[kind][original_key] = split.join([parts[j] for j in range(split.n)])
    return out
