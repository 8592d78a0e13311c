#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then rank speech-token candidates for a sentence with the
# packaged default (real vocabulary, bundled LJ Speech clip, small random-weight model). Results go to
# clvp-jax-out/, replaced on every run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/clvp-jax generate --force "${@:-The quick brown fox jumps over the lazy dog.}"
