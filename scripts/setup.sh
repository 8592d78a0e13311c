#!/usr/bin/env bash
# Create ./.venv (Python >= 3.11) and install clvp-jax into it, idempotently.
#   scripts/setup.sh          runtime only (jax, flax, ...; no torch)
#   scripts/setup.sh test     + the test extras (transformers, pytest, ...) and torch==2.13.0 (CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
want="${1:-runtime}"
py=""
for c in python3.11 python3.12 python3.13 python3; do
  if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    py="$c"; break
  fi
done
[ -n "$py" ] || { echo "setup: need Python >= 3.11 on PATH" >&2; exit 2; }
[ -x .venv/bin/python ] || "$py" -m venv .venv
stamp=".venv/.clvp-jax-$want-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  if [ "$want" = test ]; then
    # Exactly this spec: it is the CPU build cached on these machines; anything else pulls a CUDA build.
    .venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
  else
    .venv/bin/python -m pip install -q -e . 2>&1 | grep -v "^WARNING: Location" || true
  fi
  .venv/bin/python -c "import clvp_jax" || { echo "setup: install failed" >&2; exit 1; }
  touch "$stamp"
fi
