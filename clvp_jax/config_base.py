"""What the three CLVP configurations share: field typing and checking, JSON reading and writing, the errors.

`ConfigBase` gives a frozen dataclass `from_dict` (unknown fields are an error that names them; values of the wrong
type name their field instead of being coerced), `to_dict` / `to_json_string`, `replace`, `from_pretrained` and
`save_pretrained` (atomic, with the user's umask). The configurations themselves are in `clvp_jax.config`.
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


def check(condition: bool, message: str) -> None:
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


def typed_value(cls: type, name: str, hint: Any, value: Any) -> Any:
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


class ConfigBase:
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
        check(
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
                kwargs[key] = typed_value(cls, key, hints[key], value)
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
            if isinstance(value, ConfigBase):
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
