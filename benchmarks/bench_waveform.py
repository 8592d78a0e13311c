"""Waveform-stage speed: the original Tortoise code (tortoise-tts 3.0.0, torch) and clvp-jax side by side.

Usage: .venv/bin/python benchmarks/bench_waveform.py [--size real|tiny] [--runs 3] [--sampler-runs 1]
       [--case step|vocoder|sampler|all] [--dtype float32|bfloat16 (ours, step case)]

Cases, each on random weights of the original classes (built in torch with api.py's constructor arguments, torch's
seeded default init, the zero-initialised output convs drawn from N(0, 1/fan-in)), converted to clvp-jax with our
own converters, fp32, 64 AR codes -> L = 278 mel frames (L = m * 4 * 24000 // 22050):
  step     one diffusion step with conditioning-free guidance: the original's two model calls (conditional and
           conditioning-free, batch 1, as p_sample_loop makes them) against our one batched call
           (the sampler's `guided_eps`, 2 rows, as its loop runs it); plus our share of the compute floor: the FLOPs of the step (XLA's cost
           analysis, and the shapes' formula) over this machine's measured fp32 matmul peak (2048^2, JAX).
  vocoder  UnivNet (`inference`, the 10 padding frames and the cut included) on a [1, 100, 278] mel -> 71 168
           samples; real-time factor = audio seconds / wall seconds.
  sampler  the DDPM sampler loop: 30 steps without guidance (ultra_fast: 30 model calls) and 80 with (fast: the
           original's 160 calls of 1 row, our 80 of 2 rows), the original's `SpacedDiffusion.p_sample_loop` as
           api.py's `do_spectrogram_diffusion` builds it against our one compiled `lax.scan` (`sampler.sample`,
           noise drawn from a key inside the loop); best of `--sampler-runs` (default 1: each loop takes minutes).

Each case runs in its own process on each side, the original's and ours back to back (torch and XLA threads would
fight in one process; separate processes also give each case its own peak memory, VmHWM). torch keeps its default
thread count (printed); JAX runs on CPU. A first process draws the weights and writes them as .npz (the original's
state-dict keys), which both sides load, so both compute with the same numbers; each side also saves its outputs
and the parent prints their largest difference (a check that both timed the same computation, not a parity test).
clvp-jax compiles from the parameter shapes before the weights are loaded (trace + lower + XLA compile, timed
apart, no persistent cache), then every timed call runs that compiled executable and waits for it with
`jax.block_until_ready`. Figures are the best of `--runs` after one warm-up call.

The original's `arch_util` imports torchaudio (only `TorchMelSpectrogram`, unused here, touches it); torchaudio is
not installed, so the reference process puts a stand-in module in `sys.modules` that fails loudly if used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from waveform_common import (
    CODES,
    DIFFUSION_KWARGS,
    HOP,
    SAMPLE_RATE,
    SAMPLER_RUNS,
    TIMESTEP,
    VOCODER_KWARGS,
    L,
    best_wall_and_cpu,
)
from waveform_common import best as _best
from waveform_common import load_npz as _load_npz
from waveform_common import peak_gib as _peak_gib
from waveform_reference import prepare, run_reference

MATRIX_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")
CASES = ("step", "vocoder", "sampler")
# The clvp-jax module each case needs; a case whose module is missing (not merged yet) is reported as skipped.
REQUIRES = {
    "step": "clvp_jax.waveform.diffusion",
    "vocoder": "clvp_jax.waveform.univnet",
    "sampler": "clvp_jax.waveform.sampler",
}


# ---- shared helpers ---------------------------------------------------------------------------------------------


def _to_device(tree):
    """numpy tree -> jax arrays, leaf by leaf, dropping each host array as it goes (the peak is one copy + a leaf)."""
    import jax.numpy as jnp

    if isinstance(tree, dict):
        return {k: _to_device(tree.pop(k)) for k in list(tree)}
    return jnp.asarray(tree)


def _cost_flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


def step_flops_formula(state_shapes: dict, length: int, rows: int) -> float:
    """FLOPs of the model call on `rows` rows from the weights' shapes: 2 x (weights applied per frame) x L for
    every conv / linear of the per-step path (the integrator, inp_block, integrating_conv, layers, out), plus
    4 L^2 C per attention layer (q k^T and the weighted sum of v); the per-row timestep MLP and emb_layers, norms
    and the softmax are left out (< 0.5%)."""
    import numpy as np

    per_step = ("conditioning_timestep_integrator.", "inp_block.", "integrating_conv.", "layers.", "out.")
    per_frame = sum(
        int(np.prod(shape))
        for key, shape in state_shapes.items()
        if key.startswith(per_step)
        and key.endswith(".weight")
        and len(shape) >= 2
        and "emb_layers" not in key
        and "relative_pos_embeddings" not in key
    )
    channels = state_shapes["inp_block.weight"][0]
    attention_layers = sum(1 for k in state_shapes if k.startswith(per_step) and k.endswith("attn.qkv.weight"))
    return rows * (2.0 * per_frame * length + attention_layers * 4.0 * length**2 * channels)


# ---- the processes ------------------------------------------------------------------------------------------------


def run_jax(size: str, runs: int, folder: str, case: str, sampler_runs: int = 1, dtype: str = "float32") -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    inputs = _load_npz(os.path.join(folder, "inputs.npz"))
    out: dict = {"jax": jax.__version__, "backend": jax.default_backend()}
    spec = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype)  # noqa: E731
    if case == "step":
        from clvp_jax.checkpoint.tortoise_diffusion import params_from_original
        from clvp_jax.waveform.diffusion import DiffusionTts, cast_weights, param_shapes
        from clvp_jax.waveform.diffusion_config import DiffusionConfig
        from clvp_jax.waveform.sampler import SamplerConfig, guided_eps

        config = DiffusionConfig.from_original_kwargs(DIFFUSION_KWARGS[size])
        model = DiffusionTts(config, dtype=jnp.dtype(dtype))  # float32, or bfloat16 with the weights cast once
        sampler = SamplerConfig.tortoise("fast")  # guided, k = 2
        aligned_spec = jax.ShapeDtypeStruct((1, config.model_channels, L), jnp.float32)

        def guided(v, x, t, a):  # the sampler's model evaluation of one step, as its loop runs it
            tabs = {
                "t_model": t,
                "cfk": jnp.float32(sampler.cond_free_k),
                "one_plus_cfk": jnp.float32(1 + sampler.cond_free_k),
            }
            return guided_eps(lambda rows, tm, cf: model.apply(v, rows, tm, a, cf), x, tabs, sampler)

        t0 = time.perf_counter()
        step = (
            jax.jit(guided)
            .lower(
                jax.eval_shape(lambda p: cast_weights(p, jnp.dtype(dtype)), param_shapes(config)),
                spec(inputs["x"]),
                jax.ShapeDtypeStruct((), jnp.int32),
                aligned_spec,
            )
            .compile()
        )
        out["compile_s"] = {"step": time.perf_counter() - t0}
        out["step_flops_xla"] = _cost_flops(step)
        ti = jax.jit(lambda v, a, c: model.apply(v, a, c, L, method=DiffusionTts.timestep_independent))
        variables = _to_device(params_from_original(_load_npz(f"{folder}/diffusion.npz"), config)[1])
        aligned = jax.block_until_ready(
            ti(variables, jnp.asarray(inputs["latents"]), jnp.asarray(inputs["cond_latent"]))
        ).astype(jnp.float32)
        variables = cast_weights(variables, jnp.dtype(dtype))
        x, t = jnp.asarray(inputs["x"]), jnp.int32(TIMESTEP)
        call = lambda: jax.block_until_ready(step(variables, x, t, aligned))  # noqa: E731
        eps, var = call()  # warm-up
        out["step_s"], out["step_cpu_s"] = best_wall_and_cpu(call, runs)
        out["dtype"] = dtype
        np.savez(f"{folder}/out_step_jax.npz", eps=np.asarray(eps), var=np.asarray(var))
    elif case == "vocoder":
        from clvp_jax.checkpoint.tortoise_vocoder import state_dict_to_params
        from clvp_jax.waveform.univnet import UnivNetConfig, univnet_inference

        config = UnivNetConfig.from_original(VOCODER_KWARGS[size])
        params_np = state_dict_to_params(_load_npz(f"{folder}/vocoder.npz"), config)
        t0 = time.perf_counter()
        shapes = jax.tree_util.tree_map(spec, params_np)
        vocode = (
            jax.jit(lambda p, c, z: univnet_inference(p, c, z, config=config))
            .lower(shapes, spec(inputs["mel"]), spec(inputs["z"]))
            .compile()
        )
        out["compile_s"] = {"vocoder": time.perf_counter() - t0}
        params = _to_device(params_np)
        mel, z = jnp.asarray(inputs["mel"]), jnp.asarray(inputs["z"])
        call = lambda: jax.block_until_ready(vocode(params, mel, z))  # noqa: E731
        wav = call()
        out["vocoder_s"] = _best(call, runs)
        np.savez(f"{folder}/out_vocoder_jax.npz", wav=np.asarray(wav))
    else:  # sampler: one compiled lax.scan over the steps, guidance's two passes as one 2-row call
        from jax.tree_util import Partial

        from clvp_jax.checkpoint.tortoise_diffusion import params_from_original
        from clvp_jax.waveform.diffusion import DiffusionTts, param_shapes
        from clvp_jax.waveform.diffusion_config import DiffusionConfig
        from clvp_jax.waveform.sampler import SamplerConfig, sample

        config = DiffusionConfig.from_original_kwargs(DIFFUSION_KWARGS[size])
        model = DiffusionTts(config)

        def model_fn(variables, aligned, x, t, cond_free):  # the sampler's model_fn, weights as traced arguments
            return model.apply(variables, x, t, aligned, cond_free)

        aligned_spec = jax.ShapeDtypeStruct((1, config.model_channels, L), jnp.float32)
        loops, out["compile_s"] = {}, {}
        for name, (steps, cond_free) in SAMPLER_RUNS.items():
            sampler = SamplerConfig.tortoise(name)
            assert (sampler.steps, sampler.cond_free, sampler.kind) == (steps, cond_free, "ddpm"), sampler

            def run(v, a, x, s=sampler):  # the noise drawn inside the loop, as a user runs it
                return sample(Partial(model_fn, v, a), tuple(x.shape), config=s, key=jax.random.key(0))

            t0 = time.perf_counter()
            loops[name] = jax.jit(run).lower(param_shapes(config), aligned_spec, spec(inputs["x"])).compile()
            out["compile_s"][name] = time.perf_counter() - t0
        ti = jax.jit(lambda v, a, c: model.apply(v, a, c, L, method=DiffusionTts.timestep_independent))
        variables = _to_device(params_from_original(_load_npz(f"{folder}/diffusion.npz"), config)[1])
        aligned = jax.block_until_ready(
            ti(variables, jnp.asarray(inputs["latents"]), jnp.asarray(inputs["cond_latent"]))
        )
        x = jnp.asarray(inputs["x"])
        for name, loop in loops.items():
            call = lambda f=loop: jax.block_until_ready(f(variables, aligned, x))  # noqa: E731
            call()  # warm-up
            out[f"{name}_s"] = _best(call, sampler_runs)
    out["peak_gib"] = {case: _peak_gib()}
    return out


# ---- the parent -------------------------------------------------------------------------------------------------


def machine() -> dict:
    """CPU model and matrix features (lscpu), cores, load, and the fp32 matmul peak (2048^2, JAX and numpy)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    a = jnp.asarray(np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32))
    matmul = jax.jit(lambda a: jnp.dot(a, a, precision=jax.lax.Precision.HIGHEST))
    matmul(a).block_until_ready()
    jax_peak = 2 * 2048**3 / _best(lambda: matmul(a).block_until_ready(), 10)
    host = np.asarray(a)
    numpy_peak = 2 * 2048**3 / _best(lambda: host @ host, 10)
    return dict(
        cpu=fields.get("Model name", "?").strip(),
        cores=os.cpu_count(),
        matrix_flags=[f for f in MATRIX_FLAGS if f in flags],
        load=os.getloadavg(),
        jax_gflops=jax_peak / 1e9,
        numpy_gflops=numpy_peak / 1e9,
    )


