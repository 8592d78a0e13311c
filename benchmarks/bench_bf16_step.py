"""One real-size decoder step (KV cache, one new token per row), fp32 and bf16 interleaved in one process.

Usage: .venv/bin/python benchmarks/bench_bf16_step.py [ROWS ...]   (default: 1 16)

The real decoder (30 layers, width 1024) with random weights, a KV cache of 64 slots filled to 32, jitted
steps for each dtype and row count; ms per step, best of 5 calls per round, best of 4 rounds with every case in
each round, so a loaded machine slows them alike. A quick probe beside `bench_generate.py` (whose decode step
uses the shared-prefix cache and ranks too).
"""

from __future__ import annotations

import sys
import time


def main() -> None:
    import jax
    import jax.numpy as jnp

    from clvp_jax.config import ClvpConfig
    from clvp_jax.decoder import ClvpForCausalLM, init_cache

    cfg = ClvpConfig().decoder_config
    rows_list = [int(a) for a in sys.argv[1:]] or [1, 16]
    lm32, lm16 = ClvpForCausalLM(cfg), ClvpForCausalLM(cfg, dtype=jnp.bfloat16)
    p32 = jax.jit(lambda r: lm32.init(r, input_ids=jnp.zeros((1, 2), jnp.int32))["params"])(jax.random.key(0))
    p16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), p32)
    print(f"decoder params {sum(x.size for x in jax.tree.leaves(p32)) / 1e6:.1f}M", flush=True)

    def step_fn(lm):
        def step(p, tok, cache):
            out = lm.apply({"params": p}, input_ids=tok, cache=cache)
            return out.logits, out.cache

        return jax.jit(step, donate_argnums=(2,))

    cases = {}
    for rows in rows_list:
        for name, lm, p, dt in (("fp32", lm32, p32, jnp.float32), ("bf16", lm16, p16, jnp.bfloat16)):
            cache = init_cache(cfg, rows, 64, dt).replace(index=jnp.int32(32))
            fn, tok = step_fn(lm), jnp.ones((rows, 1), jnp.int32)
            _, cache = jax.block_until_ready(fn(p, tok, cache))  # compile
            cases[(name, rows)] = [fn, p, tok, cache]
    best = {k: float("inf") for k in cases}
    for _ in range(4):
        for key, case in cases.items():
            fn, p, tok, cache = case
            for _ in range(5):
                cache = cache.replace(index=jnp.int32(32))
                t = time.perf_counter()
                _, cache = jax.block_until_ready(fn(p, tok, cache))
                best[key] = min(best[key], time.perf_counter() - t)
            case[3] = cache
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    for rows in rows_list:
        a, b = best[("fp32", rows)], best[("bf16", rows)]
        print(f"rows {rows}: fp32 {a * 1e3:.1f} ms, bf16 {b * 1e3:.1f} ms, bf16 speed-up {a / b:.2f}x (load {load})")


if __name__ == "__main__":
    main()
