"""One line that says which CPU a benchmark figure was taken on: its model and its matrix features.

Usage: `from machine import describe_machine; print(describe_machine())` (benchmarks/ is the script's folder),
or `.venv/bin/python benchmarks/machine.py`.

The same command gives different ratios on different CPUs (the 2-core AMD EPYC of the first figures has
AVX-512 and avx512_bf16 but no AMX; the 2-core Intel Xeon of 2026-12-02 has AMX), so every figure is printed
with this line. Linux only in full (it reads /proc/cpuinfo, as `lscpu` does); elsewhere it says what Python's
`platform` knows.
"""

from __future__ import annotations

import os
import platform

MATRIX_FLAGS = ("avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "avx2", "fma")


def _cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """(model name, flags) of the first processor in `path`; ("", set()) when it cannot be read."""
    model, flags = "", set()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return model, flags


def describe_machine(path: str = "/proc/cpuinfo") -> str:
    """E.g. "CPU: Intel(R) Xeon(R) Processor, 2 cores; matrix features: avx512f avx512_bf16 ... (no: ...)"."""
    model, flags = _cpuinfo(path)
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    has = [f for f in MATRIX_FLAGS if f in flags]
    lacks = [f for f in MATRIX_FLAGS if f not in flags]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not flags:
        return f"CPU: {model}, {cores} cores; matrix features: unknown (no /proc/cpuinfo)"
    return f"CPU: {model}, {cores} cores; matrix features: {' '.join(has) or 'none'}" + (
        f" (no {' '.join(lacks)})" if lacks else ""
    )


if __name__ == "__main__":
    print(describe_machine())
