"""Generation speed: the reference (transformers, torch KV cache) and clvp-jax side by side, with the roofline.

Usage: .venv/bin/python benchmarks/bench_generate.py --size medium|real [--tokens 32] [--runs 3]
       [--dtype float32|bfloat16|both]

Each case (16-candidate sampling, greedy, end to end) runs in its own process on each side, the two back to
back (torch and XLA threads fight; separate processes also give each case its own peak memory); the reference
runs with torch threads = 2. A first process writes the reference's seeded weights as an HF folder. clvp-jax
compiles its program from the config's shapes alone (`warmup`, timed: trace + lower + XLA compile, with a fresh
compilation cache, so never a disk-cache hit), then loads the weights with `from_pretrained` (its peak memory is
what a user sees who compiles before loading, with no torch in the process); every timed call runs the
warmed-up program (the count of further compilations is printed). Both are forced to generate exactly the same
number of tokens (min_new_tokens = max_new_tokens). Decode throughput is measured as (time for N tokens - time for
1 token) / (N - 1) steps (greedy: 4N tokens, so that its short steps stand out of the calls' jitter), which
removes conditioning, prefill and (for clvp-jax, whose program also ranks) the CLVP towers; best of `--runs`.
The parent process measures the machine's fp32 matmul GFLOP/s and its memory read bandwidth (the better of a
copy and XLA's matrix-vector product over 1 GiB), and prints each figure's share of the roofline: one decode
step reads every decoder weight once (bandwidth floor) and at B rows costs 2 x decoder params x B FLOPs (compute
floor). `--dtype bfloat16` runs both sides in bf16 (the reference: the transformers model cast with
`.to(torch.bfloat16)`; clvp-jax: weights loaded as bf16, `GenerationOptions.dtype="bfloat16"`), and its floors
are bf16's: 2 bytes per weight read, the JAX bf16 matmul peak; `both` runs float32 then bfloat16 and adds the
bf16 / fp32 ratios of clvp-jax. Every table is headed by the CPU model and its matrix features (`lscpu` flags).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from machine import describe_machine  # benchmarks/machine.py (this script's folder is on sys.path)

SIZES = {
    "medium": dict(
        decoder_config=dict(num_hidden_layers=8, hidden_size=512, num_attention_heads=8, num_mel_attn_blocks=2),
        text_config=dict(
            num_hidden_layers=4, hidden_size=512, intermediate_size=1024, projection_dim=512, num_attention_heads=8
        ),
        speech_config=dict(
            num_hidden_layers=4,
            hidden_size=512,
            intermediate_size=1024,
            projection_dim=512,
            num_attention_heads=8,
            vocab_size=8192,
        ),
    ),
    "real": dict(speech_config=dict(vocab_size=8192, bos_token_id=8192, eos_token_id=8193)),
}
TEXT_LEN, FRAMES, N_CAND = 32, 517, 16
CASES = ("sample16", "greedy1", "e2e")
GREEDY_FACTOR = 4  # greedy decodes 4N tokens: its ~40 ms steps would otherwise drown in the 1-token call's jitter


def _case_tokens(case: str, tokens: int) -> int:
    return tokens * GREEDY_FACTOR if case == "greedy1" else tokens


def _inputs(np):
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 200, size=(1, TEXT_LEN))
    feats = rng.standard_normal((1, 80, FRAMES)).astype(np.float32)
    return ids, feats


def _hf_model(size: str, dtype: str = "float32"):
    import torch
    from transformers import ClvpConfig, ClvpModelForConditionalGeneration

    torch.manual_seed(0)
    model = ClvpModelForConditionalGeneration(ClvpConfig.from_dict(SIZES[size])).eval()
    return model.to(getattr(torch, dtype))


def _peak_gib() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: on Linux ru_maxrss carries over the parent's
    peak through fork + exec, so every child would report at least the parent's."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _best(fn, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run_reference(size: str, tokens: int, runs: int, case: str, dtype: str) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(2)
    hf = _hf_model(size, dtype)
    ids, feats = _inputs(np)
    ids_t, feats_t = torch.from_numpy(ids), torch.from_numpy(feats).to(getattr(torch, dtype))
    out = {"decoder_params": sum(p.numel() for p in hf.speech_decoder_model.parameters())}
    sampling = dict(do_sample=True, temperature=0.8, top_p=0.8, repetition_penalty=2.0)
    with torch.no_grad():
        if case == "e2e":

            def e2e():
                return hf.generate(
                    input_ids=ids_t,
                    input_features=feats_t,
                    num_return_sequences=N_CAND,
                    max_new_tokens=64,
                    min_new_tokens=64,
                    return_dict_in_generate=True,
                    **sampling,
                )

            out["e2e_s"] = _best(e2e, runs)
        else:
            from transformers.models.clvp.modeling_clvp import _pad_extra_bos_eos_tokens

            i1, m1 = _pad_extra_bos_eos_tokens(
                ids_t, torch.ones_like(ids_t), add_bos_token=False, bos_token_id=255, eos_token_id=0
            )
            cond = hf.conditioning_encoder(input_features=feats_t, input_ids=i1, attention_mask=m1)
            cands, kw = (N_CAND, sampling) if case == "sample16" else (1, {})
            tokens = _case_tokens(case, tokens)

            def decode(n):
                return hf.speech_decoder_model.generate(
                    conditioning_embeds=cond.repeat(cands, 1, 1),
                    max_new_tokens=n,
                    min_new_tokens=n,
                    use_cache=True,
                    **kw,
                )

            decode(2)  # warm
            t_n = _best(lambda: decode(tokens), runs)
            t_1 = _best(lambda: decode(1), runs)
            out[case] = dict(step_s=(t_n - t_1) / (tokens - 1), rows=cands)
    out["peak_rss_gb"] = {case: _peak_gib()}
    return out


def run_jax(size: str, tokens: int, runs: int, folder: str, case: str, dtype: str) -> dict:
    import jax
    import numpy as np

    from clvp_jax.checkpoint import from_pretrained
    from clvp_jax.config import ClvpConfig
    from clvp_jax.generation import GenerationOptions, warmup
    from clvp_jax.generation.compiling import ahead_or_jit, count_compilations, enable_compilation_cache, program_for
    from clvp_jax.generation.generate import _prepare_text
    from clvp_jax.model import ClvpModelForConditionalGeneration, param_shapes

    tortoise = GenerationOptions.tortoise(
        num_candidates=N_CAND, max_new_tokens=tokens, min_new_tokens=tokens, pad_to_max_mel_tokens=None, dtype=dtype
    )
    n_greedy = _case_tokens(case, tokens)
    opts, rows = dict(
        sample16=(tortoise, N_CAND),
        greedy1=(GenerationOptions(max_new_tokens=n_greedy, min_new_tokens=n_greedy, dtype=dtype), 1),
        e2e=(tortoise.replace(max_new_tokens=64, min_new_tokens=64), N_CAND),
    )[case]
    # As a memory-minded user would: compile the program from the config's shapes first, then load the
    # reference's exact weights through the user's path (the HF folder the "prepare" process wrote).
    enable_compilation_cache()  # this process's fresh $CLVP_JAX_CACHE (generate never turns the cache on itself)
    compute = None if dtype == "float32" else jax.numpy.dtype(dtype)  # the model `from_pretrained` will give
    model = ClvpModelForConditionalGeneration(ClvpConfig.from_pretrained(folder), masked_pooling=False, dtype=compute)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype), param_shapes(model.config))
    t = time.perf_counter()
    warmup(model, shapes, batch_size=1, text_length=TEXT_LEN, num_frames=FRAMES, options=opts)
    out = {"compile_s": {case: time.perf_counter() - t}}  # trace + lower + XLA compile, from shapes alone
    model, params = from_pretrained(folder, masked_pooling=False, dtype=dtype)
    ids, feats = _inputs(np)
    fn = program_for(model, opts, 1, 1)
    i, m = _prepare_text(model, opts, ids, None)

    def args(n):
        return (
            params,
            i,
            m,
            jax.numpy.asarray(feats),
            None,
            jax.random.key(0),
            np.int32(n),
            np.int32(0),
            np.zeros(1, np.int32),
        )

    run = ahead_or_jit(fn, args(1))
    assert run is not fn, "the warmed-up program was not found; it would be compiled again"
    call = lambda n: jax.block_until_ready(run(*args(n)))  # noqa: E731
    with count_compilations() as compiled:
        steady1 = _best(lambda: call(1), runs)
        if case == "e2e":
            out["e2e_s"] = _best(lambda: call(64), runs)
        else:
            n = _case_tokens(case, tokens)
            out[case] = dict(step_s=(_best(lambda: call(n), runs) - steady1) / (n - 1), rows=rows)
    out["jit_compilations"] = {case: compiled.traced}  # 0: every call ran the program warmup compiled
    out["peak_rss_gb"] = {case: _peak_gib()}
    return out


def machine_roofline() -> dict:
    import numpy as np

    os.environ.setdefault("OMP_NUM_THREADS", "2")
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    flops = 2 * 2048**3 / _best(lambda: a @ a, 5)
    big = np.ones(2**27 // 4 * 4, np.float32)  # 512 MiB
    dst = np.empty_like(big)
    copy = 2 * big.nbytes / _best(lambda: np.copyto(dst, big), 5)  # read + write
    # A decode step reads its weights and writes almost nothing: read bandwidth, measured the way the step reads
    # (XLA's matrix-vector product on both cores over a 512 MiB matrix); a copy alone underestimates it.
    import jax
    import jax.numpy as jnp

    w = jnp.ones((4096, 2**16), jnp.float32)  # 1 GiB: a 512 MiB matrix gave erratic figures (up to 57 GB/s)
    v = jnp.ones(2**16, jnp.float32)
    gemv = jax.jit(lambda w, v: w @ v)
    gemv(w, v).block_until_ready()
    read = w.nbytes / _best(lambda: gemv(w, v).block_until_ready(), 10)
    w = v = None  # free the 1 GiB before the bf16 probe
    # JAX's bf16 matmul peak (bf16 operands, float32 accumulation: the form `clvp_jax.layers.Linear` uses).
    x = jnp.ones((2048, 2048), jnp.bfloat16)
    mm = jax.jit(lambda a, b: jax.lax.dot(a, b, preferred_element_type=jnp.float32))
    mm(x, x).block_until_ready()
    bf16 = 2 * 2048**3 / _best(lambda: mm(x, x).block_until_ready(), 5)
    return dict(
        gflops=flops / 1e9,
        bf16_gflops=bf16 / 1e9,
        gbps=max(copy, read) / 1e9,
        copy_gbps=copy / 1e9,
        read_gbps=read / 1e9,
    )


def prepare(size: str, folder: str) -> dict:  # always float32: clvp-jax casts while loading
    """Write the reference model (the same seeded weights `run_reference` builds) as an HF folder for clvp-jax."""
    _hf_model(size).save_pretrained(folder)
    return {}


def _side(which: str, size: str, tokens: int, runs: int, folder: str, case: str = "", dtype: str = "float32") -> dict:
    # A fresh compilation cache per process: compile times are real compilations, never disk-cache hits.
    env = dict(os.environ, OMP_NUM_THREADS="2", CLVP_JAX_CACHE=os.path.join(folder, f"xla-{case}"))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    args = ["--size", size, "--tokens", str(tokens), "--runs", str(runs), "--side", which, "--folder", folder]
    args += ["--dtype", dtype]
    proc = subprocess.run(
        [sys.executable, __file__, *args, *(["--case", case] if case else [])],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    if proc.returncode:
        raise RuntimeError(f"{which} side failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _merge(parts: list[dict]) -> dict:
    out: dict = {}
    for part in parts:
        for k, v in part.items():
            out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) else v
    return out


def measure(a, folder: str, dtype: str) -> tuple[dict, dict]:
    ref, ours = [], []
    for case in CASES:  # each case in its own process on both sides, the two back to back
        ref.append(_side("reference", a.size, a.tokens, a.runs, folder, case, dtype))
        ours.append(_side("jax", a.size, a.tokens, a.runs, folder, case, dtype))
    return _merge(ref), _merge(ours)


def report(a, roof: dict, dtype: str, ref: dict, ours: dict) -> None:
    P = ref["decoder_params"]
    width, peak = (2, roof["bf16_gflops"]) if dtype == "bfloat16" else (4, roof["gflops"])
    print(
        f"\n{dtype}: size={a.size} tokens={a.tokens} (greedy {a.tokens * GREEDY_FACTOR}) decoder params={P / 1e6:.1f}M"
        f"  {describe_machine()}; matmul peak numpy fp32 {roof['gflops']:.0f} / "
        f"JAX bf16 {roof['bf16_gflops']:.0f} GFLOP/s, read {roof['read_gbps']:.1f} GB/s (copy {roof['copy_gbps']:.1f})"
        f"  ({time.strftime('%Y-%m-%d %H:%M')})"
    )
    print(
        f"| case ({dtype}) | reference tok/s | clvp-jax tok/s | ratio | ref % compute / % bw | jax % compute / % bw |"
    )
    print("|---|---|---|---|---|---|")
    for name in ("sample16", "greedy1"):
        rows = ours[name]["rows"]
        r_tps, j_tps = rows / ref[name]["step_s"], rows / ours[name]["step_s"]
        compute_floor = 2 * P * rows / (peak * 1e9)  # s per step, at this dtype's matmul peak
        bw_floor = width * P / (roof["gbps"] * 1e9)  # reading every weight once, at this dtype's width
        shares = lambda s, cf=compute_floor, bf=bw_floor: f"{100 * cf / s:.0f}% / {100 * bf / s:.0f}%"  # noqa: E731
        print(
            f"| {name} | {r_tps:.1f} | {j_tps:.1f} | {j_tps / r_tps:.2f}x | {shares(ref[name]['step_s'])} | "
            f"{shares(ours[name]['step_s'])} |"
        )
    print(
        f"| e2e (cond + {N_CAND} x 64 tokens + ranking) | {ref['e2e_s']:.2f} s | {ours['e2e_s']:.2f} s | "
        f"{ref['e2e_s'] / ours['e2e_s']:.2f}x | | |"
    )
    print(
        f"compile (s, trace + XLA, from shapes before loading): "
        f"{json.dumps({k: round(v, 1) for k, v in ours['compile_s'].items()})}; compilations by repeated calls: "
        f"{ours['jit_compilations']}"
    )
    peaks = ", ".join(f"{c} {ref['peak_rss_gb'][c]:.3f} / {ours['peak_rss_gb'][c]:.3f}" for c in CASES)
    print(f"peak RSS (GiB, reference / clvp-jax, one process per case): {peaks}")


def compare(fp32: dict, bf16: dict) -> None:
    """clvp-jax bf16 against clvp-jax fp32 (the issue's targets: >= 2.5x, >= 1.6x, >= 2x, peak <= 60%)."""
    speed = {c: fp32[c]["step_s"] / bf16[c]["step_s"] for c in ("sample16", "greedy1")}
    peaks = ", ".join(f"{c} {100 * bf16['peak_rss_gb'][c] / fp32['peak_rss_gb'][c]:.0f}%" for c in CASES)
    print(
        f"\nclvp-jax bf16 / fp32: sample16 {speed['sample16']:.2f}x, greedy1 {speed['greedy1']:.2f}x, "
        f"e2e {fp32['e2e_s'] / bf16['e2e_s']:.2f}x; peak RSS bf16 / fp32: {peaks}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=sorted(SIZES), default="medium")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--side", choices=["both", "prepare", "reference", "jax"], default="both")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "both"], default="float32", help="both sides' dtype")
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side != "both":
        run = dict(
            prepare=lambda: prepare(a.size, a.folder),
            reference=lambda: run_reference(a.size, a.tokens, a.runs, a.case, a.dtype),
            jax=lambda: run_jax(a.size, a.tokens, a.runs, a.folder, a.case, a.dtype),
        )
        print(json.dumps(run[a.side]()))
        return
    roof = machine_roofline()
    dtypes = ("float32", "bfloat16") if a.dtype == "both" else (a.dtype,)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_generate_") as folder:
        _side("prepare", a.size, a.tokens, a.runs, folder)
        for dtype in dtypes:
            results[dtype] = measure(a, folder, dtype)
            report(a, roof, dtype, *results[dtype])
    if len(results) == 2:
        compare(results["float32"][1], results["bfloat16"][1])


if __name__ == "__main__":
    main()
