"""End-to-end speed of Tortoise's `ultra_fast` preset: text + voice latents -> 24 kHz wav, original vs clvp-jax.

Usage: .venv/bin/python benchmarks/bench_tts.py [--size real|tiny] [--codes 64] [--runs 1] [--pad codes|500]
           [--original-cache restored|as-is] [--check-cache]
       (--size tiny: a smoke check of the whole path, about 1 minute, 2 with --check-cache; its times mean nothing)

What runs, like for like: the original's `TextToSpeech.tts_with_preset(text, preset="ultra_fast",
conditioning_latents=...)` (tortoise-tts 3.0.0: 16 AR candidates in one batch of 16, CLVP ranking, the best
candidate's AR latents, 30 DDPM steps without guidance, UnivNet) against clvp-jax's `tts_with_preset` path (the
same calls that `speech.speak` makes), on the same work:
- every candidate of both sides has exactly `--codes` codes: the stop token is forbidden before them (the
  original: `min_new_tokens=codes`, which api.tts passes through its **hf_generate_kwargs to transformers'
  `generate`; clvp-jax: the plan's `GenerationOptions.min_new_tokens = max_new_tokens = codes`);
- `--pad codes` (default): nothing is padded. The original runs with max_mel_tokens = codes (its codes are then
  not padded before CLVP and the latents pass, and with no stop token nothing is trimmed); ours with
  pad_to_max_mel_tokens None and the plan's latent length = codes. Both render `codes` latent frames,
  L = codes * 4 * 24000 // 22050 mel frames (64 -> 278). `--pad 500`: api.tts's defaults instead (max_mel_tokens
  500 and `max_new_tokens=codes`; ours as tts_with_preset plans it): both pad the codes with the stop token to 500
  before CLVP and the latents pass, fix them (calm codes) and keep the 8 calm codes after the forced ones
  (64 -> 72 latent -> 313 mel frames).
Each side prints what it computed (codes per candidate and how many stopped early, the codes CLVP scored, the
latents' shape, latent -> mel frames, samples), from wrappers around the functions it calls (`tts_stages.py`).

Per stage: those wrappers also time each stage of each call (wall, in its process; clvp-jax's until the result
is ready): the original's AR candidates (`inference_speech`), CLVP (`clvp.forward`), the AR latents pass
(`autoregressive.forward`), diffusion (api.py's `do_spectrogram_diffusion`) and vocoder (`vocoder.inference`);
clvp-jax's AR candidates + CLVP ranking (`pipeline.rank_group`: one compiled program), the latents pass
(`ar_latents`), diffusion (`render_waveform` minus its vocoder) and vocoder (`vocode`). "other" is the rest.

The original's KV cache: its `post_init_gpt2_config(kv_cache=True)` (as Tortoise's do_tts.py / read.py default)
is not used under transformers 5 (which passes the cache as `cache=`, a name its GPT2InferenceModel does not read,
so every step re-runs the whole sequence); `tts_reference.restore_kv_cache` gives it back as transformers 4.31
(its pinned version) did (`--original-cache restored`, the default; `as-is` measures it without). The report
counts GPT2InferenceModel.forward calls and their input widths (with the cache: the prefix once, then one token
per step); `--check-cache` first draws one batch of candidates both ways from one seed and compares them.

Models: the original classes built with api.py's constructor arguments (`--size real`; `--size tiny`: 2-layer,
64-wide AR and CLVP, the tiny diffusion and vocoder widths of bench_waveform.py; every size is waveform_common.py's)
under torch's seeded default init, with `waveform_reference.seeded_state` drawing the matrices the original
zero-initialises, written as a Tortoise models folder (`tts_reference.prepare`: autoregressive.pth, clvp2.pth,
diffusion_decoder.pth, vocoder.pth in its weight-norm `model_g` form, original_config.json). The reference process
builds `TextToSpeech` without its `__init__` (which would download the real weights and hard-codes the real
sizes): the same attributes `__init__` sets, the models loaded from that folder as `__init__` loads them (KV cache
on; redaction off: it needs a wav2vec2 download; batch 16); the stand-ins and shims tortoise-tts 3.0.0 needs under
this venv are `tts_reference.tortoise_shim`'s. clvp-jax reads the same folder (`clvp_jax.TextToSpeech(folder)`,
converted on the fly, load time printed). Voice latents: the same random AR latent [1, D] and diffusion latent
[1, 2C] on both sides.

Each side runs in its own process (torch and XLA threads would fight; each side gets its own peak memory,
VmHWM). The first call of each side is a warm-up (clvp-jax: it traces and compiles every program of the path,
no persistent cache; its time minus the best steady call is printed as the compile time); figures are the best
of `--runs` calls after it, same seed each call. The machine line (CPU model, matrix features, load, fp32 matmul
GFLOP/s) comes from bench_waveform.py's `machine()`; torchaudio is shimmed as there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_waveform import machine  # noqa: E402  (this folder's shared helpers)
from tts_reference import check_cache, original_tts, prepare, restore_kv_cache  # noqa: E402
from tts_stages import STAGES, StageClock, exclusive, instrument_jax, instrument_original  # noqa: E402
from waveform_common import peak_gib  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs away."
PRESET = "ultra_fast"
SEED = 0
CANDIDATES = 16  # ultra_fast's AR candidates: the original samples them as one batch of 16
TORTOISE_PAD = 500  # api.tts's default max_mel_tokens: codes are padded to it before CLVP and the latents pass


def _timed(call: Callable[[], object], runs: int, clock: StageClock, reset: Callable[[], None]) -> dict:
    """One warm-up call, then `runs` calls: wall times and per-stage times of the first and of the best call."""
    out = {}
    for i in range(1 + runs):
        clock.reset()
        reset()
        t0 = time.perf_counter()
        result = call()
        seconds = time.perf_counter() - t0
        if i == 0:
            out |= dict(first_s=seconds, first_stages=clock.snapshot(), result=result)
        elif "best_s" not in out or seconds < out["best_s"]:
            out |= dict(best_s=seconds, stages=clock.snapshot(), result=result)
    return out


def run_reference(size: str, codes: int, runs: int, folder: str, pad: str, cache: str, check: bool) -> dict:
    """The original's `tts_with_preset`, every candidate forced to `codes` codes (HF `generate`'s min_new_tokens,
    passed through api.tts's **hf_generate_kwargs; with `pad` "500" also max_new_tokens, as max_mel_tokens is
    then api.tts's 500, to which the codes are padded)."""
    import numpy as np
    import torch

    t0 = time.perf_counter()
    tts = original_tts(size, os.path.join(folder, "models"), batch=CANDIDATES)
    load_s = time.perf_counter() - t0
    with np.load(os.path.join(folder, "voice.npz")) as v:
        latents = (torch.from_numpy(v["auto"]), torch.from_numpy(v["diffusion"]))
    clock = StageClock()
    log = instrument_original(tts, clock)
    checked = check_cache(tts, latents[0], TEXT, codes=codes, seed=SEED, log=log) if check else None
    if cache == "restored" and not check:  # (check_cache leaves it restored)
        restore_kv_cache()
    forced = dict(min_new_tokens=codes) | (dict(max_new_tokens=codes) if pad == "500" else {})

    def call():
        return tts.tts_with_preset(
            TEXT,
            preset=PRESET,
            conditioning_latents=latents,
            use_deterministic_seed=SEED,
            max_mel_tokens=codes if pad == "codes" else TORTOISE_PAD,
            verbose=False,
            **forced,
        )

    timed = _timed(call, runs, clock, log.reset)
    wav = timed.pop("result").numpy().reshape(-1)
    np.save(os.path.join(folder, "wav_reference.npy"), wav)
    return timed | dict(
        load_s=load_s,
        samples=int(wav.size),
        forward=log.summary(),
        cache=cache,
        cache_check=checked,
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        peak_gib=peak_gib(),
    )


