"""Train the tiny DiffusionTts on real speech, so the sampler comparisons (dpm_quality.py) see a TRAINED x0.

Usage: .venv/bin/python benchmarks/train_tiny_diffusion.py [--steps 3000] [--batch 16] [--frames 96]
    [--lr 1e-3] [--width 128] [--minutes 20] [--out /tmp/dpmtrain/tiny_diffusion.msgpack]
(CPU, W = 128: about 0.9 s a step on a loaded 2-core machine, 900 steps in 14 min; the file is 14 MB.)

Model: `DiffusionConfig.tiny()` (2 DiffusionLayers, 4 heads, AR latents 32 wide) with its width W raised from 48
to `--width` 128: a trunk narrower than the 100 mel bins cannot output their noise (with W = 48 the eps MSE
stalls at 0.54 >= 1 - 48/100 at every t, even at t = 3999 where eps = x_t). Trained from a seeded random init
(`init_params(config, key(seed))`), no weights of anyone else's.

Data: the three real voice clips of /work/shared/data/tortoise/voices (lj/1, lj/2, myself/3: Tortoise's own
clips, Apache-2.0, 26 s in all), each loaded at 22.05 kHz as Tortoise's `load_audio` does, resampled to 24 kHz
(`clvp_jax.audio.resample`), turned into the 100-bin log-mel of the waveform front end (`univnet_log_mel`) and
normalised to [-1, 1] (`normalize_tacotron_mel`): what the decoder generates. The last 2 x `--frames` frames of
every clip are held out (the evaluation windows); training windows are random crops of the rest.

Conditioning, as the model takes it:
* "AR latents" [M = N/4, 32]: a FIXED random projection (seeded, [4 x 100, 32] / sqrt(400)) of each group of 4
  normalised mel frames of the window itself: a lossy per-window code at a rate like the AR's (one latent per
  ~4.35 frames in Tortoise; 4 here, and `nearest_indices` maps frame i to latent i // 4);
* the voice latent: `get_conditioning` (trained with the rest) on the raw log-mel of the clip's first 4.27 s, as
  `diffusion_conditioning_mels` builds it, one per clip;
* conditioning dropout: each row replaced by the unconditioned embedding with probability 0.1 (the original's
  `unconditioned_percentage`, here through the model's per-row `conditioning_free` mask), so that guidance
  (cond_free k = 2) extrapolates from a learned unconditional model.

Objective: Tortoise's (improved-diffusion's `training_losses` with loss_type mse and learned_range variance):
t uniform on the 4000-step linear schedule, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, loss = MSE(eps_hat,
eps) + L_vb, where L_vb is the variational bound term of the learned variance with the mean frozen
(stop_gradient on eps_hat): KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) in bits per dimension for t > 0, the
discretised Gaussian decoder NLL at t = 0; not rescaled (the rescaling is loss_type rescaled_mse's). AdamW (lr
`--lr`, 100 warm-up steps, cosine decay to 10%, weight decay 0, gradient clipping at 1); what is saved is an
EMA of the weights (decay min(0.999, (1 + n) / (10 + n)) at step n).

Output (`--out`, written atomically): a msgpack of {"params": EMA variables, "eval": {"latents" [R, M, 32],
"cond_mels" [R, 100, 401], "x0" [R, 100, N]}, "meta": JSON text (config, settings, losses)}: what
dpm_quality.py `--params` reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

VOICES = "/work/shared/data/tortoise/voices"
CLIPS = ("lj/1.wav", "lj/2.wav", "myself/3.wav")
GROUP = 4  # mel frames per "AR latent"
DROP_COND = 0.1  # conditioning dropout (unconditioned_percentage)
EMA_DECAY = 0.999
PROJECTION_SEED = 1234


def clip_mels() -> tuple[list[np.ndarray], np.ndarray]:
    """(normalised 24 kHz log-mels [100, N_i] of the three clips, raw conditioning mels [3, 100, 401])."""
    from clvp_jax.audio.diffusion_conditioning import diffusion_conditioning_mels
    from clvp_jax.audio.io import load_audio
    from clvp_jax.audio.resample import resample
    from clvp_jax.audio.univnet_mel import SAMPLING_RATE, normalize_tacotron_mel, univnet_log_mel

    mels, conds = [], []
    for name in CLIPS:
        clip = np.clip(load_audio(os.path.join(VOICES, name), 22050), -1, 1)
        mels.append(normalize_tacotron_mel(univnet_log_mel(resample(clip, 22050, SAMPLING_RATE))).astype(np.float32))
        conds.append(diffusion_conditioning_mels([clip])[0])
    return mels, np.stack(conds)


def projection(latent_channels: int, bins: int = 100) -> np.ndarray:
    """The fixed [GROUP x bins, latent] projection from 4 mel frames to one "AR latent"."""
    rng = np.random.default_rng(PROJECTION_SEED)
    return (rng.standard_normal((GROUP * bins, latent_channels)) / math.sqrt(GROUP * bins)).astype(np.float32)


def latents_of(windows: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """[R, 100, N] normalised mel windows -> [R, N / 4, latent] "AR latents" (each group of 4 frames projected)."""
    r, f, n = windows.shape
    groups = windows.transpose(0, 2, 1).reshape(r, n // GROUP, GROUP * f)  # [R, M, 4 F], frame-major
    return groups @ proj


def split(mels: list[np.ndarray], frames: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(training parts of each clip, held-out windows [2 x clips, 100, frames], their clip indices)."""
    train, held, owner = [], [], []
    for i, mel in enumerate(mels):
        cut = mel.shape[1] - 2 * frames
        train.append(mel[:, :cut])
        held += [mel[:, cut : cut + frames], mel[:, cut + frames : cut + 2 * frames]]
        owner += [i, i]
    return train, np.stack(held), np.array(owner)


