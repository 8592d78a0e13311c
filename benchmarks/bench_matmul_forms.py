"""The decode step's matmuls in each weight layout / operand order XLA can be given, on this machine.

Usage: .venv/bin/python benchmarks/bench_matmul_forms.py [--rows 16] [--width 1024] [--layers 8]

Chains `--layers` GPT-2 layers' worth of products ([rows, D] by D x 3D, D x D, D x 4D and 4D x D weights, so
that the weights do not stay in cache) and prints GFLOP/s, best of 7, for:
  x_at_w          x [rows, in] @ W [in, out]                  (Flax's layout)
  weight_first    W [out, in] x x^T, barrier, transpose back  (clvp_jax.layers.Linear)
  x_at_wt         x @ W [out, in]^T                           (what XLA folds the unfenced form into)
each with XLA's YNNPACK dot fusion on (default) and off. This is the measurement behind `Linear`'s layout.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

FORMS = ("x_at_w", "weight_first", "x_at_wt")


def run(form: str, rows: int, width: int, layers: int, ynn: bool) -> float:
    import jax
    import numpy as np
    from jax import lax

    rng = np.random.default_rng(0)
    shapes = [(width, 3 * width), (width, width), (width, 4 * width), (4 * width, width)]  # [in, out]
    transposed = form != "x_at_w"
    weights = [
        [(rng.standard_normal(s, dtype=np.float32) * 0.02).T.copy() if transposed else
         rng.standard_normal(s, dtype=np.float32) * 0.02 for s in shapes]
        for _ in range(layers)
    ]  # fmt: skip
    x = rng.standard_normal((rows, width), dtype=np.float32)

    def product(w, x):
        if form == "x_at_w":
            return x @ w
        if form == "x_at_wt":
            return lax.dot_general(x, w, (((1,), (1,)), ((), ())))
        return lax.optimization_barrier(lax.dot_general(w, x, (((1,), (1,)), ((), ())))).T

    def chain(x, weights):
        for qkv, out, fc, proj in weights:
            h = product(qkv, x)[:, :width] + product(out, x)
            x = x + product(proj, jax.nn.gelu(product(fc, h)))
        return x

    options = None if ynn else {"xla_cpu_experimental_ynn_fusion_type": ""}
    f = jax.jit(chain, compiler_options=options)
    args = jax.device_put((x, weights))
    f(*args).block_until_ready()
    best = float("inf")
    for _ in range(7):
        t = time.perf_counter()
        f(*args).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * rows * sum(a * b for a, b in shapes) * layers / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # "form,ynn": run one case in this process
    a = ap.parse_args()
    if a.one:
        form, ynn = a.one.split(",")
        print(run(form, a.rows, a.width, a.layers, ynn == "on"))
        return
    print(f"rows={a.rows} width={a.width} layers={a.layers} ({time.strftime('%Y-%m-%d %H:%M')})")
    print("| form | YNNPACK on | YNNPACK off |\n|---|---|---|")
    for form in FORMS:
        cells = []
        for ynn in ("on", "off"):  # each case in a fresh process: no cache or allocator state carried over
            args = [sys.executable, __file__, "--rows", str(a.rows), "--width", str(a.width)]
            args += ["--layers", str(a.layers), "--one", f"{form},{ynn}"]
            out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
            cells.append(f"{float(out.strip().splitlines()[-1]):.1f} GFLOP/s")
        print(f"| {form} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
