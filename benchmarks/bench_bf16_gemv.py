"""Every bf16 form of a decode step's few-row product that XLA CPU can be given, against our fp32 form, on one CPU.

Usage: .venv/bin/python benchmarks/bench_bf16_gemv.py [--rows 1 2 16] [--layers 4] [--rounds 7] [--forms NAME ...]
         [--dependent]

The work is a chain of `--layers` GPT-2 layers' worth of products at the real width (weights [out, in]: 3072 x 1024,
1024 x 1024, 4096 x 1024, 1024 x 4096) and the lm_head (8194 x 1024), ~110 MB of bf16 weights for 4 layers, so that
no weight stays in cache and each call reads them all, as a decode step does. For each row count and form: ms per
chain, wall and process CPU time (both threads), best of 5 calls per round, best of `--rounds` rounds with every
case in each round (a loaded machine slows them alike), and the weight bytes read per wall second. The bf16 read
floor is half fp32's: a bf16 form that ran at the machine's read bandwidth would take half fp32's time.
By default the products are independent (all read the same input, so XLA may run two at once, one per core);
`--dependent` feeds each product's output into the next one's input, as in a decode step, where every product
must use both cores by itself.

Forms (`Linear`'s are the first two):
  fp32_weight_first  fp32 W [out, in] x x^T, fenced by an optimization barrier, transposed back (`Linear` in fp32)
  bf16_x_wt          bf16 x W^T with a float32 result, 1 row padded to 2 (`Linear` in bf16 on CPU)
  bf16_x_wt_1row     the same unpadded (1 row only)
  bf16_weight_first  bf16 W x^T with a float32 result, transposed back (XLA keeps or flips the order)
  bf16_wf_fenced     the same fenced by an optimization barrier (fp32's CPU form, in bf16)
  bf16_halves        W viewed as [2, out/2, in] (no copy), one batched dot: a half per batch entry
  bf16_reduce        convert + multiply + reduce over [out, in] in float32: one fusion reading W once (<= 2 rows)
  bf16_u32_shift     W read as uint32 pairs, converted by a shift and a mask, chunks of 512 rows through fp32 dots
                     in a loop, so the float32 chunk stays in cache (<= 2 rows)
  bf16_x_wt@eigen    bf16_x_wt with XLA's YNNPACK fusions off (`xla_cpu_experimental_ynn_fusion_type=""`: Eigen)
  bf16_x_wt@onednn   YNNPACK off, oneDNN dot fusion on
  bf16_x_wt@xnnpack  YNNPACK off, XNNPACK dot fusion on
The figures (AMD EPYC without AMX, 2026-12-02) are in benchmarks/README.md, "bf16 on AMD EPYC".
"""

from __future__ import annotations

import argparse
import os
import time