def diffusion_tables() -> dict[str, np.ndarray]:
    """The 4000-step linear schedule's training tables, float32 [4000] each."""
    from clvp_jax.waveform.schedule import TRAINED_STEPS, spaced_schedule

    s = spaced_schedule(TRAINED_STEPS, TRAINED_STEPS)  # every step kept: the base schedule
    return {
        "sqrt_abar": np.sqrt(s.alphas_cumprod),
        "sqrt_1m_abar": np.sqrt(1 - s.alphas_cumprod),
        "sqrt_recip": s.sqrt_recip_alphas_cumprod,
        "sqrt_recipm1": s.sqrt_recipm1_alphas_cumprod,
        "coef1": s.posterior_mean_coef1,
        "coef2": s.posterior_mean_coef2,
        "min_log": s.posterior_log_variance_clipped,
        "max_log": np.log(s.betas),
    }


def _normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, nats."""
    import jax.numpy as jnp

    return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * jnp.exp(-logvar2))


def _discretized_gaussian_nll(x, means, log_scales):
    """-log p(x) of a Gaussian discretised to 255 bins on [-1, 1] (improved-diffusion's decoder term), nats."""
    import jax.numpy as jnp
    from jax.scipy.special import ndtr

    centered = x - means
    inv_stdv = jnp.exp(-log_scales)
    cdf_plus = ndtr(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = ndtr(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, 1e-12))
    log_probs = jnp.where(
        x < -0.999,
        log_cdf_plus,
        jnp.where(x > 0.999, log_one_minus_cdf_min, jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))),
    )
    return -log_probs


