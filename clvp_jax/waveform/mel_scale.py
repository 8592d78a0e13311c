"""The [-1, 1] scaling of Tortoise's 100-bin 24 kHz log-mel (`tortoise/utils/audio.py`).

The diffusion decoder generates *normalised* mels; its conditioning input and the vocoder's input are raw
natural-log mels (about -11.5 .. 2.3). These are the original's two constants and two affine maps.
"""

from __future__ import annotations

import jax

TACOTRON_MEL_MIN = -11.512925148010254  # ln(1e-5) as float32: the log floor of the mel front end
TACOTRON_MEL_MAX = 2.3143386840820312  # the upper end of the original's range (a float32 number): ~ln(10.1)


def normalize_tacotron_mel(mel: jax.Array) -> jax.Array:
    """Raw log-mel -> [-1, 1]: 2 (mel - MIN) / (MAX - MIN) - 1 (any shape, dtype kept)."""
    return 2 * ((mel - TACOTRON_MEL_MIN) / (TACOTRON_MEL_MAX - TACOTRON_MEL_MIN)) - 1


def denormalize_tacotron_mel(norm_mel: jax.Array) -> jax.Array:
    """[-1, 1] -> raw log-mel: (norm + 1) / 2 (MAX - MIN) + MIN (any shape, dtype kept)."""
    return ((norm_mel + 1) / 2) * (TACOTRON_MEL_MAX - TACOTRON_MEL_MIN) + TACOTRON_MEL_MIN
