"""A/B of the real-size guided diffusion step's variants in ONE process, alternated, with process CPU time.

Usage: .venv/bin/python benchmarks/profile_diffusion_step.py [--rounds 5] [--variants f32,bf16,bf16-conv,...]

Each variant is our guided step (the sampler's `guided_eps`: 2 rows x 278 frames, conditioning-free guidance,
random real-size weights) under a dtype and `Tuning` choices; "dots-<dtype>" is the floor of the same step: only
its matmuls (the same shapes, operand dtype, float32 results, each summed whole so none is cut down: 16 ResBlocks' 1x1 and k3 convs, 13 attention
blocks' qkv, scores, values and proj_out, the input, integrating and output convs), nothing else. The variants
run round-robin (`--rounds` times each), so load drifts hit all of them alike; the best CPU time and wall time
of each is printed, with its ratio to the first variant and its non-matmul share (1 - floor / step, against
the dots variant of its dtype). Not a parity check (tests/test_tuning.py and test_waveform_diffusion.py are).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROWS, L, WIDTH, HEADS = 2, 278, 1024, 16
RESBLOCKS, ATTENTIONS = 16, 13  # 3 integrator + 10 layers (ResBlock + attention each), 3 trailing ResBlocks
VARIANTS = {
    "f32": ("float32", {}),
    "f32-conv": ("float32", {"conv_kernel": "conv"}),
    "bf16": ("bfloat16", {}),
    "bf16-conv": ("bfloat16", {"conv_kernel": "conv"}),
    "bf16-dpa": ("bfloat16", {"attention": "dot_product_attention"}),
    "dots-float32": ("float32", None),
    "dots-bfloat16": ("bfloat16", None),
}


def _step_fn(dtype: str, tuning_changes: dict, with_compiled: bool = False):
    """The variant's step as a no-argument callable (blocking); with `with_compiled`, also its compiled program."""
    import jax
    import jax.numpy as jnp

    from benchmarks.waveform_common import DIFFUSION_KWARGS
    from clvp_jax.tuning import Tuning
    from clvp_jax.waveform.diffusion import DiffusionTts, cast_weights, init_params
    from clvp_jax.waveform.diffusion_config import DiffusionConfig
    from clvp_jax.waveform.sampler import SamplerConfig, guided_eps

    config = DiffusionConfig.from_original_kwargs(DIFFUSION_KWARGS["real"])
    tuning = dataclasses.replace(Tuning.for_backend(), **tuning_changes)
    model = DiffusionTts(config, dtype=jnp.dtype(dtype), tuning=tuning)
    sampler = SamplerConfig.tortoise("fast")
    tabs = {"t_model": jnp.int32(500), "cfk": jnp.float32(2.0), "one_plus_cfk": jnp.float32(3.0)}
    variables = cast_weights(jax.jit(init_params, static_argnums=0)(config, jax.random.key(0)), jnp.dtype(dtype))
    aligned = jax.random.normal(jax.random.key(1), (1, WIDTH, L), jnp.float32)
    x = jax.random.normal(jax.random.key(2), (1, 100, L), jnp.float32)
    step = jax.jit(lambda v, x, a: guided_eps(lambda r, tm, cf: model.apply(v, r, tm, a, cf), x, tabs, sampler))
    run = lambda: jax.block_until_ready(step(variables, x, aligned))  # noqa: E731
    return (run, step.lower(variables, x, aligned).compile()) if with_compiled else run


def _dots_fn(dtype: str):
    import jax
    import jax.numpy as jnp

    dt, f32, n = jnp.dtype(dtype), jnp.float32, ROWS * L
    shapes = (
        [(WIDTH, WIDTH), (WIDTH, 3 * WIDTH)] * RESBLOCKS  # [out, in] as the torch weights: 1x1, k3 (im2col)
        + [(3 * WIDTH, WIDTH), (WIDTH, WIDTH)] * ATTENTIONS  # qkv, proj_out
        + [(WIDTH, 300), (WIDTH, 2 * WIDTH), (200, 3 * WIDTH)]  # inp_block k3, integrating_conv, out_2 k3
    )
    keys = jax.random.split(jax.random.key(0), len(shapes) + 1)
    weights = [jax.random.normal(k, s, f32).astype(dt) for k, s in zip(keys[1:], shapes, strict=True)]
    x = jax.random.normal(keys[0], (n, 3 * WIDTH), f32).astype(dt)
    dims = (((1,), (1,)), ((), ()))

    def run(weights, x):
        total = jnp.zeros((), f32)
        for w in weights:
            y = jax.lax.dot_general(x[:, : w.shape[1]], w, dims, preferred_element_type=f32)
            total = total + y.sum()  # every element used: XLA must not slice the dot down
        q = x[:, :WIDTH].reshape(ROWS, L, HEADS, WIDTH // HEADS)
        for _ in range(ATTENTIONS):
            s = jnp.einsum("bthk,bshk->bhts", q, q, preferred_element_type=f32)
            a = jnp.einsum("bhts,bshk->bthk", s.astype(dt), q, preferred_element_type=f32)
            total = total + a.sum()
        return total

    fn = jax.jit(run)
    return lambda: jax.block_until_ready(fn(weights, x))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    args = ap.parse_args()
    names = args.variants.split(",")
    calls = {}
    for name in names:
        dtype, changes = VARIANTS[name]
        t0 = time.perf_counter()
        calls[name] = _dots_fn(dtype) if changes is None else _step_fn(dtype, changes)
        calls[name]()  # compile + warm-up
        print(f"{name}: built and compiled in {time.perf_counter() - t0:.1f} s", flush=True)
    best = {n: (float("inf"), float("inf")) for n in names}
    for _ in range(args.rounds):
        for name in names:
            c0, w0 = time.process_time(), time.perf_counter()
            calls[name]()
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            best[name] = (min(best[name][0], cpu), min(best[name][1], wall))
    from benchmarks.machine import describe_machine

    print(describe_machine(), "| load", os.getloadavg())
    base = best[names[0]][0]
    for name in names:
        cpu, wall = best[name]
        dtype, changes = VARIANTS[name]
        floor = best.get(f"dots-{dtype}")
        share = "" if floor is None or changes is None else f"  non-matmul share {1 - floor[0] / cpu:.0%}"
        print(
            f"{name:14s} CPU {cpu * 1e3:7.0f} ms  wall {wall * 1e3:7.0f} ms  CPU vs {names[0]} {cpu / base:.2f}{share}"
        )


if __name__ == "__main__":
    main()
