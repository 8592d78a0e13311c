"""Compilation of the generation programs: JAX's persistent cache, and programs compiled ahead from shapes alone.

`warmup` can compile a program before any weight is loaded (its parameters given as `jax.ShapeDtypeStruct`s).
The executable is kept here, keyed by the program and the exact shapes and dtypes of its arguments, and
`generate` uses it for arguments that match; anything else goes through `jax.jit` as usual. Compiling first and
loading second keeps the compiler's working memory (about 0.6 GiB for the real model on CPU) from adding to the
weights' at the process's peak; `release_freed_memory` then hands that working memory back to the OS.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import jax

from clvp_jax.host_memory import release_freed_memory

_AHEAD: dict[tuple, Any] = {}  # (program key, argument signature) -> jax.stages.Compiled


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path:
    """Turn on JAX's persistent compilation cache (default `~/.cache/clvp_jax/xla`, or `$CLVP_JAX_CACHE`).

    Leaves an already configured cache directory alone. Returns the directory in use.
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


def signature(args: Any) -> tuple:
    """Tree structure, shapes and dtypes of a pytree of arrays (or `jax.ShapeDtypeStruct`s)."""
    leaves, treedef = jax.tree.flatten(args)
    return treedef, tuple((tuple(x.shape), str(x.dtype)) for x in leaves)


def abstract(args: Any) -> Any:
    """The same pytree with every array replaced by its `jax.ShapeDtypeStruct`."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), args)


def compile_ahead(key: Hashable, fn, args: tuple) -> Any:
    """Compile `fn` (a `jax.jit` function) for `args` (arrays or shapes) and keep it under `key`."""
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
    _AHEAD[key, signature(args)] = compiled
    # The traced program (its jaxpr and the trace caches behind it, ~15 MiB at the real size) is not needed
    # once compiled; executables `fn` compiled through jit for other shapes reload from the persistent cache.
    del lowered
    fn.clear_cache()
    release_freed_memory()
    return compiled


def ahead_or_jit(key: Hashable, fn, args: tuple) -> Callable:
    """The executable `compile_ahead` made for exactly these argument shapes, else `fn` itself."""
    return _AHEAD.get((key, signature(args)), fn) if _AHEAD else fn