def _side(
    which: str, size: str, runs: int, folder: str, case: str = "", sampler_runs: int = 1, dtype: str = "float32"
) -> dict:
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # compile times are real compilations, never disk-cache hits
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), root]))  # the caller's first
    args = [
        "--size",
        size,
        "--runs",
        str(runs),
        "--sampler-runs",
        str(sampler_runs),
        "--dtype",
        dtype,
        "--side",
        which,
        "--folder",
        folder,
    ]
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *args, *(["--case", case] if case else [])],
        env=env,
        capture_output=True,
        text=True,
        cwd=root,
    )
    if proc.returncode:
        raise RuntimeError(f"{which} side ({case or 'prepare'}) failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _available(module: str) -> bool:
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.append(root)
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _max_diff(folder: str, case: str) -> str:
    import numpy as np

    try:
        ref, ours = _load_npz(f"{folder}/out_{case}_reference.npz"), _load_npz(f"{folder}/out_{case}_jax.npz")
    except FileNotFoundError:
        return "n/a"
    return ", ".join(
        f"{k} max|diff| {np.max(np.abs(ours[k] - ref[k])):.2e} (max|ref| {np.max(np.abs(ref[k])):.2f})" for k in ref
    )


def report(size: str, runs: int, mach: dict, ref: dict, ours: dict, folder: str) -> None:
    import numpy as np

    load = ", ".join(f"{x:.2f}" for x in mach["load"])
    threads = next((r["torch_threads"] for r in ref.values() if "torch_threads" in r), "?")
    print(
        f"size={size} runs={runs} L={L} ({CODES} codes) | {time.strftime('%Y-%m-%d %H:%M %Z')} | {mach['cpu']}, "
        f"{mach['cores']} cores, matrix features: {' '.join(mach['matrix_flags']) or 'none'} | load average {load} | "
        f"fp32 2048^2 matmul: JAX {mach['jax_gflops']:.0f} GFLOP/s, numpy {mach['numpy_gflops']:.0f} GFLOP/s | "
        f"torch threads {threads}"
    )
    print("| case | original | clvp-jax | ratio | target | notes |")
    print("|---|---|---|---|---|---|")
    if "step" in ref:
        r, o = ref["step"], ours["step"]
        if "skipped" in r or "skipped" in o:
            print(f"| step | | | | >= 2x | skipped: {r.get('skipped') or o.get('skipped')} |")
        else:
            with np.load(f"{folder}/diffusion.npz") as npz:
                shapes = {k: npz[k].shape for k in npz.files}
            formula = step_flops_formula(shapes, L, rows=2)
            flops = o["step_flops_xla"] if np.isfinite(o["step_flops_xla"]) else formula
            floor_s = flops / (mach["jax_gflops"] * 1e9)
            print(
                f"| diffusion step, guided (ref 2 calls x 1 row fp32, ours 1 call x 2 rows {o['dtype']}) | "
                f"{r['step_s'] * 1e3:.0f} ms (CPU {r['step_cpu_s'] * 1e3:.0f} ms) | {o['step_s'] * 1e3:.0f} ms (CPU "
                f"{o['step_cpu_s'] * 1e3:.0f} ms) | **{r['step_s'] / o['step_s']:.2f}x** (CPU time "
                f"{r['step_cpu_s'] / o['step_cpu_s']:.2f}x) | >= 2x | "
                f"{flops / 1e9:.1f} GFLOP (XLA; formula {formula / 1e9:.1f}): ours {100 * floor_s / o['step_s']:.0f}% "
                f"of the compute floor, original {100 * floor_s / r['step_s']:.0f}%; compile "
                f"{o['compile_s']['step']:.1f} s; {_max_diff(folder, 'step')} |"
            )
    if "vocoder" in ref:
        r, o = ref["vocoder"], ours["vocoder"]
        if "skipped" in r or "skipped" in o:
            print(f"| vocoder | | | | >= 1.5x | skipped: {r.get('skipped') or o.get('skipped')} |")
        else:
            audio_s = L * HOP / SAMPLE_RATE
            print(
                f"| UnivNet, {L} frames ({L * HOP} samples, {audio_s:.2f} s) | {r['vocoder_s'] * 1e3:.0f} ms "
                f"(RTF {audio_s / r['vocoder_s']:.1f}) | {o['vocoder_s'] * 1e3:.0f} ms (RTF "
                f"{audio_s / o['vocoder_s']:.1f}) | **{r['vocoder_s'] / o['vocoder_s']:.2f}x** | >= 1.5x | compile "
                f"{o['compile_s']['vocoder']:.1f} s; {_max_diff(folder, 'vocoder')} |"
            )
    if "sampler" in ref:
        r, o = ref["sampler"], ours["sampler"]
        if "skipped" in r or "skipped" in o:
            print(f"| sampler loop | | | | | skipped: {r.get('skipped') or o.get('skipped')} |")
            r = o = {}
        for name, (steps, cond_free) in SAMPLER_RUNS.items() if r else ():
            calls = (
                f"{steps} steps, {'guided: ref 2 calls/step, ours 1 call of 2 rows' if cond_free else 'no guidance'}"
            )
            print(
                f"| sampler loop, {name} ({calls}) | {r[name + '_s']:.2f} s | {o[name + '_s']:.2f} s | "
                f"**{r[name + '_s'] / o[name + '_s']:.2f}x** | | ours {o[name + '_s'] / steps * 1e3:.0f} ms/step, "
                f"original {r[name + '_s'] / steps * 1e3:.0f} ms/step; compile {o['compile_s'][name]:.1f} s |"
            )
    peaks = ", ".join(
        f"{c} {ref[c]['peak_gib'][c]:.3f} / {ours[c]['peak_gib'][c]:.3f}"
        for c in ref
        if "peak_gib" in ref[c] and "peak_gib" in ours[c]
    )
    print(f"peak memory (GiB VmHWM, original / clvp-jax, one process per case): {peaks}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(DIFFUSION_KWARGS), default="real")
    ap.add_argument("--runs", type=int, default=3, help="timed calls per figure (best of); after one warm-up")
    ap.add_argument("--case", choices=(*CASES, "all"), default="all")
    ap.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="clvp-jax's compute dtype in the step case (bfloat16: weights cast once; the original stays float32)",
    )
    ap.add_argument(
        "--sampler-runs", type=int, default=1, help="timed loops per sampler figure (best of; each loop is minutes)"
    )
    ap.add_argument("--side", choices=["both", "prepare", "reference", "jax"], default="both", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.runs < 1 or a.sampler_runs < 1:
        ap.error(f"--runs and --sampler-runs must be at least 1, got {a.runs} and {a.sampler_runs}")
    if a.side != "both":
        run = dict(
            prepare=lambda: prepare(a.size, a.folder),
            reference=lambda: run_reference(a.size, a.runs, a.folder, a.case, a.sampler_runs),
            jax=lambda: run_jax(a.size, a.runs, a.folder, a.case, a.sampler_runs, a.dtype),
        )
        print(json.dumps(run[a.side]()))
        return
    mach = machine()
    cases = CASES if a.case == "all" else (a.case,)
    with tempfile.TemporaryDirectory(prefix="bench_waveform_") as folder:
        _side("prepare", a.size, a.runs, folder)
        ref, ours = {}, {}
        for case in cases:  # each case in its own process on both sides, the two back to back
            if not _available(REQUIRES[case]):
                ref[case] = ours[case] = {"skipped": f"{REQUIRES[case]} is not on this branch"}
                continue
            ref[case] = _side("reference", a.size, a.runs, folder, case, a.sampler_runs)
            ours[case] = _side("jax", a.size, a.runs, folder, case, a.sampler_runs, a.dtype)
        report(a.size, a.runs, mach, ref, ours, folder)


if __name__ == "__main__":
    main()
