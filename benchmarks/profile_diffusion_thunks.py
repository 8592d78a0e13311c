"""Where the real-size guided diffusion step's time goes on XLA:CPU: a per-thunk profile, grouped by fusion kind.

Usage: .venv/bin/python benchmarks/profile_diffusion_thunks.py [--dtype float32|bfloat16] [--runs 2] [--top 30]

Traces `--runs` steps (the variant of profile_diffusion_step.py: 2 rows x 278 frames, random real-size weights)
with `jax.profiler`, reads the trace back with `jax.profiler.ProfileData` (no TensorBoard needed) and joins each
thunk's time with its fusion in the optimized HLO (`compiled.as_text()`): one line per group of fusions of the
same output shape and op mix (e.g. the 13 attention fusions: two dots, the softmax and the bias add), with its
share. Times are thread time summed over the thunks' events, so on a loaded machine they are inflated and only
the shares mean something; compare variants with profile_diffusion_step.py (process CPU time, one process).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fusion_summaries(hlo: str) -> dict[str, tuple[str, str]]:
    """{fusion instruction name: (output shape, "op mix | main shapes")} of an optimized HLO module's text."""
    bodies: dict[str, list[str]] = {}
    current = None
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if head:
            current = bodies.setdefault(head.group(1), [])
        elif current is not None and line.startswith("  "):
            current.append(line.strip())
    instr = re.compile(r"(?:ROOT )?%([\w.\-]+) = (.+?) ([a-z][\w\-]*)\(")

    def mix(name: str) -> str:
        ops, shapes = collections.Counter(), []
        for line in bodies.get(name, []):
            m = instr.match(line)
            if not m or m.group(3) in ("parameter", "constant", "bitcast"):
                continue
            ops[m.group(3)] += 1
            if m.group(3) in ("dot", "reduce", "transpose", "concatenate", "gather", "exponential", "convolution"):
                shapes.append(f"{m.group(3)}:{m.group(2).split('{')[0]}")
        text = " ".join(op if n == 1 else f"{op}x{n}" for op, n in ops.most_common(8))
        return f"{text} | {' '.join(shapes[:5])}"

    out = {}
    for lines in bodies.values():
        for line in lines:
            m = instr.match(line)
            calls = re.search(r"calls=%([\w.\-]+)", line)
            if m and m.group(3) == "fusion" and calls:
                out[m.group(1)] = (m.group(2).split("{")[0], mix(calls.group(1)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    import jax

    from benchmarks.machine import describe_machine
    from benchmarks.profile_diffusion_step import _step_fn

    step, compiled = _step_fn(args.dtype, {}, with_compiled=True)
    step()
    summaries = fusion_summaries(compiled.as_text())
    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder)
        for _ in range(args.runs):
            step()
        jax.profiler.stop_trace()
        trace = jax.profiler.ProfileData.from_file(glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)[0])
    per_thunk = collections.Counter()
    for plane in trace.planes:
        for line in plane.lines:
            for event in line.events:
                if event.name in summaries:
                    per_thunk[event.name] += event.duration_ns / args.runs / 1e6
    groups, counts = collections.Counter(), collections.Counter()
    for name, ms in per_thunk.items():
        key = (summaries[name][0], re.sub(r"\.\d+", "", summaries[name][1]))
        groups[key] += ms
        counts[key] += 1
    total = sum(groups.values())
    print(describe_machine(), "| load", os.getloadavg())
    print(f"{args.dtype}: {total:.0f} ms of thunk thread time per step")
    for (shape, ops), ms in groups.most_common(args.top):
        print(f"{ms:8.1f} ms {ms / total:6.1%} x{counts[(shape, ops)]:3d}  {shape:24s} {ops[:150]}")


if __name__ == "__main__":
    main()
