"""Configurations of the CLVP model family, field for field those of transformers' `ClvpConfig`.

Three frozen dataclasses mirror the reference (`ClvpEncoderConfig` for the text and speech encoders,
`ClvpDecoderConfig` for the conditioning encoder + speech-token decoder, `ClvpConfig` for the composite), with
the same field names and defaults, so an HF `config.json` round-trips without loss. Unlike the reference,
invalid combinations fail at construction with a message that says what to change, and unknown fields are an
error that names them (HF bookkeeping fields such as `transformers_version` are accepted and kept).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from clvp_jax import fs

SummaryType = Literal["mean", "first", "last", "cls_index"]
SUPPORTED_ACTIVATIONS = (
    "gelu",
    "gelu_new",
    "gelu_pytorch_tanh",
    "gelu_fast",
    "relu",
    "silu",
    "swish",
    "tanh",
)

# Fields every HF `PretrainedConfig.to_dict()` carries. They do not change the model; we accept and keep them.
HF_BOOKKEEPING_FIELDS = frozenset(
    {
        "transformers_version",
        "architectures",
        "torch_dtype",
        "dtype",
        "output_hidden_states",
        "output_attentions",
        "return_dict",
        "chunk_size_feed_forward",
        "is_encoder_decoder",
        "id2label",
        "label2id",
        "problem_type",
        "_name_or_path",
        "tie_word_embeddings",
        "_commit_hash",
        "_attn_implementation_autoset",
        "tokenizer_class",
        "prefix",
        "sep_token_id",
        "decoder_start_token_id",
        "task_specific_params",
        "finetuning_task",
    }
)


class ConfigError(ValueError):
    """An invalid or unknown configuration value; the message says what to change."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def rotary_dim(projection_dim: int, num_attention_heads: int) -> int:
    """Width r of the rotated slice of each head (spec §4): 2*ceil(max(P // (2H), 32) / 2)."""
    r0 = max(projection_dim // (2 * num_attention_heads), 32)
    return 2 * math.ceil(r0 / 2)


def group_norm_groups(channels: int) -> int:
    """The conditioning encoder's GroupNorm group count for `channels` channels (spec §3)."""
    groups = 32
    if channels <= 16:
        groups = 8
    elif channels <= 64:
        groups = 16
    while channels % groups != 0:
        groups //= 2
    return groups


def _typed(cls: type, name: str, hint: Any, value: Any) -> Any:
    """`value` of a config file checked against the field's annotation (lists become tuples); never coerced.

    JSON has no tuples and no distinction of 1 and 1.0 that survives every writer, so an integral float is
    accepted for an int field and an int for a float field; anything else of the wrong type (a string for a
    list, "no" for a bool, a bool for a number) is a `ConfigError` naming the field and the expected form.
    """

    def fits(h: Any, v: Any) -> tuple[bool, Any]:
        origin, args = typing.get_origin(h), typing.get_args(h)
        if h is Any:
            return True, v
        if h is type(None):
            return v is None, v
        if origin in (typing.Union, types.UnionType):
            for option in args:
                ok, out = fits(option, v)
                if ok:
                    return True, out
            return False, v
        if origin is Literal:
            return v in args and not isinstance(v, bool), v
        if origin is tuple:
            if not isinstance(v, list | tuple):
                return False, v
            items = [fits(args[0], x) for x in v]
            return all(ok for ok, _ in items), tuple(x for _, x in items)
        if h is bool:
            return isinstance(v, bool), v
        if h is int:
            if isinstance(v, float) and v.is_integer():
                return True, int(v)
            return isinstance(v, int) and not isinstance(v, bool), v
        if h is float:
            return isinstance(v, int | float) and not isinstance(v, bool), float(v) if isinstance(v, int) else v
        if h is str:
            return isinstance(v, str), v
        return True, v  # nested configs and dicts are checked by their own constructors

    ok, out = fits(hint, value)
    if not ok:
        if typing.get_origin(hint) is Literal:
            expected = "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
        else:
            expected = str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
        raise ConfigError(f"{cls.__name__}.{name} must be {expected}, got {value!r} ({type(value).__name__})")
    return out


class _ConfigBase:
    """Shared dict/JSON plumbing for the three configs."""

    model_type: ClassVar[str]
    # Keys whose value is a nested config (composite only).
    _nested: ClassVar[dict[str, type]] = {}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """Build from an HF-style dict. Unknown keys and values of the wrong type raise `ConfigError` naming them."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a {cls.__name__} must be a JSON object of fields, got {type(data).__name__}")
        data = dict(data)
        model_type = data.pop("model_type", cls.model_type)
        _check(
            model_type == cls.model_type,
            f"{cls.__name__} expects model_type {cls.model_type!r}, got {model_type!r}",
        )
        names = {f.name for f in dataclasses.fields(cls)} - {"hf_metadata"}
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        unknown = []
        for key, value in data.items():
            if key in cls._nested:
                sub = cls._nested[key]
                if not (isinstance(value, sub | Mapping) or value is None):
                    raise ConfigError(f"{cls.__name__}.{key} must be a {sub.__name__} object, got {value!r}")
                kwargs[key] = value if isinstance(value, sub) or value is None else sub.from_dict(value)
            elif key in names:
                kwargs[key] = _typed(cls, key, hints[key], value)
            elif key in HF_BOOKKEEPING_FIELDS:
                metadata[key] = value
            else:
                unknown.append(key)
        if unknown:
            raise ConfigError(
                f"unknown {cls.__name__} field(s): {sorted(unknown)}. Remove them, or check that the file is a "
                f"CLVP config (model_type {cls.model_type!r}); valid fields: {sorted(names)}"
            )
        return cls(**kwargs, hf_metadata=metadata)

    def to_dict(self) -> dict[str, Any]:
        """The HF-style dict (nested configs as dicts, bookkeeping fields kept)."""
        out: dict[str, Any] = dict(self.hf_metadata)  # type: ignore[attr-defined]
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name == "hf_metadata":
                continue
            value = getattr(self, f.name)
            if isinstance(value, _ConfigBase):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        out["model_type"] = self.model_type
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def replace(self, **changes):
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike):
        """Load from a `config.json` file or a folder holding one."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no config file at {path}: expected a config.json or a folder with one")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); expected a JSON config"
            ) from err
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON ({err}); is the file truncated?") from err
        return cls.from_dict(data)

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write `folder/config.json` atomically (temporary name, then rename). Returns the path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "config.json"
        write_text_atomic(target, self.to_json_string())
        return target


