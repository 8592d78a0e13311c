"""The quality cost of bf16: clvp-jax in bfloat16 against itself in float32, through the public API.

Usage: .venv/bin/python benchmarks/bf16_quality.py --size tiny|real [--steps 500] [--seeds 8] [--clvp-seeds 50]
       [--candidates 16] [--clvp-codes 64] [--wave-codes 32] [--wave-seeds 2] [--sampler ultra_fast] [--no-anchor]

Both sides are loaded as a user loads them: the model is written as a transformers folder, then
`from_pretrained(folder)` (float32) and `from_pretrained(folder, dtype="bfloat16")` (what `--dtype bfloat16` does:
bf16 parameters, bf16 compute), and generation runs with `GenerationOptions(dtype=...)` to match.
Models: `--size tiny`: the four tiny parity configurations of tests/reference_models.py (O(1)-scale random
weights), their decoder position table raised to `--steps` + 8 so that 500 steps fit; `--size real`: the
real-size composite with random weights built as benchmarks/bench_generate.py builds it (transformers'
seeded init, seed 0). Everything is seeded: a rerun prints the same table.

Figures (one markdown table per size):
  AR decoder   greedy: `--seeds` prompts (random text, random log-mel voice) decoded `--steps` tokens (stop token
               forbidden before), fp32 and bf16, all prompts as one batch; "greedy identical" = the number of
               leading codes where bf16 equals fp32 (min / median / max over prompts). Teacher-forced: the fp32
               greedy codes fed to both (`training.losses.decoder_lm_logits`, the training layout), per step
               max |bf16 - fp32| over the vocabulary (max and median over prompts x steps, beside the fp32
               logits' std for scale) and top-1 agreement (bf16 argmax == fp32 argmax, % of prompts x steps).
  CLVP         `--clvp-seeds` seeds x `--candidates` random code sequences of `--clvp-codes` codes, ranked
               against a random text (`score_candidates`, as generation ranks): max and median |d score| and the
               share of seeds whose best candidate is the same, beside the fp32 gap between the best two.
  waveform     the diffusion decoder (`--sampler` preset, the same key) on `--wave-codes` random AR latents,
               fp32 against `DiffusionTts(dtype=bfloat16)`, and the UnivNet vocoder (`vocode(dtype=...)`) on the
               fp32 mel; SNR = 10 log10(var(fp32) / mean((bf16 - fp32)^2)) in dB, per seed, the worst printed;
               weights from benchmarks/bench_waveform.py's `prepare` (the original classes' seeded init). The
               waveform modules keep their parameters in float32 and compute in the dtype given.
  anchor       (unless --no-anchor) the decoder alone on the same codes ([start, codes], no prompt): our
               bf16 against our fp32, and the reference (transformers, torch CPU) under
               `torch.autocast("cpu", bfloat16)` and `float16` against its fp32: Tortoise's `half=True` and
               tortoise-tts-fast's `--half` are fp16 autocast (on CUDA) around the AR model and CLVP.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "tests")]


def log(message: str) -> None:
    """Progress on stderr (a real-size run takes a long time; the tables go to stdout)."""
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- the model pairs ---------------------------------------------------------------------------------------------


def hf_models(size: str, steps: int):
    """(name, transformers model) for each configuration of `size`."""
    import torch
    from transformers import ClvpConfig as HFConfig
    from transformers import ClvpModelForConditionalGeneration as HFModel

    if size == "real":
        from bench_generate import _hf_model

        yield "real", _hf_model("real")
        return
    import reference_models

    for name, cfg in reference_models.CONFIGS.items():
        dec = dict(cfg["decoder_config"], max_position_embeddings=steps + 8)  # room for `steps` codes
        torch.manual_seed(0)
        hf = HFModel(HFConfig.from_dict(dict(cfg, decoder_config=dec))).eval()
        reference_models.redraw_o1(hf, 0)
        yield name, hf


def load_pair(folder: str):
    """((model, params) float32, (model, params) bfloat16) as `--dtype` loads them."""
    from clvp_jax.checkpoint import from_pretrained

    return from_pretrained(folder), from_pretrained(folder, dtype="bfloat16")


def prompts(config, seeds: int, text_len: int, frames: int):
    """`seeds` random texts [B, T] (ids 3..199) and log-mel voices [B, F, N], one per seed."""
    ids, feats = [], []
    for s in range(seeds):
        rng = np.random.default_rng(1000 + s)
        ids.append(rng.integers(3, min(200, config.text_config.vocab_size - 2), size=text_len))
        feats.append(rng.standard_normal((config.decoder_config.feature_size, frames)).astype(np.float32))
    return np.stack(ids), np.stack(feats)


# ---- AR decoder --------------------------------------------------------------------------------------------------


def greedy(model, params, ids, feats, steps: int, dtype: str) -> np.ndarray:
    """[B, steps] greedy codes (the stop token forbidden before `steps`)."""
    import jax

    from clvp_jax.generation import GenerationOptions, generate

    opts = GenerationOptions(max_new_tokens=steps, min_new_tokens=steps, dtype=dtype)
    out = generate(model, params, ids, feats, rng=jax.random.key(0), options=opts)
    return np.asarray(out.sequences)[:, 1 : 1 + steps]


def teacher_forced(model, params, ids, feats, codes) -> np.ndarray:
    """[B, S, V] float32 logits at the S code slots, the codes given."""
    import jax
    import jax.numpy as jnp

    from clvp_jax.training.losses import decoder_lm_logits, mel_inputs

    dec = model.config.decoder_config
    mel, keep, _ = mel_inputs(jnp.asarray(codes), None, dec.bos_token_id, dec.eos_token_id)
    run = jax.jit(lambda p, f, t, m, k: decoder_lm_logits(model, p, f, t, None, m, k))
    return np.asarray(run(params, jnp.asarray(feats), jnp.asarray(ids), mel, keep))[:, : codes.shape[1]]


def leading_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[B] number of leading positions where rows of a and b agree."""
    differ = a != b
    return np.where(differ.any(axis=1), differ.argmax(axis=1), a.shape[1])


