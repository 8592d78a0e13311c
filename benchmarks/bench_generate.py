"""Generation speed: the reference (transformers, torch KV cache) and clvp-jax side by side, with the roofline.

Usage: .venv/bin/python benchmarks/bench_generate.py --size medium|real [--tokens 32] [--runs 3]

Each side runs in its own process (torch and XLA threads fight), the reference with torch threads = 2; a first
process writes the reference's seeded weights as an HF folder, which clvp-jax loads with `from_pretrained` (so
its peak memory is what a user loading a checkpoint sees, with no torch in the process). Both are
forced to generate exactly the same number of tokens (min_new_tokens = max_new_tokens). Decode throughput is
measured as (time for N tokens - time for 1 token) / (N - 1) steps, which removes conditioning, prefill and (for
clvp-jax, whose program also ranks) the CLVP towers; best of `--runs`. Compile time is the first call minus a
steady call and is reported apart. The parent process measures the machine's fp32 matmul GFLOP/s and memory
bandwidth and prints each figure's share of the roofline: one decode step reads every decoder weight once
(bandwidth floor) and at B rows costs 2 x decoder params x B FLOPs (compute floor).
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


def _inputs(np):
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 200, size=(1, TEXT_LEN))
    feats = rng.standard_normal((1, 80, FRAMES)).astype(np.float32)
    return ids, feats


def _hf_model(size: str):
    import torch
    from transformers import ClvpConfig, ClvpModelForConditionalGeneration

    torch.manual_seed(0)
    return ClvpModelForConditionalGeneration(ClvpConfig.from_dict(SIZES[size])).eval()


def _best(fn, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run_reference(size: str, tokens: int, runs: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(2)
    hf = _hf_model(size)
    ids, feats = _inputs(np)
    ids_t, feats_t = torch.from_numpy(ids), torch.from_numpy(feats)
    dec_params = sum(p.numel() for p in hf.speech_decoder_model.parameters())
    sampling = dict(do_sample=True, temperature=0.8, top_p=0.8, repetition_penalty=2.0)
    with torch.no_grad():
        from transformers.models.clvp.modeling_clvp import _pad_extra_bos_eos_tokens

        i1, m1 = _pad_extra_bos_eos_tokens(
            ids_t, torch.ones_like(ids_t), add_bos_token=False, bos_token_id=255, eos_token_id=0
        )
        cond = hf.conditioning_encoder(input_features=feats_t, input_ids=i1, attention_mask=m1)

        def decode(n, cands, greedy):
            kw = {} if greedy else sampling
            c = cond.repeat(cands, 1, 1)
            return hf.speech_decoder_model.generate(
                conditioning_embeds=c, max_new_tokens=n, min_new_tokens=n, use_cache=True, **kw
            )

        out = {}
        for name, cands, greedy in (("sample16", N_CAND, False), ("greedy1", 1, True)):
            decode(2, cands, greedy)  # warm
            t_n = _best(lambda c=cands, g=greedy: decode(tokens, c, g), runs)
            t_1 = _best(lambda c=cands, g=greedy: decode(1, c, g), runs)
            out[name] = dict(step_s=(t_n - t_1) / (tokens - 1), rows=cands)

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

        out["e2e_s"] = _best(e2e, max(1, runs - 1))
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["decoder_params"] = dec_params
    return out


def run_jax(size: str, tokens: int, runs: int, folder: str) -> dict:
    import jax
    import numpy as np

    from clvp_jax.generation import GenerationOptions
    from clvp_jax.generation.generate import _compiled, _prepare_text
    from clvp_jax.loading import from_pretrained

    # The reference's exact weights, through the user's path: the HF folder the "prepare" process wrote.
    model, params = from_pretrained(folder, masked_pooling=False)
    ids, feats = _inputs(np)
    feats_j = jax.numpy.asarray(feats)
    out = {}
    tortoise = GenerationOptions.tortoise(
        num_candidates=N_CAND, max_new_tokens=tokens, min_new_tokens=tokens, pad_to_max_mel_tokens=None
    )
    greedy = GenerationOptions(max_new_tokens=tokens, min_new_tokens=tokens)
    e2e_opts = tortoise.replace(max_new_tokens=64, min_new_tokens=64)
    for name, opts, rows in (("sample16", tortoise, N_CAND), ("greedy1", greedy, 1), ("e2e", e2e_opts, N_CAND)):
        fn = _compiled(model, opts, 1)
        i, m = _prepare_text(model, opts, ids, None)
        key = jax.random.key(0)
        call = lambda n, fn=fn, i=i, m=m, key=key: jax.block_until_ready(  # noqa: E731
            fn(params, i, m, feats_j, None, key, jax.numpy.int32(n), jax.numpy.int32(0))
        )
        t = time.perf_counter()
        call(1)
        first = time.perf_counter() - t
        steady1 = _best(lambda call=call: call(1), runs)
        if name == "e2e":
            out["e2e_s"] = _best(lambda call=call: call(64), max(1, runs - 1))
        else:
            t_n = _best(lambda call=call, n=tokens: call(n), runs)
            out[name] = dict(step_s=(t_n - steady1) / (tokens - 1), rows=rows)
        out.setdefault("compile_s", {})[name] = first - steady1
        out.setdefault("jit_cache_entries", {})[name] = fn._cache_size()
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def machine_roofline() -> dict:
    import numpy as np

    os.environ.setdefault("OMP_NUM_THREADS", "2")
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    flops = 2 * 2048**3 / _best(lambda: a @ a, 5)
    big = np.ones(2**27 // 4 * 4, np.float32)  # 512 MiB
    dst = np.empty_like(big)
    bw = 2 * big.nbytes / _best(lambda: np.copyto(dst, big), 5)  # read + write
    return dict(gflops=flops / 1e9, gbps=bw / 1e9)


def prepare(size: str, folder: str) -> dict:
    """Write the reference model (the same seeded weights `run_reference` builds) as an HF folder for clvp-jax."""
    _hf_model(size).save_pretrained(folder)
    return {}


def _side(which: str, size: str, tokens: int, runs: int, folder: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="2")
    args = ["--size", size, "--tokens", str(tokens), "--runs", str(runs), "--side", which, "--folder", folder]
    proc = subprocess.run(
        [sys.executable, __file__, *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    if proc.returncode:
        raise RuntimeError(f"{which} side failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=sorted(SIZES), default="medium")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--side", choices=["both", "prepare", "reference", "jax"], default="both")
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side != "both":
        run = dict(prepare=lambda: prepare(a.size, a.folder), reference=lambda: run_reference(a.size, a.tokens, a.runs))
        run["jax"] = lambda: run_jax(a.size, a.tokens, a.runs, a.folder)
        print(json.dumps(run[a.side]()))
        return
    roof = machine_roofline()
    with tempfile.TemporaryDirectory(prefix="bench_generate_") as folder:
        _side("prepare", a.size, a.tokens, a.runs, folder)
        ref = _side("reference", a.size, a.tokens, a.runs, folder)
        ours = _side("jax", a.size, a.tokens, a.runs, folder)
    P = ref["decoder_params"]
    print(
        f"size={a.size} tokens={a.tokens} decoder params={P / 1e6:.1f}M  machine: {roof['gflops']:.1f} GFLOP/s, "
        f"{roof['gbps']:.1f} GB/s  ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores)"
    )
    print("| case | reference tok/s | clvp-jax tok/s | ratio | ref % compute / % bw | jax % compute / % bw |")
    print("|---|---|---|---|---|---|")
    for name in ("sample16", "greedy1"):
        rows = ours[name]["rows"]
        r_tps, j_tps = rows / ref[name]["step_s"], rows / ours[name]["step_s"]
        compute_floor = 2 * P * rows / (roof["gflops"] * 1e9)  # s per step
        bw_floor = 4 * P / (roof["gbps"] * 1e9)
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
        f"compile (s): {json.dumps({k: round(v, 1) for k, v in ours['compile_s'].items()})}; jit cache entries "
        f"after repeated calls: {ours['jit_cache_entries']}"
    )
    print(f"peak RSS: reference {ref['peak_rss_gb']:.2f} GB, clvp-jax {ours['peak_rss_gb']:.2f} GB")


if __name__ == "__main__":
    main()
