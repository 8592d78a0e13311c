"""The compile policy of generation: which program runs, with which XLA scheduler, for which shapes.

* The program cache: one `jax.jit` of `program.generation_program` per (model, options, device count, scheduler),
  jit itself caching per input shape. The CLVP towers run as loops over their layers (`scan_layers`): the same
  results from a smaller program that compiles faster.
* The scheduler: programs that decode at most `model.tuning.memory_scheduler_max_rows` rows per chunk and device
  (4 on CPU, never elsewhere) are compiled with XLA's memory-optimized scheduler (the same results, a smaller
  temporary buffer; see `clvp_jax.tuning`).
* Bucketing: text lengths are padded (masked) to a multiple of `GenerationOptions.text_length_bucket`, so nearby
  lengths share one program.
* Ahead of time: `warmup` compiles a program before any weight is loaded (its parameters given as
  `jax.ShapeDtypeStruct`s). The executable is kept here, keyed by the program and the exact shapes and dtypes of its
  arguments, and `generate` runs it for arguments that match; anything else goes through `jax.jit` as usual.
  Compiling first and loading second keeps the compiler's working memory (about 0.6 GiB for the real model on CPU)
  from adding to the weights' at the process's peak; `release_freed_memory` then hands it back to the OS.
* JAX's persistent compilation cache is the caller's choice: `enable_compilation_cache()` turns it on (the CLI
  does); `generate` and `warmup` never change `jax.config`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from clvp_jax.generation.decode import chunk_rows
from clvp_jax.generation.options import GenerationOptions
from clvp_jax.generation.program import generation_program
from clvp_jax.generation.sharding import rows_mesh
from clvp_jax.model import ClvpModelForConditionalGeneration
from clvp_jax.tuning import MEMORY_SCHEDULER_OPTIONS, Tuning

PROGRAM_NAME = "clvp_generation"  # the jitted function's name, as JAX's compile logs and events report it

_AHEAD: dict[tuple, Any] = {}  # (program, argument signature) -> jax.stages.Compiled


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path:
    """Turn on JAX's persistent compilation cache (default `~/.cache/clvp_jax/xla`, or `$CLVP_JAX_CACHE`).

    An explicit, global choice (it sets `jax.config`): the `clvp-jax` command makes it; library users call it once
    if they want compiled programs kept across processes. Leaves an already configured cache directory alone.
    Returns the directory in use.
    """
    current = jax.config.jax_compilation_cache_dir
    if current and path is None:
        return Path(current)
    target = Path(path or os.environ.get("CLVP_JAX_CACHE") or Path.home() / ".cache" / "clvp_jax" / "xla")
    target.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(target))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return target


def uses_memory_scheduler(
    model: ClvpModelForConditionalGeneration, opts: GenerationOptions, batch_size: int, n_devices: int
) -> bool:
    """Whether the program for `batch_size` texts over `n_devices` is compiled with the memory-optimized scheduler
    (`model.tuning.memory_scheduler_max_rows`: decoding few rows per device is bound by reading the weights)."""
    return model.tuning.use_memory_scheduler(chunk_rows(opts, batch_size) // n_devices)


def program_for(
    model: ClvpModelForConditionalGeneration, opts: GenerationOptions, batch_size: int, n_devices: int
) -> Callable:
    """The jitted program `generate` runs for `batch_size` texts over `n_devices` devices."""
    return _jitted(model, opts, n_devices, uses_memory_scheduler(model, opts, batch_size, n_devices))


def _cast_floats(tree: Any, dtype: jnp.dtype) -> Any:
    return jax.tree_util.tree_map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


@functools.lru_cache(maxsize=32)
def _jitted(model: ClvpModelForConditionalGeneration, opts: GenerationOptions, n_devices: int, lean: bool):
    mesh = rows_mesh(n_devices)
    compute = model.clone(scan_layers=True, **({} if opts.dtype == "float32" else {"dtype": jnp.bfloat16}))

    def clvp_generation(
        params, input_ids, attention_mask, features, latents, rng, limit, candidate_offset, text_indices
    ):
        if opts.dtype == "bfloat16":
            params = _cast_floats(params, jnp.bfloat16)
        return compute.apply(
            {"params": params},
            input_ids,
            attention_mask,
            features,
            latents,
            rng,
            limit,
            candidate_offset,
            text_indices,
            opts=opts,
            mesh=mesh,
            method=generation_program,
        )

    return jax.jit(clvp_generation, compiler_options=dict(MEMORY_SCHEDULER_OPTIONS) if lean else None)


def bucketed_text_length(model: ClvpModelForConditionalGeneration, opts: GenerationOptions, length: int) -> int:
    """The padded text length `generate` compiles for: a multiple of `opts.text_length_bucket`, never past the
    conditioning encoder's room unless `length` already is; unchanged when the model pools without masks (there
    padding would change the text embeddings)."""
    if not model.masked_pooling or length % opts.text_length_bucket == 0:
        return length
    size, room = opts.text_length_bucket, model.config.decoder_config.max_text_tokens - 3
    return min(max(size, -(-length // size) * size), max(length, room))


def signature(args: Any) -> tuple:
    """Tree structure, shapes and dtypes of a pytree of arrays (or `jax.ShapeDtypeStruct`s)."""
    leaves, treedef = jax.tree.flatten(args)
    return treedef, tuple((tuple(x.shape), str(x.dtype)) for x in leaves)


def abstract(args: Any) -> Any:
    """The same pytree with every array replaced by its `jax.ShapeDtypeStruct`."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), args)


def compile_ahead(fn: Callable, args: tuple, tuning: Tuning) -> Any:
    """Compile `fn` (a `jax.jit` function) for `args` (arrays or shapes) and keep it for `ahead_or_jit`."""
    # Tracing the real-size program creates millions of short-lived Python objects; the cyclic garbage collector
    # has nothing to find in them but ran for ~0.5 s of the ~4 s of tracing and lowering.
    collecting = gc.isenabled()
    gc.disable()
    try:
        lowered = fn.lower(*abstract(args))
    finally:
        if collecting:
            gc.enable()
    compiled = lowered.compile()
    _AHEAD[fn, signature(args)] = compiled
    # The traced program (its jaxpr and the trace caches behind it, ~15 MiB at the real size) is not needed
    # once compiled; executables `fn` compiled through jit for other shapes reload from the persistent cache.
    del lowered
    fn.clear_cache()
    tuning.release_freed_memory()
    return compiled


def ahead_or_jit(fn: Callable, args: tuple) -> Callable:
    """The executable `compile_ahead` made of `fn` for exactly these argument shapes, else `fn` itself."""
    return _AHEAD.get((fn, signature(args)), fn) if _AHEAD else fn


@dataclasses.dataclass
class CompileCount:
    """Attributes: traced: generation programs JAX traced; compiled: XLA compilations of them (a persistent-cache
    load counts too)."""

    traced: int = 0
    compiled: int = 0


_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compilations() -> Iterator[CompileCount]:
    """Count the generation programs traced and compiled inside the block, from JAX's public monitoring events.

    `with count_compilations() as n: generate(...)`, then `n.traced == 0` means the call ran a program that was
    already compiled (by an earlier call or by `warmup`).
    """
    count = CompileCount()

    def listen(event: str, duration: float, **kwargs: Any) -> None:
        del duration
        if PROGRAM_NAME not in str(kwargs.get("fun_name", "")):
            return
        if event == _TRACE_EVENT:
            count.traced += 1
        elif event == _COMPILE_EVENT:
            count.compiled += 1

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
