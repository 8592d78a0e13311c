"""The audio models of a whole Tortoise, read from its original files or from one clvp-jax checkpoint.

Tortoise ships every model as its own `.pth` (`AUDIO_MODELS`): the diffusion decoder and the UnivNet vocoder
(needed for audio), and optionally CVVP, the api_fast HiFiGAN decoder and the two random-voice generators. A
clvp-jax checkpoint converted from a Tortoise folder holds them all beside the AR and CLVP groups:

  params/<name>/        one orbax item per model (the same machinery as the AR/CLVP groups), whose files are
                        sha256-checksummed in the manifest's `files` like every other parameter file
  manifest.json         "audio_models": {name: {"file": the original file name, "config": its constructor kwargs}}

The kwargs are the original constructors' keyword arguments (what `original_config.json` holds per section), so
the model config survives the round trip and the folder converts back to the original `.pth` names
(`export_tortoise_files`). The parameter trees are exactly what the per-file converters
(`clvp_jax.checkpoint.tortoise_*`) return, stored float32 whatever `--dtype` the AR/CLVP half is cast to (the
waveform stage computes in float32); on load each is checked strictly against its config's `jax.eval_shape` tree.

`read_model(folder, name)` reads one model from either kind of folder (a Tortoise folder's `.pth`, converted on
the fly, or a checkpoint's group), so the waveform bundle does not care which it was given.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flax.traverse_util import flatten_dict

from clvp_jax.checkpoint.errors import CheckpointError, WeightsMismatchError
from clvp_jax.checkpoint.hashing import NO_VERIFY_ENV, find_altered, verify_requested
from clvp_jax.checkpoint.progress import report

Kwargs = dict[str, Any]
Reader = Callable[[Path, "Kwargs | None"], tuple[Kwargs, dict]]


@dataclasses.dataclass(frozen=True)
class AudioModel:
    """One original audio file and how it converts.

    Attributes:
      name: the parameter group (`params/<name>/`) and the manifest key.
      file: the original file name in a Tortoise models folder.
      section: the `original_config.json` section holding its constructor kwargs.
      what: a few words for messages.
      read: (path, kwargs or None) -> (kwargs, parameter tree): the strict `.pth` converter.
      shapes: kwargs -> {flat path: ShapeDtypeStruct} of the parameter tree (the strict check on load).
      export: (kwargs, tree) -> the original state dict, as the original code loads it.
    """

    name: str
    file: str
    section: str
    what: str
    read: Reader
    shapes: Callable[[Kwargs], Mapping[tuple[str, ...], Any]]
    export: Callable[[Kwargs, Mapping], dict]


# ---- the per-model adapters (lazy imports: each pulls in its Flax module) -----------------------------------------


def _read_diffusion(path: Path, kwargs: Kwargs | None) -> tuple[Kwargs, dict]:
    from clvp_jax.checkpoint.tortoise_diffusion import load_original
    from clvp_jax.waveform.diffusion_config import DiffusionConfig

    config, variables = load_original(path, DiffusionConfig.from_original_kwargs(kwargs) if kwargs else None)
    return config.to_original_kwargs(), variables


def _diffusion_shapes(kwargs: Kwargs):
    from clvp_jax.waveform.diffusion import param_shapes
    from clvp_jax.waveform.diffusion_config import DiffusionConfig

    return flatten_dict(param_shapes(DiffusionConfig.from_original_kwargs(kwargs)))


def _export_diffusion(kwargs: Kwargs, tree: Mapping) -> dict:
    from clvp_jax.checkpoint.tortoise_diffusion import original_from_params
    from clvp_jax.waveform.diffusion_config import DiffusionConfig

    return original_from_params(tree, DiffusionConfig.from_original_kwargs(kwargs))


def _read_vocoder(path: Path, kwargs: Kwargs | None) -> tuple[Kwargs, dict]:
    from clvp_jax.checkpoint.tortoise_vocoder import load_vocoder
    from clvp_jax.waveform.univnet import UnivNetConfig

    params, config = load_vocoder(path, UnivNetConfig.from_original(kwargs) if kwargs else None)
    return config.to_original(), params


def _vocoder_shapes(kwargs: Kwargs):
    from clvp_jax.checkpoint.tortoise_vocoder import expected_params
    from clvp_jax.waveform.univnet import UnivNetConfig

    return expected_params(UnivNetConfig.from_original(kwargs))


def _export_vocoder(kwargs: Kwargs, tree: Mapping) -> dict:
    from clvp_jax.checkpoint.tortoise_vocoder import WRAPPER_KEY, params_to_state_dict
    from clvp_jax.waveform.univnet import UnivNetConfig

    # The weight-norm form: api.py loads vocoder.pth strictly into a weight-normed generator.
    return {WRAPPER_KEY: params_to_state_dict(tree, UnivNetConfig.from_original(kwargs), weight_norm=True)}


def _read_cvvp(path: Path, kwargs: Kwargs | None) -> tuple[Kwargs, dict]:
    from clvp_jax.checkpoint.tortoise_cvvp import load_cvvp
    from clvp_jax.waveform.cvvp import CvvpConfig

    config, params = load_cvvp(path, CvvpConfig.from_original(kwargs) if kwargs else None)
    return config.to_original(), params


def _cvvp_shapes(kwargs: Kwargs):
    from clvp_jax.checkpoint.tortoise_cvvp import expected_params
    from clvp_jax.waveform.cvvp import CvvpConfig

    return expected_params(CvvpConfig.from_original(kwargs))


def _export_cvvp(kwargs: Kwargs, tree: Mapping) -> dict:
    from clvp_jax.checkpoint.tortoise_cvvp import params_to_state_dict
    from clvp_jax.waveform.cvvp import CvvpConfig

    return params_to_state_dict(tree, CvvpConfig.from_original(kwargs))


def _read_hifigan(path: Path, kwargs: Kwargs | None) -> tuple[Kwargs, dict]:
    from clvp_jax.checkpoint.tortoise_hifigan import load_hifigan
    from clvp_jax.waveform.hifigan import HifiganConfig

    params, config = load_hifigan(path, HifiganConfig.from_original(kwargs) if kwargs else None)
    return config.to_original(), params


def _hifigan_shapes(kwargs: Kwargs):
    from clvp_jax.checkpoint.tortoise_hifigan import expected_params
    from clvp_jax.waveform.hifigan import HifiganConfig

    return expected_params(HifiganConfig.from_original(kwargs))


def _export_hifigan(kwargs: Kwargs, tree: Mapping) -> dict:
    from clvp_jax.checkpoint.tortoise_hifigan import params_to_state_dict
    from clvp_jax.waveform.hifigan import HifiganConfig

    return params_to_state_dict(tree, HifiganConfig.from_original(kwargs), weight_norm=True)


def _rlg(channels: int) -> tuple[Reader, Callable, Callable]:
    def read(path: Path, kwargs: Kwargs | None) -> tuple[Kwargs, dict]:
        from clvp_jax.checkpoint.tortoise_rlg import load_original

        width, variables = load_original(path, (kwargs or {}).get("channels", channels))
        return {"channels": width}, variables

    def shapes(kwargs: Kwargs):
        from clvp_jax.waveform.random_latents import param_shapes

        return flatten_dict(param_shapes(int(kwargs["channels"])))

    def export(kwargs: Kwargs, tree: Mapping) -> dict:
        from clvp_jax.checkpoint.tortoise_rlg import original_from_params

        return original_from_params(tree, int(kwargs["channels"]))

    return read, shapes, export


AUDIO_MODELS: dict[str, AudioModel] = {
    m.name: m
    for m in (
        AudioModel(
            "diffusion",
            "diffusion_decoder.pth",
            "diffusion",
            "diffusion decoder",
            _read_diffusion,
            _diffusion_shapes,
            _export_diffusion,
        ),  # fmt: skip
        AudioModel(
            "vocoder", "vocoder.pth", "vocoder", "UnivNet vocoder", _read_vocoder, _vocoder_shapes, _export_vocoder
        ),
        AudioModel("cvvp", "cvvp.pth", "cvvp", "CVVP voice scorer", _read_cvvp, _cvvp_shapes, _export_cvvp),
        AudioModel(
            "hifigan",
            "hifidecoder.pth",
            "hifigan",
            "HiFiGAN preview decoder",
            _read_hifigan,
            _hifigan_shapes,
            _export_hifigan,
        ),  # fmt: skip
        AudioModel("rlg_auto", "rlg_auto.pth", "rlg_auto", "random-voice AR latent generator", *_rlg(1024)),
        AudioModel(
            "rlg_diffuser", "rlg_diffuser.pth", "rlg_diffuser", "random-voice diffusion latent generator", *_rlg(2048)
        ),
    )
}
"""Every audio model a Tortoise folder may hold, by parameter-group name."""
AUDIO_REQUIRED = ("diffusion", "vocoder")
"""What audio needs (the rest are optional extras)."""


def model_for_file(file: str) -> AudioModel:
    """The audio model stored in original file `file` (e.g. 'vocoder.pth')."""
    return next(m for m in AUDIO_MODELS.values() if m.file == file)


# ---- which models a folder has -----------------------------------------------------------------------------------


def is_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether `folder` is a clvp-jax checkpoint (manifest + params/), not a Tortoise folder."""
    folder = Path(folder)
    return (folder / "manifest.json").is_file() and (folder / "params").is_dir()


