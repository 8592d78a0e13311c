"""`GenerationOptions`: every knob of `clvp_jax.generate`, frozen and validated, with Tortoise presets."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Literal

from clvp_jax.config import ClvpConfig
from clvp_jax.generation.processors import Processor, processor_chain

StopOn = Literal["decoder_eos", "text_eos"]
PositionConvention = Literal["training", "reference"]
RepetitionPrompt = Literal["reference", "tortoise"]
ComputeDtype = Literal["float32", "bfloat16"]


class OptionError(ValueError):
    """A knob out of its range; `name` is the knob (the CLI names its flag), the message gives the range."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def check_integer(name: str, v, low: int, optional: bool = False) -> None:
    """`OptionError` unless `v` is an integer >= `low` (or None when `optional`)."""
    ok = (optional and v is None) or (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= low)
    if not ok:
        raise OptionError(name, f"{name} must be an integer >= {low}{' or None' if optional else ''}, got {v!r}")


def check_real(name: str, v, low: float, high: float, optional: bool = False, closed_low: bool = False) -> None:
    """`OptionError` unless `v` is a finite number in (low, high] ([low, high] with `closed_low`), or None."""
    if optional and v is None:
        return
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (low <= v if closed_low else low < v) and v <= high
    if high == math.inf:
        span = f">= {low:g}" if closed_low else f"> {low:g}"
    else:
        span = f"in {'[' if closed_low else '('}{low:g}, {high:g}]"
    if low == -math.inf and high == math.inf:
        span = "(any sign)"
    if not ok:
        raise OptionError(name, f"{name} must be a finite number {span}{' or None' if optional else ''}, got {v!r}")


@dataclasses.dataclass(frozen=True)
class GenerationOptions:
    """Options of `generate`. Hashable: each distinct value is one compiled program (with the input shapes).

    Attributes:
      max_new_tokens: speech tokens to generate per candidate (Tortoise: 500). Static: part of the program.
      min_new_tokens: the stop token is forbidden before this many tokens.
      num_return_sequences: candidates per text.
      do_sample: sample (else greedy argmax).
      temperature, top_k, top_p: sampling warpers (only used when sampling; top_p is sort-free).
      repetition_penalty: the reference's penalty on every seen token (None or 1.0: off).
      repetition_prompt: which tokens count as seen before the first step. "reference": the decoder start token
        (the reference's prompt is `[bos]`). "tortoise": also code 1, because the original feeds a fake prompt of
        1s (one per prefix slot) ending in the start token, so with penalty 2.0 code 1 is penalised from step 0.
      stop_on: "decoder_eos" (default, correct: the decoder's stop token, e.g. 8193) or "text_eos" (the
        reference composite's behaviour, spec §14.3: it stops on the text eos id, 0 by default, a valid mel code).
      position_convention: "training" (default): start token at mel position 0, code c_k at k + 1, as the
        original model was trained and as its default uncached inference runs. "reference": c_k at k + 2, as
        HF's `ClvpForCausalLM` and the original KV-cache path. The prefix never gets decoder positions (the
        reference's step-0 bug, spec §14.2, is not reproduced).
      pad_to_max_mel_tokens: pad every candidate with its stop token to this length before fixing and scoring
        (Tortoise: 500; the speech tower mean-pools over all positions, so scores depend on it). None: no pad.
      chunk_size: candidate rows decoded at once (bounds the KV-cache memory); results do not depend on it.
        None: all rows in one chunk. With several devices it must be a multiple of the device count.
      dtype: compute dtype of the whole program; "bfloat16" keeps softmax, logits and similarities in float32.
      suppress_start_token: never generate the decoder's start token (default). It is not a code: the reference
        can sample it, and the speech encoder (whose vocabulary stops below it) then fails or returns NaN.
      output_scores: also return the raw decoder logits of every step [R, max_new_tokens, V].
      text_length_bucket: text lengths are padded (masked) up to a multiple of this, so nearby lengths share one
        compiled program. Only used when the model pools with masks (else padding would change the text embeds).
    """

    max_new_tokens: int = 500
    min_new_tokens: int = 0
    num_return_sequences: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    repetition_prompt: RepetitionPrompt = "reference"
    stop_on: StopOn = "decoder_eos"
    position_convention: PositionConvention = "training"
    pad_to_max_mel_tokens: int | None = None
    chunk_size: int | None = None
    dtype: ComputeDtype = "float32"
    suppress_start_token: bool = True
    output_scores: bool = False
    text_length_bucket: int = 16

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        def integer(name: str, low: int, optional: bool = False) -> None:
            check_integer(name, getattr(self, name), low, optional)

        def real(name: str, low: float, high: float, optional: bool = False, closed_low: bool = False) -> None:
            check_real(name, getattr(self, name), low, high, optional, closed_low)

        integer("max_new_tokens", 1)
        integer("min_new_tokens", 0)
        integer("num_return_sequences", 1)
        integer("top_k", 1, optional=True)
        integer("chunk_size", 1, optional=True)
        integer("pad_to_max_mel_tokens", 1, optional=True)
        integer("text_length_bucket", 1)
        real("temperature", 0.0, math.inf)  # > 0: greedy decoding is do_sample=False, not temperature 0
        real("top_p", 0.0, 1.0, optional=True)
        real("repetition_penalty", 0.0, math.inf, optional=True)
        need(0 <= self.min_new_tokens <= self.max_new_tokens, "min_new_tokens must be in [0, max_new_tokens]")
        need(self.num_return_sequences >= 1, "num_return_sequences must be >= 1")
        need(self.stop_on in ("decoder_eos", "text_eos"), f"stop_on {self.stop_on!r}: use 'decoder_eos' or 'text_eos'")
        need(
            self.position_convention in ("training", "reference"),
            f"position_convention {self.position_convention!r}: use 'training' or 'reference'",
        )
        need(self.repetition_prompt in ("reference", "tortoise"), "repetition_prompt: use 'reference' or 'tortoise'")
        need(self.dtype in ("float32", "bfloat16"), f"dtype {self.dtype!r}: use 'float32' or 'bfloat16'")
        need(self.chunk_size is None or self.chunk_size >= 1, "chunk_size must be >= 1 or None")
        need(self.text_length_bucket >= 1, "text_length_bucket must be >= 1")
        need(
            self.pad_to_max_mel_tokens is None or self.pad_to_max_mel_tokens >= self.max_new_tokens + 1,
            f"pad_to_max_mel_tokens {self.pad_to_max_mel_tokens} is shorter than the generated sequences "
            f"(1 + max_new_tokens = {self.max_new_tokens + 1}); raise it or lower max_new_tokens (the reference "
            "silently crops here)",
        )
        # Build the processors once so bad values fail here, not inside a trace.
        self.processors(eos_token_id=0)

    @property
    def first_position(self) -> int:
        """Decoder position of the first generated code c_0."""
        return 1 if self.position_convention == "training" else 2

    def stop_token(self, config: ClvpConfig) -> int:
        if self.stop_on == "decoder_eos":
            return config.decoder_config.eos_token_id
        return config.text_config.eos_token_id

    def processors(self, eos_token_id: int, start_token_id: int | None = None) -> tuple[Processor, ...]:
        suppress = (start_token_id,) if self.suppress_start_token and start_token_id is not None else ()
        return processor_chain(
            do_sample=self.do_sample,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
            min_new_tokens=self.min_new_tokens,
            eos_token_id=eos_token_id,
            suppress_tokens=suppress,
        )

    def replace(self, **changes) -> GenerationOptions:
        return dataclasses.replace(self, **changes)

    @classmethod
    def greedy(cls, max_new_tokens: int = 500, **kw) -> GenerationOptions:
        """Greedy decoding, one candidate."""
        return cls(max_new_tokens=max_new_tokens, **kw)

    @classmethod
    def tortoise(cls, num_candidates: int = 16, max_new_tokens: int = 500, **kw) -> GenerationOptions:
        """Tortoise's sampling settings (`api.tts` presets): temperature 0.8, top-p 0.8, repetition penalty 2.0,
        candidates padded with the stop token to 500 before CLVP ranking. `num_candidates`: 16 (ultra_fast),
        96 (fast), 256 (standard / high_quality)."""
        defaults = dict(
            max_new_tokens=max_new_tokens,
            num_return_sequences=num_candidates,
            do_sample=True,
            temperature=0.8,
            top_p=0.8,
            repetition_penalty=2.0,
            repetition_prompt="tortoise",
            pad_to_max_mel_tokens=max(500, max_new_tokens + 1),
        )
        defaults.update(kw)
        return cls(**defaults)


