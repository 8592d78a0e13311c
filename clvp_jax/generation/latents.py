"""Voice conditioning latents: compute once from reference clips, save, load, and pass to `generate`.

Axis legend: n clips, F mel bins, N frames, D decoder width.

As Tortoise (`get_conditioning_latents` / `UnifiedVoice.get_conditioning`): each clip's log-mel goes through the
conditioning encoder on its own (its first frame after the mel attention blocks) and the per-clip vectors are
averaged into one voice latent [D].
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.model import ClvpModelForConditionalGeneration


@functools.lru_cache(maxsize=8)
def _voice_latent_fn(model: ClvpModelForConditionalGeneration):
    return jax.jit(
        lambda p, f: model.apply({"params": p}, f, method=lambda m, f: m.conditioning_encoder.voice_latent(f))
    )


def get_conditioning_latents(
    model: ClvpModelForConditionalGeneration, params, clips: np.ndarray | Sequence[np.ndarray]
) -> np.ndarray:
    """The voice latent of one speaker from one or more clips.

    Args:
      model, params: the composite model and its parameters.
      clips: log-mel features, [F, N] for one clip, [n, F, N] for clips of equal length, or a list of [F, N_i].
    Returns:
      float32 [D]: the mean over clips of each clip's latent.
    """
    F = model.config.decoder_config.feature_size
    if isinstance(clips, np.ndarray | jax.Array):
        arr = np.asarray(clips, np.float32)
        groups = [arr[None]] if arr.ndim == 2 else [arr]
    else:
        groups = [np.asarray(c, np.float32)[None] for c in clips]
    if not groups or any(g.ndim != 3 or g.shape[1] != F or g.shape[0] == 0 for g in groups):
        raise ValueError(
            f"clips must be log-mel features [{F}, frames] (or [clips, {F}, frames]); got "
            f"{[g.shape[1:] for g in groups]}"
        )
    fn = _voice_latent_fn(model)
    per_clip = np.concatenate([np.asarray(fn(params, jnp.asarray(g))) for g in groups], axis=0)  # [n, D]
    return per_clip.mean(axis=0).astype(np.float32)


def save_conditioning_latents(path: str | os.PathLike, latents: np.ndarray) -> Path:
    """Write latents [D] (or [n, D]) as a .npy file, atomically (temp file + rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.asarray(latents, np.float32))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_conditioning_latents(path: str | os.PathLike, model: ClvpModelForConditionalGeneration | None = None):
    """Read latents saved by `save_conditioning_latents`; with `model`, check the width matches its decoder."""
    lat = np.load(Path(path), allow_pickle=False)
    if model is not None and lat.shape[-1] != model.config.decoder_config.hidden_size:
        raise ValueError(
            f"{path}: latents of width {lat.shape[-1]} do not fit this model (decoder hidden_size "
            f"{model.config.decoder_config.hidden_size}); recompute them with get_conditioning_latents"
        )
    return lat