def _manifest_models(folder: Path) -> dict[str, dict]:
    from clvp_jax.checkpoint.format import read_manifest

    models = read_manifest(folder).get("audio_models") or {}
    if not isinstance(models, dict):
        raise CheckpointError(f"{folder}/manifest.json: 'audio_models' is not an object; re-create the checkpoint")
    return models


def available(folder: str | os.PathLike) -> tuple[str, ...]:
    """The audio models `folder` holds (a clvp-jax checkpoint's groups, or a Tortoise folder's files), in
    `AUDIO_MODELS` order."""
    folder = Path(folder)
    if is_checkpoint(folder):
        present = set(_manifest_models(folder))
        return tuple(name for name in AUDIO_MODELS if name in present)
    return tuple(name for name, m in AUDIO_MODELS.items() if (folder / m.file).is_file())


def _original_kwargs(folder: Path, section: str) -> Kwargs | None:
    import json

    path = folder / "original_config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a JSON object of constructor arguments ({err}); fix or remove it"
        ) from err
    return data.get(section)


# ---- reading -----------------------------------------------------------------------------------------------------


def read_original(folder: str | os.PathLike, name: str) -> tuple[Kwargs, dict]:
    """Convert one model's original `.pth` of a Tortoise folder: (constructor kwargs, parameter tree), strictly.

    The kwargs come from the folder's `original_config.json` section when it has one, else from the shapes.
    """
    model, folder = AUDIO_MODELS[name], Path(folder)
    return model.read(folder / model.file, _original_kwargs(folder, model.section))