def ar_figures(pair, ids, feats, steps: int) -> dict:
    (m32, p32), (m16, p16) = pair
    g32 = greedy(m32, p32, ids, feats, steps, "float32")
    log("greedy fp32 done")
    g16 = greedy(m16, p16, ids, feats, steps, "bfloat16")
    log("greedy bf16 done")
    same = leading_equal(g32, g16)
    l32 = teacher_forced(m32, p32, ids, feats, g32)
    l16 = teacher_forced(m16, p16, ids, feats, g32)
    log("teacher-forced logits done")
    per_step = np.abs(l16 - l32).max(axis=-1)  # [B, S]
    return dict(
        greedy=(int(same.min()), float(np.median(same)), int(same.max())),
        logit_max=float(per_step.max()),
        logit_median=float(np.median(per_step)),
        logit_std=float(np.median(l32.std(axis=-1))),
        top1=float((l16.argmax(-1) == l32.argmax(-1)).mean()),
    )


# ---- CLVP ranking ------------------------------------------------------------------------------------------------


def clvp_figures(pair, seeds: int, candidates: int, codes: int, text_len: int) -> dict:
    import jax

    (m32, p32), (m16, p16) = pair
    dec = m32.config.decoder_config
    top = min(m32.config.speech_config.vocab_size, dec.eos_token_id, dec.bos_token_id)

    def scorer(model):
        fn = lambda p, t, s: model.apply({"params": p}, t, None, s, method=model.score_candidates)[1]  # noqa: E731
        return jax.jit(lambda p, t, s: fn(p, t, s).logits_per_text[0])

    s32, s16 = scorer(m32), scorer(m16)
    diffs, agree, gaps = [], [], []
    for seed in range(seeds):
        rng = np.random.default_rng(5000 + seed)
        text = rng.integers(3, min(200, m32.config.text_config.vocab_size - 2), size=(1, text_len))
        seqs = np.concatenate(
            [np.full((candidates, 1), dec.bos_token_id), rng.integers(0, top - 1, size=(candidates, codes))], axis=1
        )
        a, b = np.asarray(s32(p32, text, seqs)), np.asarray(s16(p16, text, seqs))
        diffs.append(np.abs(a - b))
        agree.append(a.argmax() == b.argmax())
        gaps.append(np.diff(np.sort(a)[-2:])[0])
    diffs = np.concatenate(diffs)
    return dict(
        score_max=float(diffs.max()),
        score_median=float(np.median(diffs)),
        best=float(np.mean(agree)),
        gap=float(np.median(gaps)),
    )


# ---- waveform stage ----------------------------------------------------------------------------------------------


def snr_db(ref: np.ndarray, x: np.ndarray) -> float:
    ref, x = np.asarray(ref, np.float64), np.asarray(x, np.float64)
    noise = np.mean((x - ref) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.var(ref) / noise))


