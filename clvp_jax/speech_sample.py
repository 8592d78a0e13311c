"""One sample of the speech pipeline: AR latents -> diffusion -> vocoder -> 24 kHz waveform.

  render_waveform(waveform_models, latents, diffusion_latent, sampler=..., key=...)   (mel [1, 100, L], wav)
  waveform_key(seed, chunk, candidate)                                                the key of a sample's draws
  output_frames(m)                                                                    L for m AR latent frames

Per sample: `timestep_independent` once, the sampler (steps, guidance, temperature; "ddpm", "ddim" or "dpm++2m"),
L = m * 4 * 24000 // 22050 frames; de-normalised; UnivNet -> samples in [-1, 1] at 24 kHz. Samples of different
lengths run one after another (the decoder has no frame mask, so padding them to one length would change them),
and each new length compiles the sampler loop once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.audio.univnet_mel import SAMPLING_RATE, denormalize_tacotron_mel
from clvp_jax.speech_voice import AR_SAMPLING_RATE
from clvp_jax.waveform.bundle import WaveformModels
from clvp_jax.waveform.diffusion import DiffusionTts
from clvp_jax.waveform.sampler import SamplerConfig, SamplerNoise, sample
from clvp_jax.waveform.univnet import vocode

WAVEFORM_STREAM = 2**30 + 1  # keeps the waveform draws apart from the AR draws of the same (seed, chunk, candidate)


def output_frames(codes: int) -> int:
    """Mel frames L the diffusion decoder makes for `codes` AR latent frames: codes * 4 * 24000 // 22050."""
    return codes * 4 * SAMPLING_RATE // AR_SAMPLING_RATE


def waveform_key(seed: int, chunk: int, candidate: int) -> jax.Array:
    """The key of candidate `candidate` of chunk `chunk`'s waveform: fold_in(fold_in(fold_in(key(seed),
    WAVEFORM_STREAM), chunk), candidate) (then 0: diffusion, 1: vocoder), apart from the AR draws of the same triple."""
    key = jax.random.fold_in(jax.random.key(seed), WAVEFORM_STREAM)
    return jax.random.fold_in(jax.random.fold_in(key, chunk), candidate)


@functools.lru_cache(maxsize=4)
def _aligned_fn(model: DiffusionTts):
    def run(variables, latents, cond, *, frames):
        return model.apply(variables, latents, cond, frames, method=DiffusionTts.timestep_independent)

    return jax.jit(run, static_argnames="frames")


@functools.lru_cache(maxsize=4)
def _model_call(model: DiffusionTts):
    # One function object per model, so the sampler's compiled loop is reused across samples of a length.
    def call(variables, aligned, x, t, cond_free):
        return model.apply(variables, x, t, aligned, cond_free)

    return call


def render_waveform(
    waveform_models: WaveformModels,
    latents: np.ndarray,
    diffusion_latent: np.ndarray,
    *,
    sampler: SamplerConfig,
    key: jax.Array | None = None,
    noise: SamplerNoise | None = None,
    vocoder_noise: np.ndarray | None = None,
    on_step: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One sample: AR latents [1, m, D] -> (de-normalised mel [1, 100, L], waveform [1, 1, hop * L]).

    Args:
      latents: the (trimmed) AR latents of one candidate.
      diffusion_latent: [W] or [1, W] the voice's diffusion conditioning latent.
      sampler: the sampler settings.
      key: the sample's key (diffusion draws from fold_in(key, 0), the vocoder's noise from fold_in(key, 1)); or
      noise / vocoder_noise: given draws instead (`SamplerNoise`; z [1, Z, L + 10]), e.g. the original's recorded ones.
      on_step: on_step(done) after each diffusion step (`waveform.sampler.sample`).
    """
    if key is None and (noise is None or vocoder_noise is None):
        raise ValueError("render_waveform: pass key=, or both noise= and vocoder_noise=")
    latents = jnp.asarray(latents, jnp.float32)
    frames = output_frames(latents.shape[1])
    cond = jnp.asarray(diffusion_latent, jnp.float32).reshape(1, -1)
    variables = waveform_models.diffusion_variables
    aligned = _aligned_fn(waveform_models.diffusion)(variables, latents, cond, frames=frames)  # [1, C, L]
    model_fn = jax.tree_util.Partial(_model_call(waveform_models.diffusion), variables, aligned)
    shape = (1, waveform_models.diffusion.config.in_channels, frames)
    if noise is None:
        x = sample(model_fn, shape, config=sampler, key=jax.random.fold_in(key, 0), on_step=on_step)
    else:
        x = sample(model_fn, shape, config=sampler, noise=noise, on_step=on_step)
    mel = denormalize_tacotron_mel(x)[:, :, :frames]
    vocoder_key = None if vocoder_noise is not None else jax.random.fold_in(key, 1)
    wav = vocode(
        waveform_models.vocoder_params,
        mel,
        config=waveform_models.vocoder_config,
        key=vocoder_key,
        z=None if vocoder_noise is None else jnp.asarray(vocoder_noise),
    )
    return np.asarray(mel), np.asarray(wav)