def check_tree(name: str, kwargs: Kwargs, tree: Mapping, where: str) -> None:
    """Every leaf of `tree` present with the shape and dtype `kwargs`' model has, and nothing else; else one error
    listing every problem."""
    want = {tuple(map(str, k)): v for k, v in AUDIO_MODELS[name].shapes(kwargs).items()}
    got = {tuple(map(str, k)): v for k, v in flatten_dict(dict(tree)).items()}
    missing = sorted("/".join(k) for k in set(want) - set(got))
    unexpected = sorted("/".join(k) for k in set(got) - set(want))
    mismatched, mistyped = [], []
    for key in sorted(set(want) & set(got)):
        value, spec = np.asarray(got[key]), want[key]
        if tuple(value.shape) != tuple(spec.shape):
            mismatched.append(("/".join(key), tuple(value.shape), tuple(spec.shape)))
        elif value.dtype != np.dtype(spec.dtype):
            mistyped.append(("/".join(key), value.dtype.name, np.dtype(spec.dtype).name))
    if missing or unexpected or mismatched or mistyped:
        raise WeightsMismatchError(
            missing=missing, unexpected=unexpected, mismatched=mismatched, mistyped=mistyped, context=where
        )


def read_checkpoint_model(folder: str | os.PathLike, name: str, *, verify: bool | None = None) -> tuple[Kwargs, dict]:
    """One audio model of a clvp-jax checkpoint: (constructor kwargs, numpy parameter tree).

    Its files are checked against the manifest's sha256s first (unless `verify` is False or
    `CLVP_JAX_NO_VERIFY=1`), and the tree against its config. Raises `CheckpointError` / `WeightsMismatchError`.
    """
    import jax

    from clvp_jax.checkpoint.format import read_manifest
    from clvp_jax.checkpoint.orbax_io import restore_groups

    folder = Path(folder).absolute()
    manifest = read_manifest(folder)
    entry = (manifest.get("audio_models") or {}).get(name)
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        raise CheckpointError(f"{folder} holds no {AUDIO_MODELS[name].what} ({name}); see available()")
    recorded = manifest.get("files")
    report(f"reading {name}")
    if verify_requested(verify) and isinstance(recorded, dict):
        altered = find_altered(folder, group_files(recorded, [name]))
        if altered:
            raise CheckpointError(
                f"{folder} was altered after it was written: {', '.join(altered[:5])}; re-create the checkpoint "
                f"(or skip this check with verify=False / {NO_VERIFY_ENV}=1)"
            )
    tree = restore_groups(folder / "params", [name])[name]
    tree = jax.tree_util.tree_map(np.asarray, dict(tree))
    check_tree(name, entry["config"], tree, f"{folder} [{name}]")
    return dict(entry["config"]), tree