def write_text_atomic(target: Path, text: str) -> None:
    """Write `text` to `target` atomically with the user's umask (`clvp_jax.fs.write_text`)."""
    fs.write_text(target, text)


@dataclasses.dataclass(frozen=True)
class ClvpEncoderConfig(_ConfigBase):
    """Text or speech encoder (spec §1.1).

    Attributes:
      vocab_size: token-embedding rows.
      hidden_size: width D; must be divisible by `num_attention_heads`.
      intermediate_size: GLU width I (fc1 projects to 2I).
      projection_dim: output width of the bias-free projection; also enters the rotary width (spec §4).
      num_hidden_layers: pre-norm transformer layers.
      num_attention_heads: attention heads.
      hidden_act: GLU gate activation (`gelu` = exact erf GELU).
      layer_norm_eps: eps of both RMSNorms and the final LayerNorm.
      attention_dropout, dropout: training-time dropout rates.
      use_rotary_embedding: rotary on the first r dims of q, k and v of each head.
      use_attention_bias: bias on the q/k/v projections (out_proj always has one).
      summary_type: pooling of the final hidden states: mean, first, last or cls_index (= last).
      initializer_factor: init scale.
      bos_token_id, eos_token_id, pad_token_id: the text config's bos/eos are added by the conditioning encoder.
    """

    model_type: ClassVar[str] = "clvp_encoder"

    vocab_size: int = 256
    hidden_size: int = 768
    intermediate_size: int = 1536
    projection_dim: int = 768
    num_hidden_layers: int = 20
    num_attention_heads: int = 12
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.1
    dropout: float = 0.1
    use_rotary_embedding: bool = True
    use_attention_bias: bool = False
    summary_type: SummaryType = "mean"
    initializer_factor: float = 1.0
    bos_token_id: int | None = 255
    eos_token_id: int | None = 0
    pad_token_id: int | None = None
    hf_metadata: dict = dataclasses.field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "projection_dim",
            "num_attention_heads",
        ):
            _check(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
        _check(self.num_hidden_layers >= 0, f"num_hidden_layers must be >= 0, got {self.num_hidden_layers}")
        _check(
            self.hidden_size % self.num_attention_heads == 0,
            f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}",
        )
        _check(
            self.summary_type in ("mean", "first", "last", "cls_index"),
            f"summary_type {self.summary_type!r} is not supported; use 'mean', 'first', 'last' or 'cls_index'",
        )
        _check(
            self.hidden_act in SUPPORTED_ACTIVATIONS,
            f"hidden_act {self.hidden_act!r} is not supported; use one of {SUPPORTED_ACTIVATIONS}",
        )
        if self.use_rotary_embedding:
            r = self.rotary_dim
            _check(
                self.head_dim >= r,
                f"head_dim {self.head_dim} (hidden_size {self.hidden_size} / {self.num_attention_heads} heads) is "
                f"smaller than the rotary width {r} (= 2*ceil(max(projection_dim // (2*heads), 32) / 2)); use fewer "
                "heads, a larger hidden_size, or use_rotary_embedding=False",
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        return rotary_dim(self.projection_dim, self.num_attention_heads)


@dataclasses.dataclass(frozen=True)
class ClvpDecoderConfig(_ConfigBase):
    """Conditioning encoder + GPT-2-like speech-token decoder (spec §1.2).

    Attributes:
      vocab_size: mel-code vocabulary including bos/eos.
      max_position_embeddings: rows of the decoder (mel) position table.
      max_text_tokens: rows of the conditioning encoder's text position table.
      hidden_size: decoder and conditioning-encoder width; a multiple of 4 (GroupNorm rule).
      num_hidden_layers: decoder layers.
      num_attention_heads: heads of the decoder layers and of the mel attention blocks.
      n_inner: MLP width, None -> 4 * hidden_size.
      num_mel_attn_blocks: attention blocks of the conditioning encoder.
      activation_function: decoder MLP activation (`gelu_new` = tanh GELU).
      layer_norm_epsilon: eps of the per-layer LayerNorms and the decoder's final `layer_norm`.
      feature_size: mel bins of the conditioning input.
      use_attention_bias: q/k/v bias in the decoder layers and the mel attention blocks.
      decoder_fixing_codes: codes written by `fix_speech_decoder_output` (spec §9.1).
      bos_token_id, eos_token_id: mel start / stop tokens.
      Other fields are kept for HF compatibility and unused here (dropouts, summary_*, init).
    """

    model_type: ClassVar[str] = "clvp_decoder"

    vocab_size: int = 8194
    max_position_embeddings: int = 608
    max_text_tokens: int = 404
    hidden_size: int = 1024
    num_hidden_layers: int = 30
    num_attention_heads: int = 16
    n_inner: int | None = None
    num_mel_attn_blocks: int = 6
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    summary_type: str = "cls_index"
    summary_use_proj: bool = True
    summary_activation: str | None = None
    summary_proj_to_labels: bool = True
    summary_first_dropout: float = 0.1
    use_cache: bool = True
    bos_token_id: int = 8192
    eos_token_id: int = 8193
    pad_token_id: int | None = None
    feature_size: int = 80
    use_attention_bias: bool = True
    initializer_factor: float = 1.0
    decoder_fixing_codes: tuple[int, ...] = (83, 45, 45, 248)
    add_cross_attention: bool = False
    hf_metadata: dict = dataclasses.field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoder_fixing_codes", tuple(int(c) for c in self.decoder_fixing_codes))
        for name in (
            "vocab_size",
            "max_position_embeddings",
            "max_text_tokens",
            "hidden_size",
            "feature_size",
        ):
            _check(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
        _check(self.num_attention_heads > 0, "num_attention_heads must be positive")
        _check(
            self.hidden_size % self.num_attention_heads == 0,
            f"decoder hidden_size {self.hidden_size} is not divisible by num_attention_heads "
            f"{self.num_attention_heads}",
        )
        _check(
            self.hidden_size % 4 == 0 and group_norm_groups(self.hidden_size) > 2,
            f"decoder hidden_size {self.hidden_size} has no valid GroupNorm group count (the conditioning "
            "encoder's rule needs a multiple of 4 with more than 2 groups); use a multiple of 8, e.g. 16, 32, 64",
        )
        _check(
            self.activation_function in SUPPORTED_ACTIVATIONS,
            f"activation_function {self.activation_function!r} is not supported; use one of {SUPPORTED_ACTIVATIONS}",
        )
        for name in ("bos_token_id", "eos_token_id"):
            tok = getattr(self, name)
            _check(
                0 <= tok < self.vocab_size,
                f"decoder {name} {tok} is outside the decoder vocabulary (vocab_size {self.vocab_size}); raise "
                "vocab_size or choose an id below it",
            )
        _check(len(self.decoder_fixing_codes) >= 1, "decoder_fixing_codes must hold at least one code")
        _check(self.n_inner is None or self.n_inner > 0, f"n_inner must be positive or None, got {self.n_inner}")

    @property
    def inner_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.hidden_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_groups(self) -> int:
        return group_norm_groups(self.hidden_size)


@dataclasses.dataclass(frozen=True)
class ClvpConfig(_ConfigBase):
    """The composite `ClvpModelForConditionalGeneration` config (spec §1.3).

    Attributes:
      text_config, speech_config: `ClvpEncoderConfig`s; their `projection_dim`s must be equal.
      decoder_config: `ClvpDecoderConfig`.
      projection_dim: kept for HF compatibility; the model uses each encoder's own projection_dim.
      logit_scale_init_value: initial `logit_scale` (logits use exp of it).
      initializer_factor: init scale.
    """

    model_type: ClassVar[str] = "clvp"
    _nested: ClassVar[dict[str, type]] = {
        "text_config": ClvpEncoderConfig,
        "speech_config": ClvpEncoderConfig,
        "decoder_config": ClvpDecoderConfig,
    }

    text_config: ClvpEncoderConfig = dataclasses.field(default_factory=ClvpEncoderConfig)
    speech_config: ClvpEncoderConfig = dataclasses.field(default_factory=ClvpEncoderConfig)
    decoder_config: ClvpDecoderConfig = dataclasses.field(default_factory=ClvpDecoderConfig)
    projection_dim: int = 768
    logit_scale_init_value: float = 2.6592
    initializer_factor: float = 1.0
    hf_metadata: dict = dataclasses.field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        for name, sub in self._nested.items():
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, sub())
            elif isinstance(value, Mapping):
                object.__setattr__(self, name, sub.from_dict(value))
        text, speech, dec = self.text_config, self.speech_config, self.decoder_config
        _check(
            text.projection_dim == speech.projection_dim,
            f"text projection_dim {text.projection_dim} != speech projection_dim {speech.projection_dim}; the "
            "similarity needs equal widths, set both to the same value",
        )
        for name in ("bos_token_id", "eos_token_id"):
            tok = getattr(text, name)
            _check(
                tok is not None and 0 <= tok < text.vocab_size,
                f"text_config.{name} {tok} is outside the text vocabulary (vocab_size {text.vocab_size}); the "
                "conditioning encoder embeds it with the text table, so raise text vocab_size or change the id",
            )
        bad = [c for c in dec.decoder_fixing_codes if not 0 <= c < speech.vocab_size]
        _check(
            not bad,
            f"decoder_fixing_codes {list(bad)} are outside the speech vocabulary (speech_config.vocab_size "
            f"{speech.vocab_size}); the fixed codes are fed to the speech encoder, so raise its vocab_size",
        )

    @classmethod
    def from_sub_model_configs(
        cls,
        text_config: ClvpEncoderConfig,
        speech_config: ClvpEncoderConfig,
        decoder_config: ClvpDecoderConfig,
        **kwargs: Any,
    ) -> ClvpConfig:
        """Compose a config from its three parts (as the reference's classmethod)."""
        return cls(text_config=text_config, speech_config=speech_config, decoder_config=decoder_config, **kwargs)

    @classmethod
    def tortoise(cls) -> ClvpConfig:
        """The real Tortoise model (`susnato/clvp_dev` style): the defaults with a speech vocabulary of 8192."""
        return cls(speech_config=ClvpEncoderConfig(vocab_size=8192, bos_token_id=8192, eos_token_id=8193))

    @classmethod
    def tiny(cls) -> ClvpConfig:
        """A tiny config that runs every code path in milliseconds (tests, examples)."""
        enc = dict(
            vocab_size=256,
            hidden_size=32,
            intermediate_size=48,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=1,
        )
        return cls(
            text_config=ClvpEncoderConfig(**enc),
            speech_config=ClvpEncoderConfig(**enc),
            decoder_config=ClvpDecoderConfig(
                vocab_size=256,
                bos_token_id=254,
                eos_token_id=255,
                max_position_embeddings=96,
                max_text_tokens=64,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_mel_attn_blocks=2,
            ),
            projection_dim=32,
        )
