"""The waveform-stage models of one checkpoint: diffusion decoder + UnivNet vocoder (+ optional CVVP).

Two sources:
  `default_waveform_models(width)`  tiny RANDOM-weight models built deterministically at runtime (no files), the
                                    waveform half of the packaged default; their audio is meaningless noise.
  `load_waveform_models(folder)`    a Tortoise models folder: `diffusion_decoder.pth` and `vocoder.pth` beside
                                    `autoregressive.pth` / `clvp2.pth` (optionally `cvvp.pth`, read only when
                                    asked for), converted on the fly by the strict converters in
                                    `clvp_jax.checkpoint`. Constructor kwargs come from `original_config.json`
                                    ("diffusion", "vocoder", "cvvp") when it has them, else from the shapes.
A folder without the two audio files still makes speech codes; asking it for audio raises
`MissingAudioModelsError`, which names the missing files and where they come from.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.waveform.cvvp import CVVP, CvvpConfig
from clvp_jax.waveform.diffusion import DiffusionTts
from clvp_jax.waveform.diffusion import param_shapes as diffusion_param_shapes
from clvp_jax.waveform.diffusion_config import DiffusionConfig
from clvp_jax.waveform.univnet import UnivNetConfig, UnivNetGenerator

DIFFUSION_FILE = "diffusion_decoder.pth"
VOCODER_FILE = "vocoder.pth"
CVVP_FILE = "cvvp.pth"
AUDIO_FILES = (DIFFUSION_FILE, VOCODER_FILE)
WEIGHTS_SOURCE = "the Hugging Face hub repository Manmay/tortoise-tts (where Tortoise's own get_model_path reads them)"
DEFAULT_SEEDS = {"diffusion": 1, "vocoder": 2}  # the packaged AR model uses seed 0


class MissingAudioModelsError(FileNotFoundError):
    """Audio was asked of a checkpoint without the diffusion decoder and vocoder files."""


@dataclasses.dataclass(frozen=True, eq=False)
class WaveformModels:
    """Everything after the AR stage.

    Attributes:
      diffusion: the `DiffusionTts` module; diffusion_variables: its {'params': ...}.
      vocoder_config: the UnivNet config; vocoder_params: its (weight-norm folded) parameter tree.
      cvvp: the CVVP scorer and cvvp_params, or None (not loaded, or not in the checkpoint).
      random_weights: True for the packaged default (meaningless audio).
      sources: the files read (empty for the packaged default).
    """

    diffusion: DiffusionTts
    diffusion_variables: dict
    vocoder_config: UnivNetConfig
    vocoder_params: dict
    cvvp: CVVP | None = None
    cvvp_params: dict | None = None
    random_weights: bool = False
    sources: tuple[str, ...] = ()

    @property
    def hop_length(self) -> int:
        """Audio samples per mel frame (256 for Tortoise's UnivNet: 24 kHz at 93.75 frames/s)."""
        return self.vocoder_config.upsampling

    @property
    def diffusion_width(self) -> int:
        """Width of the diffusion conditioning latent (2 x model_channels)."""
        return 2 * self.diffusion.config.model_channels


def default_diffusion_config(latent_width: int) -> DiffusionConfig:
    """The packaged default's diffusion decoder: Tortoise's layout at width 32, one layer, for AR width `latent_width`."""
    return DiffusionConfig(model_channels=32, num_layers=1, in_latent_channels=latent_width, num_heads=2)


def default_vocoder_config() -> UnivNetConfig:
    """The packaged default's vocoder: Tortoise's strides (8, 8, 4: 256 samples per frame, 24 kHz) at width 4."""
    return UnivNetConfig(noise_dim=16, channel_size=4, dilations=(1, 3, 9), strides=(8, 8, 4), hop_length=256)


def _random_like(shapes: Any, seed: int) -> Any:
    """Random parameters for a tree of `jax.ShapeDtypeStruct`s, from a seeded numpy generator, without compiling
    the model's init (which took 30-45 s of compilation on 2 cores for these tiny models; this takes well under
    one). Biases are 0, other 1-D leaves (norm gains) 1, matrices and kernels normal with std 1/sqrt(fan-in), the
    fan-in taken as the product of all but the largest axis (so it does not depend on the layout)."""
    rng = np.random.default_rng(seed)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    out = []
    for path, leaf in leaves:
        name = str(getattr(path[-1], "key", path[-1]))
        if "bias" in name or "shift" in name:
            value = np.zeros(leaf.shape, np.float32)
        elif len(leaf.shape) <= 1:
            value = np.ones(leaf.shape, np.float32)
        else:
            fan_in = int(np.prod(leaf.shape)) // max(leaf.shape)
            value = rng.standard_normal(leaf.shape, dtype=np.float32) / np.float32(np.sqrt(max(fan_in, 1)))
        out.append(jnp.asarray(value, leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def _vocoder_shapes(config: UnivNetConfig) -> dict:
    frames = 8  # the reflect padding of conv_pre / conv_post needs more than 3 frames
    mel = jnp.zeros((1, config.n_mel_channels, frames), jnp.float32)
    z = jnp.zeros((1, config.noise_dim, frames), jnp.float32)
    return jax.eval_shape(lambda: UnivNetGenerator(config).init(jax.random.key(0), mel, z))["params"]


@functools.lru_cache(maxsize=4)
def default_waveform_models(latent_width: int) -> WaveformModels:
    """The tiny random-weight diffusion decoder and vocoder of the packaged default (seeds `DEFAULT_SEEDS`)."""
    dcfg, vcfg = default_diffusion_config(latent_width), default_vocoder_config()
    return WaveformModels(
        diffusion=DiffusionTts(dcfg),
        diffusion_variables=_random_like(diffusion_param_shapes(dcfg), DEFAULT_SEEDS["diffusion"]),
        vocoder_config=vcfg,
        vocoder_params=_random_like(_vocoder_shapes(vcfg), DEFAULT_SEEDS["vocoder"]),
        random_weights=True,
    )


def audio_folder(checkpoint: str | os.PathLike) -> Path:
    """The folder that holds (or should hold) the audio files of `checkpoint` (a folder, or a `.pth` in one)."""
    path = Path(checkpoint)
    return path.parent if path.is_file() else path


def missing_audio_files(checkpoint: str | os.PathLike) -> list[str]:
    """Which of `AUDIO_FILES` the checkpoint's folder lacks (empty: it can make audio)."""
    folder = audio_folder(checkpoint)
    return [name for name in AUDIO_FILES if not (folder / name).is_file()]


def _original_kwargs(folder: Path, part: str) -> dict[str, Any] | None:
    path = folder / "original_config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get(part)
    except (ValueError, AttributeError) as error:
        raise ValueError(f"{path} is not a JSON object of constructor arguments ({error})") from None


def load_waveform_models(checkpoint: str | os.PathLike, *, with_cvvp: bool = False) -> WaveformModels:
    """Read the diffusion decoder and vocoder (and, with `with_cvvp`, CVVP if present) of a Tortoise folder.

    Raises:
      MissingAudioModelsError: `diffusion_decoder.pth` or `vocoder.pth` is missing (the message names them).
      ValueError / CheckpointError: a file that does not fit its model (every problem listed by the converter).
    """
    folder = audio_folder(checkpoint)
    missing = missing_audio_files(folder)
    if missing:
        raise MissingAudioModelsError(
            f"{folder} has no {' or '.join(missing)}: this checkpoint (AR + CLVP only) makes speech codes "
            f"(`clvp-jax generate`) but not audio. For audio put Tortoise's {' and '.join(AUDIO_FILES)} (from "
            f"{WEIGHTS_SOURCE}) beside autoregressive.pth, or run without --checkpoint for the packaged "
            "random-weight demo."
        )
    from clvp_jax.checkpoint.tortoise_diffusion import load_original as load_diffusion
    from clvp_jax.checkpoint.tortoise_vocoder import load_vocoder

    kwargs = _original_kwargs(folder, "diffusion")
    dcfg = DiffusionConfig.from_original_kwargs(kwargs) if kwargs else None
    dcfg, variables = load_diffusion(folder / DIFFUSION_FILE, dcfg)
    kwargs = _original_kwargs(folder, "vocoder")
    vocoder_params, vcfg = load_vocoder(folder / VOCODER_FILE, UnivNetConfig.from_original(kwargs) if kwargs else None)
    sources = [str(folder / DIFFUSION_FILE), str(folder / VOCODER_FILE)]
    cvvp = cvvp_params = None
    if with_cvvp and (folder / CVVP_FILE).is_file():
        from clvp_jax.checkpoint.tortoise_cvvp import load_cvvp

        kwargs = _original_kwargs(folder, "cvvp")
        ccfg, cvvp_params = load_cvvp(folder / CVVP_FILE, CvvpConfig.from_original(kwargs) if kwargs else None)
        cvvp = CVVP(ccfg)
        sources.append(str(folder / CVVP_FILE))
    return WaveformModels(
        diffusion=DiffusionTts(dcfg),
        diffusion_variables=jax.tree_util.tree_map(jnp.asarray, variables),
        vocoder_config=vcfg,
        vocoder_params=jax.tree_util.tree_map(jnp.asarray, vocoder_params),
        cvvp=cvvp,
        cvvp_params=None if cvvp_params is None else jax.tree_util.tree_map(jnp.asarray, cvvp_params),
        sources=tuple(sources),
    )
