"""Voice latents: latents files (Tortoise's `.pth`, `clvp-jax latents` output, our cache), the per-voice cache,
combining voices (`a&b`), and `voice_latents`, which puts a resolved voice spec together (see `clvp_jax.voices`
for the spec, the cache's validity rule and the combining rule).

Axis letters: see the package legend in `clvp_jax/__init__.py` (D the AR conditioning latent width, 2W the
diffusion conditioning latent width).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from clvp_jax.fs import atomic_file
from clvp_jax.voices import (
    CACHE_FORMAT,
    LATENT_EXTENSIONS,
    VoiceError,
    VoiceLatents,
    VoiceSource,
    VoiceSpec,
    clip_stats,
    is_file,
    read_cache,
)


def _as_vector(value, what: str, path: Path) -> np.ndarray:
    array = np.asarray(value, np.float32)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]  # Tortoise keeps a batch axis of one
    if array.ndim != 1 or array.size == 0:
        raise VoiceError(f"{path}: the {what} latent has shape {np.shape(value)}; expected [width] or [1, width]")
    return array


def load_latents_file(path: str | os.PathLike) -> VoiceLatents:
    """Read a latents file: what `clvp-jax latents` writes (`generation.latents`: a `.npy` of the AR latent, or a
    version-2 `.npz` with the diffusion latent too), Tortoise's `.pth` (the tuple (auto [1, D], diffusion [1, 2W])
    that `get_conditioning_latents` returns; torch needed), a `.npy` of the AR latent [D], or a `.npz` cache."""
    from clvp_jax.generation.latents import LatentsFileError, load_voice_latents

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy"):
        try:
            versioned = load_voice_latents(path)
        except LatentsFileError:
            pass  # not clvp-jax's versioned file: the cache format below, or a plain array
        else:
            auto = np.asarray(versioned.autoregressive, np.float32)
            auto = auto if auto.ndim == 1 else auto.mean(axis=0)  # [n, D] per-clip latents: their mean, as Tortoise
            diffusion = None if versioned.diffusion is None else np.asarray(versioned.diffusion, np.float32).reshape(-1)
            return VoiceLatents(auto, diffusion)
    if suffix == ".npy":
        return VoiceLatents(_as_vector(np.load(path, allow_pickle=False), "autoregressive", path))
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            if "auto" not in npz:
                raise VoiceError(f"{path}: no 'auto' latent in it (keys: {', '.join(npz.files)})")
            diffusion = _as_vector(npz["diffusion"], "diffusion", path) if "diffusion" in npz else None
            return VoiceLatents(_as_vector(npz["auto"], "autoregressive", path), diffusion)
    if suffix == ".pth":
        try:
            import torch
        except ImportError as error:
            raise ImportError(
                f"reading the Tortoise latents {path} needs torch: pip install 'clvp-jax[torch]'"
            ) from error
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        items = tuple(loaded) if isinstance(loaded, (tuple, list)) else (loaded,)
        if not 1 <= len(items) <= 2 or not all(isinstance(t, torch.Tensor) for t in items):
            raise VoiceError(
                f"{path}: expected Tortoise's (autoregressive, diffusion) latent tensors, got {type(loaded).__name__}"
            )
        arrays = [t.float().numpy() for t in items]
        diffusion = _as_vector(arrays[1], "diffusion", path) if len(arrays) == 2 else None
        return VoiceLatents(_as_vector(arrays[0], "autoregressive", path), diffusion)
    raise VoiceError(f"{path}: not a latents file ({', '.join(LATENT_EXTENSIONS)})")


def save_cached_latents(source: VoiceSource, latents: VoiceLatents, *, checkpoint: str) -> Path:
    """Write `latents` as the cache of `source` (beside its clips, atomically), recording the clips and checkpoint.

    Raises:
      VoiceError: the source has no cache location (loose files, latents files, packaged voices).
      OSError (`fs.OutputError`): the folder cannot be written.
    """
    if source.cache_path is None:
        raise VoiceError(f"voice {source.label!r} has no cache location (only a user's voice folder of clips has one)")
    stats = clip_stats(source.clips)  # dict order is the clips' order
    arrays = {
        "format": np.array(CACHE_FORMAT),
        "auto": np.asarray(latents.auto, np.float32).reshape(-1),
        "checkpoint": np.array(checkpoint),
        "clips": np.array([c.name for c in source.clips], dtype=str),
        "clip_sizes": np.array([stat[0] for stat in stats.values()], np.int64),
        "clip_mtimes_ns": np.array([stat[1] for stat in stats.values()], np.int64),
    }
    if latents.diffusion is not None:
        arrays["diffusion"] = np.asarray(latents.diffusion, np.float32).reshape(-1)
    with atomic_file(source.cache_path, "wb") as f:
        np.savez(f, **arrays)
    return source.cache_path


def combine_latents(parts: Sequence[tuple[VoiceLatents, int]]) -> VoiceLatents:
    """Weighted mean of (latents, weight) pairs; the diffusion latent only when every part has one."""
    if not parts:
        raise ValueError("nothing to combine")
    widths = {p.auto.shape for p, _ in parts}
    if len(widths) > 1:
        raise VoiceError(f"cannot join voices whose latents have different widths ({sorted(widths)})")
    weights = np.asarray([w for _, w in parts], np.float64)
    auto = np.tensordot(weights / weights.sum(), np.stack([p.auto for p, _ in parts]).astype(np.float64), 1)
    diffusion = None
    if all(p.diffusion is not None for p, _ in parts):
        stacked = np.stack([p.diffusion for p, _ in parts]).astype(np.float64)
        diffusion = np.tensordot(weights / weights.sum(), stacked, 1).astype(np.float32)
    return VoiceLatents(auto.astype(np.float32), diffusion)


def voice_latents(
    voice: VoiceSpec,
    *,
    checkpoint: str,
    compute: Callable[[Sequence[Path]], VoiceLatents],
    need_diffusion: bool = False,
    write_cache: bool = True,
    report: Callable[[str], None] | None = None,
) -> VoiceLatents:
    """The latents of one (non-random) voice: latents files and valid caches read, other clips computed.

    Args:
      voice: from `resolve_voices` (not `random`: use `waveform.random_latents.random_voice_latents`).
      checkpoint: the hash of the weights `compute` uses (e.g. the checkpoint file's sha256); caches made with
        another are recomputed.
      compute: clips -> their latents (the model's mean over the clips), called once per source not served
        from a cache.
      need_diffusion: a cache without the diffusion latent is then recomputed.
      write_cache: write a computed voice folder's cache back (failures to write are reported, not raised).
      report: receives one line per source (reused, recomputed and why, cache written or not).
    Returns:
      The joined latents (weighted as the module docstring says).
    """
    if voice.is_random:
        raise VoiceError("the random voice has no clips; make its latents with random_voice_latents(key, ...)")
    say = report or (lambda _line: None)
    parts = []
    for source in voice.sources:
        if source.kind == "latents":
            latents = load_latents_file(source.latents_file)
            if need_diffusion and latents.diffusion is None:
                raise VoiceError(f"{source.latents_file} holds no diffusion latent; give the voice's clips instead")
            say(f"{source.label}: latents read from {source.latents_file}")
            parts.append((latents, 1))
            continue
        # Read again rather than trust the resolution's snapshot: an earlier voice of the same run (`lj,lj&x`)
        # may have written it since.
        cache = read_cache(source.cache_path, source.clips) if is_file(source.cache_path) else source.cache
        problem = None if cache is None else cache.problem(checkpoint, need_diffusion)
        if cache is not None and problem is None:
            try:
                latents = load_latents_file(cache.path)
            except (OSError, ValueError) as error:  # changed since resolution: recompute
                problem = f"unreadable ({error})"
            else:
                say(f"{source.label}: cached latents reused ({cache.path})")
                parts.append((latents, source.weight))
                continue
        latents = compute(source.clips)
        line = f"{source.label}: latents computed from {len(source.clips)} clip(s)"
        if problem is not None:
            line += f" (cache not reused: {problem})"
        if write_cache and source.cache_path is not None:
            try:
                save_cached_latents(source, latents, checkpoint=checkpoint)
                line += f"; cached in {source.cache_path}"
            except OSError as error:
                line += f"; cache not written ({error})"
        say(line)
        parts.append((latents, source.weight))
    return combine_latents(parts)


__all__ = ["combine_latents", "load_latents_file", "save_cached_latents", "voice_latents"]
