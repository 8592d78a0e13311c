"""Configurations of the CLVP model family, field for field those of transformers' `ClvpConfig`.

Three frozen dataclasses mirror the reference (`ClvpEncoderConfig` for the text and speech encoders,
`ClvpDecoderConfig` for the conditioning encoder + speech-token decoder, `ClvpConfig` for the composite), with
the same field names and defaults, so an HF `config.json` round-trips without loss. Unlike the reference,
invalid combinations fail at construction with a message that says what to change, and unknown fields are an
error that names them (HF bookkeeping fields such as `transformers_version` are accepted and kept).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from clvp_jax.config_base import (
    HF_BOOKKEEPING_FIELDS,
    SUPPORTED_ACTIVATIONS,
    ConfigBase,
    ConfigError,
    SummaryType,
    check,
    group_norm_groups,
    rotary_dim,
    write_text_atomic,
)


@dataclasses.dataclass(frozen=True)
class ClvpEncoderConfig(ConfigBase):
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
            check(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
        check(self.num_hidden_layers >= 0, f"num_hidden_layers must be >= 0, got {self.num_hidden_layers}")
        check(
            self.hidden_size % self.num_attention_heads == 0,
            f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}",
        )
        check(
            self.summary_type in ("mean", "first", "last", "cls_index"),
            f"summary_type {self.summary_type!r} is not supported; use 'mean', 'first', 'last' or 'cls_index'",
        )
        check(
            self.hidden_act in SUPPORTED_ACTIVATIONS,
            f"hidden_act {self.hidden_act!r} is not supported; use one of {SUPPORTED_ACTIVATIONS}",
        )
        if self.use_rotary_embedding:
            r = self.rotary_dim
            check(
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
class ClvpDecoderConfig(ConfigBase):
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
            check(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
        check(self.num_attention_heads > 0, "num_attention_heads must be positive")
        check(
            self.hidden_size % self.num_attention_heads == 0,
            f"decoder hidden_size {self.hidden_size} is not divisible by num_attention_heads "
            f"{self.num_attention_heads}",
        )
        check(
            self.hidden_size % 4 == 0 and group_norm_groups(self.hidden_size) > 2,
            f"decoder hidden_size {self.hidden_size} has no valid GroupNorm group count (the conditioning "
            "encoder's rule needs a multiple of 4 with more than 2 groups); use a multiple of 8, e.g. 16, 32, 64",
        )
        check(
            self.activation_function in SUPPORTED_ACTIVATIONS,
            f"activation_function {self.activation_function!r} is not supported; use one of {SUPPORTED_ACTIVATIONS}",
        )
        for name in ("bos_token_id", "eos_token_id"):
            tok = getattr(self, name)
            check(
                0 <= tok < self.vocab_size,
                f"decoder {name} {tok} is outside the decoder vocabulary (vocab_size {self.vocab_size}); raise "
                "vocab_size or choose an id below it",
            )
        check(len(self.decoder_fixing_codes) >= 1, "decoder_fixing_codes must hold at least one code")
        check(self.n_inner is None or self.n_inner > 0, f"n_inner must be positive or None, got {self.n_inner}")

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
class ClvpConfig(ConfigBase):
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
        check(
            text.projection_dim == speech.projection_dim,
            f"text projection_dim {text.projection_dim} != speech projection_dim {speech.projection_dim}; the "
            "similarity needs equal widths, set both to the same value",
        )
        for name in ("bos_token_id", "eos_token_id"):
            tok = getattr(text, name)
            check(
                tok is not None and 0 <= tok < text.vocab_size,
                f"text_config.{name} {tok} is outside the text vocabulary (vocab_size {text.vocab_size}); the "
                "conditioning encoder embeds it with the text table, so raise text vocab_size or change the id",
            )
        bad = [c for c in dec.decoder_fixing_codes if not 0 <= c < speech.vocab_size]
        check(
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


# ConfigError, write_text_atomic and the shared machinery live in `clvp_jax.config_base`; importable from here too.
__all__ = [
    "HF_BOOKKEEPING_FIELDS",
    "SUPPORTED_ACTIVATIONS",
    "ClvpConfig",
    "ClvpDecoderConfig",
    "ClvpEncoderConfig",
    "ConfigError",
    "group_norm_groups",
    "rotary_dim",
    "write_text_atomic",
]
