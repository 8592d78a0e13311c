"""The diffusion schedule and sampler against the original's recorded runs (tests/data/tortoise_tiny_waveform).

The sampler arithmetic is checked without the model: a stub `model_fn` replays the original's recorded model
outputs step by step, and the recorded draws are injected, so DDPM must reproduce the original's trajectory.
DDIM and DPM++ are checked on an analytic stub (Gaussian data, whose exact denoiser and probability-flow ODE
solution are known in closed form) against a float64 oracle written from the spec and against the exact solution.
Then the full runs with the tiny DiffusionTts (converted from the fixture's original checkpoint): DDPM with and
without guidance, DDIM and the end-to-end mel, and DPM++ converging to a 400-step DDIM on that model.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial
from waveform_fixture import reference, state_dict

from clvp_jax.audio.univnet_mel import denormalize_tacotron_mel, normalize_tacotron_mel
from clvp_jax.checkpoint.tortoise_diffusion import params_from_original
from clvp_jax.waveform.diffusion import DiffusionTts
from clvp_jax.waveform.diffusion_config import DiffusionConfig
from clvp_jax.waveform.sampler import SamplerConfig, SamplerNoise, _step_tables, logsnr_timesteps, sample
from clvp_jax.waveform.schedule import linear_betas, space_timesteps, spaced_schedule

SCHED_KS = (4, 5, 7, 10, 20, 30, 31, 80, 81, 100, 200, 400)
TABLES = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
)
K, L = 5, 87  # the fixture's sampling run: 5 steps, 87 mel frames, batch 1
SHAPE = (1, 100, L)
CFG = {"temperature": 0.8, "cond_free_k": 2.0}  # original_config.json "sampler"


# ---------------------------------------------------------------------------------------------- schedule


@pytest.mark.parametrize("k", SCHED_KS)
def test_space_timesteps_and_betas_exact(k):
    ref = reference()
    sched = spaced_schedule(k)
    # The same float64 operations in the same order as the original: bit-exact, no tolerance.
    np.testing.assert_array_equal(sched.timestep_map, ref[f"sched_map_K{k}"])
    np.testing.assert_array_equal(sched.betas, ref[f"sched_betas_K{k}"])


def test_space_timesteps_keeps_the_accumulated_rounding():
    # The closed form round(i * 3999 / (k - 1)) differs from the accumulated sum at k = 31 and 81; k = 7 hits
    # 3332.5 exactly, which Python rounds to the even 3332.
    for k in (31, 81):
        closed = np.array([round(i * 3999 / (k - 1)) for i in range(k)])
        assert not np.array_equal(closed, space_timesteps(4000, [k]))
    assert 3332 in space_timesteps(4000, [7])


def test_schedule_tables_exact():
    ref = reference()
    sched = spaced_schedule(K)
    np.testing.assert_array_equal(sched.timestep_map, ref["sched_timestep_map"])
    for name in TABLES:
        got = getattr(sched, name)
        assert got.dtype == np.float64, name
        np.testing.assert_array_equal(got, ref[f"sched_{name}"], err_msg=name)  # float64, same ops: exact


def test_schedule_bad_input():
    with pytest.raises(ValueError, match="steps must be an integer in"):
        spaced_schedule(1)
    with pytest.raises(ValueError, match="steps must be an integer in"):
        spaced_schedule(4001)
    with pytest.raises(ValueError, match="cannot divide"):
        space_timesteps(10, [11])
    assert linear_betas(4000)[[0, -1]].tolist() == [2.5e-5, 5e-3]


def test_mel_scale_round_trip():
    x = np.linspace(-1, 1, 11, dtype=np.float32)
    mel = np.asarray(denormalize_tacotron_mel(x))
    assert mel[0] == pytest.approx(-11.512925148010254) and mel[-1] == pytest.approx(2.3143386840820312)
    # Two affine maps in float32: a few ulps of values up to 11.5.
    np.testing.assert_allclose(np.asarray(normalize_tacotron_mel(mel)), x, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------- recorded runs (stub model)

_SEEN_TIMESTEPS: list[int] = []


def _record_timesteps(t):
    _SEEN_TIMESTEPS.append(int(t))


def _recorded_model(cond, uncond, timesteps, x, t, cond_free):
    """Replays the recorded outputs: the step is found from the timestep; an unknown timestep gives NaN."""
    jax.debug.callback(_record_timesteps, t[0], ordered=True)
    i = jnp.argmax(timesteps == t[0])
    known = jnp.any(timesteps == t[0]) & jnp.all(t == t[0])
    rows = jnp.where(cond_free[:, None, None], uncond[i, :1], cond[i, :1])  # [B', 200, L]
    return jnp.where(known, rows, jnp.nan)


def _recorded_fn(tag: str) -> Partial:
    ref = reference()
    cond = ref[f"samp_{tag}_model_out"]
    uncond = ref["samp_cf_model_out_uncond"] if tag == "cf" else np.full_like(cond, np.nan)
    return Partial(_recorded_model, cond, uncond, ref[f"samp_{tag}_model_timesteps"].astype(np.int32))


def _recorded_noise(batch: int = 1) -> SamplerNoise:
    ref = reference()
    return SamplerNoise(
        init=np.repeat(ref["samp_noise_init"], batch, axis=0), steps=np.repeat(ref["samp_noises"], batch, axis=1)
    )


@pytest.mark.parametrize("tag", ["nocf", "cf"])
def test_ddpm_reproduces_the_recorded_run(tag):
    ref = reference()
    config = SamplerConfig(kind="ddpm", steps=K, cond_free=tag == "cf", **CFG)
    _SEEN_TIMESTEPS.clear()
    x, traj = sample(_recorded_fn(tag), SHAPE, config=config, noise=_recorded_noise(), return_trajectory=True)
    jax.effects_barrier()
    assert _SEEN_TIMESTEPS == ref[f"samp_{tag}_model_timesteps"].tolist()
    np.testing.assert_array_equal(traj.model_timesteps, ref[f"samp_{tag}_model_timesteps"])
    # The guidance ramp k (1 - t/K) per step, float64 cast to float32: within half a float32 ulp.
    np.testing.assert_allclose(_step_tables(config)["cfk"], ref["samp_cond_free_k_per_step"], rtol=6e-8, atol=0)
    # x0 = sqrt(1/abar) x - sqrt(1/abar - 1) eps at t = K-1 subtracts two numbers of up to ~500 (sqrt(1/abar) =
    # 153): XLA fuses it into one FMA (one rounding instead of the original's two), a difference of one ulp of
    # that intermediate, 3e-5. A wrong table or formula is off by > 1e-2.
    np.testing.assert_allclose(traj.pred_xstart, ref[f"samp_{tag}_pred_xstart"], rtol=0, atol=6e-5)
    # The samples are O(1): that difference times coef1 (<= 0.67) plus one-ulp exp differences, per step.
    np.testing.assert_allclose(traj.x, ref[f"samp_{tag}_x"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(x, ref[f"samp_{tag}_mel_norm"], rtol=0, atol=1e-5)
    # Denormalised: times (MAX - MIN) / 2 = 6.9.
    np.testing.assert_allclose(denormalize_tacotron_mel(x), ref[f"samp_{tag}_mel"], rtol=0, atol=7e-5)


def test_ddpm_batch_rows_are_independent_of_batch_size():
    # Two rows with the recorded draws: the ramp works per row (the original asserts batch 1), both rows equal
    # the recorded batch-1 result.
    ref = reference()
    config = SamplerConfig(kind="ddpm", steps=K, cond_free=True, **CFG)
    x = sample(_recorded_fn("cf"), (2, 100, L), config=config, noise=_recorded_noise(2))
    np.testing.assert_allclose(x, np.repeat(ref["samp_cf_mel_norm"], 2, axis=0), rtol=0, atol=1e-5)  # as above


@pytest.mark.parametrize("kind", ["ddim", "dpm++2m"])
def test_first_step_x0_is_shared_by_every_kind(kind):
    # Every kind starts from the same x_T at t = K-1 with the same guidance, so its first x0 prediction is the
    # recorded DDPM one (later steps see other inputs than the recorded ones).
    ref = reference()
    config = SamplerConfig(kind=kind, steps=K, cond_free=True, **CFG)
    _, traj = sample(_recorded_fn("cf"), SHAPE, config=config, noise=_recorded_noise(), return_trajectory=True)
    np.testing.assert_allclose(traj.pred_xstart[0], ref["samp_cf_pred_xstart"][0], rtol=0, atol=6e-5)  # as DDPM


# --------------------------------------------------------------------------- analytic stub (Gaussian data)

MU_SCALE, S = 0.1, 0.25  # data x0 ~ N(mu, S^2) per element: |mu| + S |z| < 1 for |z| < 3.6, so no clipping
BASE_ABAR = np.cumprod(1.0 - linear_betas(4000))


def _gaussian_model(abar, mu_cond, mu_uncond, x, t, cond_free):
    """The exact eps-prediction of Gaussian data N(mu, S^2): eps = sqrt(1-a) (x - sqrt(a) mu) / (a S^2 + 1 - a)."""
    a = abar[t][:, None, None]
    mu = jnp.where(cond_free[:, None, None], mu_uncond, mu_cond)
    eps = jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * mu) / (a * S**2 + 1 - a)
    return jnp.concatenate([eps, jnp.zeros_like(eps)], axis=1)


def _gaussian_case(batch: int = 1, frames: int = 16):
    rng = np.random.default_rng(5)
    mu_c = rng.uniform(-MU_SCALE, MU_SCALE, (1, 100, frames)).astype(np.float32)
    mu_u = rng.uniform(-MU_SCALE, MU_SCALE, (1, 100, frames)).astype(np.float32)
    x_T = rng.standard_normal((batch, 100, frames)).astype(np.float32)
    return Partial(_gaussian_model, BASE_ABAR.astype(np.float32), mu_c, mu_u), mu_c, mu_u, x_T


def _ddim_oracle(x_T, mu_c, mu_u, steps, k, cond_free, eta=0.0, noises=None):
    """Float64 DDIM written from the spec, on the Gaussian stub's exact eps (`noises[i]` at the i-th step)."""
    sched = spaced_schedule(steps)
    x = x_T.astype(np.float64)

    def eps_of(mu, a):
        return np.sqrt(1 - a) * (x - np.sqrt(a) * mu) / (a * S**2 + 1 - a)

    for t in range(steps - 1, -1, -1):
        a_model = BASE_ABAR[sched.timestep_map[t]]
        eps = eps_of(mu_c, a_model)
        if cond_free:
            kt = k * (1 - t / steps)
            eps = (1 + kt) * eps - kt * eps_of(mu_u, a_model)
        a, a_prev = sched.alphas_cumprod[t], sched.alphas_cumprod_prev[t]
        x0 = np.clip(np.sqrt(1 / a) * x - np.sqrt(1 / a - 1) * eps, -1, 1)
        eps = (np.sqrt(1 / a) * x - x0) / np.sqrt(1 / a - 1)
        sigma = eta * np.sqrt((1 - a_prev) / (1 - a)) * np.sqrt(1 - a / a_prev)
        x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - sigma**2) * eps
        if eta:
            x = x + (t != 0) * sigma * noises[steps - 1 - t]
    return x