def _speak_forced(tts, voice, codes: int, pad: str):
    """clvp-jax's `TextToSpeech.tts_with_preset(TEXT, voice=voice, preset=PRESET, seed=SEED, max_new_tokens=codes)`
    step by step (`speech.speak`: plan_speech, speak_chunks, SpeechResult), the plan's generation options with
    min_new_tokens = codes (no stop token before `codes` codes). With `pad` "codes" nothing is padded, as the
    original with max_mel_tokens = codes: CLVP scores the codes as drawn (pad_to_max_mel_tokens None) and the
    latents pass reads `codes` codes (plan length = codes: no calm tail to keep). With "500" the plan is left as
    tts_with_preset makes it (CLVP on codes padded to 500, latents of 500 padded codes, the 8 calm codes after the
    forced ones kept)."""
    from clvp_jax.generation.options import SamplingOverrides
    from clvp_jax.speech import SpeechResult, plan_speech, speak_chunks, speech_settings

    settings = speech_settings(
        preset=PRESET, seed=SEED, max_new_tokens=codes, dtype=tts.dtype, sampling=SamplingOverrides()
    )
    wm = tts.waveform_models()
    plan = plan_speech(
        text=TEXT, model=tts.model, params=tts.params, waveform_models=wm, voice=voice, settings=settings
    )
    options = plan.ranking.options.replace(min_new_tokens=codes)
    if pad == "codes":
        options = options.replace(pad_to_max_mel_tokens=None)
        plan = dataclasses.replace(plan, length=codes)
    plan = dataclasses.replace(plan, ranking=dataclasses.replace(plan.ranking, options=options))
    chunks = speak_chunks(plan, model=tts.model, params=tts.params, waveform_models=wm)
    return SpeechResult([chunk for _, chunk in chunks], plan.settings, wm.random_weights)


