"""A/B of the decode step's forms: several variants of the generation program in one process, their calls
alternated, wall and CPU time per step.

Usage: .venv/bin/python benchmarks/bench_step_forms.py [--case sample16|greedy1] [--tokens 8] [--layers 8]
         [--rounds 5] [--variants JSON]

`--variants` maps a name to {"tuning": {Tuning field: value}, "xla": {XLA compiler option: value},
"dtype": "float32" | "bfloat16" (the program's `GenerationOptions.dtype`, weights stored in it)}, e.g.
'{"default": {}, "ynn_off": {"xla": {"xla_cpu_experimental_ynn_fusion_type": ""}},
  "plain": {"tuning": {"weight_first_max_rows": 0}}}' (the default set). The model is the real one
(`ClvpConfig.tortoise()`) with its decoder cut to `--layers` layers (30: the real size), random weights; each
variant is compiled from shapes, then the variants' calls of 1 and N tokens alternate for `--rounds` rounds and
the step is (best N-token call - best 1-token call) / (N - 1), as in bench_generate.py.

`--profile DIR` then traces one N-token call of each variant (`jax.profiler`, Perfetto JSON in DIR/<variant>)
and prints the thunks that ran once per step (or a multiple), ms per step: which fusion or dot the step spends on.

Why alternate and why CPU time: on a shared machine the wall time of separate runs moves by 2x between minutes;
alternating puts every variant in the same phase. The CPU time (this process's user + system time, both threads)
is the work a variant does, which other processes' load barely changes; the wall time adds how well the work is
spread over the two cores, which only a quiet machine shows. Read both: a form that saves CPU time saves it on
any machine; one that only changes the wall time needs the quiet figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

DEFAULT_VARIANTS = {
    "default": {},
    "ynn_off": {"xla": {"xla_cpu_experimental_ynn_fusion_type": ""}},
    "plain": {"tuning": {"weight_first_max_rows": 0}},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", choices=("sample16", "greedy1"), default="sample16")
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--tiny", action="store_true", help="ClvpConfig.tiny() instead of the real size (smoke test)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--variants", type=json.loads, default=DEFAULT_VARIANTS)
    ap.add_argument("--profile", metavar="DIR", help="also trace one N-token call per variant into DIR/<variant>")
    a = ap.parse_args()
    if a.tokens < 2:
        sys.exit("--tokens must be >= 2 (the step is the difference between N tokens and 1)")

    import jax
    import numpy as np
    from bench_generate import N_CAND, _inputs
    from machine import describe_machine

    from clvp_jax.config import ClvpConfig
    from clvp_jax.generation import GenerationOptions
    from clvp_jax.generation.compiling import MEMORY_SCHEDULER_OPTIONS, abstract
    from clvp_jax.generation.generate import _prepare_text
    from clvp_jax.generation.program import generation_program
    from clvp_jax.generation.sharding import rows_mesh
    from clvp_jax.model import ClvpModelForConditionalGeneration, param_shapes
    from clvp_jax.tuning import Tuning

    cfg = ClvpConfig.tiny() if a.tiny else ClvpConfig.tortoise()
    cfg = dataclasses.replace(cfg, decoder_config=dataclasses.replace(cfg.decoder_config, num_hidden_layers=a.layers))
    n = a.tokens
    if a.case == "sample16":
        opts, rows = (
            GenerationOptions.tortoise(
                num_candidates=N_CAND, max_new_tokens=n, min_new_tokens=n, pad_to_max_mel_tokens=None
            ),
            N_CAND,
        )
    else:
        opts, rows = GenerationOptions(max_new_tokens=n, min_new_tokens=n), 1
    shapes = param_shapes(cfg)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jax.numpy.asarray(rng.standard_normal(s.shape, np.float32) * 0.02), shapes)
    if any(v.get("dtype", "float32") == "bfloat16" for v in a.variants.values()):  # stored once, as generate
        weights = {"bfloat16": jax.tree.map(lambda x: x.astype(jax.numpy.bfloat16), params)}
    ids, feats = _inputs(np)
    ids = ids % cfg.text_config.vocab_size
    feats = jax.numpy.asarray(feats)
    mesh = rows_mesh(1)
    programs = {}
    for name, variant in a.variants.items():
        tuning = dataclasses.replace(Tuning.cpu(), **variant.get("tuning", {}))
        dtype = variant.get("dtype", "float32")
        vopts = dataclasses.replace(opts, dtype=dtype)
        compute_dtype = None if dtype == "float32" else jax.numpy.dtype(dtype)
        model = ClvpModelForConditionalGeneration(cfg, masked_pooling=False, tuning=tuning, dtype=compute_dtype)
        compute = model.clone(scan_layers=True)
        i, m = _prepare_text(model, vopts, ids, None)
        vparams = params if dtype == "float32" else weights[dtype]

        def program(p, i, m, f, lat, key, limit, offset, texts, compute=compute, vopts=vopts):
            return compute.apply(
                {"params": p}, i, m, f, lat, key, limit, offset, texts, opts=vopts, mesh=mesh, method=generation_program
            )

        xla = dict(MEMORY_SCHEDULER_OPTIONS) if tuning.use_memory_scheduler(rows) else {}
        xla.update(variant.get("xla", {}))

        def args(k, i=i, m=m, vparams=vparams):
            texts = np.arange(i.shape[0], dtype=np.int32)  # each text's index for its random keys
            return (vparams, i, m, feats, None, jax.random.key(0), np.int32(k), np.int32(0), texts)

        t = time.perf_counter()
        programs[name] = (jax.jit(program, compiler_options=xla or None).lower(*abstract(args(1))).compile(), args)
        print(f"{name}: compiled in {time.perf_counter() - t:.1f} s", flush=True)
    best = {name: [float("inf")] * 4 for name in programs}  # wall 1, wall N, cpu 1, cpu N
    for _ in range(a.rounds):
        for name, (exe, args) in programs.items():
            for j, k in enumerate((1, n)):
                t, c = time.perf_counter(), time.process_time()
                jax.block_until_ready(exe(*args(k)))
                best[name][j] = min(best[name][j], time.perf_counter() - t)
                best[name][2 + j] = min(best[name][2 + j], time.process_time() - c)
    print(describe_machine())
    print(
        f"{a.case}, decoder {a.layers} layers, {n} tokens, best of {a.rounds} alternated rounds "
        f"({time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f})"
    )
    print("| variant | step wall ms | step CPU ms (both threads) | tok/s |\n|---|---|---|---|")
    for name, (w1, wn, c1, cn) in best.items():
        step = (wn - w1) / (n - 1)
        print(f"| {name} | {1e3 * step:.1f} | {1e3 * (cn - c1) / (n - 1):.1f} | {rows / step:.1f} |")
    if a.profile:
        for name, (exe, args) in programs.items():
            print(f"{name}: the thunks that ran N - 1 = {n - 1} times or a multiple (the decode step's, mostly)")
            for total, count, thunk in profile_call(os.path.join(a.profile, name), exe, args(n), n - 1)[:20]:
                print(f"  {1e3 * total / (n - 1):8.3f} ms per step  x{count // (n - 1):<3d} {thunk}")


def profile_call(folder: str, exe, args: tuple, steps: int) -> list[tuple[float, int, str]]:
    """Trace one call of `exe` (`jax.profiler`, a Perfetto trace in `folder`) and return (seconds, count, name)
    of each XLA thunk that ran a multiple of `steps` times, largest first. Wall time of a traced run: read the
    shares, not the totals (tracing slows small thunks), and beware names that also run that often outside the
    loop (a tower of `steps` layers)."""
    import collections
    import glob
    import gzip

    import jax

    jax.profiler.start_trace(folder, create_perfetto_trace=True)
    jax.block_until_ready(exe(*args))
    jax.profiler.stop_trace()
    with gzip.open(sorted(glob.glob(os.path.join(folder, "**", "*.trace.json.gz"), recursive=True))[-1]) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    total, count = collections.Counter(), collections.Counter()
    skip = ("ThunkExecutor", "$", "SlinkyThreadPool", "end:", "while", "cond", "call")
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(skip):
            total[e["name"]] += e.get("dur", 0) * 1e-6
            count[e["name"]] += 1
    rows = [(total[k], count[k], k) for k in total if count[k] % steps == 0]
    return sorted(rows, reverse=True)


if __name__ == "__main__":
    main()