def _dpm_oracle(x_T, mu_c, mu_u, steps, k, timesteps=None, ramp="spaced"):
    """Float64 guided DPM-Solver++(2M) from the paper's update in lambda, first order at t = K-1 and t = 1, on
    the original's spacing or the given trained `timesteps`; guidance ramped on t / K ("spaced") or map[t] /
    4000 ("timestep")."""
    tmap = spaced_schedule(steps).timestep_map if timesteps is None else np.asarray(timesteps)
    abar_kept = BASE_ABAR[tmap]  # respacing keeps abar at the kept steps, so abar_t = BASE_ABAR[map[t]]
    x, x0_prev, h_prev = x_T.astype(np.float64), None, None
    for t in range(steps - 1, -1, -1):
        a_model = BASE_ABAR[tmap[t]]
        eps_c, eps_u = (
            np.sqrt(1 - a_model) * (x - np.sqrt(a_model) * mu) / (a_model * S**2 + 1 - a_model) for mu in (mu_c, mu_u)
        )
        kt = k * (1 - (t / steps if ramp == "spaced" else tmap[t] / 4000))
        eps = (1 + kt) * eps_c - kt * eps_u
        a = abar_kept[t]
        x0 = np.clip((x - np.sqrt(1 - a) * eps) / np.sqrt(a), -1, 1)
        if t == 0:
            return x0
        a_next = abar_kept[t - 1]
        lam, lam_next = (0.5 * np.log(v / (1 - v)) for v in (a, a_next))
        h = lam_next - lam
        d = x0
        if x0_prev is not None and t > 1:
            d = x0 + (x0 - x0_prev) * h / (2 * h_prev)  # x0 + (x0 - x0_prev) / 2r, r = h_prev / h
        x = np.sqrt((1 - a_next) / (1 - a)) * x + np.sqrt(a_next) * (1 - np.exp(-h)) * d
        x0_prev, h_prev = x0, h
    raise AssertionError("unreachable")