def waveform_figures(size: str, codes: int, seeds: int, preset: str) -> dict:
    import jax
    import jax.numpy as jnp
    from bench_waveform import DIFFUSION_KWARGS, VOCODER_KWARGS, _load_npz, prepare

    from clvp_jax.checkpoint.tortoise_diffusion import params_from_original
    from clvp_jax.checkpoint.tortoise_vocoder import state_dict_to_params
    from clvp_jax.speech import render_waveform
    from clvp_jax.waveform.bundle import WaveformModels
    from clvp_jax.waveform.diffusion import DiffusionTts
    from clvp_jax.waveform.diffusion_config import DiffusionConfig
    from clvp_jax.waveform.sampler import SamplerConfig
    from clvp_jax.waveform.univnet import UnivNetConfig, vocode

    if "einops" not in sys.modules:  # the original's xtransformers imports it; building the models never calls it
        import importlib.util
        import types

        if importlib.util.find_spec("einops") is None:
            sys.modules["einops"] = types.SimpleNamespace(rearrange=None, repeat=None)
    with tempfile.TemporaryDirectory(prefix="bf16_quality_wave_") as folder:
        prepare(size, folder)
        dcfg = DiffusionConfig.from_original_kwargs(DIFFUSION_KWARGS[size])
        variables = params_from_original(_load_npz(f"{folder}/diffusion.npz"), dcfg)[1]
        vcfg = UnivNetConfig.from_original(VOCODER_KWARGS[size])
        vparams = state_dict_to_params(_load_npz(f"{folder}/vocoder.npz"), vcfg)
        inputs = _load_npz(f"{folder}/inputs.npz")
    latents, cond = inputs["latents"][:, :codes], inputs["cond_latent"]
    models = {
        dt: WaveformModels(DiffusionTts(dcfg, dtype=dt), variables, vcfg, vparams) for dt in (jnp.float32, jnp.bfloat16)
    }
    sampler = SamplerConfig.tortoise(preset)
    mel_snr, voc_snr, e2e_snr = [], [], []
    for seed in range(seeds):
        key = jax.random.key(seed)
        mel32, wav32 = render_waveform(models[jnp.float32], latents, cond, sampler=sampler, key=key)
        mel16, _ = render_waveform(models[jnp.bfloat16], latents, cond, sampler=sampler, key=key)
        vkey = jax.random.fold_in(key, 1)  # render_waveform's vocoder key
        voc16 = vocode(vparams, mel32, config=vcfg, key=vkey, dtype=jnp.bfloat16)
        both16 = vocode(vparams, mel16, config=vcfg, key=vkey, dtype=jnp.bfloat16)
        mel_snr.append(snr_db(mel32, mel16))
        voc_snr.append(snr_db(wav32, voc16))
        e2e_snr.append(snr_db(wav32, both16))
    return dict(mel=min(mel_snr), vocoder=min(voc_snr), e2e=min(e2e_snr), frames=int(mel32.shape[-1]))


# ---- anchor: the reference under torch autocast ------------------------------------------------------------------


def anchor_figures(hf, pair, codes: np.ndarray) -> dict:
    """Decoder alone on [start, codes]: max |d logit| and top-1 agreement of ours (bf16) and torch autocast."""
    import torch

    (m32, p32), (m16, p16) = pair
    start = m32.config.decoder_config.bos_token_id
    ids = np.concatenate([np.full((codes.shape[0], 1), start), codes], axis=1)

    def ours(model, params):
        run = lambda m, i: m.speech_decoder_model(input_ids=i).logits  # noqa: E731
        return np.asarray(model.apply({"params": params}, ids, method=run), np.float32)

    def torch_logits(dtype):
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            return hf.speech_decoder_model(input_ids=torch.from_numpy(ids)).logits.float().numpy()

    def compare(ref, x):
        return float(np.abs(x - ref).max(axis=-1).max()), float((x.argmax(-1) == ref.argmax(-1)).mean())

    j32, t32 = ours(m32, p32), torch_logits(None)
    return dict(
        ours_bf16=compare(j32, ours(m16, p16)),
        torch_bf16=compare(t32, torch_logits(torch.bfloat16)),
        torch_fp16=compare(t32, torch_logits(torch.float16)),
        fp32_vs_torch=float(np.abs(j32 - t32).max()),
    )


# ---- the report --------------------------------------------------------------------------------------------------


