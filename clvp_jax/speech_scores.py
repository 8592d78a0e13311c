"""The ranking scores of the speech pipeline: CLVP's, or CLVP and CVVP mixed as Tortoise's `api.tts` mixes them.

With `cvvp_amount` > 0 a candidate's score is cvvp_amount * CVVP + (1 - cvvp_amount) * CLVP (CVVP alone at 1),
where CVVP is the mean over the voice's clips of each clip's score; candidates are then taken best first.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from clvp_jax.waveform.bundle import WaveformModels


def mix_scores(
    clvp: np.ndarray, codes: np.ndarray, cvvp_mels: np.ndarray | None, waveform_models: WaveformModels, amount: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """The ranking scores of one chunk's candidates as `api.tts` mixes them.

    Args:
      clvp: [C] CLVP scores; codes: [C, m] the fixed codes; cvvp_mels: [n, 80, F] the voice clips' AR mels.
      amount: `cvvp_amount`; 0 keeps CLVP (CVVP is not run), 1 uses CVVP alone, else
        amount * CVVP + (1 - amount) * CLVP, where CVVP is the mean over the n clips of each clip's score.
    Returns:
      (scores [C] float64, the CVVP scores [C] or None when not run).
    """
    clvp = np.asarray(clvp, np.float64)
    if amount <= 0:
        return clvp, None
    from clvp_jax.waveform.cvvp import cvvp_scores

    mels, codes = jnp.asarray(cvvp_mels), jnp.asarray(codes)
    cvvp = np.asarray(cvvp_scores(waveform_models.cvvp, waveform_models.cvvp_params, mels, codes), np.float64)
    return (cvvp if amount == 1 else cvvp * amount + clvp * (1 - amount)), cvvp


def best_first(scores: np.ndarray) -> list[int]:
    """The candidates' positions by score, best first; equal scores keep their order (the lower position first)."""
    return sorted(range(len(scores)), key=lambda j: (-scores[j], j))