def _exact_endpoint(x_T, mu):
    """The probability-flow ODE of N(mu, S^2) data from abar[3999] to abar[0] (x_t = sqrt(a) mu + sqrt(a S^2 +
    1 - a) z, z constant), then the exact x0 prediction at t = 0, where every sampler ends."""
    a_T, a_0 = BASE_ABAR[3999], BASE_ABAR[0]
    z = (x_T - np.sqrt(a_T) * mu) / np.sqrt(a_T * S**2 + 1 - a_T)
    x_0 = np.sqrt(a_0) * mu + np.sqrt(a_0 * S**2 + 1 - a_0) * z
    return mu + S**2 * np.sqrt(a_0) * (x_0 - np.sqrt(a_0) * mu) / (a_0 * S**2 + 1 - a_0)


@pytest.mark.parametrize("cond_free, eta", [(False, 0.0), (True, 0.0), (True, 0.7)])
def test_ddim_matches_float64_oracle(cond_free, eta):
    model_fn, mu_c, mu_u, x_T = _gaussian_case()
    noises = np.random.default_rng(6).standard_normal((10, *x_T.shape)).astype(np.float32)
    config = SamplerConfig(kind="ddim", steps=10, cond_free=cond_free, cond_free_k=2.0, ddim_eta=eta)
    x = sample(model_fn, x_T.shape, config=config, noise=SamplerNoise(init=x_T, steps=noises))
    want = _ddim_oracle(x_T, mu_c, mu_u, 10, 2.0, cond_free, eta, noises)
    # float32 against float64 over 10 steps; the first x0 carries the FMA-level cancellation of ~1e-5 (see
    # the DDPM test), damped by sqrt(abar_prev) afterwards. A wrong coefficient or ramp is off by > 1e-2.
    np.testing.assert_allclose(x, want, rtol=0, atol=2e-5)