def machine_line() -> str:
    import jax

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{time.strftime('%Y-%m-%d %H:%M')}, {cpu}, jax {jax.__version__} on {jax.default_backend()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("tiny", "real"), default="tiny")
    ap.add_argument("--steps", type=int, default=500, help="greedy / teacher-forced steps per prompt")
    ap.add_argument("--seeds", type=int, default=8, help="prompts for the AR figures")
    ap.add_argument("--clvp-seeds", type=int, default=50)
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--clvp-codes", type=int, default=64, help="codes per CLVP candidate")
    ap.add_argument("--wave-codes", type=int, default=32, help="AR latent frames fed to the diffusion decoder")
    ap.add_argument("--wave-seeds", type=int, default=2)
    ap.add_argument("--sampler", default="ultra_fast", help="Tortoise preset of the diffusion sampler")
    ap.add_argument("--no-anchor", action="store_true", help="skip the torch autocast anchor")
    ap.add_argument("--no-waveform", action="store_true", help="skip the waveform stage")
    a = ap.parse_args()
    text_len, frames = (32, 517) if a.size == "real" else (8, 24)
    print(f"bf16 quality, size={a.size}, steps={a.steps}, prompts={a.seeds} ({machine_line()})\n")
    rows = []
    for name, hf in hf_models(a.size, a.steps):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="bf16_quality_") as folder:
            hf.save_pretrained(folder)
            if a.no_anchor:
                hf = None  # real size: 2.8 GB of torch weights not held while both JAX copies are live
            pair = load_pair(folder)
        cfg = pair[0][0].config
        text_len = min(text_len, cfg.decoder_config.max_text_tokens - 3)
        ids, feats = prompts(cfg, a.seeds, text_len, frames)
        ar = ar_figures(pair, ids, feats, a.steps)
        clvp = clvp_figures(pair, a.clvp_seeds, a.candidates, a.clvp_codes, text_len)
        log(f"{name}: AR {ar}; CLVP {clvp}")
        anchor = None
        if not a.no_anchor:
            codes = np.random.default_rng(7).integers(0, cfg.decoder_config.eos_token_id - 1, (2, a.steps))
            anchor = anchor_figures(hf, pair, codes)
        rows.append((name, ar, clvp, anchor))
        del hf, pair
        print(f"  ({name}: {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    print(f"AR: {a.seeds} prompts x {a.steps} steps; CLVP: {a.clvp_seeds} seeds x {a.candidates} candidates")
    print(
        f"| config | greedy identical (min / median / max of {a.steps}) | logits max abs diff (max / median) | "
        "fp32 logit std | top-1 agree | CLVP score diff (max / median) | CLVP best agree | fp32 best-2nd gap |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, ar, clvp, _ in rows:
        g = ar["greedy"]
        print(
            f"| {name} | {g[0]} / {g[1]:g} / {g[2]} | {ar['logit_max']:.3g} / {ar['logit_median']:.3g} | "
            f"{ar['logit_std']:.3g} | {100 * ar['top1']:.2f}% | {clvp['score_max']:.3g} / {clvp['score_median']:.3g} "
            f"| {100 * clvp['best']:.0f}% | {clvp['gap']:.3g} |"
        )
    if not a.no_anchor:
        print(f"\nAnchor: decoder alone on [start, {a.steps} random codes] x 2, max |d logit| / top-1 agreement")
        print(
            "| config | clvp-jax bf16 vs fp32 | torch autocast bf16 vs fp32 | torch autocast fp16 vs fp32 |"
            " fp32 ours vs torch |"
        )
        print("|---|---|---|---|---|")
        for name, _, _, an in rows:
            cells = " | ".join(
                f"{an[k][0]:.3g} / {100 * an[k][1]:.2f}%" for k in ("ours_bf16", "torch_bf16", "torch_fp16")
            )
            print(f"| {name} | {cells} | {an['fp32_vs_torch']:.2g} |")
    if not a.no_waveform:
        log("waveform stage")
        w = waveform_figures(a.size, a.wave_codes, a.wave_seeds, a.sampler)
        print(
            f"\nWaveform ({a.sampler}, {a.wave_codes} codes -> {w['frames']} frames, worst of {a.wave_seeds} seeds), "
            "SNR against fp32:\n| diffusion mel (bf16 decoder) | waveform (bf16 vocoder, fp32 mel) | waveform (both bf16) |"
            f"\n|---|---|---|\n| {w['mel']:.1f} dB | {w['vocoder']:.1f} dB | {w['e2e']:.1f} dB |"
        )


if __name__ == "__main__":
    main()
