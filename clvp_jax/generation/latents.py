"""Voice conditioning latents: compute once from reference clips, save, load, and pass to `generate`.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here B clips; 2W = 2048 the width of the diffusion
conditioning latent, twice the diffusion model's channels).

As Tortoise (`get_conditioning_latents` / `UnifiedVoice.get_conditioning`): each clip's log-mel goes through the
conditioning encoder on its own (its first frame after the mel attention blocks) and the per-clip vectors are
averaged into one voice latent [D].

Latents files (Tortoise's voice `.pth` holds the same pair: the AR latent and the diffusion latent):
  version 1  a bare `.npy` of the AR latent [D] (or [B, D]): what clvp-jax wrote before the waveform stage, and
             still what it writes when no diffusion latent is known. Loads for codes; asking it for the
             diffusion latent raises `MissingDiffusionLatentError`.
  version 2  an `.npz` archive (whatever the file's suffix) with `format` = "clvp-jax voice latents",
             `version` = 2, `autoregressive` [D] (or [B, D]) and `diffusion` [2W] float32 (the reader also
             accepts an archive without `diffusion`, as codes-only latents).
The version is read from the file's content (numpy's magic bytes or the zip header), not from its name.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax import fs
from clvp_jax.model import ClvpModelForConditionalGeneration


@functools.lru_cache(maxsize=8)
def _voice_latent_fn(model: ClvpModelForConditionalGeneration):
    return jax.jit(
        lambda p, f: model.apply({"params": p}, f, method=lambda m, f: m.conditioning_encoder.voice_latent(f))
    )


def get_conditioning_latents(
    model: ClvpModelForConditionalGeneration, params: Mapping[str, Any], clips: np.ndarray | Sequence[np.ndarray]
) -> np.ndarray:
    """The voice latent of one speaker from one or more clips.

    Args:
      model, params: the composite model and its parameters.
      clips: log-mel features, [F, N] for one clip, [B, F, N] for clips of equal length, or a list of [F, N_i].
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
    per_clip = np.concatenate([np.asarray(fn(params, jnp.asarray(g))) for g in groups], axis=0)  # [B, D]
    # Non-finite clips (or weights) would give all-zero codes downstream with exit status 0: refuse them here.
    return check_latent_values(per_clip.mean(axis=0), "the voice clips' conditioning latent")


LATENTS_FORMAT = "clvp-jax voice latents"
LATENTS_VERSION = 2  # 1: bare .npy of the AR latent; 2: .npz with the AR and the diffusion latents
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


# Voice latents are the conditioning encoder's layer-normalised outputs, a few units in size; 1e4 leaves wide room
# for unusual voices and fine-tunes, and catches garbage such as 1e38, which overflows the decoder into all-zero
# codes with exit status 0. NaN and inf are refused the same way.
MAX_LATENT_MAGNITUDE = 1e4


def check_latent_values(value, where: str) -> np.ndarray:
    """`value` as float32 numpy, or `ValueError` if it holds NaN, inf, or a magnitude above `MAX_LATENT_MAGNITUDE`.

    The check at every boundary where latents enter: latents files, `get_conditioning_latents` results and
    `generate`'s `conditioning_latents`.
    """
    arr = np.asarray(value, np.float32)
    if not np.isfinite(arr).all():
        raise LatentsFileError(f"{where}: the conditioning latent holds NaN or infinite values; recompute it")
    peak = float(np.abs(arr).max()) if arr.size else 0.0
    if peak > MAX_LATENT_MAGNITUDE:
        raise LatentsFileError(
            f"{where}: the conditioning latent reaches {peak:.3g}, beyond the {MAX_LATENT_MAGNITUDE:g} a voice "
            "latent can hold; recompute it from the voice clips"
        )
    return arr


class LatentsFileError(ValueError):
    """A latents file that cannot be used: the message names the file, the problem and the fix."""


class MissingDiffusionLatentError(LatentsFileError):
    """Audio was asked of latents without a diffusion conditioning latent (a version-1 file, or codes-only)."""


@dataclasses.dataclass(frozen=True)
class VoiceLatents:
    """One voice's conditioning latents.

    Attributes:
      autoregressive: float32 [D] (or [B, D]): the AR model's conditioning latent.
      diffusion: float32 [2W] or None: the diffusion model's conditioning latent (None in version-1 files).
      version: the file format version it was read from (`LATENTS_VERSION` for new latents).
      source: the file it was read from, for messages (None when built in memory).
    """

    autoregressive: np.ndarray
    diffusion: np.ndarray | None = None
    version: int = LATENTS_VERSION
    source: str | None = None

    def require_diffusion(self) -> np.ndarray:
        """The diffusion latent [2W]; raises `MissingDiffusionLatentError` when these latents have none."""
        if self.diffusion is None:
            where = f"{self.source} (latents file version {self.version})" if self.source else "these latents"
            raise MissingDiffusionLatentError(
                f"{where} holds only the autoregressive latent, enough for speech codes but not for audio: the "
                "diffusion decoder needs the diffusion conditioning latent too. Recompute the latents from the "
                "voice clips with a checkpoint that has the diffusion model (`clvp-jax latents --voice ...`)."
            )
        return self.diffusion


