"""Vocoder speed at real size: clvp-jax's UnivNet and HiFiGAN vs the original tortoise-tts 3.0.0 classes, fp32.

    .venv/bin/python benchmarks/bench_vocoders.py [--frames 278] [--repeats 3] [--models univnet hifigan]
        [--dtype float32|bfloat16]   (clvp-jax's compute dtype; the original always runs float32)

Random real-size weights (the original classes built with the spec §1 constructor arguments, seed 0, their own
init) are saved once as original-format files in a temporary folder; then each implementation runs in
its own process: ours loads the file with the converter, the original with `load_state_dict` as api.py /
api_fast do. UnivNet: `inference(mel, z)` on a [1, 100, F] log-mel (F = 278 is 64 codes) with a fixed noise z.
HiFiGAN: `inference(latents, g)` on [1, m, 1024] latents with m = the codes that give about F frames (the
original's own `inference` moves its input to "cuda", so its interpolation + `forward` is timed instead).
Reported: first call (ours: compile + run), best of `--repeats` steady-state runs (wall and CPU time), the
real-time factor (run time / audio length, lower is better), the speed ratio, and the largest difference between
the two outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's clvp_jax, in the workers too
SAMPLE_RATE = 24_000  # Hz, both vocoders
HIFIGAN_KWARGS = dict(
    in_channels=1024, out_channels=1, resblock_type="1", resblock_dilation_sizes=[[1, 3, 5]] * 3,
    resblock_kernel_sizes=[3, 7, 11], upsample_kernel_sizes=[16, 16, 4, 4], upsample_initial_channel=512,
    upsample_factors=[8, 8, 2, 2], cond_channels=1024,
)  # fmt: skip


def make_files(folder: Path, frames: int) -> None:
    """Real-size original-format checkpoints and the inputs, written once for both workers."""
    import warnings

    import torch

    warnings.filterwarnings("ignore", category=FutureWarning)  # torch's old weight_norm API, used by the originals
    from tortoise.models.hifigan_decoder import HifiganGenerator
    from tortoise.models.vocoder import UnivNetGenerator

    torch.manual_seed(0)
    # The classes' own init (g = ||v||). Redrawing g at random, as the tiny fixture does, makes this deep random
    # UnivNet chaotic at real size: the original in float32 then differs from itself in float64 by 0.7 on the wav.
    for name, model in (("vocoder", UnivNetGenerator()), ("hifidecoder", HifiganGenerator(**HIFIGAN_KWARGS))):
        state = model.state_dict()
        torch.save({"model_g": state} if name == "vocoder" else state, folder / f"{name}.pth")
    rng = np.random.default_rng(0)
    codes = max(1, round(frames * 22050 / (4 * 24000)))
    np.savez(
        folder / "inputs.npz",
        mel=(rng.standard_normal((1, 100, frames)) * 2 - 6).astype(np.float32),  # log-mel-like, ~ -11 .. 0
        z=rng.standard_normal((1, 64, frames + 10)).astype(np.float32),
        latents=rng.standard_normal((1, codes, 1024)).astype(np.float32),
        speaker=rng.standard_normal((1, 1024)).astype(np.float32),
    )


def timed(fn, repeats: int) -> tuple[float, list[float], list[float], np.ndarray]:
    """(first call, wall times, CPU times of this process (all threads), output) of `fn`. CPU time is the steadier
    figure on a shared machine: other jobs stretch the wall time, not the work done."""
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    walls, cpus = [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return first, walls, cpus, np.asarray(out)


def worker(impl: str, model: str, folder: Path, repeats: int, dtype: str = "float32") -> None:
    inputs = dict(np.load(folder / "inputs.npz"))
    if impl == "ours":
        import jax

        from clvp_jax.checkpoint.tortoise_hifigan import load_hifigan
        from clvp_jax.checkpoint.tortoise_vocoder import load_vocoder
        from clvp_jax.waveform.hifigan import hifigan_inference
        from clvp_jax.waveform.univnet import univnet_inference

        if model == "univnet":
            params, config = load_vocoder(folder / "vocoder.pth")
            params = jax.device_put(params)
            mel, z = jax.device_put(inputs["mel"]), jax.device_put(inputs["z"])

            def fn():
                return univnet_inference(params, mel, z, config=config, dtype=dtype).block_until_ready()
        else:
            params, config = load_hifigan(folder / "hifidecoder.pth")
            params = jax.device_put(params)
            lat, g = jax.device_put(inputs["latents"]), jax.device_put(inputs["speaker"])

            def fn():
                return hifigan_inference(params, lat, g, config=config, dtype=dtype).block_until_ready()
    else:
        import warnings

        import torch

        warnings.filterwarnings("ignore", category=FutureWarning)
        from tortoise.models.hifigan_decoder import HifiganGenerator
        from tortoise.models.vocoder import UnivNetGenerator

        torch.set_num_threads(len(os.sched_getaffinity(0)))  # every core, as XLA uses
        if model == "univnet":
            net = UnivNetGenerator()
            net.load_state_dict(torch.load(folder / "vocoder.pth", weights_only=True)["model_g"])
            net.eval(inference=True)  # as api.py
            mel, z = torch.from_numpy(inputs["mel"]), torch.from_numpy(inputs["z"])

            def fn():
                with torch.inference_mode():
                    return net.inference(mel, z).numpy()
        else:
            net = HifiganGenerator(**HIFIGAN_KWARGS)
            net.load_state_dict(torch.load(folder / "hifidecoder.pth", weights_only=True), strict=False)
            net.eval()  # weight norm kept, as api_fast
            lat, g = torch.from_numpy(inputs["latents"]), torch.from_numpy(inputs["speaker"])

            def fn():
                with torch.inference_mode():
                    x = torch.nn.functional.interpolate(lat.transpose(1, 2), scale_factor=[1024 / 256], mode="linear")
                    x = torch.nn.functional.interpolate(x, scale_factor=[24000 / 22050], mode="linear")
                    return net(x, g.unsqueeze(0).transpose(1, 2)).numpy()

    first, times, cpus, out = timed(fn, repeats)
    np.save(folder / f"out_{impl}_{model}.npy", out)
    print(json.dumps({"first": first, "times": times, "cpu": cpus, "samples": int(out.shape[-1])}))


def run_worker(impl: str, model: str, folder: Path, repeats: int, dtype: str = "float32") -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, "--model", model, "--folder", str(folder)]
    cmd += ["--repeats", str(repeats), "--dtype", dtype]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=278, help="mel frames (278 = 64 codes)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["univnet", "hifigan"], choices=["univnet", "hifigan"])
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="clvp-jax's compute dtype")
    parser.add_argument("--worker", choices=["ours", "original"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.model, args.folder, args.repeats, args.dtype)
        return
    with tempfile.TemporaryDirectory(prefix="bench_vocoders_") as tmp:
        folder = Path(tmp)
        make_files(folder, args.frames)
        for model in args.models:
            ours = run_worker("ours", model, folder, args.repeats, args.dtype)
            ref = run_worker("original", model, folder, args.repeats)
            seconds = ours["samples"] / SAMPLE_RATE
            ref_out = np.load(folder / f"out_original_{model}.npy").astype(np.float64)
            diff = np.abs(np.load(folder / f"out_ours_{model}.npy") - ref_out)
            best_ours, best_ref = min(ours["times"]), min(ref["times"])
            print(
                f"{model} (clvp-jax {args.dtype}): {ours['samples']} samples ({seconds:.2f} s of audio); "
                f"ours first call {ours['first']:.2f} s, "
                f"best {best_ours:.3f} s (RTF {best_ours / seconds:.3f}); original first {ref['first']:.2f} s, best "
                f"{best_ref:.3f} s (RTF {best_ref / seconds:.3f}); speed-up {best_ref / best_ours:.2f}x; "
                f"max |diff| {diff.max():.2e}, SNR vs the original "
                f"{10 * np.log10(np.sum(ref_out**2) / np.sum(diff**2)):.1f} dB"
            )
            print(
                f"  runs: ours {[round(t, 3) for t in ours['times']]}, original {[round(t, 3) for t in ref['times']]}"
            )
            cpu_ours, cpu_ref = min(ours["cpu"]), min(ref["cpu"])
            print(
                f"  CPU time (all threads), best: ours {cpu_ours:.3f} s, original {cpu_ref:.3f} s, "
                f"{cpu_ref / cpu_ours:.2f}x"
            )


if __name__ == "__main__":
    main()
