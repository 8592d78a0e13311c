#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then speak a sentence with the packaged default (real vocabulary,
# bundled LJ Speech clip, small random-weight AR, CLVP, diffusion and vocoder models): CLVP-ranked speech-token
# candidates, then diffusion and the vocoder to a 24 kHz WAV. Results go to clvp-jax-out/ (speech.wav, speech.json),
# replaced on every run. The audio is meaningless noise until real weights are converted (README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p clvp-jax-out
exec .venv/bin/clvp-jax speak --force -o clvp-jax-out/speech.wav "${@:-The quick brown fox jumps over the lazy dog.}"
