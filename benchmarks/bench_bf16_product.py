"""One decoder-sized product (4096 x 1024 weight) in the forms the decode step could use, fp32 and bf16, at 2, 16
and 64 rows, interleaved in one process; wall and CPU ms per call (best of 5 rounds of 20 calls).

Usage: .venv/bin/python benchmarks/bench_bf16_product.py

Forms: bf16 x W^T with the torch-layout weight [out, in] and a float32 result (what `Linear` runs in bf16);
bf16 x W with the weight stored [in, out] (a layout the checkpoint does not have: would it pay to convert?);
fp32 weight-first (what `Linear` runs in fp32 at these rows). The 30-layer decoder applies the equivalent of
90 such products per step, so 90 x the ms is the step's product time.
"""

from __future__ import annotations

import os
import time

ROWS = (2, 16, 64)


def main() -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.standard_normal((4096, 1024), np.float32) * 0.02)  # [out, in]
    w_oi = w.astype(jnp.bfloat16)
    w_io = jax.device_put(np.asarray(w.T.astype(jnp.bfloat16)))  # [in, out], its own buffer
    f32 = jnp.float32
    x_wt = jax.jit(lambda x, w: jax.lax.dot_general(x, w, (((1,), (1,)), ((), ())), preferred_element_type=f32))
    x_w = jax.jit(lambda x, w: jax.lax.dot_general(x, w, (((1,), (0,)), ((), ())), preferred_element_type=f32))
    weight_first = jax.jit(lambda w, x: jax.lax.dot_general(w, x, (((1,), (1,)), ((), ()))))
    cases = {}
    for rows in ROWS:
        xb, x = jnp.ones((rows, 1024), jnp.bfloat16), jnp.ones((rows, 1024), jnp.float32)
        cases[f"bf16 x W^T, W [out, in], {rows} rows"] = (x_wt, xb, w_oi)
        cases[f"bf16 x W, W [in, out], {rows} rows"] = (x_w, xb, w_io)
        cases[f"fp32 weight-first, {rows} rows"] = (weight_first, w, x)
    best = {k: [float("inf")] * 2 for k in cases}
    for _ in range(5):
        for k, (f, a, b) in cases.items():
            jax.block_until_ready(f(a, b))
            t, c = time.perf_counter(), time.process_time()
            for _ in range(20):
                y = f(a, b)
            jax.block_until_ready(y)
            best[k] = [min(best[k][0], (time.perf_counter() - t) / 20), min(best[k][1], (time.process_time() - c) / 20)]
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}")
    for k, (wall, cpu) in best.items():
        print(f"{k}: wall {wall * 1e3:.3f} ms, CPU {cpu * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
