"""Shared by the waveform-stage benchmarks (bench_waveform.py and its reference process) and bench_tts.py: the model
sizes (real and tiny, one place), the inputs, timing and memory helpers. Both sides import it, so they compute on
the same numbers."""

from __future__ import annotations

import time

CODES = 64  # AR codes of the benchmark sample
L = CODES * 4 * 24000 // 22050  # 278 output mel frames (api.py's formula)
HOP = 256  # UnivNet samples per mel frame (prod of the strides 8, 8, 4)
SAMPLE_RATE = 24000  # Hz, the vocoder's output
TIMESTEP = 2000  # an original-scale timestep (0..3999); the cost does not depend on it

# DiffusionTts constructor arguments: api.py's (spec §1) and the tiny test model's.
DIFFUSION_KWARGS = {
    "real": dict(
        model_channels=1024,
        num_layers=10,
        in_channels=100,
        out_channels=200,
        in_latent_channels=1024,
        in_tokens=8193,
        dropout=0,
        use_fp16=False,
        num_heads=16,
        layer_drop=0,
        unconditioned_percentage=0,
    ),
    "tiny": dict(
        model_channels=48,
        num_layers=2,
        in_channels=100,
        out_channels=200,
        in_latent_channels=32,
        in_tokens=30,
        dropout=0,
        use_fp16=False,
        num_heads=4,
        layer_drop=0,
        unconditioned_percentage=0,
    ),
}
# UnivNetGenerator constructor arguments: api.py uses the defaults; the tiny one is narrower.
VOCODER_KWARGS = {"real": {}, "tiny": dict(channel_size=8, noise_dim=8)}
# UnifiedVoice / CLVP constructor arguments (bench_tts.py): api.py's, and a tiny pair of the same vocabulary and
# positions.
AR_KWARGS = {
    "real": dict(
        max_mel_tokens=604,
        max_text_tokens=402,
        max_conditioning_inputs=2,
        layers=30,
        model_dim=1024,
        heads=16,
        number_text_tokens=255,
        start_text_token=255,
        checkpointing=False,
        train_solo_embeddings=False,
    ),
}
AR_KWARGS["tiny"] = AR_KWARGS["real"] | dict(layers=2, model_dim=64, heads=4)
CLVP_KWARGS = {
    "real": dict(
        dim_text=768,
        dim_speech=768,
        dim_latent=768,
        num_text_tokens=256,
        text_enc_depth=20,
        text_seq_len=350,
        text_heads=12,
        num_speech_tokens=8192,
        speech_enc_depth=20,
        speech_heads=12,
        speech_seq_len=430,
        use_xformers=True,
    ),
}
CLVP_KWARGS["tiny"] = CLVP_KWARGS["real"] | dict(
    dim_text=64, dim_speech=64, dim_latent=64, text_enc_depth=2, speech_enc_depth=2, text_heads=1, speech_heads=1
)  # 1 head of 64: clvp-jax's (HF's) CLVP needs heads x 64 == width
# The sampler runs: name -> (steps K, conditioning-free guidance), as the ultra_fast and fast presets.
SAMPLER_RUNS = {"ultra_fast": (30, False), "fast": (80, True)}


def peak_gib() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would carry the parent's peak over fork + exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**20


def best(fn, runs: int) -> float:
    """Best wall time of `runs` calls of fn (which must block until its work is done)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def best_wall_and_cpu(fn, runs: int) -> tuple[float, float]:
    """(best wall time, best process CPU time) of `runs` calls of fn. On a loaded machine the CPU time (all of the
    process's threads) is the steadier measure of the work done; on a quiet one wall time is the figure."""
    walls, cpus = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def make_inputs(size: str) -> dict:
    """The benchmark's inputs, the same on both sides: AR latents, a conditioning latent, a noisy mel, a raw
    log-mel for the vocoder and its noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    width = DIFFUSION_KWARGS[size]["in_latent_channels"]
    channels = DIFFUSION_KWARGS[size]["model_channels"]
    noise_dim = VOCODER_KWARGS[size].get("noise_dim", 64)
    return dict(
        latents=rng.standard_normal((1, CODES, width)).astype(np.float32),
        cond_latent=(0.1 * rng.standard_normal((1, 2 * channels))).astype(np.float32),  # scales ~ 1 +- 0.1
        x=rng.standard_normal((1, 100, L)).astype(np.float32),
        mel=rng.uniform(-11.5, 2.0, (1, 100, L)).astype(np.float32),  # raw log-mel range (spec §4)
        z=rng.standard_normal((1, noise_dim, L + 10)).astype(np.float32),  # + the 10 padding frames
    )


def load_npz(path: str) -> dict:
    import numpy as np

    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}