def make_loss(model, tables: dict, cond_mels: np.ndarray):
    """loss_fn(params, batch, key) -> (loss, metrics): Tortoise's objective, see the module docstring."""
    import jax
    import jax.numpy as jnp

    from clvp_jax.waveform.diffusion import DiffusionTts

    tabs = {k: jnp.asarray(v, jnp.float32) for k, v in tables.items()}
    cond_mels = jnp.asarray(cond_mels)
    steps = tables["sqrt_abar"].shape[0]

    def loss_fn(params, batch, key):
        x0, latents, owner = batch["x0"], batch["latents"], batch["owner"]
        b, f, n = x0.shape
        k_t, k_eps, k_drop = jax.random.split(key, 3)
        t = jax.random.randint(k_t, (b,), 0, steps)
        eps = jax.random.normal(k_eps, x0.shape, jnp.float32)
        drop = jax.random.uniform(k_drop, (b,)) < DROP_COND

        def per(name):
            return tabs[name][t][:, None, None]

        x_t = per("sqrt_abar") * x0 + per("sqrt_1m_abar") * eps
        voice = model.apply(params, cond_mels, method=DiffusionTts.get_conditioning)  # [clips, 2W]
        aligned = model.apply(params, latents, voice[owner], n, method=DiffusionTts.timestep_independent)
        out = model.apply(params, x_t, t, aligned, drop)  # [B, 2F, N]
        eps_hat, v = out[:, :f], out[:, f:]
        mse = jnp.mean((eps_hat - eps) ** 2)
        # L_vb with the mean frozen: only the variance values v learn from it
        x0_hat = per("sqrt_recip") * x_t - per("sqrt_recipm1") * jax.lax.stop_gradient(eps_hat)
        mean_p = per("coef1") * x0_hat + per("coef2") * x_t
        frac = (v + 1) / 2
        logvar_p = frac * per("max_log") + (1 - frac) * per("min_log")
        mean_q = per("coef1") * x0 + per("coef2") * x_t
        kl = _normal_kl(mean_q, per("min_log"), mean_p, logvar_p).mean(axis=(1, 2)) / math.log(2.0)
        nll = _discretized_gaussian_nll(x0, mean_p, 0.5 * logvar_p).mean(axis=(1, 2)) / math.log(2.0)
        vb = jnp.mean(jnp.where(t == 0, nll, kl))
        return mse + vb, {"mse": mse, "vb": vb}

    return loss_fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000, help="optimiser steps")
    ap.add_argument("--batch", type=int, default=16, help="windows per step")
    ap.add_argument("--frames", type=int, default=96, help="mel frames per window (a multiple of 4)")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    ap.add_argument("--minutes", type=float, default=20.0, help="stop early (and save) after this wall time")
    ap.add_argument("--width", type=int, default=128, help="model_channels W (> 100 mel bins: see main)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/dpmtrain/tiny_diffusion.msgpack")
    a = ap.parse_args()
    if a.frames % GROUP:
        ap.error(f"--frames must be a multiple of {GROUP}, got {a.frames}")

    import flax.serialization
    import jax
    import jax.numpy as jnp
    import optax

    from clvp_jax import fs
    from clvp_jax.waveform.diffusion import DiffusionTts, count_params, init_params
    from clvp_jax.waveform.diffusion_config import DiffusionConfig

    # The fixture's tiny config has a 48-wide trunk: too narrow to carry the 100 mel bins of noise (the best
    # eps it can output misses 1 - 48/100 of it: eps MSE >= 0.52 at every t, 0.54 seen), so only the width grows.
    config = dataclasses.replace(DiffusionConfig.tiny(), model_channels=a.width)
    model = DiffusionTts(config)
    mels, cond_mels = clip_mels()
    train, held, held_owner = split(mels, a.frames)
    proj = projection(config.in_latent_channels, config.in_channels)
    print(
        f"clips: {[m.shape[1] for m in mels]} frames; training {sum(m.shape[1] for m in train)} frames, "
        f"held out {held.shape[0]} windows of {a.frames}; model {count_params(config)} parameters; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    params = init_params(config, jax.random.key(a.seed))
    schedule = optax.warmup_cosine_decay_schedule(0.0, a.lr, 100, a.steps, end_value=0.1 * a.lr)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.0))
    opt_state = tx.init(params)
    loss_fn = make_loss(model, diffusion_tables(), cond_mels)

    @jax.jit
    def step(params, ema, opt_state, batch, key, n):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        # EMA with the usual warm-up: a plain 0.999 would keep 0.999^n of the random init (20% at n = 1600)
        decay = jnp.minimum(EMA_DECAY, (1.0 + n) / (10.0 + n))
        ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p, ema, params)
        return params, ema, opt_state, metrics | {"loss": loss}

    rng = np.random.default_rng(a.seed)
    lengths = np.array([m.shape[1] for m in train])
    weights = (lengths - a.frames + 1) / np.sum(lengths - a.frames + 1)  # every crop equally likely

    def batch():
        owner = rng.choice(len(train), size=a.batch, p=weights)
        starts = [rng.integers(0, lengths[o] - a.frames + 1) for o in owner]
        x0 = np.stack([train[o][:, s : s + a.frames] for o, s in zip(owner, starts, strict=True)])
        return {"x0": jnp.asarray(x0), "latents": jnp.asarray(latents_of(x0, proj)), "owner": jnp.asarray(owner)}

    ema = params
    key = jax.random.key(a.seed + 1)
    history, window = [], []
    t0, c0 = time.perf_counter(), time.process_time()
    done = 0
    for i in range(a.steps):
        key, sub = jax.random.split(key)
        params, ema, opt_state, metrics = step(params, ema, opt_state, batch(), sub, jnp.float32(i))
        window.append({k: float(v) for k, v in metrics.items()})
        done = i + 1
        if done % 100 == 0 or done == a.steps:
            mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            history.append({"step": done, **mean})
            window = []
            print(
                f"step {done}: loss {mean['loss']:.4f} (mse {mean['mse']:.4f}, vb {mean['vb']:.4f}) | "
                f"{time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU, "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
        if time.perf_counter() - t0 > 60 * a.minutes:
            print(f"stopping at step {done}: --minutes {a.minutes} reached", flush=True)
            break

    meta = {
        "config": dataclasses.asdict(config),
        "clips": list(CLIPS),
        "frames": a.frames,
        "group": GROUP,
        "projection_seed": PROJECTION_SEED,
        "drop_cond": DROP_COND,
        "ema_decay": EMA_DECAY,
        "steps_done": done,
        "args": vars(a),
        "objective": "eps MSE + L_vb (KL / decoder NLL, bits per dim, mean frozen), t uniform on 4000 linear",
        "history": history,
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "finished": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    payload = {
        "params": jax.device_get(ema),
        "eval": {"latents": latents_of(held, proj), "cond_mels": cond_mels[held_owner], "x0": held},
        "meta": json.dumps(meta),
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    fs.write_bytes(a.out, flax.serialization.msgpack_serialize(payload))
    print(f"wrote {a.out} ({os.path.getsize(a.out) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