WIDTH, VOCAB, CHUNK = 1024, 8194, 512
NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}
LIBRARIES = {
    "eigen": NO_YNN,
    "onednn": {**NO_YNN, "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
    "xnnpack": {**NO_YNN, "xla_cpu_experimental_xnn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
}
FEW_ROWS_ONLY = ("bf16_reduce", "bf16_u32_shift")  # 10-50x slower than the rest at 16 rows: not worth the wait


def products():
    """name -> (product(x [rows, in] float32, w [out, in]) -> [rows, out] float32, weight dtype)."""
    import jax.numpy as jnp
    from jax import lax

    f32, bf16 = jnp.float32, jnp.bfloat16
    contract_in = (((1,), (1,)), ((), ()))

    def padded(x):
        return (jnp.pad(x, ((0, 2 - x.shape[0]), (0, 0))) if x.shape[0] < 2 else x), x.shape[0]

    def x_wt(x, w):
        x, n = padded(x)
        return lax.dot_general(x.astype(bf16), w, contract_in, preferred_element_type=f32)[:n]

    def x_wt_1row(x, w):
        return lax.dot_general(x.astype(bf16), w, contract_in, preferred_element_type=f32)

    def weight_first(x, w):
        return lax.dot_general(w, x.astype(bf16), contract_in, preferred_element_type=f32).T

    def wf_fenced(x, w):
        return lax.optimization_barrier(lax.dot_general(w, x.astype(bf16), contract_in, preferred_element_type=f32)).T

    def halves(x, w):
        x, n = padded(x)
        halves = w.reshape(2, w.shape[0] // 2, w.shape[1])  # [2, out/2, in]
        xb = jnp.broadcast_to(x.astype(bf16)[None], (2, *x.shape))
        y = lax.dot_general(xb, halves, (((2,), (2,)), ((0,), (0,))), preferred_element_type=f32)  # [2, rows, out/2]
        return jnp.concatenate([y[0], y[1]], axis=1)[:n]

    def reduce(x, w):
        return jnp.sum(w.astype(f32)[None] * x[:, None, :], axis=-1)

    def u32_shift(x, w):
        out, n_in = w.shape
        chunk = CHUNK if out % CHUNK == 0 else out
        pairs = lax.bitcast_convert_type(w.reshape(out // chunk, chunk, n_in // 2, 2), jnp.uint32)  # [c, chunk, in/2]
        even, odd = x[:, 0::2], x[:, 1::2]  # little endian: element 2j is the low half of pair j

        def one(c):
            lo = lax.bitcast_convert_type(c << 16, f32)
            hi = lax.bitcast_convert_type(c & jnp.uint32(0xFFFF0000), f32)
            return lax.optimization_barrier(
                lax.dot_general(lo, even, contract_in) + lax.dot_general(hi, odd, contract_in)
            )

        return lax.map(one, pairs).reshape(out, -1).T

    def fp32_weight_first(x, w):
        return lax.optimization_barrier(lax.dot_general(w, x, contract_in)).T

    forms = {
        "fp32_weight_first": (fp32_weight_first, f32),
        "bf16_x_wt": (x_wt, bf16),
        "bf16_x_wt_1row": (x_wt_1row, bf16),
        "bf16_weight_first": (weight_first, bf16),
        "bf16_wf_fenced": (wf_fenced, bf16),
        "bf16_halves": (halves, bf16),
        "bf16_reduce": (reduce, bf16),
        "bf16_u32_shift": (u32_shift, bf16),
    }
    forms.update({f"bf16_x_wt@{lib}": (x_wt, bf16) for lib in LIBRARIES})
    return forms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 2, 16])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--forms", nargs="+", help="a subset of the forms (default: all)")
    ap.add_argument("--dependent", action="store_true", help="each product's input depends on the previous output")
    a = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    from machine import describe_machine

    forms = products()
    names = a.forms or list(forms)
    unknown = sorted(set(names) - set(forms))
    if unknown:
        raise SystemExit(f"unknown forms {unknown}; use some of {list(forms)}")
    rng = np.random.default_rng(0)
    shapes = [(3 * WIDTH, WIDTH), (WIDTH, WIDTH), (4 * WIDTH, WIDTH), (WIDTH, 4 * WIDTH)] * a.layers + [(VOCAB, WIDTH)]
    w32 = [jnp.asarray(rng.standard_normal(s, np.float32) * 0.02) for s in shapes]
    weights = {jnp.float32: w32, jnp.bfloat16: [w.astype(jnp.bfloat16) for w in w32]}

    def chain(product, options):
        def run(ws, x):  # every product reads its own weight; the sum keeps XLA from dropping any
            total = 0.0
            for w in ws:
                y = product(x if w.shape[1] == WIDTH else jnp.tile(x, (1, 4)), w)  # [rows, out]
                total = total + y.sum()
                if a.dependent:  # the next product waits for this one, as in a decode step
                    x = x + 1e-3 * y[:, :WIDTH]
            return total

        return jax.jit(run, compiler_options=options)

    cases = {}
    for rows in a.rows:
        x = jnp.asarray(rng.standard_normal((rows, WIDTH), np.float32))
        for name in names:
            if (name == "bf16_x_wt_1row" and rows != 1) or (name in FEW_ROWS_ONLY and rows > 2):
                continue
            product, dtype = forms[name]
            options = LIBRARIES.get(name.partition("@")[2])
            cases[rows, name] = (chain(product, options), weights[dtype], x)
    reference = {}
    for (rows, name), (f, ws, x) in cases.items():  # compile, and check that the bf16 forms agree with each other
        value = float(f(ws, x))
        ref = reference.setdefault((rows, ws[0].dtype), value)
        # The same bf16 weights; the dots round x to bf16 too (~0.4% relative per element, partly cancelling in
        # this sum of ~10^6 products), the reduce and shift forms keep it float32: a 2% bound catches wrong maths.
        if abs(value - ref) > 2e-2 * max(1.0, abs(ref)):
            raise SystemExit(f"{name} at {rows} rows computes {value}, the first form of its dtype {ref}")
    best = {k: [float("inf"), float("inf")] for k in cases}
    for _ in range(a.rounds):
        for k, (f, ws, x) in cases.items():
            t, c = time.perf_counter(), time.process_time()
            for _ in range(5):
                y = f(ws, x)
            jax.block_until_ready(y)
            best[k] = [min(best[k][0], (time.perf_counter() - t) / 5), min(best[k][1], (time.process_time() - c) / 5)]
    print(describe_machine())
    mb = sum(int(np.prod(s)) for s in shapes) * 2 / 1e6
    print(
        f"{a.layers} layers + lm_head ({mb:.0f} MB of bf16 weights), {'dependent' if a.dependent else 'independent'} "
        f"products, best of 5 calls x {a.rounds} alternated rounds, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}"
    )
    print("| rows | form | wall ms | CPU ms | weights read, GB/s of wall |\n|---|---|---|---|---|")
    for (rows, name), (wall, cpu) in best.items():
        read = mb * (2 if name.startswith("fp32") else 1) / 1e3
        print(f"| {rows} | {name} | {wall * 1e3:.2f} | {cpu * 1e3:.2f} | {read / wall:.1f} |")


if __name__ == "__main__":
    main()
