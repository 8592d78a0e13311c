"""bf16 against fp32 on the tiny config: the guard on the bf16 fast path's quality (random weights, seed 0).

bf16 keeps 8 significant bits (relative rounding 2^-9 = 2e-3); weights are rounded once, activations after
every product, while softmax, norms' statistics, logits and the CLVP similarity stay float32. So the bounds are
set by bf16 rounding, not by float32 noise, each ~5-10x above what was observed (seed 0, see each constant):
  LOGITS atol 0.02: teacher-forced decoder logits (std 0.11, max 0.5) through 2 layers and 2 LayerNorms;
    observed 3.0e-3, of which 1.5e-3 is the rounding of the weights alone.
  SCORES atol 0.2: CLVP logits_per_text (scale exp(logit_scale) ~ 14, values up to ~8) after two towers;
    observed 0.059.
Greedy decoding may leave fp32's path only at a step where fp32's own top two are closer than bf16's error.
The quality table over many seeds and at real size is in benchmarks/README.md ("bf16").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clvp_jax.decoder import ClvpForCausalLM
from clvp_jax.generation import GenerationOptions, generate
from clvp_jax.layers import Linear
from clvp_jax.model import ClvpModelForConditionalGeneration
from clvp_jax.tuning import Tuning

LOGITS = dict(rtol=0, atol=0.02)
SCORES = dict(rtol=0, atol=0.2)
N_NEW = 24


@pytest.fixture(scope="module")
def both(tiny_model):
    model, params = tiny_model
    p16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    return model.config, params, p16


@pytest.mark.parametrize("rows", [1, 2, 5])
def test_bf16_linear_accumulates_in_float32_and_pads_one_row(rows):
    rng = np.random.default_rng(rows)
    x = jnp.asarray(rng.standard_normal((rows, 64)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((48, 64)) * 0.1, jnp.bfloat16)
    b = jnp.asarray(rng.standard_normal(48), jnp.bfloat16)
    variables = {"params": {"weight": w, "bias": b}}
    # The exact product of the bf16 operands (float64), biased, rounded once to bf16.
    want = (np.asarray(x, np.float64) @ np.asarray(w, np.float64).T + np.asarray(b, np.float64)).astype(np.float32)
    outs = {}
    for name, tuning in (("cpu", Tuning.cpu()), ("portable", Tuning.portable())):
        y = Linear(48, tuning=tuning).apply(variables, x)
        assert y.dtype == jnp.bfloat16 and y.shape == (rows, 48)
        outs[name] = np.asarray(y, np.float32)
        # One bf16 rounding of values up to ~3: half an ulp is 2^-8 relative; float32 accumulation adds ~1e-7.
        np.testing.assert_allclose(outs[name], want, rtol=2**-8, atol=1e-6)
    # The zero-row padding (CPU: one row -> two; elsewhere none) changes nothing: each row's dot is the same.
    assert (Tuning.cpu().low_precision_min_rows, Tuning.portable().low_precision_min_rows) == (2, 0)
    np.testing.assert_array_equal(outs["cpu"], outs["portable"])


@pytest.mark.parametrize("rows", [1, 3])
def test_float32_linear_on_bf16_weights_is_float32_maths(rows):
    # The lm_head in bf16 mode: float32 input, bf16-stored weight, float32 compute (input split in two bf16 parts).
    rng = np.random.default_rng(rows)
    x = jnp.asarray(rng.standard_normal((2, rows, 64)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((40, 64)) * 0.1, jnp.bfloat16)
    b = jnp.asarray(rng.standard_normal(40), jnp.bfloat16)
    y = Linear(40, dtype=jnp.float32).apply({"params": {"weight": w, "bias": b}}, x)
    assert y.dtype == jnp.float32 and y.shape == (2, rows, 40)
    want = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T + np.asarray(b, np.float64)
    # The split keeps x to ~2^-17 relative: |y| <~ 3, sums of 64 terms -> errors ~1e-5, 300x below bf16's 2^-9.
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=2e-5)


def test_teacher_forced_logits_agree(both):
    config, params, p16 = both
    codes = jnp.asarray(np.random.default_rng(0).integers(0, config.decoder_config.vocab_size, (4, 40)))

    def logits(dtype, p):
        lm = ClvpForCausalLM(config.decoder_config, dtype=dtype)
        return np.asarray(lm.apply({"params": p["speech_decoder_model"]}, input_ids=codes).logits)

    fp32, bf16 = logits(None, params), logits(jnp.bfloat16, p16)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, **LOGITS)
    # Observed 0.994 (one flip in 160, at a near tie); random weights make near ties common.
    assert (bf16.argmax(-1) == fp32.argmax(-1)).mean() >= 0.97


def test_greedy_codes_leave_fp32_only_at_near_ties(both):
    config, params, p16 = both
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 200, (3, 9))
    feats = rng.standard_normal((3, config.decoder_config.feature_size, 16)).astype(np.float32)
    opts = GenerationOptions(max_new_tokens=N_NEW, min_new_tokens=N_NEW, output_scores=True)
    a = generate(ClvpModelForConditionalGeneration(config), params, ids, feats, options=opts)
    model16 = ClvpModelForConditionalGeneration(config, dtype=jnp.bfloat16)
    b = generate(model16, p16, ids, feats, options=opts.replace(dtype="bfloat16"))
    seq_a, seq_b = np.asarray(a.sequences)[:, 1:], np.asarray(b.sequences)[:, 1:]
    scores_a, scores_b = np.asarray(a.scores), np.asarray(b.scores)
    same_rows = 0
    for r in range(seq_a.shape[0]):
        differ = np.flatnonzero(seq_a[r] != seq_b[r])
        d = int(differ[0]) if differ.size else N_NEW
        same_rows += d == N_NEW
        k = min(d + 1, N_NEW)  # steps 0..d had the same inputs
        np.testing.assert_allclose(scores_b[r, :k], scores_a[r, :k], **LOGITS)
        if d < N_NEW:  # bf16 picked another token: fp32 rated it within twice the bound of its best
            gap = scores_a[r, d, seq_a[r, d]] - scores_a[r, d, seq_b[r, d]]
            assert 0 <= gap <= 2 * LOGITS["atol"], (r, d, gap)
    assert same_rows >= 1, "no row decoded like fp32 for all steps"  # observed: 2 of 3 (the other leaves at 13)
    # The CLVP ranking scores: float32 similarity on bf16 towers.
    assert np.asarray(b.logits_per_text).dtype == np.float32


def test_clvp_scores_and_best_candidate_agree(both):
    config, params, p16 = both
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(1, 200, (3, 9)))
    speech = jnp.asarray(rng.integers(0, 250, (6, 30)))

    def scores(dtype, p):
        model = ClvpModelForConditionalGeneration(config, dtype=dtype)
        return np.asarray(model.apply({"params": p}, ids, None, speech, method="score").logits_per_text)

    fp32, bf16 = scores(None, params), scores(jnp.bfloat16, p16)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, **SCORES)
    top2 = np.sort(fp32, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * SCORES["atol"]  # the best is decided beyond bf16's error
    assert clear.any()
    np.testing.assert_array_equal(bf16.argmax(1)[clear], fp32.argmax(1)[clear])


def test_float32_checkpoint_loads_as_bf16_leaf_by_leaf(tmp_path, tiny_model):
    from clvp_jax.checkpoint import from_pretrained, save_checkpoint
    from clvp_jax.checkpoint.load import cast_leaf_by_leaf

    model, params = tiny_model
    save_checkpoint(tmp_path / "ck", model.config, jax.tree.map(np.asarray, params))
    loaded, p16 = from_pretrained(tmp_path / "ck", dtype="bfloat16")
    assert loaded.dtype == jnp.bfloat16
    want = jax.tree.map(lambda x: np.asarray(x).astype(jnp.bfloat16), params)
    assert jax.tree.structure(p16) == jax.tree.structure(want)
    for got, expected in zip(jax.tree.leaves(p16), jax.tree.leaves(want), strict=True):
        assert got.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(got), expected)  # the one rounding, nothing else
    # In place: the tree given is the tree returned, its float32 leaves replaced (each original then unreferenced).
    tree = {"a": {"w": np.ones(3, np.float32)}, "n": np.arange(2)}
    assert cast_leaf_by_leaf(tree, np.dtype(jnp.bfloat16)) is tree
    assert tree["a"]["w"].dtype == jnp.bfloat16 and tree["n"].dtype == np.arange(2).dtype