def test_guided_dpm_solver_matches_float64_oracle():
    model_fn, mu_c, mu_u, x_T = _gaussian_case()
    config = SamplerConfig(kind="dpm++2m", steps=10, cond_free=True, cond_free_k=2.0)
    x = sample(model_fn, x_T.shape, config=config, noise=SamplerNoise(init=x_T))
    np.testing.assert_allclose(x, _dpm_oracle(x_T, mu_c, mu_u, 10, 2.0), rtol=0, atol=2e-5)  # as DDIM's


@pytest.mark.parametrize("spacing, ramp", [("logsnr", "spaced"), ("tortoise", "timestep"), ("logsnr", "timestep")])
def test_dpm_solver_spacing_and_ramp_options_match_float64_oracle(spacing, ramp):
    model_fn, mu_c, mu_u, x_T = _gaussian_case()
    config = SamplerConfig(kind="dpm++2m", steps=10, cond_free_k=2.0, spacing=spacing, cond_free_ramp=ramp)
    x = sample(model_fn, x_T.shape, config=config, noise=SamplerNoise(init=x_T))
    timesteps = logsnr_timesteps(10) if spacing == "logsnr" else None
    want = _dpm_oracle(x_T, mu_c, mu_u, 10, 2.0, timesteps, ramp)
    np.testing.assert_allclose(x, want, rtol=0, atol=2e-5)  # as DDIM's
    # the options change the result: an option that did nothing would pass the line above with the default oracle
    assert np.abs(want - _dpm_oracle(x_T, mu_c, mu_u, 10, 2.0)).max() > 1e-3


