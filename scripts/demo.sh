#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then rank speech-token candidates for a sentence with the
# packaged default (real vocabulary, bundled LJ Speech clip, small random-weight model).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/clvp-jax generate "${@:-The quick brown fox jumps over the lazy dog.}"
