"""The bf16 product forms XLA CPU can be given, against fp32's, on a decode step's shapes (the `bf16` choices).

Usage: .venv/bin/python benchmarks/bench_bf16_forms.py [--width 1024] [--layers 4] [--rows 1 2 16 64] [--repeat 3]

Chains `--layers` GPT-2 layers' worth of products ([rows, D] by D x 3D, D x D, D x 4D and 4D x D weights, so the
weights do not stay in cache) and prints ms per chain (best of 7 calls, best of `--repeat` rounds, the forms
interleaved within each round, so a loaded machine hits them alike) for:
  fp32 weight_first   W [out, in] x x^T, barrier, transpose back: `Linear`'s fp32 form up to 256 rows
  bf16 bf16_result    x @ W^T with a bf16 result (what a plain bf16 `dot_general` asks for)
  bf16 weight_first   the fp32 form with bf16 operands, float32 result
  bf16 x_at_wt        x @ W^T with a float32 result (`preferred_element_type`): `Linear`'s bf16 form
  bf16 x_at_wt_pad2   the same, one row padded to two (`Tuning.low_precision_min_rows`; rows = 1 only)
and the lm_head (8194 x D, float32 logits from bf16-stored weights): converting the weight to float32 in the
program vs splitting the float32 input in two bf16 parts (`layers._split_input_product`).
"""

from __future__ import annotations

import argparse
import time


def _best(f, args, n=7):
    f(*args).block_until_ready()
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        f(*args).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main() -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 2, 16, 64])
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    D, rng = a.width, np.random.default_rng(0)
    shapes = [(3 * D, D), (D, D), (4 * D, D), (D, 4 * D)]  # [out, in]
    w32 = [[jnp.asarray(rng.standard_normal(s, dtype=np.float32) * 0.02) for s in shapes] for _ in range(a.layers)]
    w16 = jax.tree.map(lambda w: w.astype(jnp.bfloat16), w32)
    nt = (((1,), (1,)), ((), ()))

    def product(form, w, x):
        if form == "weight_first":
            y = lax.dot_general(w, x, nt, preferred_element_type=jnp.float32)
            return lax.optimization_barrier(y).T
        if form == "bf16_result":
            return lax.dot_general(x, w, nt).astype(jnp.float32)
        n = x.shape[0]
        if form == "x_at_wt_pad2" and n == 1:
            x = jnp.pad(x, ((0, 1), (0, 0)))
        return lax.dot_general(x, w, nt, preferred_element_type=jnp.float32)[:n]

    def chain(form, dtype):
        def run(x, weights):
            for qkv, out, fc, proj in weights:
                h = product(form, qkv, x.astype(dtype))[:, :D] + product(form, out, x.astype(dtype))
                x = x + product(form, proj, jax.nn.gelu(product(form, fc, h.astype(dtype))).astype(dtype))
            return x

        return jax.jit(run)

    forms = [("fp32", "weight_first"), ("bf16", "bf16_result"), ("bf16", "weight_first"), ("bf16", "x_at_wt")]
    print(f"width {D}, {a.layers} layers; ms per chain (lower is better)")
    for rows in a.rows:
        x = jnp.asarray(rng.standard_normal((rows, D), dtype=np.float32))
        cases = forms + ([("bf16", "x_at_wt_pad2")] if rows == 1 else [])
        fns = {c: chain(c[1], jnp.float32 if c[0] == "fp32" else jnp.bfloat16) for c in cases}
        best = {c: float("inf") for c in cases}
        for _ in range(a.repeat):
            for c in cases:
                best[c] = min(best[c], _best(fns[c], (x, w32 if c[0] == "fp32" else w16)))
        print(f"rows {rows:3d}: " + "  ".join(f"{d} {f} {best[(d, f)]:.1f}" for d, f in cases))

    from clvp_jax.layers import Linear

    head = jnp.asarray(rng.standard_normal((8194, D)) * 0.02, jnp.bfloat16)
    split = jax.jit(lambda x, w: Linear(8194, use_bias=False, dtype=jnp.float32).apply({"params": {"weight": w}}, x))
    convert = jax.jit(lambda x, w: lax.dot_general(x, w.astype(jnp.float32), nt))
    for rows in (1, 16):
        x = jnp.asarray(rng.standard_normal((rows, D), dtype=np.float32))
        t_split = min(_best(split, (x, head)) for _ in range(a.repeat))
        t_conv = min(_best(convert, (x, head)) for _ in range(a.repeat))
        print(f"lm_head rows {rows:2d}: convert to fp32 {t_conv:.2f} ms, split input {t_split:.2f} ms")


if __name__ == "__main__":
    main()
