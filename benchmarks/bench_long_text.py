"""Peak memory of `clvp-jax generate` / `speak` against the length of the text (long text runs chunk by chunk).

Each size runs the real command in a fresh process (`clvp_jax.cli.main`, the packaged tiny default model) and
reports that process's peak resident set (`ru_maxrss`), its wall time and the number of chunks. Flat memory over
a 10x longer text is the claim under test; wall time grows with the chunks.

  .venv/bin/python benchmarks/bench_long_text.py                       # generate, 5,000 and 50,000 characters
  .venv/bin/python benchmarks/bench_long_text.py --command speak --chars 1000 5000 --num-samples 2
  .venv/bin/python benchmarks/bench_long_text.py --num-samples 16 --max-new-tokens 500   # the defaults of generate
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = [
    "The old lighthouse keeper climbed the stairs every evening at dusk.",
    "Nobody in the village remembered when the lamp had last gone dark.",
    "She counted the ships that passed, and wrote their names in a book.",
    "On stormy nights the waves reached almost to the top of the rocks!",
    "Was it loneliness, or something else, that kept her there so long?",
]

CHILD = """
import resource, sys, time
from clvp_jax.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
print("RESULT", code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - start, file=sys.stderr)
"""


def make_text(chars: int) -> str:
    """A deterministic English text of about `chars` characters (whole sentences)."""
    out, n = [], 0
    while n < chars:
        s = SENTENCES[len(out) % len(SENTENCES)]
        out.append(s)
        n += len(s) + 1
    return " ".join(out)


def run(command: str, chars: int, extra: list[str], folder: Path) -> dict:
    text = folder / f"text{chars}.txt"
    text.write_text(make_text(chars))
    out = folder / (f"out{chars}" if command == "generate" else f"out{chars}.wav")
    argv = [command, "--text-file", str(text), "--quiet", *extra]
    argv += ["--out", str(out)] if command == "generate" else ["-o", str(out)]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, cwd=ROOT, env=None, check=False
    )
    line = [x for x in proc.stderr.splitlines() if x.startswith("RESULT")]
    if proc.returncode or not line or line[-1].split()[1] != "0":
        raise SystemExit(f"{command} at {chars} characters failed:\n{proc.stderr[-2000:]}")
    _, _, rss_kib, wall = line[-1].split()
    info = json.loads((out / "candidates.json" if command == "generate" else out.with_suffix(".json")).read_text())
    return {"chars": chars, "chunks": len(info["chunks"]), "peak_rss_mib": int(rss_kib) / 1024, "wall_s": float(wall)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", choices=("generate", "speak"), default="generate")
    parser.add_argument("--chars", type=int, nargs="+", default=[5000, 50000])
    parser.add_argument("--num-samples", type=int, default=2, help="candidates drawn per chunk (the CLI's flag)")
    parser.add_argument("--max-new-tokens", type=int, default=50)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for the command")
    args = parser.parse_args()
    extra = ["--num-samples", str(args.num_samples), "--max-new-tokens", str(args.max_new_tokens), *args.extra]
    if args.command == "speak":
        extra += ["--diffusion-steps", "2", "--sampler", "ddim"]
    with tempfile.TemporaryDirectory() as tmp:
        for chars in args.chars:
            t = time.strftime("%H:%M:%S")
            row = run(args.command, chars, extra, Path(tmp))
            print(json.dumps(row | {"command": args.command, "flags": " ".join(extra), "started": t}), flush=True)


if __name__ == "__main__":
    main()
