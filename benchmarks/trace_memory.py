"""Where a generation process's memory goes: VmRSS / VmHWM per phase, for the cases of `bench_generate.py`.

Usage: .venv/bin/python benchmarks/trace_memory.py [--size real] [--tokens 16] [--dtype both]
       [--cases greedy1 sample16] [--folder DIR]

Each (dtype, case) runs in its own fresh process, built exactly as `bench_generate.py`'s clvp-jax side builds it
(its sizes, inputs and options; a fresh compilation cache; `warmup` from shapes, then `from_pretrained` of the
reference's seeded weights written as an HF folder, then the warmed-up program called twice with the case's
token count). After each phase the process records, from /proc/self/status, VmRSS, RssAnon, RssFile and the
phase's own peak (VmHWM, reset after every phase by writing 5 to /proc/self/clear_refs, so each phase's figure
is its own high-water mark and the largest of them is the process's peak), glibc's heap (`mallinfo2`: bytes in
use and free bytes it keeps), and the bytes of JAX's live arrays. Two diagnostic phases follow the calls: the
compiled program dropped (the RSS it frees is its resident size) and the parameters dropped. The compiled
program's own `memory_analysis()` (its temporary buffer, code, arguments, outputs) is printed too.

`--folder DIR` keeps the HF folder (written once, if DIR has no config.json) for later runs; default: a
temporary one. Memory figures do not depend on the machine's load (times do, and none is printed).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_generate import FRAMES, N_CAND, SIZES, TEXT_LEN, _case_tokens, _inputs
from machine import describe_machine  # benchmarks/machine.py (this script's folder is on sys.path)

GIB = 2**30
CASES = ("greedy1", "sample16", "e2e")
STATUS_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def _status() -> dict[str, float]:
    """The `STATUS_FIELDS` of /proc/self/status, in GiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in STATUS_FIELDS:
                out[key] = int(value.split()[0]) * 1024 / GIB
    return out


def _heap() -> dict[str, float]:
    """glibc's heap (all arenas), GiB: `in_use` (malloc'd and not freed, mmapped blocks included) and `free_kept`
    (freed bytes it keeps in its arenas, resident unless trimmed). Empty off glibc (no `mallinfo2`)."""
    try:
        info = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return {}
    info.restype = _Mallinfo2
    m = info()
    return {"in_use": (m.uordblks + m.hblkhd) / GIB, "free_kept": m.fordblks / GIB}


def _file_pages(top: int = 3) -> dict[str, float]:
    """The `top` file mappings by resident size (GiB), from /proc/self/smaps."""
    sizes: dict[str, float] = {}
    name = ""
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and not head[0].endswith(":"):  # a mapping's header: address perms offset dev inode [path]
                name = head[5] if len(head) > 5 and head[5].startswith("/") else ""
            elif head and head[0] == "Rss:" and name:
                sizes[Path(name).name] = sizes.get(Path(name).name, 0.0) + int(head[1]) * 1024 / GIB
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:top])


class Trace:
    """Phase records of this process (see the module docstring)."""

    def __init__(self) -> None:
        self.phases: list[dict] = []

    def mark(self, phase: str, live_bytes: int | None = None) -> None:
        """Record the state after `phase` and its peak, then reset the peak for the next phase."""
        record = {"phase": phase, **_status(), **_heap(), "files": _file_pages()}
        if live_bytes is not None:
            record["live_arrays"] = live_bytes / GIB
        self.phases.append(record)
        with open("/proc/self/clear_refs", "w") as f:  # 5: reset VmHWM to the current VmRSS
            f.write("5")


def _live_bytes() -> int:
    import jax

    return sum(a.nbytes for a in jax.live_arrays())


def _options(case: str, tokens: int, dtype: str):
    """The case's `GenerationOptions` and token count, as `bench_generate.run_jax` builds them."""
    from clvp_jax.generation import GenerationOptions

    tortoise = GenerationOptions.tortoise(
        num_candidates=N_CAND, max_new_tokens=tokens, min_new_tokens=tokens, pad_to_max_mel_tokens=None, dtype=dtype
    )
    n_greedy = _case_tokens(case, tokens)
    return dict(
        sample16=(tortoise, tokens),
        greedy1=(GenerationOptions(max_new_tokens=n_greedy, min_new_tokens=n_greedy, dtype=dtype), n_greedy),
        e2e=(tortoise.replace(max_new_tokens=64, min_new_tokens=64), 64),
    )[case]


