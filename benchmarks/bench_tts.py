"""End-to-end speed of Tortoise's `ultra_fast` preset: text + voice latents -> 24 kHz wav, original vs clvp-jax.

Usage: .venv/bin/python benchmarks/bench_tts.py [--size real|tiny] [--codes 64] [--runs 1]
       (--size tiny: a smoke check of the whole path, < 1 minute; its times mean nothing)

What runs: the original's `TextToSpeech.tts_with_preset(text, preset="ultra_fast", conditioning_latents=...)`
(tortoise-tts 3.0.0: 16 AR candidates in one batch of 16, CLVP ranking, the best candidate's AR latents, 30
DDPM steps without guidance, UnivNet) against clvp-jax's `TextToSpeech.tts_with_preset(text, voice=Voice(...),
preset="ultra_fast")`, the same work: every candidate runs to `--codes` AR codes (random weights almost never
emit the stop token; the codes of the chosen candidate and its mel frames are printed for both sides).

Models: the original classes built with api.py's constructor arguments (`--size real`; `--size tiny`: 2-layer,
64-wide AR and CLVP, the tiny diffusion and vocoder widths of bench_waveform.py; every size is waveform_common.py's)
under torch's seeded default init, with `waveform_reference.seeded_state` drawing the matrices the original
zero-initialises, written as a Tortoise models folder (autoregressive.pth, clvp2.pth, diffusion_decoder.pth,
vocoder.pth in its weight-norm `model_g` form, original_config.json). The reference process builds `TextToSpeech`
without its `__init__` (which would download the real weights from the Hub and hard-codes the real sizes): the same
attributes `__init__` sets, the models loaded from that folder as `__init__` loads them
(`post_init_gpt2_config(kv_cache=True)`: the KV cache on, as Tortoise's do_tts.py / read.py default; redaction off:
it needs a wav2vec2 download; batch 16). clvp-jax reads the same folder (`clvp_jax.TextToSpeech(folder)`, converted
on the fly, load time printed).
Voice latents: the same random AR latent [1, D] and diffusion latent [1, 2C] on both sides.

Each side runs in its own process (torch and XLA threads would fight; each side gets its own peak memory,
VmHWM). The first call of each side is a warm-up (clvp-jax: it traces and compiles every program of the path,
no persistent cache; its time minus the best steady call is printed as the compile time); figures are the best
of `--runs` calls after it, same seed each call. The machine line (CPU model, matrix features, load, fp32 matmul
GFLOP/s) comes from bench_waveform.py's `machine()`; torchaudio is shimmed as there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import waveform_common as common  # noqa: E402
from bench_waveform import machine  # noqa: E402  (this folder's shared helpers)
from waveform_common import AR_KWARGS, CLVP_KWARGS, DIFFUSION_KWARGS, VOCODER_KWARGS, peak_gib  # noqa: E402
from waveform_reference import seeded_state, shim  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs away."
PRESET = "ultra_fast"
SEED = 0
CANDIDATES = 16  # ultra_fast's AR candidates: the original samples them as one batch of 16


def _stand_in(name: str, why: str, names: tuple[str, ...] = ()) -> None:
    """Puts a module `name` into sys.modules, unless the real one imports: `names` (what the original imports from
    it) are functions that raise, every other attribute raises on access."""
    try:
        __import__(name)
    except ImportError:
        module = types.ModuleType(name)

        def missing(attr: str):
            raise AttributeError(f"{name}.{attr}: a stand-in of this benchmark ({why}); install {name} to use it")

        def unusable(*args, **kwargs):
            raise RuntimeError(f"{name}: a stand-in of this benchmark ({why}); install {name} to use it")

        module.__getattr__ = missing
        for attr in names:
            setattr(module, attr, unusable)
        sys.modules[name] = module


def _shim() -> None:
    """What tortoise-tts 3.0.0 needs to import and run with this venv's transformers 5:
    - bench_waveform's torchaudio stand-in, installed after transformers has looked for torchaudio (it calls
      find_spec on it, which a module without a spec breaks): transformers then knows torchaudio is absent;
    - `transformers.utils.model_parallel_utils` (removed in transformers 5; the original imports two helpers
      that only its unused `parallelize` calls): a stand-in whose helpers fail loudly if called;
    - `transformers.LogitsWarper` (merged into `LogitsProcessor` in transformers 5; the original subclasses it
      for typical sampling, which tts leaves off): an alias of `LogitsProcessor`;
    - `einops` (the bench extra's, when it is not installed): waveform_reference's stand-in, torch's own
      `functorch.einops.rearrange`; `repeat` is used only by parts these models leave off (memory tokens, a ViT).
    - `rotary_embedding_torch` (imported by tortoise.models.transformer, whose Transformer CLVP uses only with
      use_xformers=False; api.py builds it with True) and `progressbar` (api.py's download progress): stand-ins
      whose names fail loudly if used.
    `_patch_generation` adds what its GPT-2 inference model needs once imported."""
    import transformers.utils
    import transformers.utils.import_utils  # noqa: F401

    shim()  # torchaudio (and einops, if missing) stand-ins
    name = "transformers.utils.model_parallel_utils"
    if name not in sys.modules:
        module = types.ModuleType(name)

        def unavailable(*args, **kwargs):
            raise RuntimeError(f"{name} is a stand-in of this benchmark: model parallelism is not available")

        module.get_device_map = module.assert_device_map = unavailable
        sys.modules[name] = module
        transformers.utils.model_parallel_utils = module
    # (importing GPT-2 first: that import replaces the lazy `transformers` module in sys.modules)
    from transformers import GPT2PreTrainedModel, LogitsProcessor  # noqa: F401

    top = sys.modules["transformers"]
    if "LogitsWarper" not in vars(top):
        try:
            from transformers import LogitsWarper  # noqa: F401
        except ImportError:
            top.LogitsWarper = LogitsProcessor
    _stand_in(
        "rotary_embedding_torch",
        "CLVP runs with use_xformers=True, as api.py builds it",
        ("RotaryEmbedding", "broadcat"),
    )
    _stand_in("progressbar", "only api.py's model download uses it")


def _patch_generation() -> None:
    """transformers >= 4.50 no longer gives every PreTrainedModel `generate`: the original's GPT2InferenceModel
    (written for 4.x, where it had it) gets `GenerationMixin` back as a base, nothing else changed."""
    from tortoise.models.autoregressive import GPT2InferenceModel
    from transformers import GenerationMixin

    if not issubclass(GPT2InferenceModel, GenerationMixin):
        GPT2InferenceModel.__bases__ = (*GPT2InferenceModel.__bases__, GenerationMixin)


def _diffusion_kwargs(size: str) -> dict:
    # the diffusion decoder reads AR latents of the AR model's width
    return DIFFUSION_KWARGS[size] | {"in_latent_channels": AR_KWARGS[size]["model_dim"]}


def prepare(size: str, folder: str) -> dict:
    """Writes the Tortoise models folder (random weights, original formats) and the voice latents."""
    import numpy as np
    import torch

    _shim()
    from tortoise.models.autoregressive import UnifiedVoice
    from tortoise.models.clvp import CLVP
    from tortoise.models.diffusion_decoder import DiffusionTts
    from tortoise.models.vocoder import UnivNetGenerator

    models = os.path.join(folder, "models")
    os.makedirs(models)
    builds = {
        "autoregressive.pth": (lambda: UnifiedVoice(**AR_KWARGS[size]), 0),
        "clvp2.pth": (lambda: CLVP(**CLVP_KWARGS[size]), 1),
        "diffusion_decoder.pth": (lambda: DiffusionTts(**_diffusion_kwargs(size)), 2),
        "vocoder.pth": (lambda: UnivNetGenerator(**VOCODER_KWARGS[size]), 3),
    }
    for name, (build, seed) in builds.items():
        state = {k: torch.from_numpy(v) for k, v in seeded_state(build, seed).items()}
        torch.save({"model_g": state} if name == "vocoder.pth" else state, os.path.join(models, name))
        del state
    config = {
        "autoregressive": AR_KWARGS[size],
        "clvp": CLVP_KWARGS[size],
        "diffusion": _diffusion_kwargs(size),
        "vocoder": VOCODER_KWARGS[size],
    }
    with open(os.path.join(models, "original_config.json"), "w") as f:
        json.dump(config, f, indent=1)
    rng = np.random.default_rng(0)
    np.savez(
        os.path.join(folder, "voice.npz"),
        auto=(0.1 * rng.standard_normal((1, AR_KWARGS[size]["model_dim"]))).astype(np.float32),
        diffusion=(0.1 * rng.standard_normal((1, 2 * DIFFUSION_KWARGS[size]["model_channels"]))).astype(np.float32),
    )
    return {}


def _original_tts(size: str, models: str):
    """tortoise.api.TextToSpeech with the attributes its __init__ sets, models loaded from `models` as it loads
    them (its __init__ itself downloads the real weights and hard-codes the real sizes)."""
    import torch

    _shim()
    from tortoise.api import TextToSpeech
    from tortoise.models.autoregressive import UnifiedVoice
    from tortoise.models.clvp import CLVP
    from tortoise.models.diffusion_decoder import DiffusionTts
    from tortoise.models.vocoder import UnivNetGenerator
    from tortoise.utils.tokenizer import VoiceBpeTokenizer

    _patch_generation()

    load = lambda name: torch.load(os.path.join(models, name), weights_only=True)  # noqa: E731
    tts = TextToSpeech.__new__(TextToSpeech)
    tts.models_dir = models
    tts.autoregressive_batch_size = CANDIDATES
    tts.enable_redaction = False
    tts.device = torch.device("cpu")
    tts.tokenizer = VoiceBpeTokenizer()
    tts.half = False
    tts.autoregressive = UnifiedVoice(**AR_KWARGS[size]).cpu().eval()
    tts.autoregressive.load_state_dict(load("autoregressive.pth"), strict=False)
    tts.autoregressive.post_init_gpt2_config(use_deepspeed=False, kv_cache=True, half=False)
    tts.diffusion = DiffusionTts(**_diffusion_kwargs(size)).cpu().eval()
    tts.diffusion.load_state_dict(load("diffusion_decoder.pth"))
    tts.clvp = CLVP(**CLVP_KWARGS[size]).cpu().eval()
    tts.clvp.load_state_dict(load("clvp2.pth"))
    tts.cvvp = None
    tts.vocoder = UnivNetGenerator(**VOCODER_KWARGS[size]).cpu()
    tts.vocoder.load_state_dict(load("vocoder.pth")["model_g"])
    tts.vocoder.eval(inference=True)
    tts.rlg_auto = tts.rlg_diffusion = None
    return tts


def run_reference(size: str, codes: int, runs: int, folder: str) -> dict:
    import numpy as np
    import torch

    t0 = time.perf_counter()
    tts = _original_tts(size, os.path.join(folder, "models"))
    load_s = time.perf_counter() - t0
    with np.load(os.path.join(folder, "voice.npz")) as v:
        latents = (torch.from_numpy(v["auto"]), torch.from_numpy(v["diffusion"]))

    def call():
        return tts.tts_with_preset(
            TEXT,
            preset=PRESET,
            conditioning_latents=latents,
            use_deterministic_seed=SEED,
            max_mel_tokens=codes,
            verbose=False,
        )

    t0 = time.perf_counter()
    wav = call()
    first_s = time.perf_counter() - t0
    best_s = common.best(call, runs)
    wav = wav.numpy().reshape(-1)
    np.save(os.path.join(folder, "wav_reference.npy"), wav)
    return dict(
        load_s=load_s,
        first_s=first_s,
        best_s=best_s,
        samples=int(wav.size),
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        peak_gib=peak_gib(),
    )


def run_jax(size: str, codes: int, runs: int, folder: str) -> dict:
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

    def call():
        return tts.tts_with_preset(TEXT, voice=voice, preset=PRESET, seed=SEED, max_new_tokens=codes)

    t0 = time.perf_counter()
    result = call()  # traces and compiles every program of the path
    first_s = time.perf_counter() - t0
    best_s = common.best(call, runs)
    wav = np.asarray(result.waveform).reshape(-1)
    np.save(os.path.join(folder, "wav_jax.npy"), wav)
    best = result.chunks[0].outputs[0]
    return dict(
        load_s=load_s,
        first_s=first_s,
        best_s=best_s,
        samples=int(wav.size),
        codes=len(best.candidate.codes),
        frames=best.frames,
        jax=jax.__version__,
        backend=jax.default_backend(),
        peak_gib=peak_gib(),
    )


def _side(which: str, size: str, codes: int, runs: int, folder: str) -> dict:
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # compile times are real compilations, never disk-cache hits
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), root]))
    args = ["--size", size, "--codes", str(codes), "--runs", str(runs), "--side", which, "--folder", folder]
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *args], env=env, capture_output=True, text=True, cwd=root
    )
    if proc.returncode:
        raise RuntimeError(f"{which} side failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(size: str, codes: int, runs: int, mach: dict, ref: dict, ours: dict) -> None:
    load = ", ".join(f"{x:.2f}" for x in mach["load"])
    print(
        f"size={size} preset={PRESET} ({CANDIDATES} candidates x {codes} codes, 30 DDPM steps) runs={runs} | "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')} | {mach['cpu']}, {mach['cores']} cores, matrix features: "
        f"{' '.join(mach['matrix_flags']) or 'none'} | load average {load} (at the end: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}) | fp32 2048^2 matmul: JAX {mach['jax_gflops']:.0f}, "
        f"numpy {mach['numpy_gflops']:.0f} GFLOP/s | torch {ref['torch']} threads {ref['torch_threads']}, "
        f"jax {ours['jax']} ({ours['backend']})"
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
        f"(best: {ours['codes']} codes, {ours['frames']} kept) |"
    )
    print(
        f"ratio (original / clvp-jax, steady): **{ratio:.2f}x** (target >= 2x); peak memory clvp-jax / original: "
        f"{ours['peak_gib'] / ref['peak_gib']:.2f} (target <= 1)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("real", "tiny"), default="real")
    ap.add_argument(
        "--codes", type=int, help="AR codes per candidate (max_mel_tokens / max_new_tokens; default: real 64, tiny 16)"
    )
    ap.add_argument("--runs", type=int, default=1, help="timed calls per side (best of), after one warm-up call")
    ap.add_argument("--side", choices=["both", "prepare", "reference", "jax"], default="both", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.codes is None:
        a.codes = 64 if a.size == "real" else 16
    if a.runs < 1 or not 2 <= a.codes <= 500:
        ap.error(f"--runs must be >= 1 and --codes in [2, 500], got {a.runs} and {a.codes}")
    if a.side != "both":
        run = dict(
            prepare=lambda: prepare(a.size, a.folder),
            reference=lambda: run_reference(a.size, a.codes, a.runs, a.folder),
            jax=lambda: run_jax(a.size, a.codes, a.runs, a.folder),
        )
        print(json.dumps(run[a.side]()))
        return
    mach = machine()
    with tempfile.TemporaryDirectory(prefix="bench_tts_") as folder:
        _side("prepare", a.size, a.codes, a.runs, folder)
        ref = _side("reference", a.size, a.codes, a.runs, folder)
        ours = _side("jax", a.size, a.codes, a.runs, folder)
    report(a.size, a.codes, a.runs, mach, ref, ours)


if __name__ == "__main__":
    main()
