"""The waveform-stage models of one checkpoint: diffusion decoder + UnivNet vocoder (+ optional CVVP, HiFiGAN).

Two sources:
  `default_waveform_models(width)`  tiny RANDOM-weight models built deterministically at runtime (no files), the
                                    waveform half of the packaged default (a tiny HiFiGAN included, for the
                                    `vocoder="hifigan"` preview); their audio is meaningless noise.
  `load_waveform_models(folder)`    a clvp-jax checkpoint converted from a whole Tortoise (`clvp-jax convert
                                    FOLDER OUT`: the audio models are parameter groups of it), or a Tortoise
                                    models folder: `diffusion_decoder.pth` and `vocoder.pth` beside
                                    `autoregressive.pth` / `clvp2.pth` (optionally `cvvp.pth` and
                                    `hifidecoder.pth`, read only when asked for), converted on the fly by the
                                    strict converters of `clvp_jax.checkpoint.audio_models`. A folder's
                                    constructor kwargs come from `original_config.json` ("diffusion", "vocoder",
                                    "cvvp", "hifigan") when it has them, else from the shapes.
`with_diffusion_dtype(models, "bfloat16")` runs the diffusion decoder's matmuls in bf16 (weights cast once; norm
statistics, softmax and the output stay float32); the vocoder always runs in float32.
A checkpoint without the two audio models still makes speech codes; asking it for audio raises
`MissingAudioModelsError`, which names the missing files and how to get them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.waveform.cvvp import CVVP, CvvpConfig
from clvp_jax.waveform.diffusion import DiffusionTts, cast_weights
from clvp_jax.waveform.diffusion import param_shapes as diffusion_param_shapes
from clvp_jax.waveform.diffusion_config import DiffusionConfig
from clvp_jax.waveform.hifigan import HifiganConfig, HifiganGenerator
from clvp_jax.waveform.univnet import UnivNetConfig, UnivNetGenerator

DIFFUSION_FILE = "diffusion_decoder.pth"
VOCODER_FILE = "vocoder.pth"
CVVP_FILE = "cvvp.pth"
HIFIGAN_FILE = "hifidecoder.pth"
AUDIO_FILES = (DIFFUSION_FILE, VOCODER_FILE)
WEIGHTS_SOURCE = "the Hugging Face hub repository Manmay/tortoise-tts (where Tortoise's own get_model_path reads them)"
DIFFUSION_DTYPES = ("float32", "bfloat16")
DEFAULT_SEEDS = {"diffusion": 1, "vocoder": 2, "hifigan": 3}  # the packaged AR model uses seed 0


class MissingAudioModelsError(FileNotFoundError):
    """Audio was asked of a checkpoint without the diffusion decoder and vocoder files."""


@dataclasses.dataclass(frozen=True, eq=False)
class WaveformModels:
    """Everything after the AR stage.

    Attributes:
      diffusion: the `DiffusionTts` module; diffusion_variables: its {'params': ...}.
      vocoder_config: the UnivNet config; vocoder_params: its (weight-norm folded) parameter tree.
      cvvp: the CVVP scorer and cvvp_params, or None (not loaded, or not in the checkpoint).
      hifigan_config, hifigan_params: api_fast's HiFiGAN decoder (the `vocoder="hifigan"` preview: AR latents
        straight to audio), or None (not loaded, or not in the checkpoint).
      random_weights: True for the packaged default (meaningless audio).
      sources: the files read (empty for the packaged default).
    """

    diffusion: DiffusionTts
    diffusion_variables: dict
    vocoder_config: UnivNetConfig
    vocoder_params: dict
    cvvp: CVVP | None = None
    cvvp_params: dict | None = None
    hifigan_config: HifiganConfig | None = None
    hifigan_params: dict | None = None
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


def default_hifigan_config(latent_width: int) -> HifiganConfig:
    """The packaged default's HiFiGAN preview decoder: Tortoise's 256 samples per frame (strides 8, 8, 4) at width
    16, one resblock kernel, speaker embedding = the AR conditioning latent (width `latent_width`)."""
    return HifiganConfig(
        in_channels=latent_width, resblock_dilation_sizes=((1, 3, 5),), resblock_kernel_sizes=(3,),
        upsample_kernel_sizes=(16, 16, 8), upsample_initial_channel=16, upsample_factors=(8, 8, 4),
        cond_channels=latent_width,
    )  # fmt: skip


def _hifigan_shapes(config: HifiganConfig) -> dict:
    x = jnp.zeros((1, config.in_channels, 4), jnp.float32)
    g = jnp.zeros((1, config.cond_channels), jnp.float32) if config.cond_channels else None
    return jax.eval_shape(lambda: HifiganGenerator(config).init(jax.random.key(0), x, g))["params"]


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
    """The tiny random-weight diffusion decoder, vocoder and HiFiGAN of the packaged default (`DEFAULT_SEEDS`)."""
    dcfg, vcfg, hcfg = (
        default_diffusion_config(latent_width),
        default_vocoder_config(),
        default_hifigan_config(latent_width),
    )
    return WaveformModels(
        diffusion=DiffusionTts(dcfg),
        diffusion_variables=_random_like(diffusion_param_shapes(dcfg), DEFAULT_SEEDS["diffusion"]),
        vocoder_config=vcfg,
        vocoder_params=_random_like(_vocoder_shapes(vcfg), DEFAULT_SEEDS["vocoder"]),
        hifigan_config=hcfg,
        hifigan_params=_random_like(_hifigan_shapes(hcfg), DEFAULT_SEEDS["hifigan"]),
        random_weights=True,
    )


def audio_folder(checkpoint: str | os.PathLike) -> Path:
    """The folder that holds (or should hold) the audio models of `checkpoint` (a folder, or a `.pth` in one)."""
    path = Path(checkpoint)
    return path.parent if path.is_file() else path


def missing_audio_files(checkpoint: str | os.PathLike) -> list[str]:
    """Which of `AUDIO_FILES` the checkpoint lacks (empty: it can make audio): files missing from a Tortoise
    folder, or the original files of the models a clvp-jax checkpoint was converted without."""
    from clvp_jax.checkpoint.audio_models import AUDIO_MODELS, AUDIO_REQUIRED, available

    folder = audio_folder(checkpoint)
    if not folder.is_dir():
        return list(AUDIO_FILES)
    present = available(folder)
    return [AUDIO_MODELS[name].file for name in AUDIO_REQUIRED if name not in present]


def _missing_error(folder: Path, missing: list[str]) -> MissingAudioModelsError:
    from clvp_jax.checkpoint.audio_models import is_checkpoint

    if is_checkpoint(folder):
        return MissingAudioModelsError(
            f"{folder} is a clvp-jax checkpoint converted without {' or '.join(missing)}: it makes speech codes "
            "(`clvp-jax generate`) but not audio. Convert a Tortoise folder that holds "
            f"{' and '.join(AUDIO_FILES)} (from {WEIGHTS_SOURCE}) into one checkpoint: `clvp-jax convert FOLDER "
            "OUT` (or `clvp-jax convert Manmay/tortoise-tts OUT`), or run without --checkpoint for the packaged "
            "random-weight demo."
        )
    return MissingAudioModelsError(
        f"{folder} has no {' or '.join(missing)}: this checkpoint (AR + CLVP only) makes speech codes "
        f"(`clvp-jax generate`) but not audio. For audio put Tortoise's {' and '.join(AUDIO_FILES)} (from "
        f"{WEIGHTS_SOURCE}) beside autoregressive.pth, or run without --checkpoint for the packaged "
        "random-weight demo."
    )


def load_waveform_models(
    checkpoint: str | os.PathLike, *, with_cvvp: bool = False, with_hifigan: bool = False
) -> WaveformModels:
    """Read the diffusion decoder and vocoder (and CVVP / the HiFiGAN decoder when asked for and present) of a
    Tortoise folder or of a clvp-jax checkpoint converted from one (`clvp-jax convert FOLDER OUT`); a Hub repo
    id (`Manmay/tortoise-tts`) is fetched first (only the files asked for).

    Raises:
      MissingAudioModelsError: the diffusion decoder or the vocoder is missing (the message names the files and
        how to get them); with `with_hifigan`, also a missing `hifidecoder.pth`.
      ValueError / CheckpointError: a model that does not fit its config (every problem listed by the converter),
        or a checkpoint file altered since it was written.
    """
    from clvp_jax.checkpoint.audio_models import available, read_model
    from clvp_jax.checkpoint.hub import is_repo_id, resolve_checkpoint

    if is_repo_id(checkpoint):
        jobs = ["audio", *(["cvvp"] if with_cvvp else []), *(["hifigan"] if with_hifigan else [])]
        checkpoint = resolve_checkpoint(checkpoint, need=jobs)
    folder = audio_folder(checkpoint)
    missing = missing_audio_files(folder)
    if missing:
        raise _missing_error(folder, missing)
    present = available(folder)
    if with_hifigan and "hifigan" not in present:
        raise MissingAudioModelsError(
            f"{folder} has no {HIFIGAN_FILE} (api_fast's HiFiGAN decoder, from {WEIGHTS_SOURCE}): put it beside the "
            "other files (and re-convert a clvp-jax checkpoint), or use the UnivNet vocoder (--vocoder univnet)"
        )
    kwargs, variables = read_model(folder, "diffusion")
    dcfg = DiffusionConfig.from_original_kwargs(kwargs)
    kwargs, vocoder_params = read_model(folder, "vocoder")
    vcfg = UnivNetConfig.from_original(kwargs)
    sources = [str(folder / name) for name in AUDIO_FILES]
    cvvp = cvvp_params = hcfg = hifigan_params = None
    if with_cvvp and "cvvp" in present:
        kwargs, cvvp_params = read_model(folder, "cvvp")
        cvvp = CVVP(CvvpConfig.from_original(kwargs))
        sources.append(str(folder / CVVP_FILE))
    if with_hifigan:
        kwargs, hifigan_params = read_model(folder, "hifigan")
        hcfg = HifiganConfig.from_original(kwargs)
        sources.append(str(folder / HIFIGAN_FILE))
    return WaveformModels(
        diffusion=DiffusionTts(dcfg),
        diffusion_variables=_to_device(variables),
        vocoder_config=vcfg,
        vocoder_params=_to_device(vocoder_params),
        cvvp=cvvp,
        cvvp_params=_to_device(cvvp_params),
        hifigan_config=hcfg,
        hifigan_params=_to_device(hifigan_params),
        sources=tuple(sources),
    )


def with_diffusion_dtype(models: WaveformModels, dtype: str) -> WaveformModels:
    """`models` with the diffusion decoder computing in `dtype` ("float32" or "bfloat16"): its matmul weights cast
    once (`waveform.diffusion.cast_weights`; norms, relative-bias tables and embeddings stay float32), the module's
    compute dtype set. "bfloat16" uses the bf16 dot units (AMX, TPU) with float32 accumulation; norm statistics,
    softmax and the step's output stay float32, so the sampler's state is float32 either way. The vocoder, CVVP
    and HiFiGAN are untouched (float32: UnivNet in bf16 measured only 17 dB SNR at real size). A no-op when the
    decoder already computes in `dtype`. A bf16 decoder started from bf16 weights cannot go back to float32
    exactly: build float32 models and convert those instead.

    Raises:
      ValueError: `dtype` is not one of `DIFFUSION_DTYPES`, or a float32 decoder is asked of bf16 weights.
    """
    if dtype not in DIFFUSION_DTYPES:
        raise ValueError(f"diffusion dtype must be one of {', '.join(DIFFUSION_DTYPES)}, got {dtype!r}")
    target = jnp.dtype(dtype)
    if jnp.dtype(models.diffusion.dtype) == target:
        return models
    if target == jnp.float32:
        raise ValueError(
            "these waveform models' diffusion weights are already bfloat16: load them again for a float32 decoder"
        )
    return dataclasses.replace(
        models,
        diffusion=models.diffusion.clone(dtype=target),
        diffusion_variables=cast_weights(models.diffusion_variables, target),
    )


def _to_device(tree: Any) -> Any:
    return None if tree is None else jax.tree_util.tree_map(jnp.asarray, tree)
