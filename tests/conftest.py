"""Shared fixtures: the tiny reference models of `reference_models.py` and their converted clvp-jax params."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Let tests import their sibling helper modules (reference_models, frontend_utils, ...).
sys.path.insert(0, str(Path(__file__).parent))
# Tests are CPU-only and must not grab every core of a shared machine for XLA's thread pool twice over.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import reference_models  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only shared/ folder beside the checkout (real vocabulary, clips, Tortoise fixtures)."""
    assert SHARED.is_dir(), f"shared data folder missing: {SHARED}"
    return SHARED


@pytest.fixture(scope="session", params=sorted(reference_models.CONFIGS))
def config_name(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def reference(config_name):
    """(hf_model, state_dict, clvp_jax config, clvp_jax params) for one tiny configuration."""
    from clvp_jax.weights import state_dict_to_params

    hf, state = reference_models.reference_model(config_name)
    cfg = reference_models.ours_config(config_name)
    return hf, state, cfg, state_dict_to_params(state, cfg)