def read_model(folder: str | os.PathLike, name: str, *, verify: bool | None = None) -> tuple[Kwargs, dict]:
    """One audio model from a clvp-jax checkpoint or a Tortoise folder (see the module docstring)."""
    if is_checkpoint(folder):
        return read_checkpoint_model(folder, name, verify=verify)
    return read_original(folder, name)


def group_files(recorded: Mapping[str, str], groups: Sequence[str]) -> dict[str, str]:
    """The entries of a manifest's `files` that belong to the parameter groups `groups` (`params/<g>/...`)."""
    prefixes = tuple(f"params/{g}/" for g in groups)
    return {k: v for k, v in recorded.items() if k.startswith(prefixes)}


# ---- converting a folder and back --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AudioGroup:
    """One converted audio model, ready to save. Attributes: kwargs (constructor kwargs), tree (numpy params),
    source (the original file it came from, or None when carried over from a clvp-jax checkpoint)."""

    kwargs: Kwargs
    tree: dict
    source: Path | None = None


def convert_folder(
    folder: str | os.PathLike, *, log: Callable[[str], None] | None = None, verify: bool | None = None
) -> dict[str, AudioGroup]:
    """Every audio model of `folder` (a Tortoise folder or a clvp-jax checkpoint), converted and checked; `log`
    gets one line per model with its size and time."""
    import time

    folder = Path(folder)
    out = {}
    for name in available(folder):
        model = AUDIO_MODELS[name]
        started = time.perf_counter()
        if is_checkpoint(folder):
            kwargs, tree = read_checkpoint_model(folder, name, verify=verify)
            source = None
        else:
            source = folder / model.file
            if log:
                log(f"reading {model.file} ({model.what}, {source.stat().st_size / 1e6:.1f} MB)")
            kwargs, tree = model.read(source, _original_kwargs(folder, model.section))
        out[name] = AudioGroup(kwargs, tree, source)
        if log:
            log(f"  {name}: {_count(tree) / 1e6:.2f} M parameters in {time.perf_counter() - started:.1f} s")
    return out


def _count(tree: Mapping) -> int:
    return sum(int(np.prod(np.shape(v))) for v in flatten_dict(dict(tree)).values())


def manifest_entry(groups: Mapping[str, AudioGroup]) -> dict[str, dict]:
    """The manifest's "audio_models" object for `groups`."""
    return {name: {"file": AUDIO_MODELS[name].file, "config": g.kwargs} for name, g in groups.items()}


def export_tortoise_files(folder: str | os.PathLike, out: str | os.PathLike) -> list[Path]:
    """Write a clvp-jax checkpoint's audio models back under their original names (`torch.save`, needs torch)
    into the existing folder `out`, with their kwargs merged into `out/original_config.json`. The written paths.

    The vocoder and HiFiGAN are written in the weight-norm form the original loads (v = w, g = ||w||: it folds
    back to w within float32 rounding); the other models exactly.
    """
    import json

    import torch

    from clvp_jax import fs

    folder, out = Path(folder), Path(out)
    written, sections = [], {}
    for name in available(folder):
        model = AUDIO_MODELS[name]
        kwargs, tree = read_checkpoint_model(folder, name)
        state = model.export(kwargs, tree)

        def to_torch(value):
            if isinstance(value, dict):
                return {k: to_torch(v) for k, v in value.items()}
            return torch.from_numpy(np.array(value))  # a contiguous copy; 0-d stays 0-d (unlike ascontiguousarray)

        with fs.atomic_file(out / model.file, "wb") as f:
            torch.save(to_torch(state), f)
        written.append(out / model.file)
        sections[model.section] = kwargs
    config_path = out / "original_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    fs.write_text(config_path, json.dumps(config | sections, indent=2) + "\n")
    return written
