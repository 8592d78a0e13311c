"""Shared fixtures: the tiny reference models of `reference_models.py` and their converted clvp-jax params."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest

# Let tests import their sibling helper modules (reference_models, frontend_utils, ...).
sys.path.insert(0, str(Path(__file__).parent))
# Tests are CPU-only and must not grab every core of a shared machine for XLA's thread pool twice over.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Remembered checksums (`checkpoint.hashing.remembered_sha256`) go to a folder of this run, not the user's ~/.cache.
if "CLVP_JAX_HASH_MEMO" not in os.environ:
    import tempfile

    os.environ["CLVP_JAX_HASH_MEMO"] = tempfile.mkdtemp(prefix="clvp-jax-test-cache-")

import reference_models  # noqa: E402

# ---- fixture files (tests/data, see its README for provenance) -------------------------------------------------

DATA = Path(__file__).resolve().parent / "data"


@dataclasses.dataclass(frozen=True)
class TortoiseTiny:
    """The tiny original-format fixture. Attributes: folder (autoregressive.pth, clvp2.pth, original_config.json,
    meta.json), reference (the original code's outputs, `reference.npz`, see the folder's README)."""

    folder: Path
    reference: dict


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """tests/data: the fixture files the tests read (vocabulary, clips, tiny original checkpoints)."""
    return DATA


@pytest.fixture(scope="session")
def tortoise_tiny() -> TortoiseTiny:
    """tests/data/tortoise_tiny with its oracle loaded (read-only: tests copy files they change)."""
    import numpy as np

    folder = DATA / "tortoise_tiny"
    return TortoiseTiny(folder, dict(np.load(folder / "reference.npz")))


@pytest.fixture(scope="session", params=sorted(reference_models.CONFIGS))
def config_name(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def reference(config_name, reference_of):
    """(hf_model, state_dict, clvp_jax config, clvp_jax params) for one tiny configuration."""
    return reference_of(config_name)


# ---- shared models (session scope): built once, used by every test file that needs them ----


@pytest.fixture(scope="session")
def tiny_model():
    """(model, params): `ClvpConfig.tiny()` with random weights (seed 0), masked pooling. Treat params as
    read-only (copy before editing a leaf)."""
    import jax

    from clvp_jax.config import ClvpConfig
    from clvp_jax.model import ClvpModelForConditionalGeneration, init_params

    config = ClvpConfig.tiny()
    return ClvpModelForConditionalGeneration(config), init_params(config, jax.random.key(0))


@pytest.fixture(scope="session")
def reference_of():
    """name -> (hf_model, state_dict, clvp_jax config, clvp_jax params) of one tiny reference configuration.

    The transformers model is built once per session (`reference_models.reference_model` is cached; import that
    module as `reference_models`, never as `tests.reference_models`, which would be a second copy with its own
    cache and build every model twice).
    """
    import functools

    from clvp_jax.checkpoint import state_dict_to_params

    @functools.cache
    def build(name: str):
        hf, state = reference_models.reference_model(name)
        cfg = reference_models.ours_config(name)
        return hf, state, cfg, state_dict_to_params(state, cfg)

    return build