@dataclasses.dataclass(frozen=True)
class SamplingOverrides:
    """Tortoise's sampling knobs (`tts(...)`'s keywords, the CLI's `--temperature` ...) over a preset; None keeps
    the preset's value. Validated on construction, before any model is loaded; `OptionError.name` names the knob.

    Attributes:
      num_samples: candidates DRAWN per text chunk (Tortoise's `num_autoregressive_samples`; the presets draw 16,
        96, 256, 256).
      keep: candidates KEPT per chunk, best first (Tortoise's `k`, `do_tts.py --candidates`): rendered by `speak`,
        listed by `generate`. None: the command's default (speak 1, generate every drawn candidate).
      temperature: > 0; top_p: in (0, 1] (1: off); top_k: >= 1; repetition_penalty: > 0 (1: off).
      length_penalty: Tortoise passes it to transformers' `generate`, where only beam search reads it; Tortoise (and
        clvp-jax) sample, so it changes nothing. Accepted and recorded so Tortoise command lines keep working.
      max_new_tokens: speech codes per candidate (>= 1).
    """

    num_samples: int | None = None
    keep: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    length_penalty: float | None = None
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        check_integer("num_samples", self.num_samples, 1, optional=True)
        check_integer("keep", self.keep, 1, optional=True)
        check_real("temperature", self.temperature, 0.0, math.inf, optional=True)
        check_real("top_p", self.top_p, 0.0, 1.0, optional=True)
        check_integer("top_k", self.top_k, 1, optional=True)
        check_real("repetition_penalty", self.repetition_penalty, 0.0, math.inf, optional=True)
        check_real("length_penalty", self.length_penalty, -math.inf, math.inf, optional=True)
        check_integer("max_new_tokens", self.max_new_tokens, 1, optional=True)
        if self.keep is not None and self.num_samples is not None and self.keep > self.num_samples:
            raise OptionError(
                "keep", f"keep must be at most num_samples = {self.num_samples} (the candidates drawn), got {self.keep}"
            )

    def check_keep(self, drawn: int) -> None:
        """`OptionError` when more candidates are to be kept than `drawn` (the preset's count or `num_samples`)."""
        if self.keep is not None and self.keep > drawn:
            raise OptionError("keep", f"keep must be at most the {drawn} candidates drawn per chunk, got {self.keep}")

    def apply(self, options: GenerationOptions) -> GenerationOptions:
        """`options` with the warpers given here replaced (candidates and length are the preset's business)."""
        changes = {
            k: getattr(self, k)
            for k in ("temperature", "top_p", "top_k", "repetition_penalty")
            if getattr(self, k) is not None
        }
        return options.replace(**changes) if changes else options

    def to_json(self) -> dict:
        return dataclasses.asdict(self)