def trace_case(folder: str, case: str, tokens: int, dtype: str) -> dict:
    """One process's phases (the `--side jax` child)."""
    trace = Trace()
    trace.mark("start (python)")
    import gc

    import jax
    import numpy as np

    from clvp_jax.checkpoint import from_pretrained, load
    from clvp_jax.config import ClvpConfig
    from clvp_jax.generation import compiling, warmup
    from clvp_jax.generation.generate import _prepare_text
    from clvp_jax.model import ClvpModelForConditionalGeneration, param_shapes

    jax.devices()  # the CPU client
    trace.mark("import jax, clvp_jax", _live_bytes())

    opts, n = _options(case, tokens, dtype)
    compiling.enable_compilation_cache()  # this process's fresh $CLVP_JAX_CACHE, as in bench_generate
    compute = None if dtype == "float32" else jax.numpy.dtype(dtype)
    model = ClvpModelForConditionalGeneration(ClvpConfig.from_pretrained(folder), masked_pooling=False, dtype=compute)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype), param_shapes(model.config))
    compiled = warmup(model, shapes, batch_size=1, text_length=TEXT_LEN, num_frames=FRAMES, options=opts)
    trace.mark("compile (warmup from shapes)", _live_bytes())

    # from_pretrained's two halves as two phases: `load_params` (the host tree), then `_to_device`.
    to_device = load._to_device
    load._to_device = lambda tree: (trace.mark("load: host tree read (load_params)", _live_bytes()), to_device(tree))[1]
    model, params = from_pretrained(folder, masked_pooling=False, dtype=dtype)
    load._to_device = to_device
    weights = sum(x.nbytes for x in jax.tree.leaves(params)) / GIB
    ids, feats = _inputs(np)
    fn = compiling.program_for(model, opts, 1, 1)
    i, m = _prepare_text(model, opts, ids, None)
    args = (params, i, m, jax.numpy.asarray(feats), None, jax.random.key(0), np.int32(n), np.int32(0))
    args += (np.zeros(1, np.int32),)
    run = compiling.ahead_or_jit(fn, args)
    assert run is not fn, "the warmed-up program was not found; it would be compiled again"
    trace.mark("load: on device (from_pretrained)", _live_bytes())

    for k in (1, 2):
        out = jax.block_until_ready(run(*args))
        del out
        trace.mark(f"call {k}", _live_bytes())

    analysis = compiled.memory_analysis()  # after the calls: it allocates, and bench_generate never asks for it
    program = {
        k: getattr(analysis, f"{k}_size_in_bytes") / GIB
        for k in ("temp", "generated_code", "argument", "output", "alias")
        if hasattr(analysis, f"{k}_size_in_bytes")
    }
    del run, compiled
    compiling._AHEAD.clear()
    gc.collect()
    model.tuning.release_freed_memory()
    trace.mark("diagnostic: program dropped", _live_bytes())
    del args, params
    gc.collect()
    model.tuning.release_freed_memory()
    trace.mark("diagnostic: params dropped", _live_bytes())
    out = {"case": case, "dtype": dtype, "tokens": n, "weights": weights, "program": program}
    return {**out, "phases": trace.phases}


def _child(folder: str, case: str, tokens: int, dtype: str, cache: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="2", CLVP_JAX_CACHE=tempfile.mkdtemp(prefix="xla-", dir=cache))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # a fresh cache: a real compilation, as in bench_generate
    args = ["--side", "jax", "--folder", folder, "--cases", case, "--tokens", str(tokens), "--dtype", dtype]
    proc = subprocess.run(
        [sys.executable, __file__, *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    if proc.returncode:
        raise RuntimeError(f"{dtype} {case} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(results: list[dict]) -> None:
    """Markdown tables: RSS after each phase / the phase's own peak; then each process's peak and the shares."""
    heads = [f"{r['dtype']} {r['case']} ({r['tokens']} tokens)" for r in results]
    print("\nRSS after the phase / the phase's peak (VmHWM), GiB; [RssAnon + RssFile; heap in use + kept free]")
    print(f"| phase | {' | '.join(heads)} |")
    print(f"|---|{'---|' * len(heads)}")
    for k, phase in enumerate(results[0]["phases"]):
        cells = []
        for r in results:
            p = r["phases"][k]
            heap = f"; {p['in_use']:.3f} + {p['free_kept']:.3f}" if "in_use" in p else ""
            cells.append(f"{p['VmRSS']:.3f} / {p['VmHWM']:.3f} [{p['RssAnon']:.3f} + {p['RssFile']:.3f}{heap}]")
        print(f"| {phase['phase']} | {' | '.join(cells)} |")
    print("\n| process | peak GiB (phase) | weights | live arrays after call 2 | program temp / code | top files |")
    print("|---|---|---|---|---|---|")
    peaks = {}
    for head, r in zip(heads, results, strict=True):
        phases = r["phases"][:-2]  # the diagnostic phases run after the peak that counts
        top = max(phases, key=lambda p: p["VmHWM"])
        peaks[(r["dtype"], r["case"])] = top["VmHWM"]
        call = r["phases"][-3]
        files = ", ".join(f"{k} {v:.3f}" for k, v in call["files"].items())
        prog = r["program"]
        print(
            f"| {head} | {top['VmHWM']:.3f} ({top['phase']}) | {r['weights']:.3f} | {call.get('live_arrays', 0):.3f} "
            f"| {prog.get('temp', 0):.3f} / {prog.get('generated_code', 0):.3f} | {files} |"
        )
    shares = [
        f"{case} {100 * peaks['bfloat16', case] / peaks['float32', case]:.1f}%"
        for case in dict.fromkeys(r["case"] for r in results)
        if ("float32", case) in peaks and ("bfloat16", case) in peaks
    ]
    if shares:
        print(f"\npeak bf16 / fp32: {', '.join(shares)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="real")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "both"], default="both")
    ap.add_argument("--cases", nargs="+", choices=CASES, default=["greedy1", "sample16"])
    ap.add_argument("--folder", help="keep the HF folder here (written once if it has no config.json)")
    ap.add_argument("--side", choices=["jax"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side:
        print(json.dumps(trace_case(a.folder, a.cases[0], a.tokens, a.dtype)))
        return
    dtypes = ("float32", "bfloat16") if a.dtype == "both" else (a.dtype,)
    with tempfile.TemporaryDirectory(prefix="trace_memory_") as scratch:
        folder = a.folder or scratch
        Path(folder).mkdir(parents=True, exist_ok=True)
        if not (Path(folder) / "config.json").is_file():
            subprocess.run(
                [sys.executable, str(Path(__file__).with_name("bench_generate.py")), "--side", "prepare"]  # its weights
                + ["--size", a.size, "--folder", folder],
                check=True,
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            )
        print(f"{describe_machine()}; size={a.size} tokens={a.tokens} (greedy {_case_tokens('greedy1', a.tokens)})")
        results = [_child(folder, case, a.tokens, dtype, scratch) for dtype in dtypes for case in a.cases]
    report(results)


if __name__ == "__main__":
    main()
