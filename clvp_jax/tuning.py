"""`Tuning`: every choice of how the modules compute that depends on the backend, in one frozen object.

The model code reads as the maths; where a form of the same maths runs much faster (or lighter) on one backend,
the module asks its `tuning` attribute which form to use. `Tuning.for_backend()` picks the measured CPU forms on
CPU and the portable forms (XLA's own fusion, `jax.nn.dot_product_attention`, no fences, no serial loops)
everywhere else; pass another one to override (`ClvpModelForConditionalGeneration(config, tuning=...)`,
`model.clone(tuning=...)`, `dataclasses.replace(Tuning.cpu(), ...)`). Every form gives the same values up to
float32 rounding (tests/test_tuning.py); none changes the parameter tree or the checkpoint format. Why the CPU
forms, with the figures: benchmarks/README.md, "Why the CPU forms".

Axis letters: see the package legend in `clvp_jax/__init__.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

import jax

from clvp_jax.host_memory import release_freed_memory

FullAttention = Literal["einsum", "dot_product_attention"]
SharedPrefixRead = Literal["blocked", "dense"]
TowerLoop = Literal["switch", "stacked", "unrolled"]
ConvKernel = Literal["im2col", "conv"]

MEMORY_SCHEDULER_OPTIONS = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}  # XLA compiler options


@dataclasses.dataclass(frozen=True)
class Tuning:
    """How the modules compute (hashable: it is part of every module, hence of every jit cache key).

    Attributes:
      weight_first_max_rows: `Linear` multiplies weight-first, [out, in] x [in, rows] with the transpose back to
        [rows, out] fenced by an optimization barrier, when its input has at most this many rows; otherwise
        (and always when 0) the plain x W^T, whose operand order XLA chooses.
      attention: the kernel of attention without a cache: "einsum" (scores, float32 softmax, weighted values) or
        "dot_product_attention" (`jax.nn.dot_product_attention`, the same maths, which a backend may run fused).
      per_head_above_bytes: with "einsum", attention computes one head at a time (a `fori_loop` over heads) when
        the float32 scores of all heads would take more than this many bytes; None: never.
      shared_prefix: how a decode step over a `SplitKV` cache reads each row's own slots: "blocked" (blocks of
        `SplitKV.block` slots, only as far as they are filled: a loop with a traced trip count, online softmax)
        or "dense" (all M slots at once, the unfilled ones masked: one softmax, no loop).
      tower_loop: how the CLVP towers run their layers when asked to loop (`ClvpEncoder.scan`, which `generate`
        turns on): "switch" (`lax.scan` whose body copies layer i's weights out of the per-layer tree with a
        `lax.switch`), "stacked" (`lax.scan` over a stacked copy of all layers' weights made inside the program)
        or "unrolled" (a Python loop: the largest program). The parameter tree stays per-layer in every form.
      memory_scheduler_max_rows: programs that decode at most this many rows per device are compiled with XLA's
        memory-optimized CPU scheduler (`compiler_options`); 0: never.
      low_precision_min_rows: a bf16 / fp16 `Linear` product with fewer rows is padded with zero rows to this
        many (XLA CPU runs the one-row bf16 product on a slow path, ~5-10x slower than two rows); 0: never.
      conv_kernel: how the channels-last convolutions of the diffusion decoder (`waveform.nwc.ConvNWC`) apply a
        kernel of k > 1 taps: "im2col" (the k shifted copies of the input side by side, [B T, in k], times the
        weight read as [out, in k] in one dot) or "conv" (`lax.conv_general_dilated` in NWC).
      trim_heap: hand the heap pages glibc keeps after large frees back to the OS (`release_freed_memory`) after
        compiling and after loading a checkpoint.
    """

    weight_first_max_rows: int
    attention: FullAttention
    per_head_above_bytes: int | None
    shared_prefix: SharedPrefixRead
    tower_loop: TowerLoop
    memory_scheduler_max_rows: int
    trim_heap: bool
    low_precision_min_rows: int = 0
    conv_kernel: ConvKernel = "conv"

    def __post_init__(self) -> None:
        for name, options in (
            ("attention", FullAttention),
            ("shared_prefix", SharedPrefixRead),
            ("tower_loop", TowerLoop),
            ("conv_kernel", ConvKernel),
        ):
            if getattr(self, name) not in get_args(options):
                raise ValueError(f"Tuning.{name} must be one of {get_args(options)}, got {getattr(self, name)!r}")
        for name in ("weight_first_max_rows", "memory_scheduler_max_rows", "low_precision_min_rows"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"Tuning.{name} must be an int >= 0 (0 turns it off), got {getattr(self, name)!r}")
        if self.per_head_above_bytes is not None and (
            not isinstance(self.per_head_above_bytes, int) or self.per_head_above_bytes < 0
        ):
            raise ValueError(
                f"Tuning.per_head_above_bytes must be an int >= 0 or None (never), got {self.per_head_above_bytes!r}"
            )

    @classmethod
    def cpu(cls) -> Tuning:
        """The forms measured fastest (or lightest) on CPU; each one's why is in benchmarks/README.md."""
        return cls(
            weight_first_max_rows=256,  # skinny decode products run ~1.8x faster weight-first; equal above
            attention="einsum",
            per_head_above_bytes=8 << 20,  # long inputs: one head's scores live at a time (faster, lighter)
            shared_prefix="blocked",  # read only the filled own slots
            tower_loop="switch",  # one compiled layer, no stacked copy of the weights
            memory_scheduler_max_rows=4,  # few-row programs: smaller temporary buffer, same speed
            trim_heap=True,  # the process's peak is host memory
            low_precision_min_rows=2,  # greedy's one-row bf16 products: 2 rows run several times faster
            conv_kernel="im2col",  # XLA:CPU's NWC convolution is slower than the same dot
        )

    @classmethod
    def portable(cls) -> Tuning:
        """The plain forms: what XLA fuses and schedules best by itself, with no serial loops (GPU, TPU)."""
        return cls(
            weight_first_max_rows=0,
            attention="dot_product_attention",
            per_head_above_bytes=None,
            shared_prefix="dense",
            tower_loop="stacked",
            memory_scheduler_max_rows=0,
            trim_heap=False,
            low_precision_min_rows=0,
            conv_kernel="conv",
        )

    @classmethod
    def for_backend(cls, backend: str | None = None) -> Tuning:
        """`Tuning.cpu()` for "cpu", `Tuning.portable()` for any other backend ("gpu", "cuda", "rocm", "tpu", ...).

        Args:
          backend: a JAX platform name; None: `jax.default_backend()` (read here, when a module is built, never
            inside traced code).
        """
        name = jax.default_backend() if backend is None else backend
        if not isinstance(name, str) or not name:
            raise ValueError(f"backend must be a JAX platform name such as 'cpu', 'gpu' or 'tpu', got {backend!r}")
        return cls.cpu() if name.lower() == "cpu" else cls.portable()

    def use_memory_scheduler(self, rows_per_device: int) -> bool:
        """Whether a generation program decoding `rows_per_device` rows per device (per chunk) is compiled with
        `MEMORY_SCHEDULER_OPTIONS`."""
        return 0 < self.memory_scheduler_max_rows and rows_per_device <= self.memory_scheduler_max_rows

    def compiler_options(self, rows_per_device: int) -> dict[str, str] | None:
        """The `compiler_options` for `jax.jit` of such a program: `MEMORY_SCHEDULER_OPTIONS` or None."""
        return dict(MEMORY_SCHEDULER_OPTIONS) if self.use_memory_scheduler(rows_per_device) else None

    def release_freed_memory(self) -> None:
        """`host_memory.release_freed_memory()` if `trim_heap`, else nothing."""
        if self.trim_heap:
            release_freed_memory()
