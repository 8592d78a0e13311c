"""Logit processors against transformers' own processors on random logits (float32, CPU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clvp_jax.generation.processors import (
    MinNewTokens,
    ProcessorContext,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
    apply_processors,
    processor_chain,
)

torch = pytest.importorskip("torch")
lp = pytest.importorskip("transformers.generation.logits_process")

N, V = 6, 301
# Element-wise ops on identical float32 inputs: the only differences are rounding of one division/multiply.
ELEMENTWISE = dict(rtol=1e-6, atol=1e-6)


def _logits(seed: int, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((N, V)) * scale).astype(np.float32)


def _ctx(seen=None, num_new=0) -> ProcessorContext:
    return ProcessorContext(seen=None if seen is None else jnp.asarray(seen), num_new=jnp.int32(num_new))


def _hf(proc, logits: np.ndarray, input_ids: np.ndarray | None = None) -> np.ndarray:
    ids = torch.zeros((N, 1), dtype=torch.long) if input_ids is None else torch.from_numpy(input_ids)
    return proc(ids, torch.from_numpy(logits.copy())).numpy()


def _same_filter(ours: np.ndarray, ref: np.ndarray) -> None:
    """Same kept set (-inf pattern) and the same surviving values."""
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(ref))
    keep = ~np.isneginf(ref)
    np.testing.assert_allclose(ours[keep], ref[keep], **ELEMENTWISE)


@pytest.mark.parametrize("temperature", [0.3, 0.8, 1.7])
def test_temperature(temperature):
    x = _logits(0)
    ours = np.asarray(Temperature(temperature)(jnp.asarray(x), _ctx()))
    np.testing.assert_allclose(ours, _hf(lp.TemperatureLogitsWarper(temperature), x), **ELEMENTWISE)


@pytest.mark.parametrize("k", [1, 5, 50, V + 3])
def test_top_k(k):
    x = _logits(1)
    x[0, :4] = x[0].max()  # a tie at the top: all tied values survive in both
    _same_filter(np.asarray(TopK(k)(jnp.asarray(x), _ctx())), _hf(lp.TopKLogitsWarper(k), x))


@pytest.mark.parametrize("top_p", [0.05, 0.3, 0.8, 0.95, 0.999])
@pytest.mark.parametrize("seed,scale", [(2, 1.0), (3, 3.0), (4, 8.0)])
def test_top_p_matches_sorting_reference(top_p, seed, scale):
    x = _logits(seed, scale)
    _same_filter(np.asarray(TopP(top_p)(jnp.asarray(x), _ctx())), _hf(lp.TopPLogitsWarper(top_p), x))


def test_top_p_keeps_the_top_token_and_respects_prior_filters():
    x = _logits(5, 10.0)
    x[1, 7] = 100.0  # one token carries ~all the mass: only it survives, for any top_p
    out = np.asarray(TopP(0.01)(jnp.asarray(x), _ctx()))
    assert np.isfinite(out[1]).sum() == 1 and np.isfinite(out[1, 7])
    assert (np.isfinite(out).sum(axis=1) >= 1).all()
    filtered = np.asarray(TopK(20)(jnp.asarray(x), _ctx()))  # -inf entries (prob 0) as after top-k
    ref = _hf(lp.TopPLogitsWarper(0.9), _hf(lp.TopKLogitsWarper(20), x))
    _same_filter(np.asarray(TopP(0.9)(jnp.asarray(filtered), _ctx())), ref)


@pytest.mark.parametrize("penalty", [0.7, 2.0])
def test_repetition_penalty(penalty):
    x = _logits(6)
    rng = np.random.default_rng(7)
    input_ids = rng.integers(0, V, size=(N, 9))
    input_ids[:, 0] = 3  # a repeated token counts once
    input_ids[:, 1] = 3
    seen = np.zeros((N, V), bool)
    seen[np.arange(N)[:, None], input_ids] = True
    ours = np.asarray(RepetitionPenalty(penalty)(jnp.asarray(x), _ctx(seen)))
    ref = _hf(lp.RepetitionPenaltyLogitsProcessor(penalty), x, input_ids)
    np.testing.assert_allclose(ours, ref, **ELEMENTWISE)
    assert not np.allclose(ours, x)  # the penalty did act


@pytest.mark.parametrize("num_new", [0, 2, 3, 5])
def test_min_new_tokens(num_new):
    x = _logits(8)
    prompt = 4
    ref_proc = lp.MinNewTokensLengthLogitsProcessor(prompt_length_to_skip=prompt, min_new_tokens=3, eos_token_id=11)
    ids = np.zeros((N, prompt + num_new), np.int64)
    ours = np.asarray(MinNewTokens(3, 11)(jnp.asarray(x), _ctx(num_new=num_new)))
    np.testing.assert_array_equal(ours, _hf(ref_proc, x, ids))
    assert np.isneginf(ours[:, 11]).all() == (num_new < 3)


def test_chain_matches_reference_order():
    """Penalty -> min tokens -> temperature -> top-k -> top-p, as transformers' sampling chain."""
    x = _logits(9)
    seen = np.zeros((N, V), bool)
    seen[:, [1, 5, 9]] = True
    ids = np.tile(np.array([[1, 5, 9]]), (N, 1))
    chain = processor_chain(
        do_sample=True, temperature=0.8, top_k=40, top_p=0.8, repetition_penalty=2.0, min_new_tokens=2, eos_token_id=5
    )
    ours = np.asarray(jax.jit(lambda l: apply_processors(chain, l, _ctx(seen, 1)))(jnp.asarray(x)))
    ref = x
    for proc in (
        lp.RepetitionPenaltyLogitsProcessor(2.0),
        lp.MinNewTokensLengthLogitsProcessor(prompt_length_to_skip=2, min_new_tokens=2, eos_token_id=5),
        lp.TemperatureLogitsWarper(0.8),
        lp.TopKLogitsWarper(40),
        lp.TopPLogitsWarper(0.8),
    ):
        ref = _hf(proc, ref, ids)
    _same_filter(ours, ref)
    assert processor_chain(do_sample=False, temperature=0.5, top_p=0.5) == ()  # warpers only when sampling


@pytest.mark.parametrize(
    "bad",
    [lambda: Temperature(0.0), lambda: TopK(0), lambda: TopP(0.0), lambda: TopP(1.5), lambda: RepetitionPenalty(0)],
)
def test_bad_values_raise(bad):
    with pytest.raises(ValueError):
        bad()