def run_jax(size: str, codes: int, runs: int, folder: str, pad: str) -> dict:
    import jax
    import numpy as np

    from clvp_jax.speech import Voice
    from clvp_jax.tts import TextToSpeech

    t0 = time.perf_counter()
    tts = TextToSpeech(os.path.join(folder, "models"))
    tts.waveform_models()
    load_s = time.perf_counter() - t0
    with np.load(os.path.join(folder, "voice.npz")) as v:
        voice = Voice(v["auto"].reshape(-1), v["diffusion"].reshape(-1))
    clock = StageClock()
    instrument_jax(clock)
    timed = _timed(lambda: _speak_forced(tts, voice, codes, pad), runs, clock, lambda: None)
    result = timed.pop("result")  # the first call traced and compiled every program of the path
    wav = np.asarray(result.waveform).reshape(-1)
    np.save(os.path.join(folder, "wav_jax.npy"), wav)
    best = result.chunks[0].outputs[0]
    timed["stages"] = exclusive(timed["stages"])
    timed["first_stages"] = exclusive(timed["first_stages"])
    return timed | dict(
        load_s=load_s,
        samples=int(wav.size),
        codes=len(best.candidate.codes),
        frames=best.frames,
        jax=jax.__version__,
        backend=jax.default_backend(),
        peak_gib=peak_gib(),
    )


