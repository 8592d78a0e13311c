"""The diffusion noise schedule of Tortoise's decoder: the 4000-step linear betas, `space_timesteps` and the
respaced tables of `SpacedDiffusion` (`tortoise/utils/diffusion.py`), all on the host in float64.

The model was trained on 4000 steps with betas = linspace(2.5e-5, 5e-3) (Ho et al.'s schedule scaled by
1000/4000). Sampling with U steps keeps U of them (`space_timesteps`) and rebuilds every table from the respaced
betas beta'_j = 1 - abar[map_j] / abar[map_{j-1}]. The tables stay float64 here; the sampler casts each one to
float32 when it uses it, as the original's `_extract_into_tensor` does, so the float32 numbers match.

Index convention: spaced index t = 0 .. U-1 (t = U-1 is the noisiest); `timestep_map[t]` is the original-scale
timestep 0 .. 3999 the model is fed.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

TRAINED_STEPS = 4000  # the decoder's training schedule length (diffusion_decoder.pth)


def linear_betas(num_steps: int = TRAINED_STEPS) -> np.ndarray:
    """The "linear" beta schedule: linspace(1e-4, 2e-2) scaled by 1000 / num_steps, float64 [num_steps]."""
    if num_steps < 1:
        raise ValueError(f"linear_betas: num_steps must be >= 1, got {num_steps}")
    scale = 1000 / num_steps
    return np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)


def space_timesteps(num_timesteps: int, section_counts: Sequence[int]) -> np.ndarray:
    """The kept timesteps, ascending int64, exactly as the original's `space_timesteps` picks them.

    The range is cut into len(section_counts) equal sections (the first ones one step longer when it does not
    divide); section s keeps section_counts[s] steps at round(acc) for acc = 0, stride, stride + stride, ...
    with stride = (size - 1) / (count - 1). The stride is accumulated by repeated float64 addition and rounded
    with Python's round (half to even): for many odd counts (31, 81, ...) the sum lands just off an exact .5 and
    the closed form round(i * stride) keeps a different step, so the loop is replicated as written.

    Args:
      num_timesteps: length of the trained schedule (4000).
      section_counts: steps to keep per section; Tortoise uses one section, [U].
    Returns:
      int64 [sum(section_counts)], strictly ascending.
    """
    counts = [int(c) for c in section_counts]
    if not counts or any(c < 1 for c in counts):
        raise ValueError(f"space_timesteps: section_counts must be positive integers, got {list(section_counts)}")
    size_per, extra = divmod(num_timesteps, len(counts))
    start, kept = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"space_timesteps: cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        acc = 0.0
        for _ in range(count):
            kept.append(start + round(acc))  # Python round: half to even, on the accumulated float64 sum
            acc += stride
        start += size
    return np.array(sorted(set(kept)), dtype=np.int64)


@dataclasses.dataclass(frozen=True, eq=False)
class SpacedSchedule:
    """The respaced diffusion tables for U sampling steps, float64 [U] each (int64 for `timestep_map`).

    Attributes:
      timestep_map: original-scale timestep of each spaced index (what the model is fed).
      betas: respaced betas beta'_t = 1 - abar[map_t] / abar[map_{t-1}].
      alphas_cumprod: abar_t = cumprod(1 - beta').
      alphas_cumprod_prev: abar_{t-1}, with 1 before t = 0.
      posterior_variance: beta'_t (1 - abar_{t-1}) / (1 - abar_t) (0 at t = 0).
      posterior_log_variance_clipped: log of it with entry 0 replaced by entry 1 (finite everywhere).
      posterior_mean_coef1, posterior_mean_coef2: mean of q(x_{t-1} | x_t, x0) = coef1 x0 + coef2 x_t.
      sqrt_recip_alphas_cumprod, sqrt_recipm1_alphas_cumprod: x0 = sqrt(1/abar) x_t - sqrt(1/abar - 1) eps.
    """

    timestep_map: np.ndarray
    betas: np.ndarray
    alphas_cumprod: np.ndarray
    alphas_cumprod_prev: np.ndarray
    posterior_variance: np.ndarray
    posterior_log_variance_clipped: np.ndarray
    posterior_mean_coef1: np.ndarray
    posterior_mean_coef2: np.ndarray
    sqrt_recip_alphas_cumprod: np.ndarray
    sqrt_recipm1_alphas_cumprod: np.ndarray

    @property
    def num_steps(self) -> int:
        """U, the number of spaced steps."""
        return int(self.betas.shape[0])


def diffusion_tables(betas: np.ndarray) -> dict[str, np.ndarray]:
    """GaussianDiffusion's derived tables from a beta sequence (>= 2 entries), with the original's float64
    expressions."""
    alphas = 1.0 - betas
    abar = np.cumprod(alphas, axis=0)
    abar_prev = np.append(1.0, abar[:-1])
    posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
    # entry 0 of the posterior variance is 0 (log -inf): the original substitutes entry 1
    clipped = np.log(np.append(posterior_variance[1], posterior_variance[1:]))
    return {
        "betas": betas,
        "alphas_cumprod": abar,
        "alphas_cumprod_prev": abar_prev,
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": clipped,
        "posterior_mean_coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
        "posterior_mean_coef2": (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / abar),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / abar - 1),
    }


@functools.lru_cache(maxsize=64)
def spaced_schedule(steps: int, trained_steps: int = TRAINED_STEPS) -> SpacedSchedule:
    """The tables of `SpacedDiffusion(space_timesteps(trained_steps, [steps]), betas=linear)` (cached).

    Args:
      steps: U, the number of sampling steps, 2 <= U <= trained_steps.
      trained_steps: the trained schedule length (4000 for Tortoise's decoder).
    Returns:
      the float64 tables; treat them as read-only (they are shared between callers).
    """
    if not isinstance(steps, int | np.integer) or not 2 <= steps <= trained_steps:
        raise ValueError(f"spaced_schedule: steps must be an integer in [2, {trained_steps}], got {steps!r}")
    base_abar = np.cumprod(1.0 - linear_betas(trained_steps), axis=0)
    timestep_map = space_timesteps(trained_steps, [int(steps)])
    kept = base_abar[timestep_map]
    # the original walks the base schedule and divides by the last kept abar: the same float64 divisions
    betas = 1 - kept / np.append(1.0, kept[:-1])
    tables = {name: np.asarray(value) for name, value in diffusion_tables(betas).items()}
    for value in tables.values():
        value.flags.writeable = False
    timestep_map.flags.writeable = False
    return SpacedSchedule(timestep_map=timestep_map, **tables)
