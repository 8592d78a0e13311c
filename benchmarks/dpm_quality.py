"""Does DPM-Solver++(2M) reach the `fast` preset's quality in <= 1/3 of its model calls? (issue 15)

Usage: .venv/bin/python benchmarks/dpm_quality.py [--rows 4] [--ref-steps 1000] [--steps 10,16,20,27,40,80]
    [--samplers dpm++2m,ddim] [--params FILE]
Tiny models only, a few minutes on a loaded 2-core machine. Without `--params`: the random-weight DiffusionTts of
tests/data/tortoise_tiny_waveform, with that fixture's AR and conditioning latents, L = 87 frames, `--rows`
noises. With `--params FILE` (written by benchmarks/train_tiny_diffusion.py): that TRAINED tiny model, one
held-out real window per row (its "AR latents" and its clip's conditioning mel, L = 96 frames), and the rms of
every sample to the real held-out mel is printed as context. `--samplers` takes SamplerConfig overrides as
`kind@field=value@...` (e.g. `dpm++2m@cond_free_k=0`).

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
import json
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
    ap.add_argument("--steps", default="10,16,20,27,40,80", help="step counts to measure")
    ap.add_argument(
        "--samplers",
        default="dpm++2m,ddim",
        help="comma-separated samplers: a kind, optionally with SamplerConfig overrides as kind@field=value@...",
    )
    ap.add_argument(
        "--params", help="a trained model (benchmarks/train_tiny_diffusion.py --out) instead of the fixture"
    )
    a = ap.parse_args()
    steps = [int(s) for s in a.steps.split(",")]
    samplers = a.samplers.split(",")

    import jax
    import jax.numpy as jnp
    from jax.tree_util import Partial

    from clvp_jax.waveform.diffusion import DiffusionTts
    from clvp_jax.waveform.diffusion_config import DiffusionConfig
    from clvp_jax.waveform.sampler import SamplerConfig, SamplerNoise, sample

    model = DiffusionTts(DiffusionConfig.tiny())
    real = None  # the held-out real mels [R, F, N] of a trained model's evaluation windows
    if a.params:
        import flax.serialization

        with open(a.params, "rb") as f:
            payload = flax.serialization.msgpack_restore(f.read())
        variables, held = payload["params"], payload["eval"]
        meta = json.loads(payload["meta"])
        model = DiffusionTts(DiffusionConfig(**meta["config"]))
        rows = min(a.rows, held["latents"].shape[0])
        frames = 4 * held["latents"].shape[1]  # one "AR latent" per 4 frames (train_tiny_diffusion.py)
        voice = model.apply(variables, jnp.asarray(held["cond_mels"][:rows]), method=DiffusionTts.get_conditioning)
        aligned = jax.jit(
            functools.partial(model.apply, method=DiffusionTts.timestep_independent), static_argnums=(3,)
        )(variables, jnp.asarray(held["latents"][:rows]), voice, frames)  # [R, C, L]: one held-out window per row
        real = np.asarray(held["x0"][:rows])
        title = (
            f"TRAINED tiny DiffusionTts (W = {model.config.model_channels}; {a.params}: {meta['steps_done']} steps of train_tiny_diffusion.py, final "
            f"mse {meta['history'][-1]['mse']:.3f}), {rows} held-out windows"
        )
    else:
        from waveform_fixture import reference, state_dict

        from clvp_jax.checkpoint.tortoise_diffusion import params_from_original

        variables = params_from_original(state_dict("diffusion_decoder"))[1]
        ref = reference()
        frames = 87  # the fixture's sampling run
        aligned = jax.jit(
            functools.partial(model.apply, method=DiffusionTts.timestep_independent), static_argnums=(3,)
        )(variables, jnp.asarray(ref["samp_latents"]), jnp.asarray(ref["samp_cond_latent"]), frames)  # [1, C, L]
        rows = a.rows
        title = f"random-weight tiny DiffusionTts (tests/data/tortoise_tiny_waveform), {rows} noises"

    def decoder(variables, aligned, x, t, cond_free):
        # guidance sends [cond; uncond] rows: the per-row embedding is repeated to match (1 row: broadcast)
        aligned = jnp.concatenate([aligned] * (x.shape[0] // aligned.shape[0]), axis=0)
        return model.apply(variables, x, t, aligned, cond_free)

    model_fn = Partial(decoder, variables, aligned)
    shape = (rows, 100, frames)
    rng = np.random.default_rng(0)
    x_T = rng.standard_normal(shape).astype(np.float32)

    def run(spec: str, n: int, noise_seed: int = 1) -> np.ndarray:
        kind, overrides = _parse_sampler(spec)
        config = SamplerConfig.tortoise("fast", kind=kind, steps=n, **overrides)  # guided, k = 2, temperature 1
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
        f"{title}, L = {frames}, guided (k = 2) | {time.strftime('%Y-%m-%d %H:%M %Z')} | load average "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
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
    if real is not None:
        print(
            f"vs the real held-out mels (context, not the target): reference {_rms(target_sol, real):.4f}, DDIM 80 "
            f"{_rms(ddim80, real):.4f}, DDPM 80 {_rms(ddpm_a, real):.4f} / {_rms(ddpm_b, real):.4f}; real mel rms "
            f"{_rms(real, 0):.3f}, {100 * np.mean(np.abs(real) >= 0.999):.0f}% of values at +-1"
        )
    extra = " rms vs real mel |" if real is not None else ""
    print(f"| sampler | steps | model passes | share of fast's 160 | rms vs reference | within target |{extra}")
    print("|---|---|---|---|---|---|" + ("---|" if real is not None else ""))
    for n in steps:
        for spec in samplers:
            x = run(spec, n)
            err = _rms(x, target_sol)
            more = f" {_rms(x, real):.4f} |" if real is not None else ""
            print(
                f"| {spec} | {n} | {2 * n} | 1/{160 / (2 * n):.2f} | {err:.4f} | {'yes' if err <= target else 'no'} |"
                + more,
                flush=True,
            )
    print(
        f"| ddim | 80 | 160 | 1/1 | {target:.4f} | (the target) |"
        + (f" {_rms(ddim80, real):.4f} |" if real is not None else "")
    )
    print(f"({time.perf_counter() - t0:.0f} s)")


def _parse_sampler(spec: str) -> tuple[str, dict]:
    """ "kind" or "kind@field=value@field=value" (SamplerConfig fields) -> (kind, overrides)."""
    kind, *pairs = spec.split("@")
    overrides = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        overrides[name] = value
    return kind, overrides


if __name__ == "__main__":
    main()