def _side(which: str, a: argparse.Namespace, folder: str) -> dict:
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # compile times are real compilations, never disk-cache hits
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), root]))
    args = ["--size", a.size, "--codes", str(a.codes), "--runs", str(a.runs), "--pad", a.pad]
    args += ["--original-cache", a.original_cache, *(["--check-cache"] if a.check_cache else [])]
    args += ["--side", which, "--folder", folder]
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *args], env=env, capture_output=True, text=True, cwd=root
    )
    if proc.returncode:
        raise RuntimeError(f"{which} side failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _stage_rows(ref: dict, ours: dict) -> list[str]:
    """The per-stage table: seconds (calls) of each side's first and best call; clvp-jax's AR candidates and CLVP
    ranking are one compiled program, so the original's two are compared with their sum."""
    joint = "AR candidates + CLVP ranking"

    def cell(stages: dict, stage: str) -> str:
        s = stages.get(stage)
        return "-" if s is None else f"{s['s']:.2f} s ({s['calls']})"

    rows = []
    for stage in (*STAGES, "other (untimed)", "total"):
        r_first, r_best = ref["first_stages"], ref["stages"]
        o_first, o_best = ours["first_stages"], ours["stages"]
        if stage == "AR candidates":
            o_cells = [cell(o_first, joint) + " (+ CLVP)", cell(o_best, joint) + " (+ CLVP)"]
            r_s = sum(r_best.get(k, {"s": 0.0})["s"] for k in ("AR candidates", "CLVP ranking"))
            ratio = f"{r_s / o_best[joint]['s']:.1f}x (AR + CLVP)" if joint in o_best else "-"
        elif stage == "CLVP ranking":
            o_cells, ratio = ["(in AR)", "(in AR)"], ""
        elif stage in ("other (untimed)", "total"):
            r_cells, o_cells, vals = [], [], []
            for stages, total, cells in (
                (r_first, ref["first_s"], r_cells),
                (r_best, ref["best_s"], r_cells),
                (o_first, ours["first_s"], o_cells),
                (o_best, ours["best_s"], o_cells),
            ):
                v = total if stage == "total" else total - sum(s["s"] for s in stages.values())
                cells.append(f"{v:.2f} s")
                vals.append(v)
            ratio = f"{vals[1] / vals[3]:.1f}x" if stage == "total" else ""
            rows.append(f"| {stage} | {' | '.join(r_cells)} | {' | '.join(o_cells)} | {ratio} |")
            continue
        else:
            o_cells = [cell(o_first, stage), cell(o_best, stage)]
            ratio = f"{r_best[stage]['s'] / o_best[stage]['s']:.1f}x" if stage in r_best and stage in o_best else "-"
        rows.append(f"| {stage} | {cell(r_first, stage)} | {cell(r_best, stage)} | {' | '.join(o_cells)} | {ratio} |")
    return rows


def _work(ref: dict, ours: dict) -> list[str]:
    """What each side computed (the notes of its best call): codes per candidate, latent and mel frames, samples."""
    r, o = ref["stages"], ours["stages"]
    ar, ranked = r["AR candidates"]["note"], o["AR candidates + CLVP ranking"]["note"]
    fwd = ref["forward"]
    lines = [
        f"original: candidates {ar['shape']} (codes per candidate {ar['codes_min']}..{ar['codes_max']}, "
        f"{ar['stopped']} stopped early), CLVP on {r['CLVP ranking']['note']['speech_codes']} codes, latents "
        f"{r['AR latents pass']['note']['latents']}, diffusion {r['diffusion']['note']['latent_frames']} latent "
        f"-> {r['diffusion']['note']['mel_frames']} mel frames, vocoder {r['vocoder']['note']['samples']} samples",
        f"clvp-jax: {ranked['candidates']} candidates (codes per candidate {ranked['codes_min']}..{ranked['codes_max']},"
        f" {ranked['stopped']} stopped early), latents {o['AR latents pass']['note']['latents']}, diffusion "
        f"{o['diffusion']['note']['latent_frames']} latent -> {o['diffusion']['note']['mel_frames']} mel frames, "
        f"vocoder {o['vocoder']['note']['samples']} samples",
        f"original's KV cache ({ref['cache']}): GPT2InferenceModel.forward {fwd['calls']} calls per call, the first "
        f"{fwd['first_width']} tokens wide, the later {fwd['later_widths'][0]}..{fwd['later_widths'][1]}; "
        f"{fwd['calls_with_cache']} got a filled cache",
    ]
    check = ref.get("cache_check")
    if check:
        runs = [
            f"{name}: {c['s']:.2f} s, codes {c['shape']}, {c['forward']['calls']} forward calls of width "
            f"{c['forward']['first_width']} then {c['forward']['later_widths'][0]}..{c['forward']['later_widths'][1]}"
            f" ({c['forward']['calls_with_cache']} with a filled cache), codes equal to restored's: "
            f"{c['agree']:.1%} (first codes {c['first_agree']:.0%})"
            for name, c in check.items()
        ]
        lines.append("cache check (one batch of AR candidates, one seed):\n  " + "\n  ".join(runs))
    return lines


def report(a: argparse.Namespace, mach: dict, ref: dict, ours: dict) -> None:
    load = ", ".join(f"{x:.2f}" for x in mach["load"])
    print(
        f"size={a.size} preset={PRESET} ({CANDIDATES} candidates x {a.codes} codes forced, 30 DDPM steps, pad={a.pad},"
        f" original cache {a.original_cache}) runs={a.runs} | {time.strftime('%Y-%m-%d %H:%M %Z')} | {mach['cpu']}, "
        f"{mach['cores']} cores, matrix features: {' '.join(mach['matrix_flags']) or 'none'} | load average {load} "
        f"(at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}) | fp32 2048^2 matmul: JAX "
        f"{mach['jax_gflops']:.0f}, numpy {mach['numpy_gflops']:.0f} GFLOP/s | torch {ref['torch']} threads "
        f"{ref['torch_threads']}, jax {ours['jax']} ({ours['backend']})"
    )
    ratio = ref["best_s"] / ours["best_s"]
    print("| side | load | first call | steady (best) | compile | peak VmHWM | output |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| original tts_with_preset | {ref['load_s']:.1f} s | {ref['first_s']:.2f} s | {ref['best_s']:.2f} s | - | "
        f"{ref['peak_gib']:.3f} GiB | {ref['samples']} samples |"
    )
    print(
        f"| clvp-jax tts_with_preset | {ours['load_s']:.1f} s | {ours['first_s']:.2f} s | {ours['best_s']:.2f} s | "
        f"{ours['first_s'] - ours['best_s']:.1f} s | {ours['peak_gib']:.3f} GiB | {ours['samples']} samples "
        f"(best: {ours['codes']} codes, {ours['frames']} latent frames kept) |"
    )
    print(
        f"ratio (original / clvp-jax, steady): **{ratio:.2f}x** (target >= 2x); peak memory clvp-jax / original: "
        f"{ours['peak_gib'] / ref['peak_gib']:.2f} (target <= 1)"
    )
    print("\nPer stage, seconds (calls) of the first call and of the best steady call:\n")
    print("| stage | original first | original steady | clvp-jax first | clvp-jax steady | ratio (steady) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(_stage_rows(ref, ours)))
    print("\n" + "\n".join(_work(ref, ours)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("real", "tiny"), default="real")
    ap.add_argument("--codes", type=int, help="AR codes of every candidate, forced (default: real 64, tiny 16)")
    ap.add_argument("--runs", type=int, default=1, help="timed calls per side (best of), after one warm-up call")
    ap.add_argument(
        "--pad",
        choices=("codes", "500"),
        default="codes",
        help="codes: nothing padded, codes latent frames rendered (64 -> L = 278); 500: api.tts's default padding "
        "to 500 codes before CLVP and the latents pass, codes + 8 calm frames rendered (64 -> 72 -> L = 313)",
    )
    ap.add_argument(
        "--original-cache",
        choices=("restored", "as-is"),
        default="restored",
        help="the original's KV cache: restored as under its transformers 4.31 (default), or as transformers 5 "
        "leaves it (unused: every step re-runs the whole sequence)",
    )
    ap.add_argument(
        "--check-cache",
        action="store_true",
        help="first draw the original's AR candidates once as-is and once restored (same seed): costs, forward "
        "widths, same codes?",
    )
    ap.add_argument("--side", choices=["both", "prepare", "reference", "jax"], default="both", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.codes is None:
        a.codes = 64 if a.size == "real" else 16
    if a.runs < 1 or not 2 <= a.codes <= TORTOISE_PAD - 9:
        ap.error(f"--runs must be >= 1 and --codes in [2, {TORTOISE_PAD - 9}], got {a.runs} and {a.codes}")
    if a.check_cache and a.original_cache == "as-is":
        ap.error("--check-cache leaves the original's cache restored: use it with --original-cache restored")
    if a.side != "both":
        run = dict(
            prepare=lambda: prepare(a.size, a.folder),
            reference=lambda: run_reference(a.size, a.codes, a.runs, a.folder, a.pad, a.original_cache, a.check_cache),
            jax=lambda: run_jax(a.size, a.codes, a.runs, a.folder, a.pad),
        )
        print(json.dumps(run[a.side]()))
        return
    mach = machine()
    with tempfile.TemporaryDirectory(prefix="bench_tts_") as folder:
        _side("prepare", a, folder)
        ref = _side("reference", a, folder)
        ours = _side("jax", a, folder)
    report(a, mach, ref, ours)


if __name__ == "__main__":
    main()
