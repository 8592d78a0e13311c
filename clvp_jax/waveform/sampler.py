"""The diffusion sampler of Tortoise's decoder: its own DDPM loop, its DDIM, and DPM-Solver++(2M).

All three run on the model's own discrete schedule (`schedule.spaced_schedule(U)`, the model fed the mapped
original-scale timesteps 0 .. 3999) and share one step prologue, the original's `p_mean_variance`:

  eps, v = model(x, map[t])[:, :F], [:, F:]           (v: the learned-range variance values, conditional pass)
  eps = (1 + k_t) eps - k_t eps_u,  k_t = k (1 - t/U)  (conditioning-free guidance, ramped on the spaced index)
  x0 = clip(sqrt(1/abar_t) x - sqrt(1/abar_t - 1) eps, -1, 1)

* "ddpm" (`p_sample_loop`, what api.py runs): log var = f log beta'_t + (1 - f) log post_var_t with
  f = (v + 1) / 2 (not clamped: v outside [-1, 1] extrapolates); x = coef1_t x0 + coef2_t x + [t > 0]
  exp(log var / 2) z, a fresh draw z every step (the t = 0 draw is made and multiplied by 0).
* "ddim" (`ddim_sample_loop`): eps re-derived from the clipped x0; x = sqrt(abar_{t-1}) x0 +
  sqrt(1 - abar_{t-1} - s^2) eps + [t > 0] s z, s = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t /
  abar_{t-1}); eta 0 (the original's default) is deterministic and draws nothing.
* "dpm++2m" (not in the original; Lu et al. 2022, DPM-Solver++ multistep, order 2, data prediction): with
  alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha / sigma) and h = lambda_{t-1} - lambda_t,
  x = (sigma_{t-1} / sigma_t) x - alpha_{t-1} (e^-h - 1) D, D = (1 + 1/(2r)) x0_t - 1/(2r) x0_{t+1}, r =
  h_{t+1} / h. Its first-order step (D = x0_t) is the DDIM step, so it solves the same probability-flow ODE with
  the same clipped data prediction and guidance, on U independent of the DDPM's. First order are the first step
  (no history), the last one (t = 0 -> abar = 1: D = x0 exactly) and, as DPM-Solver's "lower order final", the
  step t = 1 -> 0: the grid is uniform in t, and its last interval is 4-6x longer in lambda than the one before
  (r ~ 0.2 at U = 10 .. 80), where extrapolating x0 linearly overshoots. On Gaussian data (std 0.25, whose
  exact solution is known; tests/test_waveform_sampler.py) plain 2M's max error at 10/20/40/80 steps is 0.20,
  0.29, 0.20, 0.075 (not even monotone); with the first-order final step it is 0.37, 0.16, 0.042, 0.0055, second
  order (DDIM: 0.38, 0.20, 0.11, 0.054, first order).

Two options, not in the original, for the ODE samplers' sake (defaults: the original's): `spacing="logsnr"`
keeps U trained timesteps uniform in lambda instead of `space_timesteps`' uniform t (the tables are rebuilt from
the kept abar by the original's respacing rule), and `cond_free_ramp="timestep"` ramps the guidance on the
model's timestep, k (1 - map[t] / T), instead of on the spaced index, k (1 - t / U): the original's ramp makes the
guided ODE itself depend on U (by up to k / U in k at the noisy end): an O(1/U) change of the problem, not of
its solution, which no solver order removes; on the model's timestep the ODE is the same for every U. On the
trained tiny model (benchmarks/README.md) the two together let DPM++ reach `fast`'s DDIM-80 accuracy at 24
steps (the original's grid and ramp: 40); the ramp alone buys ~7%, and logsnr spacing without it stalls (the
spaced-index ramp on a non-uniform grid is another guidance schedule).

Where it deliberately differs from the original: the conditional and unconditional passes are ONE model call on
doubled rows ([x; x], cond_free = [False; True]); the ramp works for any batch (the original asserts batch 1); the
noise comes from explicit keys (or is injected, e.g. the original's recorded draws); the whole loop is one
`lax.scan` inside one `jax.jit` (with `on_step`, each step reports to the host from inside it, for progress bars).
Every schedule table is computed in float64 on the host and cast to float32 per
use as the original does, and the float32 arithmetic keeps the original's order of operations (XLA may still fuse a
multiply and an add into one FMA, which rounds once: one ulp of the intermediate).

Axis letters: see the package legend in `clvp_jax/__init__.py` (here F = 100 mel bins, N mel frames, U sampler steps;
B' = 2B rows with guidance, else B).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable
from typing import Literal, get_args

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from clvp_jax.waveform.schedule import TRAINED_STEPS, SpacedSchedule, diffusion_tables, linear_betas, spaced_schedule

SamplerKind = Literal["ddpm", "ddim", "dpm++2m"]
SAMPLER_KINDS: tuple[str, ...] = get_args(SamplerKind)
Spacing = Literal["tortoise", "logsnr"]
SPACINGS: tuple[str, ...] = get_args(Spacing)
GuidanceRamp = Literal["spaced", "timestep"]
GUIDANCE_RAMPS: tuple[str, ...] = get_args(GuidanceRamp)

# Tortoise's `tts_with_preset` diffusion settings (api.py; every preset also sets cond_free_k 2 and temperature 1).
TORTOISE_PRESETS: dict[str, dict] = {
    "ultra_fast": {"steps": 30, "cond_free": False},
    "fast": {"steps": 80, "cond_free": True},
    "standard": {"steps": 200, "cond_free": True},
    "high_quality": {"steps": 400, "cond_free": True},
}

# model_fn(x [B', F, N] float, t_model [B'] int32 (original scale 0..3999), cond_free [B'] bool) -> [B', 2F, N]
ModelFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """How to sample the decoder's mel (hashable: it is a static argument of the compiled loop).

    Attributes:
      kind: "ddpm" (Tortoise's own p_sample loop), "ddim" (its ddim_sample_loop) or "dpm++2m".
      steps: U, the number of sampling steps (= model evaluations of each pass), 2 .. trained_steps.
      cond_free: conditioning-free guidance (two passes per step, batched as one call).
      cond_free_k: guidance strength k at the last step; ramped as k (1 - t/U) over the spaced index t.
      cond_free_ramp: "spaced" (the original: k (1 - t/U) on the spaced index t) or "timestep" (k (1 - s/T) on
        the original-scale timestep s = map[t] the model is fed, T = trained_steps): the same ramp as a
        function of the noise level whatever U, so the guided ODE does not change with the step count (with
        "spaced" it does, by up to k/U in k). Equal at U = T.
      spacing: which of the trained timesteps the U steps use: "tortoise" (the original's `space_timesteps`,
        uniform in t) or "logsnr" (uniform in lambda = log(alpha / sigma), DPM-Solver's recommended grid,
        rounded to distinct integer timesteps including 0 and T-1).
      temperature: scales the initial noise x_T only (not the per-step draws), as api.py does.
      ddim_eta: DDIM's stochasticity (0 = deterministic, the original's default); only for kind "ddim".
      trained_steps: length of the trained schedule (4000 for Tortoise's decoder).
    """

    kind: SamplerKind = "ddpm"
    steps: int = 80
    cond_free: bool = True
    cond_free_k: float = 2.0
    cond_free_ramp: GuidanceRamp = "spaced"
    spacing: Spacing = "tortoise"
    temperature: float = 1.0
    ddim_eta: float = 0.0
    trained_steps: int = TRAINED_STEPS

    @classmethod
    def tortoise(cls, preset: str = "fast", **overrides) -> SamplerConfig:
        """The diffusion settings of a Tortoise preset (`TORTOISE_PRESETS`), any field overridden by keyword."""
        if preset not in TORTOISE_PRESETS:
            raise ValueError(
                f"SamplerConfig.tortoise: unknown preset {preset!r}; choose one of {list(TORTOISE_PRESETS)}"
            )
        fields = {"kind": "ddpm", "cond_free_k": 2.0, "temperature": 1.0, **TORTOISE_PRESETS[preset]}
        return cls(**(fields | overrides))

    def __post_init__(self):
        problems = []
        for name in ("cond_free_k", "temperature", "ddim_eta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"SamplerConfig: {name} must be a number, got {value!r}")
        if self.kind not in SAMPLER_KINDS:
            problems.append(f"kind must be one of {SAMPLER_KINDS}, got {self.kind!r}")
        if self.cond_free_ramp not in GUIDANCE_RAMPS:
            problems.append(f"cond_free_ramp must be one of {GUIDANCE_RAMPS}, got {self.cond_free_ramp!r}")
        if self.spacing not in SPACINGS:
            problems.append(f"spacing must be one of {SPACINGS}, got {self.spacing!r}")
        if isinstance(self.trained_steps, bool) or not isinstance(self.trained_steps, int) or self.trained_steps < 2:
            problems.append(f"trained_steps must be an integer >= 2, got {self.trained_steps!r}")
        elif (
            isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 2 <= self.steps <= self.trained_steps
        ):
            problems.append(f"steps must be an integer in [2, {self.trained_steps}], got {self.steps!r}")
        if not isinstance(self.cond_free, bool):
            problems.append(f"cond_free must be a bool, got {self.cond_free!r}")
        if not math.isfinite(self.cond_free_k):
            problems.append(f"cond_free_k must be finite, got {self.cond_free_k!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            problems.append(f"temperature must be a positive number, got {self.temperature!r}")
        if not (math.isfinite(self.ddim_eta) and 0 <= self.ddim_eta <= 1):
            problems.append(f"ddim_eta must be in [0, 1], got {self.ddim_eta!r}")
        elif self.ddim_eta and self.kind != "ddim":
            problems.append(f"ddim_eta only applies to kind 'ddim' (kind is {self.kind!r}): leave it at 0")
        if problems:
            raise ValueError("SamplerConfig: " + "; ".join(problems))

    @property
    def draws_step_noise(self) -> bool:
        """Whether the steps consume a normal draw each (DDPM, and DDIM with eta > 0)."""
        return self.kind == "ddpm" or (self.kind == "ddim" and self.ddim_eta > 0)


@flax.struct.dataclass
class SamplerNoise:
    """Injected standard-normal draws, in the order the original makes them.

    Attributes:
      init: [B, F, N], the draw for x_T (the sampler multiplies it by the temperature).
      steps: [U, B, F, N], entry i used by the i-th step (spaced t = U-1-i); None for the samplers that draw
        nothing per step (DDIM with eta 0, DPM++).
    """

    init: jax.Array
    steps: jax.Array | None = None


@flax.struct.dataclass
class Trajectory:
    """Every step of one sampling run (loop order: entry i is spaced t = U-1-i).

    Attributes:
      x: [U, B, F, N], the sample after each step (the last entry is the result).
      pred_xstart: [U, B, F, N], the clipped x0 prediction of each step.
      model_timesteps: [U] int32, the original-scale timestep the model was fed at each step.
    """

    x: jax.Array
    pred_xstart: jax.Array
    model_timesteps: jax.Array


def logsnr_timesteps(steps: int, trained_steps: int = TRAINED_STEPS) -> np.ndarray:
    """U distinct trained timesteps, ascending int64, from 0 to T-1, as near uniform in lambda = log(alpha /
    sigma) of the linear schedule as integers allow (near t = 0 lambda moves fastest: consecutive integers)."""
    if not isinstance(steps, int | np.integer) or not 2 <= steps <= trained_steps:
        raise ValueError(f"logsnr_timesteps: steps must be an integer in [2, {trained_steps}], got {steps!r}")
    abar = np.cumprod(1.0 - linear_betas(trained_steps))
    lam = 0.5 * np.log(abar / (1 - abar))  # decreasing in t
    wanted = np.linspace(lam[-1], lam[0], steps)[::-1]  # lambda of each kept step, t ascending
    picked = np.clip(np.searchsorted(-lam, -wanted), 0, trained_steps - 1)  # first t with lam[t] <= wanted
    kept = np.empty(steps, np.int64)
    for i, p in enumerate(picked):  # distinct and ascending, leaving room for the rest below T
        lo = kept[i - 1] + 1 if i else 0
        kept[i] = min(max(int(p), lo), trained_steps - steps + i)
    kept[-1] = trained_steps - 1
    return kept


def _schedule(config: SamplerConfig) -> SpacedSchedule:
    """The respaced tables of the configured timesteps (`spaced_schedule` for the original's spacing)."""
    if config.spacing == "tortoise":
        return spaced_schedule(config.steps, config.trained_steps)
    return _schedule_at(tuple(logsnr_timesteps(config.steps, config.trained_steps)), config.trained_steps)


@functools.lru_cache(maxsize=64)
def _schedule_at(timesteps: tuple[int, ...], trained_steps: int) -> SpacedSchedule:
    # The original's respacing rule for any kept set: beta'_j = 1 - abar[map_j] / abar[map_{j-1}].
    kept = np.cumprod(1.0 - linear_betas(trained_steps))[list(timesteps)]
    tables = diffusion_tables(1 - kept / np.append(1.0, kept[:-1]))
    timestep_map = np.array(timesteps, np.int64)
    for value in (timestep_map, *tables.values()):
        value.flags.writeable = False  # cached and shared, as spaced_schedule's
    return SpacedSchedule(timestep_map=timestep_map, **tables)


def _step_tables(config: SamplerConfig) -> dict[str, np.ndarray]:
    """Per-step scalars in loop order (t = U-1 .. 0), cast to float32 from float64 as the original casts them."""
    sched = _schedule(config)
    K = sched.num_steps
    t = np.arange(K - 1, -1, -1)  # spaced index of each step, loop order
    f32 = np.float32
    if config.cond_free_ramp == "spaced":
        cfk = config.cond_free_k * (1 - t / K)  # float64 ramp, as Python floats in the original
    else:  # on the model's timestep: the same k at the same noise level whatever U
        cfk = config.cond_free_k * (1 - sched.timestep_map[t] / config.trained_steps)
    tables = {
        "t_model": sched.timestep_map[t].astype(np.int32),
        "nonzero": (t != 0).astype(f32),
        "sqrt_recip": sched.sqrt_recip_alphas_cumprod[t].astype(f32),
        "sqrt_recipm1": sched.sqrt_recipm1_alphas_cumprod[t].astype(f32),
        "cfk": cfk.astype(f32),
        "one_plus_cfk": (1 + cfk).astype(f32),
    }
    if config.kind == "ddpm":
        tables |= {
            "coef1": sched.posterior_mean_coef1[t].astype(f32),
            "coef2": sched.posterior_mean_coef2[t].astype(f32),
            "min_log": sched.posterior_log_variance_clipped[t].astype(f32),
            "max_log": np.log(sched.betas)[t].astype(f32),
        }
    elif config.kind == "ddim":
        # the original evaluates these on float32 tensors of the cast tables; float32 numpy does the same IEEE ops
        abar = sched.alphas_cumprod[t].astype(f32)
        abar_prev = sched.alphas_cumprod_prev[t].astype(f32)
        one = f32(1)
        sigma = f32(config.ddim_eta) * np.sqrt((one - abar_prev) / (one - abar)) * np.sqrt(one - abar / abar_prev)
        tables |= {
            "sqrt_abar_prev": np.sqrt(abar_prev),
            "eps_coef": np.sqrt(one - abar_prev - sigma**2),
            "sigma": sigma,
        }
    else:  # dpm++2m, in float64 then cast
        abar = sched.alphas_cumprod[t]
        abar_next = np.append(sched.alphas_cumprod[t[1:]], 1.0)  # the step from t = 0 goes to abar = 1
        alpha, sigma = np.sqrt(abar), np.sqrt(1 - abar)
        alpha_next, sigma_next = np.sqrt(abar_next), np.sqrt(1 - abar_next)
        with np.errstate(divide="ignore"):
            lam, lam_next = np.log(alpha / sigma), np.log(alpha_next / sigma_next)  # lam_next[-1] = +inf
        h = lam_next - lam
        # Second order (r = h_prev / h) on the steps 1 < t < U-1. First order: the first step (no history); the
        # step t = 1 -> 0, the last interval of the spaced grid, which is uniform in t and so ~4x longer in
        # lambda than the one before (r ~ 0.2: a linear extrapolation of x0 over it overshoots, see the module
        # docstring); and the step t = 0 -> abar = 1, where D = x0 whatever the order.
        second = (t > 1) & (t < K - 1)
        h_prev = np.append(np.nan, h[:-1])
        r = np.where(second, h_prev / np.where(second, h, 1.0), 1.0)
        tables |= {
            "x_coef": sigma_next / sigma,
            "d_coef": -alpha_next * np.expm1(-h),  # exp(-inf) - 1 = -1 on the last step
            "w_cur": np.where(second, 1 + 1 / (2 * r), 1.0),
            "w_prev": np.where(second, -1 / (2 * r), 0.0),
        }
        tables = {name: (v if name == "t_model" else v.astype(f32)) for name, v in tables.items()}
    return tables


def _row_keys(key: jax.Array, batch: int) -> jax.Array:
    """[B] typed keys, one per row: a single key is split, [B] keys (typed or raw uint32 [B, 2]) are kept."""
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    if key.shape == ():
        return jax.random.split(key, batch)
    if key.shape == (batch,):
        return key
    raise ValueError(f"sample: key must be one key or one per row ({batch},), got shape {key.shape}")


def _draw(row_keys: jax.Array, index: jax.Array | int, shape: tuple[int, int]) -> jax.Array:
    """A standard-normal [B, F, N] draw: row b from fold_in(row_keys[b], index)."""
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, index), shape, jnp.float32))(row_keys)