def _checked_latent(name: str, value: np.ndarray, ndims: tuple[int, ...], width: int | None, where: str) -> np.ndarray:
    value = np.asarray(value)
    if value.dtype.kind != "f":
        raise LatentsFileError(f"{where}: the {name} latent has dtype {value.dtype}, expected float32")
    if value.ndim not in ndims or value.size == 0:
        shapes = " or ".join({1: "[width]", 2: "[clips, width]"}[n] for n in ndims)
        raise LatentsFileError(f"{where}: the {name} latent has shape {value.shape}, expected {shapes}")
    if width is not None and value.shape[-1] != width:
        raise LatentsFileError(
            f"{where}: the {name} latent has width {value.shape[-1]} but the model expects {width}; recompute the "
            "latents with this checkpoint (get_conditioning_latents / `clvp-jax latents`)"
        )
    if not np.isfinite(value).all():
        raise LatentsFileError(f"{where}: the {name} latent holds NaN or infinite values; recompute it")
    if name == "autoregressive":
        check_latent_values(value, where)
    return value.astype(np.float32)


def save_conditioning_latents(
    path: str | os.PathLike, latents: np.ndarray, diffusion: np.ndarray | None = None
) -> Path:
    """Write latents atomically (temp file + rename).

    With `diffusion` (the diffusion conditioning latent [2W]; a [1, 2W] array, as Tortoise returns it, is
    flattened): a version-2 archive holding both. Without it: a version-1 `.npy` of the AR latent [D] (or
    [B, D]), byte for byte what earlier clvp-jax versions wrote, so codes-only files stay readable by them.
    """
    target = Path(path)
    where = str(target)
    ar = _checked_latent("autoregressive", latents, (1, 2), None, where)
    if diffusion is None:
        arrays = None
    else:
        diffusion = np.asarray(diffusion)
        diffusion = diffusion.reshape(-1) if diffusion.ndim == 2 and diffusion.shape[0] == 1 else diffusion
        arrays = {
            "format": np.array(LATENTS_FORMAT),
            "version": np.array(LATENTS_VERSION, np.int64),
            "autoregressive": ar,
            "diffusion": _checked_latent("diffusion", diffusion, (1,), None, where),
        }
    target.parent.mkdir(parents=True, exist_ok=True)
    with fs.atomic_file(target, "wb") as f:  # a unique temporary, renamed when complete; the user's umask
        if arrays is None:
            np.save(f, ar)
        else:
            np.savez(f, **arrays)
    return target


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__


def load_voice_latents(
    path: str | os.PathLike,
    model: ClvpModelForConditionalGeneration | None = None,
    diffusion_width: int | None = None,
) -> VoiceLatents:
    """Read a latents file of either version.

    Args:
      path: the file.
      model: when given, the AR latent's width must equal its decoder's hidden size.
      diffusion_width: when given, a diffusion latent present must have this width (2 x the diffusion model's
        channels); its absence is not an error here (see `VoiceLatents.require_diffusion`).

    Raises:
      FileNotFoundError: no file at `path`.
      LatentsFileError: not a latents file (corrupt, truncated, another format or a newer version), or a latent of
        the wrong shape, width or dtype.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"no latents file at {path}")
    raw = path.read_bytes()
    width = None if model is None else model.config.decoder_config.hidden_size
    corrupt = (
        f"{where} is not a readable clvp-jax latents file (expected a float32 .npy of the voice latent [width], "
        "or a version-2 .npz archive)"
    )
    fix = "recompute it from the voice clips (`clvp-jax latents --voice ... --out FILE`)"
    if raw.startswith(_NPY_MAGIC):
        try:
            ar = np.load(io.BytesIO(raw), allow_pickle=False)
        except Exception as error:  # truncated header or data, an object dtype (which would need a pickle)
            raise LatentsFileError(f"{corrupt}; it is damaged or holds objects ({_first_line(error)}); {fix}") from None
        return VoiceLatents(_checked_latent("autoregressive", ar, (1, 2), width, where), None, 1, where)
    if not raw.startswith(_ZIP_MAGIC):
        raise LatentsFileError(f"{corrupt} (neither a .npy array nor a version-2 archive); {fix}")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            entries = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as error:
        raise LatentsFileError(f"{corrupt} ({type(error).__name__}: {error}); {fix}") from None
    if str(entries.get("format", "")) != LATENTS_FORMAT or "version" not in entries:
        raise LatentsFileError(f"{corrupt} (an .npz archive without the latents header); {fix}")
    version = int(entries["version"])
    if version > LATENTS_VERSION:
        raise LatentsFileError(
            f"{where} is a version-{version} latents file, newer than this clvp-jax reads ({LATENTS_VERSION}); "
            "upgrade clvp-jax or recompute the latents"
        )
    if version != 2 or "autoregressive" not in entries:
        raise LatentsFileError(f"{corrupt} (version {version} without an autoregressive latent); {fix}")
    unknown = sorted(set(entries) - {"format", "version", "autoregressive", "diffusion"})
    if unknown:
        raise LatentsFileError(f"{corrupt} (unexpected entries {unknown}); {fix}")
    ar = _checked_latent("autoregressive", entries["autoregressive"], (1, 2), width, where)
    diffusion = entries.get("diffusion")
    if diffusion is not None:
        diffusion = _checked_latent("diffusion", diffusion, (1,), diffusion_width, where)
    return VoiceLatents(ar, diffusion, version, where)


def load_conditioning_latents(
    path: str | os.PathLike, model: ClvpModelForConditionalGeneration | None = None
) -> np.ndarray:
    """The AR latent of a latents file of either version (codes-only use); with `model`, its width is checked."""
    return load_voice_latents(path, model).autoregressive
