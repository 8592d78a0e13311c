"""What the per-step progress report costs: the sampler with and without `on_step`, back to back.

    .venv/bin/python benchmarks/bench_step_progress.py [--frames 278] [--steps 30] [--repeats 5]

The packaged default's tiny random diffusion decoder (width 32, one layer; a step is a few ms, so the callback's
fixed cost shows as clearly as it ever will: at real size a guided step is ~5 s on this CPU, see README) samples
[1, 100, frames] with `steps` guided DDPM steps. Each side is compiled first, then timed `repeats` times
alternately; the best of each is printed, with the difference per step.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's clvp_jax


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=278)  # 64 codes
    parser.add_argument("--steps", type=int, default=30)  # ultra_fast
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from clvp_jax.speech import _aligned_fn, _model_call
    from clvp_jax.waveform.bundle import default_waveform_models
    from clvp_jax.waveform.sampler import SamplerConfig, sample

    wm = default_waveform_models(64)
    codes = args.frames * 22050 // (4 * 24000) + 1
    latents = jnp.asarray(np.random.default_rng(0).standard_normal((1, codes, 64)), jnp.float32)
    cond = jnp.zeros((1, wm.diffusion_width), jnp.float32)
    aligned = _aligned_fn(wm.diffusion)(wm.diffusion_variables, latents, cond, frames=args.frames)
    model_fn = jax.tree_util.Partial(_model_call(wm.diffusion), wm.diffusion_variables, aligned)
    config = SamplerConfig(kind="ddpm", steps=args.steps, cond_free=True)
    shape = (1, 100, args.frames)
    seen: list[int] = []

    def run(report: bool) -> float:
        started = time.perf_counter()
        out = sample(model_fn, shape, config=config, key=jax.random.key(0), on_step=seen.append if report else None)
        jax.block_until_ready(out)
        return time.perf_counter() - started

    compile_plain, compile_report = run(False), run(True)
    best = {False: float("inf"), True: float("inf")}
    for _ in range(args.repeats):
        for report in (False, True):
            best[report] = min(best[report], run(report))
    per_step = (best[True] - best[False]) / args.steps * 1e6
    print(f"first calls (compile + run): plain {compile_plain:.2f} s, with on_step {compile_report:.2f} s")
    print(
        f"best of {args.repeats}, {args.steps} steps at {args.frames} frames: plain {best[False] * 1e3:.1f} ms, "
        f"with on_step {best[True] * 1e3:.1f} ms ({per_step:+.0f} us per step, "
        f"{best[True] / best[False]:.3f}x)"
    )


if __name__ == "__main__":
    main()
