"""The tiny original-format waveform fixture (tests/data/tortoise_tiny_waveform): state dicts, configs, oracle."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

WAVEFORM_DIR = Path(__file__).resolve().parent / "data" / "tortoise_tiny_waveform"


@functools.cache
def reference() -> dict[str, np.ndarray]:
    """Every array of reference.npz (inputs, outputs and recorded random draws of the original code)."""
    with np.load(WAVEFORM_DIR / "reference.npz") as npz:
        return {name: npz[name] for name in npz.files}


@functools.cache
def original_config() -> dict:
    """The exact constructor kwargs (`diffusion`, `vocoder`, `cvvp`, `hifigan`) and sampler settings."""
    return json.loads((WAVEFORM_DIR / "original_config.json").read_text())


def state_dict(name: str) -> dict[str, np.ndarray]:
    """A checkpoint of the fixture as numpy arrays (`name`: diffusion_decoder, vocoder, cvvp or hifidecoder);
    read with `torch.load(weights_only=True)`; the vocoder's `{"model_g": ...}` wrapper is kept as is."""
    import torch

    loaded = torch.load(WAVEFORM_DIR / f"{name}.pth", map_location="cpu", weights_only=True)

    def to_numpy(tree):
        if isinstance(tree, dict):
            return {k: to_numpy(v) for k, v in tree.items()}
        return tree.numpy() if hasattr(tree, "numpy") else tree

    return to_numpy(loaded)
