#!/usr/bin/env bash
# The test command: set up .venv with the test extras, lint, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Persistent JAX compilation cache shared by the test processes (speeds up reruns; harmless on a fresh clone).
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$PWD/.venv/jax-cache}"
exec .venv/bin/python -m pytest -q "$@"