def test_logsnr_timesteps_are_distinct_and_uniform_in_lambda():
    lam = 0.5 * np.log(BASE_ABAR / (1 - BASE_ABAR))
    for steps in (2, 10, 27, 80, 400):
        kept = logsnr_timesteps(steps)
        assert kept.shape == (steps,) and kept[0] == 0 and kept[-1] == 3999, (steps, kept)
        assert np.all(np.diff(kept) > 0), kept
    gaps = np.diff(lam[logsnr_timesteps(27)])
    # away from t = 0 (where integer timesteps are coarser than the grid) the lambda steps are equal to the
    # rounding of t: lambda moves by <= 0.02 per trained step there, against a 0.40 grid step
    np.testing.assert_allclose(gaps[4:], gaps[4:].mean(), rtol=0.1)
    # the ramp "timestep" is the original's on the full grid (map[t] = t)
    full = SamplerConfig(kind="ddim", steps=4000)
    np.testing.assert_allclose(
        _step_tables(dataclasses.replace(full, cond_free_ramp="timestep"))["cfk"], _step_tables(full)["cfk"], atol=0
    )
    with pytest.raises(ValueError, match="steps must be an integer"):
        logsnr_timesteps(1)
    # every kind runs on the logsnr grid: the model is fed its timesteps, the DDPM tables are finite
    for kind in ("ddpm", "ddim", "dpm++2m"):
        tables = _step_tables(SamplerConfig(kind=kind, steps=27, spacing="logsnr"))
        np.testing.assert_array_equal(tables["t_model"], logsnr_timesteps(27)[::-1])
        assert all(np.isfinite(v).all() for v in tables.values()), kind
    model_fn, *_ = _gaussian_case()
    x = sample(model_fn, (1, 100, 16), config=SamplerConfig(steps=10, spacing="logsnr"), key=jax.random.key(0))
    assert np.isfinite(np.asarray(x)).all() and np.abs(np.asarray(x)).max() <= 1.5


def test_dpm_solver_converges_at_second_order_and_faster_than_ddim():
    model_fn, mu_c, _, x_T = _gaussian_case()
    exact = _exact_endpoint(x_T.astype(np.float64), mu_c.astype(np.float64))

    def error(kind, steps):
        config = SamplerConfig(kind=kind, steps=steps, cond_free=False, temperature=1.0)
        return float(
            np.abs(np.asarray(sample(model_fn, x_T.shape, config=config, noise=SamplerNoise(init=x_T))) - exact).max()
        )

    dpm = [error("dpm++2m", n) for n in (5, 10, 20, 40, 80)]
    ddim = [error("ddim", n) for n in (40, 80)]
    print("dpm++2m max error at 5/10/20/40/80 steps:", dpm, "ddim at 40/80:", ddim)
    # Measured: dpm++2m 0.60, 0.37, 0.16, 0.042, 0.0055; ddim 0.11, 0.054 (first order: 2x per doubling).
    assert all(a > b for a, b in zip(dpm, dpm[1:], strict=False)), dpm
    assert dpm[2] / dpm[3] > 3 and dpm[3] / dpm[4] > 3, dpm  # second order: ~4x per doubling of the steps
    assert dpm[3] < ddim[1] and dpm[4] < ddim[1] / 5, (dpm, ddim)  # 40 steps beat DDIM's 80