def guided_eps(model_fn: ModelFn, x: jax.Array, tabs: dict, config: SamplerConfig) -> tuple[jax.Array, jax.Array]:
    """One (batched) model evaluation of a sampler step -> (guided eps [B, F, N], the conditional pass's variance
    values [B, F, N]). With `config.cond_free` the conditional and unconditional passes run as ONE call of 2B rows
    ([cond; uncond]), and eps = (1 + k) eps_cond - k eps_uncond.

    Args: model_fn (see `ModelFn`); x [B, F, N]; tabs: this step's tables, of which it reads "t_model" (int32
    original-scale timestep), "cfk" and "one_plus_cfk" (k and 1 + k, float32; only with guidance); config.
    """
    B, C, L = x.shape
    if config.cond_free:  # both passes as one call: rows [cond; uncond]
        rows_x = jnp.concatenate([x, x], axis=0)
        cond_free = jnp.arange(2 * B) >= B
    else:
        rows_x, cond_free = x, jnp.zeros((B,), bool)
    rows = rows_x.shape[0]
    out = model_fn(rows_x, jnp.full((rows,), tabs["t_model"], jnp.int32), cond_free)
    if out.shape != (rows, 2 * C, L):
        raise ValueError(
            f"sample: model_fn returned shape {out.shape}, expected {(rows, 2 * C, L)} "
            f"([rows, 2 x {C} channels (eps | variance values), frames])"
        )
    out = out.astype(x.dtype)
    eps, var = out[:B, :C], out[:B, C:]
    if config.cond_free:
        eps = tabs["one_plus_cfk"] * eps - tabs["cfk"] * out[B:, :C]
    return eps, var


