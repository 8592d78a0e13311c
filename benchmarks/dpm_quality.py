"""Does DPM-Solver++(2M) reach the `fast` preset's quality in <= 1/3 of its model calls? (issue 15)

Usage: .venv/bin/python benchmarks/dpm_quality.py [--rows 4] [--ref-steps 1000] [--steps 10,16,20,27]
(tiny model only: the random-weight DiffusionTts of tests/data/tortoise_tiny_waveform, with that fixture's AR and
conditioning latents, L = 87 frames; ~1-3 minutes on a loaded 2-core machine.)

The quality target, and why. `fast` is 80 guided DDPM steps (160 model passes; ours: 80 calls of 2 rows). Its
output is a SAMPLE: the per-step noise makes two DDPM runs from the same x_T differ by far more than any
discretisation error (printed below as "DDPM spread"), and with random weights there is no perceptual measure of
how good a sample is. What a sampler's step count buys is accuracy in solving the model's reverse process, and
that can be measured against a converged solution. So:
  reference  the probability-flow ODE of the same guided model (cond_free k = 2, x0 clipped, the same x_T),
             solved with DDIM (eta 0) at `--ref-steps` steps (converged: its distance to half as many steps is
             printed);
  target     the error of that ODE solved at `fast`'s budget: DDIM at 80 guided steps (the deterministic sampler
             of the original, with exactly `fast`'s 160 model passes), rms over the mel in the sampler's
             normalised [-1, 1] units, every row of `--rows` noises;
  question   the steps N at which DPM++(2M) is within the target; 1/3 of `fast`'s calls is N <= 26 (27 = 1/2.96).
DDPM 80's own distance to the reference is printed too: it measures its noise, not its discretisation.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]  # the tiny fixture's loader (tests/waveform_fixture.py)


def _rms(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4, help="independent noises x_T (batch rows)")
    ap.add_argument("--ref-steps", type=int, default=1000, help="DDIM steps of the reference ODE solution")
    ap.add_argument("--steps", default="10,16,20,27", help="DPM++ step counts to measure")
    a = ap.parse_args()
    steps = [int(s) for s in a.steps.split(",")]

    import jax
    import jax.numpy as jnp
    from jax.tree_util import Partial
    from waveform_fixture import reference, state_dict

    from clvp_jax.checkpoint.tortoise_diffusion import params_from_original
    from clvp_jax.waveform.diffusion import DiffusionTts
    from clvp_jax.waveform.diffusion_config import DiffusionConfig
    from clvp_jax.waveform.sampler import SamplerConfig, SamplerNoise, sample

    model = DiffusionTts(DiffusionConfig.tiny())
    variables = params_from_original(state_dict("diffusion_decoder"))[1]
    ref = reference()
    frames = 87  # the fixture's sampling run
    aligned = jax.jit(functools.partial(model.apply, method=DiffusionTts.timestep_independent), static_argnums=(3,))(
        variables, jnp.asarray(ref["samp_latents"]), jnp.asarray(ref["samp_cond_latent"]), frames
    )  # [1, C, L]

    def decoder(variables, aligned, x, t, cond_free):
        return model.apply(variables, x, t, jnp.repeat(aligned, x.shape[0], axis=0), cond_free)

    model_fn = Partial(decoder, variables, aligned)
    shape = (a.rows, 100, frames)
    rng = np.random.default_rng(0)
    x_T = rng.standard_normal(shape).astype(np.float32)

    def run(kind: str, n: int, noise_seed: int = 1) -> np.ndarray:
        config = SamplerConfig.tortoise("fast", kind=kind, steps=n)  # guided, k = 2, temperature 1
        steps_noise = None
        if config.draws_step_noise:
            steps_noise = np.random.default_rng(noise_seed).standard_normal((n, *shape)).astype(np.float32)
        noise = SamplerNoise(init=jnp.asarray(x_T), steps=None if steps_noise is None else jnp.asarray(steps_noise))
        return np.asarray(sample(model_fn, shape, config=config, noise=noise))

    t0 = time.perf_counter()
    target_sol = run("ddim", a.ref_steps)
    half = run("ddim", a.ref_steps // 2)
    ddim80 = run("ddim", 80)
    target = _rms(ddim80, target_sol)
    ddpm_a, ddpm_b = run("ddpm", 80, 1), run("ddpm", 80, 2)
    print(
        f"tiny DiffusionTts (tests/data/tortoise_tiny_waveform), L = {frames}, {a.rows} noises, guided (k = 2) | "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')} | load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"reference: DDIM {a.ref_steps} steps (vs DDIM {a.ref_steps // 2}: rms {_rms(half, target_sol):.4f}); "
        f"mel rms {_rms(target_sol, 0):.3f}, {100 * np.mean(np.abs(target_sol) >= 0.999):.0f}% of values at the "
        "clip"
    )
    print(
        f"target: DDIM 80 guided steps (fast's 160 passes) rms {target:.4f} | DDPM 80 (fast itself) vs the "
        f"reference: {_rms(ddpm_a, target_sol):.4f}; DDPM spread (two noise draws, same x_T): "
        f"{_rms(ddpm_a, ddpm_b):.4f}"
    )
    print("| sampler | steps | model passes | share of fast's 160 | rms vs reference | within target |")
    print("|---|---|---|---|---|---|")
    for n in steps:
        for kind in ("dpm++2m", "ddim"):
            err = _rms(run(kind, n), target_sol)
            print(
                f"| {kind} | {n} | {2 * n} | 1/{160 / (2 * n):.2f} | {err:.4f} | {'yes' if err <= target else 'no'} |"
            )
    print(f"| ddim | 80 | 160 | 1/1 | {target:.4f} | (the target) |")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