# ------------------------------------------------------------------------------- keys, compilation, errors


def test_keys_determinism_and_per_row_keys():
    model_fn, *_ = _gaussian_case()
    config = SamplerConfig(kind="ddpm", steps=4, cond_free=True, temperature=0.9)
    shape = (2, 100, 16)
    a = np.asarray(sample(model_fn, shape, config=config, key=jax.random.key(1)))
    b = np.asarray(sample(model_fn, shape, config=config, key=jax.random.key(1)))
    c = np.asarray(sample(model_fn, shape, config=config, key=jax.random.key(2)))
    np.testing.assert_array_equal(a, b)  # same key, same program: bit-identical
    legacy = np.asarray(sample(model_fn, shape, config=config, key=jax.random.PRNGKey(1)))
    np.testing.assert_array_equal(legacy, a)  # a raw uint32 key is wrapped as the same typed key
    assert np.abs(a - c).max() > 0.1  # another key, other draws
    assert np.abs(a[0] - a[1]).max() > 0.1  # the rows of one key get different draws
    # One key per row: a row's result does not depend on its batch mates or the batch size.
    keys = jax.random.split(jax.random.key(3), 2)
    pair = np.asarray(sample(model_fn, shape, config=config, key=keys))
    alone = np.asarray(sample(model_fn, (1, 100, 16), config=config, key=keys[1:]))
    # The Gaussian stub is per-element, so the row is the same computation: float32 rounding only.
    np.testing.assert_allclose(pair[1:], alone, rtol=0, atol=1e-6)


def test_no_recompilation_on_repeated_calls():
    model_fn, mu_c, mu_u, x_T = _gaussian_case()
    config = SamplerConfig(kind="dpm++2m", steps=6, cond_free=True)
    sample(model_fn, x_T.shape, config=config, key=jax.random.key(0))  # compiles
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        # new key, and new arrays in the model function (a Partial's arrays are traced arguments)
        other_fn = Partial(model_fn.func, *[np.asarray(a) + 0.01 for a in model_fn.args])
        x = sample(other_fn, x_T.shape, config=config, key=jax.random.key(7))
        jax.block_until_ready(x)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []


def test_bad_input_is_named():
    model_fn, *_ = _gaussian_case()
    with pytest.raises(ValueError, match="kind must be one of"):
        SamplerConfig(kind="euler")
    with pytest.raises(ValueError, match="steps must be an integer"):
        SamplerConfig(steps=1)
    with pytest.raises(ValueError, match="temperature must be a positive"):
        SamplerConfig(temperature=0.0)
    with pytest.raises(ValueError, match="spacing must be one of"):
        SamplerConfig(spacing="karras")
    with pytest.raises(ValueError, match="cond_free_ramp must be one of"):
        SamplerConfig(cond_free_ramp="cosine")
    with pytest.raises(ValueError, match="ddim_eta only applies"):
        SamplerConfig(kind="ddpm", ddim_eta=0.5)
    with pytest.raises(TypeError):
        SamplerConfig(stpes=5)  # unknown field
    with pytest.raises(TypeError, match="temperature must be a number"):
        SamplerConfig(temperature="hot")
    with pytest.raises(ValueError, match="unknown preset 'turbo'"):
        SamplerConfig.tortoise("turbo")
    assert SamplerConfig.tortoise("ultra_fast") == SamplerConfig(steps=30, cond_free=False, cond_free_k=2.0)
    assert SamplerConfig.tortoise("standard", kind="dpm++2m", steps=30).steps == 30
    config = SamplerConfig(kind="ddpm", steps=3)
    with pytest.raises(ValueError, match="exactly one of key"):
        sample(model_fn, (1, 100, 16), config=config)
    with pytest.raises(ValueError, match=r"noise.steps must have shape \(3, 1, 100, 16\)"):
        sample(model_fn, (1, 100, 16), config=config, noise=SamplerNoise(init=np.zeros((1, 100, 16), np.float32)))
    with pytest.raises(ValueError, match="one per row"):
        sample(model_fn, (2, 100, 16), config=config, key=jax.random.split(jax.random.key(0), 3))
    with pytest.raises(ValueError, match=r"model_fn returned shape \(2, 100, 16\), expected \(2, 200, 16\)"):
        # with guidance the call has 2B rows
        sample(lambda x, t, cf: x, (1, 100, 16), config=config, key=jax.random.key(0))