# Per-step progress: the compiled loop calls `_step_done(call_id, index)` on the host after each step (an ordered
# `jax.debug.callback`, compiled in only when asked for: `report=True` is one more program per shape, not one per
# call). The call id is a traced argument and picks the listener of that call here, so one program serves every
# call and concurrent calls do not mix their reports.
_LISTENERS: dict[int, Callable[[int], None]] = {}
_CALL_IDS = itertools.count(1)


def _step_done(call_id: np.ndarray, index: np.ndarray) -> None:
    listener = _LISTENERS.get(int(call_id))
    if listener is not None:
        listener(int(index) + 1)


def _sample_impl(
    model_fn: ModelFn,
    row_keys: jax.Array | None,
    noise: SamplerNoise | None,
    call_id: jax.Array | None,
    *,
    shape: tuple[int, int, int],
    config: SamplerConfig,
    return_trajectory: bool,
    report: bool = False,
):
    B, C, L = shape
    tables = {name: jnp.asarray(v) for name, v in _step_tables(config).items()}
    K = config.steps
    if noise is None:
        x_init = _draw(row_keys, 0, (C, L))
        step_noise = None
    else:
        x_init = noise.init.astype(jnp.float32)
        step_noise = noise.steps.astype(jnp.float32) if config.draws_step_noise else None
    x_T = x_init * jnp.float32(config.temperature)
    xs = dict(tables, index=jnp.arange(K, dtype=jnp.int32))
    if step_noise is not None:
        xs["noise"] = step_noise

    def step(carry, tabs):
        x, x0_prev = carry
        eps, var = guided_eps(model_fn, x, tabs, config)
        x0 = jnp.clip(tabs["sqrt_recip"] * x - tabs["sqrt_recipm1"] * eps, -1, 1)  # [B, F, N]
        if config.draws_step_noise:
            z = tabs["noise"] if step_noise is not None else _draw(row_keys, 1 + tabs["index"], (C, L))
        if config.kind == "ddpm":
            frac = (var + 1) / 2
            log_var = frac * tabs["max_log"] + (1 - frac) * tabs["min_log"]
            mean = tabs["coef1"] * x0 + tabs["coef2"] * x
            x = mean + tabs["nonzero"] * jnp.exp(0.5 * log_var) * z
        elif config.kind == "ddim":
            eps = (tabs["sqrt_recip"] * x - x0) / tabs["sqrt_recipm1"]  # re-derived from the clipped x0
            x = x0 * tabs["sqrt_abar_prev"] + tabs["eps_coef"] * eps
            if config.draws_step_noise:
                x = x + tabs["nonzero"] * tabs["sigma"] * z
        else:  # dpm++2m
            d = tabs["w_cur"] * x0 + tabs["w_prev"] * x0_prev
            x = tabs["x_coef"] * x + tabs["d_coef"] * d
        if report:
            jax.debug.callback(_step_done, call_id, tabs["index"], ordered=True)
        return (x, x0), ((x, x0) if return_trajectory else None)

    (x, _), ys = jax.lax.scan(step, (x_T, jnp.zeros_like(x_T)), xs)
    if not return_trajectory:
        return x
    return x, Trajectory(x=ys[0], pred_xstart=ys[1], model_timesteps=tables["t_model"])


