"""Time and peak memory of converting a real-size (random-weight) original Tortoise checkpoint.

Builds `autoregressive.pth` (UnifiedVoice 30 x 1024, 16 heads, with the old GPT-2 buffers and `text_head`) and
`clvp2.pth` (CLVP-large, 2 x 20 x 768) with the key names and shapes of shared/reference/tortoise_original.md
§2.1 / §3.1 (~2.7 GB together), then runs `clvp-jax-convert` on them in a fresh process per output format and
reports wall time and the child's peak RSS (`resource.getrusage(RUSAGE_CHILDREN)`).

Usage: python benchmarks/convert_realsize.py [--workdir DIR] [--keep]
(check `df -h` first: it needs ~2.7 GB for the sources plus ~2.7 GB per output).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def autoregressive_shapes(layers=30, d=1024, text_rows=256, text_pos=404, mel_rows=8194, mel_pos=608, n_pos=1012):
    shapes = {"conditioning_encoder.init.weight": (d, 80, 1), "conditioning_encoder.init.bias": (d,)}
    for i in range(6):
        p = f"conditioning_encoder.attn.{i}."
        shapes.update({p + "norm.weight": (d,), p + "norm.bias": (d,), p + "qkv.weight": (3 * d, d, 1)})
        shapes.update({p + "qkv.bias": (3 * d,), p + "proj_out.weight": (d, d, 1), p + "proj_out.bias": (d,)})
    shapes.update({"text_embedding.weight": (text_rows, d), "text_pos_embedding.emb.weight": (text_pos, d)})
    shapes.update({"mel_embedding.weight": (mel_rows, d), "mel_pos_embedding.emb.weight": (mel_pos, d)})
    for i in range(layers):
        p = f"gpt.h.{i}."
        shapes.update({p + "ln_1.weight": (d,), p + "ln_1.bias": (d,)})
        shapes.update({p + "attn.bias": ("mask", n_pos), p + "attn.masked_bias": ()})  # old GPT-2 buffers
        shapes.update({p + "attn.c_attn.weight": (d, 3 * d), p + "attn.c_attn.bias": (3 * d,)})
        shapes.update({p + "attn.c_proj.weight": (d, d), p + "attn.c_proj.bias": (d,)})
        shapes.update({p + "ln_2.weight": (d,), p + "ln_2.bias": (d,)})
        shapes.update({p + "mlp.c_fc.weight": (d, 4 * d), p + "mlp.c_fc.bias": (4 * d,)})
        shapes.update({p + "mlp.c_proj.weight": (4 * d, d), p + "mlp.c_proj.bias": (d,)})
    shapes.update({"gpt.ln_f.weight": (d,), "gpt.ln_f.bias": (d,), "final_norm.weight": (d,), "final_norm.bias": (d,)})
    shapes.update({"text_head.weight": (text_rows, d), "text_head.bias": (text_rows,)})
    shapes.update({"mel_head.weight": (mel_rows, d), "mel_head.bias": (mel_rows,)})
    return shapes


def clvp_shapes(depth=20, d=768, text_rows=256, speech_rows=8192):
    shapes = {"text_emb.weight": (text_rows, d), "speech_emb.weight": (speech_rows, d), "temperature": ()}
    shapes.update({"to_text_latent.weight": (d, d), "to_speech_latent.weight": (d, d)})
    for tower in ("text", "speech"):
        p = f"{tower}_transformer.transformer."
        for n in range(2 * depth):
            q = f"{p}attn_layers.layers.{n}."
            shapes[q + "0.0.g"] = (d,)
            if n % 2 == 0:
                shapes.update({q + f"1.wrap.to_{x}.weight": (d, d) for x in "qkv"})
                shapes.update({q + "1.wrap.to_out.weight": (d, d), q + "1.wrap.to_out.bias": (d,)})
            else:
                shapes.update({q + "1.wrap.net.0.proj.weight": (4 * d, d), q + "1.wrap.net.0.proj.bias": (4 * d,)})
                shapes.update({q + "1.wrap.net.3.weight": (d, 2 * d), q + "1.wrap.net.3.bias": (d,)})
        shapes[p + "attn_layers.rotary_pos_emb.inv_freq"] = ("inv_freq", 32)
        shapes.update({p + "norm.weight": (d,), p + "norm.bias": (d,)})
    return shapes


def write_checkpoint(path: Path, shapes: dict) -> None:
    import torch

    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        if shape and shape[0] == "mask":
            state[key] = torch.tril(torch.ones(shape[1], shape[1], dtype=torch.bool))[None, None]
        elif shape and shape[0] == "inv_freq":
            state[key] = 1.0 / (10000 ** (torch.arange(0, shape[1], 2).float() / shape[1]))
        elif key == "gpt.h.0.attn.masked_bias" or key.endswith("masked_bias"):
            state[key] = torch.tensor(-1e4)
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.02
    torch.save(state, path)


_CHILD = (
    "import resource, sys\n"
    "from clvp_jax.checkpoint.convert_cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def run_child(argv: list[str]) -> tuple[float, float, int]:
    """(wall seconds, the child's own peak RSS in GiB, exit code) of one conversion in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, *argv], capture_output=True, text=True)
    wall = time.perf_counter() - start
    sys.stderr.write("".join(line + "\n" for line in proc.stderr.splitlines() if "PEAK_RSS" not in line))
    peak = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KIB")]
    return wall, (peak[0] / 2**20 if peak else float("nan")), proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clvp-convert-bench-", dir=args.workdir))
    try:
        src = work / "tortoise"
        src.mkdir()
        t = time.perf_counter()
        write_checkpoint(src / "autoregressive.pth", autoregressive_shapes())
        write_checkpoint(src / "clvp2.pth", clvp_shapes())
        size = sum(f.stat().st_size for f in src.iterdir()) / 2**30
        print(f"wrote random real-size checkpoint: {size:.2f} GiB in {time.perf_counter() - t:.0f} s")
        for label, argv in (
            ("dry run", [str(src), "--dry-run"]),
            ("original -> clvp-jax (float32)", [str(src), str(work / "ck")]),
            ("original -> HF safetensors (float32)", [str(src), str(work / "hf"), "--format", "hf"]),
        ):
            wall, peak, rc = run_child(argv)
            print(f"{label}: exit {rc}, {wall:.1f} s wall, peak RSS {peak:.2f} GiB "
                  f"= {peak / size:.2f} x the checkpoint")  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