# ----------------------------------------------------------------- the real tiny DiffusionTts (full runs)

MODEL = DiffusionTts(DiffusionConfig.tiny())
_timestep_independent = jax.jit(
    functools.partial(MODEL.apply, method=DiffusionTts.timestep_independent), static_argnums=(3,)
)


@functools.cache
def _variables() -> dict:
    return params_from_original(state_dict("diffusion_decoder"))[1]


def _decoder(variables, aligned, x, t, cond_free):
    """The sampler's model_fn: DiffusionTts with the precomputed aligned embedding [B, C, L], rows chosen by the
    mask; with guidance the sampler sends 2B rows [cond; uncond], so the embedding is repeated to match."""
    aligned = jnp.concatenate([aligned] * (x.shape[0] // aligned.shape[0]), axis=0)
    return MODEL.apply(variables, x, t, aligned, cond_free)


def _decoder_fn(latents: np.ndarray, cond_latent: np.ndarray, frames: int) -> Partial:
    aligned = _timestep_independent(_variables(), jnp.asarray(latents), jnp.asarray(cond_latent), frames)
    return Partial(_decoder, _variables(), aligned)


# The model's own error against the original is <= 6e-5 at t >= 1000 (the original's float32 cos/sin of the
# timestep embedding; tests/test_waveform_diffusion.py). x0 multiplies eps by sqrt(1/abar - 1) = 153 at the first
# step (and guidance by up to 1 + 2k_t = 1.8): up to ~1e-2 before clipping, 1.5e-3 seen; most first-step values
# are clipped. The samples take it times coef1 <= 0.67 (3.7e-4 seen), the denormalised mel times 6.9 (1.3e-3
# seen). A wrong step (formula, table, guidance, noise order) moves them by > 0.05.
ATOL_X0, ATOL_X, ATOL_MEL = 5e-3, 1e-3, 7e-3


@pytest.mark.parametrize("tag", ["nocf", "cf"])
def test_ddpm_full_run_with_the_model(tag):
    ref = reference()
    config = SamplerConfig(kind="ddpm", steps=K, cond_free=tag == "cf", **CFG)
    latents, cond_latent, batch = ref["samp_latents"], ref["samp_cond_latent"], 1
    if tag == "cf":  # batch 2 (guidance: 4 model rows per call); row 1 has other latents and its own draws
        latents = np.concatenate([latents, ref["ar_latents"][1:]])
        cond_latent = np.concatenate([cond_latent, ref["ti_cond_latent"][1:]])
        batch = 2
    noise = _recorded_noise(batch)
    if batch == 2:
        sign = np.array([1, -1], np.float32)[:, None, None]
        noise = noise.replace(init=noise.init * sign, steps=noise.steps * sign)
    x, traj = sample(
        _decoder_fn(latents, cond_latent, L), (batch, 100, L), config=config, noise=noise, return_trajectory=True
    )
    np.testing.assert_allclose(traj.pred_xstart[:, :1], ref[f"samp_{tag}_pred_xstart"], rtol=0, atol=ATOL_X0)
    np.testing.assert_allclose(traj.x[:, :1], ref[f"samp_{tag}_x"], rtol=0, atol=ATOL_X)
    np.testing.assert_allclose(x[:1], ref[f"samp_{tag}_mel_norm"], rtol=0, atol=ATOL_X)
    np.testing.assert_allclose(denormalize_tacotron_mel(x[:1]), ref[f"samp_{tag}_mel"], rtol=0, atol=ATOL_MEL)
    if batch == 2:
        assert np.isfinite(x).all() and np.abs(x[1] - x[0]).max() > 0.1


def test_ddim_full_run_with_the_model():
    ref = reference()
    config = SamplerConfig(kind="ddim", steps=K, cond_free=True, **CFG)
    model_fn = _decoder_fn(ref["samp_latents"], ref["samp_cond_latent"], L)
    x = sample(model_fn, SHAPE, config=config, noise=SamplerNoise(init=ref["samp_noise_init"]))
    np.testing.assert_allclose(x, ref["ddim_cf_mel_norm"], rtol=0, atol=ATOL_X)  # 5.1e-4 seen; as above


def test_end_to_end_mel_with_the_model():
    # AR latents -> timestep_independent -> 5 guided DDPM steps at temperature 1 -> denormalised mel.
    ref = reference()
    frames = ref["e2e_mel"].shape[-1]
    config = SamplerConfig(kind="ddpm", steps=K, cond_free=True, cond_free_k=2.0, temperature=1.0)
    model_fn = _decoder_fn(ref["e2e_ar_latents"], ref["diff_cond_latent"], frames)
    noise = SamplerNoise(init=ref["e2e_noise_init"], steps=ref["e2e_noises"])
    x = sample(model_fn, (1, 100, frames), config=config, noise=noise)
    np.testing.assert_allclose(denormalize_tacotron_mel(x), ref["e2e_mel"], rtol=0, atol=ATOL_MEL)  # 1.3e-3 seen


def test_dpm_solver_converges_to_ddim_on_the_model():
    # Both solve the same guided probability-flow ODE (x_T = 0.8 z, cond-free k = 2). The tiny model has random
    # weights, so its x0 prediction is far from smooth in t (most values clipped): the observed convergence is
    # slow, and no faster than DDIM's (rms vs the 400-step DDIM at 5/10/20/27: 0.29, 0.15, 0.094, 0.078; DDIM
    # 0.25, 0.14, 0.089, 0.072; DDIM 200 vs 400: 0.032). The order itself is shown on smooth data above.
    ref = reference()
    model_fn = _decoder_fn(ref["samp_latents"], ref["samp_cond_latent"], L)
    noise = SamplerNoise(init=ref["samp_noise_init"])

    def run(kind, steps):
        config = SamplerConfig(kind=kind, steps=steps, cond_free=True, **CFG)
        return np.asarray(sample(model_fn, SHAPE, config=config, noise=noise))

    target = run("ddim", 400)
    rms = [float(np.sqrt(np.mean((run("dpm++2m", n) - target) ** 2))) for n in (5, 10, 20, 27)]
    print("dpm++2m rms error vs 400-step DDIM at 5/10/20/27 steps:", rms)
    assert all(a > b for a, b in zip(rms, rms[1:], strict=False)), rms
    # At 27 steps (1/3 of the `fast` preset's 80): within 0.1 rms of the reference, i.e. ~3% of the mel's
    # [-1, 1] range (0.078 measured).
    assert rms[-1] < 0.1, rms


def test_on_step_sees_every_step_once_in_order_without_recompiling_or_changing_the_sample():
    model_fn, _, _, x_T = _gaussian_case()
    config = SamplerConfig(kind="ddpm", steps=7, cond_free=True)
    key = jax.random.key(3)
    plain = np.asarray(sample(model_fn, x_T.shape, config=config, key=key))
    seen: list[int] = []
    reported = np.asarray(sample(model_fn, x_T.shape, config=config, key=key, on_step=seen.append))
    assert seen == list(range(1, 8))  # every step, once, in order, all before sample returned
    np.testing.assert_array_equal(reported, plain)  # the callback changes nothing in the arithmetic
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        again: list[int] = []
        sample(model_fn, x_T.shape, config=config, key=jax.random.key(4), on_step=again.append)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == [] and again == list(range(1, 8))  # a new listener reuses the compiled loop
    assert seen == list(range(1, 8))  # the first listener is gone: it heard nothing of the second call