_sample_jit = jax.jit(_sample_impl, static_argnames=("shape", "config", "return_trajectory", "report"))


def sample(
    model_fn: ModelFn,
    shape: tuple[int, int, int],
    *,
    config: SamplerConfig,
    key: jax.Array | None = None,
    noise: SamplerNoise | None = None,
    return_trajectory: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> jax.Array | tuple[jax.Array, Trajectory]:
    """Sample a normalised mel [B, F, N] (in [-1, 1]) from the decoder, as one compiled loop over the steps.

    Args:
      model_fn: model_fn(x [B', F, N], t_model [B'] int32, cond_free [B'] bool) -> [B', 2F, N]: epsilon in
        channels 0..F-1, learned-range variance values in F..2F-1; rows with cond_free True must run the
        unconditioned model. With guidance B' = 2B (rows [cond; uncond], one call per step), else B' = B.
        Pass a `jax.tree_util.Partial` to hand arrays (weights, precomputed embeddings) to it as traced
        arguments: the compiled loop is then reused for new arrays of the same shapes. A plain function is
        wrapped as is (the same function object reuses the compiled loop; arrays it closes over become
        constants of the program).
      shape: (B, F, N) of the mel to sample.
      config: the sampler (kind, steps, guidance, temperature).
      key: where the noise comes from: one typed key (`jax.random.key`), or one per row [B] so that a row's
        draws do not depend on its batch mates. x_T of row b is normal(fold_in(k_b, 0)), step i's draw
        normal(fold_in(k_b, 1 + i)).
      noise: instead of `key`, the draws to use (e.g. the original's recorded ones): `SamplerNoise(init [B, F,
        N], steps [U, B, F, N])`; `steps` is needed only by the samplers that draw per step (`draws_step_noise`).
      return_trajectory: also return every step's sample and x0 prediction.
      on_step: on_step(done) on the host after each step, done = 1 .. U in order, each once, called from inside
        the compiled loop while it runs (progress bars); the call then waits for the result before returning.
        None (default): nothing is compiled in.
    Returns:
      the sample x [B, F, N] float32, or (x, Trajectory) with `return_trajectory`.
    """
    if not isinstance(config, SamplerConfig):
        raise TypeError(f"sample: config must be a SamplerConfig, got {type(config).__name__}")
    if len(shape) != 3 or not all(isinstance(n, int | np.integer) and n > 0 for n in shape):
        raise ValueError(f"sample: shape must be (batch, channels, frames) of positive integers, got {shape!r}")
    shape = tuple(int(n) for n in shape)
    B, C, L = shape
    if (key is None) == (noise is None):
        raise ValueError("sample: give exactly one of key= (draw the noise) or noise= (inject given draws)")
    row_keys = None
    if key is not None:
        row_keys = _row_keys(key if isinstance(key, jax.Array) else jnp.asarray(key), B)
    else:
        if noise.init.shape != shape:
            raise ValueError(f"sample: noise.init has shape {noise.init.shape}, expected {shape}")
        if config.draws_step_noise:
            wanted = (config.steps, *shape)
            if noise.steps is None or noise.steps.shape != wanted:
                got = None if noise.steps is None else noise.steps.shape
                raise ValueError(
                    f"sample: {config.kind} draws per step: noise.steps must have shape {wanted}, got {got}"
                )
        else:
            noise = noise.replace(steps=None)  # not used: keep it out of the compiled program's signature
    if not isinstance(model_fn, Partial):
        model_fn = Partial(model_fn)
    static = dict(shape=shape, config=config, return_trajectory=bool(return_trajectory))
    if on_step is None:
        return _sample_jit(model_fn, row_keys, noise, None, **static)
    call_id = next(_CALL_IDS) % 2**31  # an int32 argument
    _LISTENERS[call_id] = on_step
    try:
        out = _sample_jit(model_fn, row_keys, noise, jnp.int32(call_id), **static, report=True)
        jax.block_until_ready(out)
        jax.effects_barrier()  # every step's callback has run before its listener goes
    finally:
        _LISTENERS.pop(call_id, None)
    return out
