#!/usr/bin/env bash
# Create ./.venv (Python >= 3.11) and install clvp-jax into it, idempotently.
#   scripts/setup.sh          runtime only (jax, flax, ...; no torch)
#   scripts/setup.sh test     + the test extras (transformers, pytest, ...) and torch==2.13.0 (CPU)
# CLVP_JAX_EXTRA adds optional extras of pyproject.toml, comma-separated: cuda12 (JAX for NVIDIA GPUs),
# tpu (JAX for Cloud TPUs), torch (read .pth/.bin checkpoints), e.g. `CLVP_JAX_EXTRA=cuda12 scripts/setup.sh`.
# Unset (the default, and CI) installs exactly what it did before: JAX's CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
want="${1:-runtime}"
extra="${CLVP_JAX_EXTRA:-}"
for e in ${extra//,/ }; do
  case "$e" in
    cuda12|tpu|torch) ;;
    *) echo "setup: CLVP_JAX_EXTRA=$extra: unknown extra '$e'; choose from cuda12, tpu, torch (comma-separated)" >&2; exit 2 ;;
  esac
done
py=""
for c in python3.11 python3.12 python3.13 python3; do
  if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    py="$c"; break
  fi
done
[ -n "$py" ] || { echo "setup: need Python >= 3.11 on PATH" >&2; exit 2; }
[ -x .venv/bin/python ] || "$py" -m venv .venv
stamp=".venv/.clvp-jax-$want${extra:+-${extra//,/-}}-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  if [ "$want" = test ]; then
    # Exactly this spec: it is the CPU build cached on these machines; anything else pulls a CUDA build.
    .venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -m pip install -q -e ".[test${extra:+,$extra}]" 2>&1 | grep -v "^WARNING: Location" || true
    # The original Tortoise code, the tests' reference for modules without a recorded fixture (vocoder variants,
    # HiFiGAN, the random latent generators, the normaliser's live check). --no-deps: its own requirements
    # (torchaudio, an old transformers, ...) are not needed by those modules, and not installable here.
    .venv/bin/python -m pip install -q --no-deps "tortoise-tts==3.0.0" 2>&1 | grep -v "^WARNING: Location" || true
  else
    .venv/bin/python -m pip install -q -e ".${extra:+[$extra]}" 2>&1 | grep -v "^WARNING: Location" || true
  fi
  .venv/bin/python -c "import clvp_jax" || { echo "setup: install failed" >&2; exit 1; }
  touch "$stamp"
fi
