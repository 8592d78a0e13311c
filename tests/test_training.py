"""Training machinery on tiny models: overfitting, freezing, accumulation, bf16, checkpoints and bit-identical
resume. One tiny config and a few shared jitted steps keep the compile count low."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from clvp_jax.config import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig
from clvp_jax.model import ClvpModelForConditionalGeneration
from clvp_jax.training import (
    Checkpointer,
    OptimizerConfig,
    create_train_state,
    init_model_params,
    learning_rate_schedule,
    make_clvp_loss,
    make_lm_loss,
    make_optimizer,
    make_train_step,
)
from clvp_jax.training.data import Pair, pad_batch

DECODER_SIDE = ("conditioning_encoder", "speech_decoder_model")
TOWERS = ("text_encoder_model", "speech_encoder_model")


def tiny_config() -> ClvpConfig:
    """Smaller than ClvpConfig.tiny(): one layer per stack (rotary needs a 32-wide head)."""
    enc = dict(vocab_size=64, hidden_size=32, intermediate_size=32, projection_dim=32, num_attention_heads=1)
    dec = ClvpDecoderConfig(
        vocab_size=66, bos_token_id=64, eos_token_id=65, max_position_embeddings=24, max_text_tokens=16,
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_mel_attn_blocks=1, feature_size=8,
        decoder_fixing_codes=(3, 4),
    )  # fmt: skip
    return ClvpConfig(
        text_config=ClvpEncoderConfig(num_hidden_layers=1, bos_token_id=63, eos_token_id=0, **enc),
        speech_config=ClvpEncoderConfig(num_hidden_layers=1, **enc),
        decoder_config=dec,
        projection_dim=32,
    )


CONFIG = tiny_config()
MODEL = ClvpModelForConditionalGeneration(CONFIG)


@functools.cache
def initial_params():
    return jax.device_get(init_model_params(CONFIG, seed=0))


def clip_batch(seed: int, n: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    pairs = [
        Pair(tuple(rng.integers(1, 60, rng.integers(3, 9))), tuple(rng.integers(1, 60, rng.integers(4, 13))))
        for _ in range(n)
    ]
    return pad_batch(pairs, 8, 12)


CLIP_OPT = OptimizerConfig(learning_rate=3e-3, warmup_steps=5, total_steps=100, freeze=DECODER_SIDE)
ACCUM_OPT = OptimizerConfig(
    learning_rate=3e-3, warmup_steps=5, total_steps=100, freeze=DECODER_SIDE, accumulation_steps=2
)


@functools.cache
def clip_step(opt: OptimizerConfig, dtype=None):
    """(tx, jitted non-donating train step) for the contrastive loss, shared across tests."""
    tx = make_optimizer(opt, initial_params())
    model = ClvpModelForConditionalGeneration(CONFIG, dtype=dtype)
    return tx, make_train_step(make_clvp_loss(model), tx, donate=False)


def run(step, state, batches):
    metrics = []
    for b in batches:
        state, m = step(state, b)
        metrics.append(jax.device_get(m))
    return state, metrics


def leaves_equal(a, b) -> bool:
    """Same tree structure and bit-identical leaves."""
    if jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b):
        return False
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return all(np.array_equal(x, y) for x, y in pairs)


def test_overfits_a_tiny_contrastive_batch_and_freezes_the_decoder_side():
    tx, step = clip_step(CLIP_OPT)
    state0 = create_train_state(initial_params(), tx, 0)
    batch = clip_batch(0)
    state, metrics = run(step, state0, [batch] * 60)
    first, last = metrics[0], metrics[-1]
    assert first["loss"] > 1.0 and first["accuracy"] < 1.0  # random towers: far from separating 8 pairs
    assert last["loss"] < 0.05 and last["accuracy"] == 1.0
    assert int(state.step) == 60
    before, after = flatten_dict(state0.params), flatten_dict(jax.device_get(state.params))
    for path in before:
        same = np.array_equal(before[path], after[path])
        assert same == (path[0] in DECODER_SIDE), path  # frozen: untouched (no decay either); towers: trained


def test_overfits_a_tiny_lm_batch():
    rng = np.random.default_rng(1)
    batch = {
        "input_features": rng.standard_normal((2, 8, 10)).astype(np.float32),
        "text_ids": np.array([[5, 6, 7, 8], [9, 10, 0, 0]], np.int32),
        "text_mask": np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.int32),
        "speech_ids": rng.integers(0, 64, (2, 12)).astype(np.int32),
        "speech_mask": (np.arange(12)[None] < np.array([[12], [7]])).astype(np.int32),
    }
    opt = OptimizerConfig(learning_rate=1e-2, warmup_steps=5, total_steps=100, freeze=TOWERS + ("logit_scale",))
    tx = make_optimizer(opt, initial_params())
    step = make_train_step(make_lm_loss(MODEL), tx, donate=False)
    state, metrics = run(step, create_train_state(initial_params(), tx, 0), [batch] * 60)
    assert metrics[0]["tokens"] == 12 + 1 + 7 + 1  # codes + one stop per row; pads not scored
    assert metrics[0]["loss"] > 3.5  # ~ln 66 at init
    assert metrics[-1]["loss"] < 0.1 and metrics[-1]["accuracy"] == 1.0


def test_gradient_accumulation_of_equal_micro_batches_equals_one_step():
    """MultiSteps(2) over (a, a, b, b) applies mean(g, g) = g exactly: it must equal plain steps on (a, b)."""
    a, b = clip_batch(2), clip_batch(3)
    tx1, step1 = clip_step(CLIP_OPT)
    tx2, step2 = clip_step(ACCUM_OPT)
    plain, _ = run(step1, create_train_state(initial_params(), tx1, 0), [a, b])  # update 0 has lr 0 (warm-up)
    half, _ = run(step2, create_train_state(initial_params(), tx2, 0), [a, a, b])
    full, _ = run(step2, half, [b])
    assert not leaves_equal(half.params, full.params)  # the 4th micro-batch applied the second update
    # The gradients are bit-identical; the two programs fuse the AdamW arithmetic differently, which leaves a
    # few ulps of each parameter: float32's step is 1.2e-7 relative (6e-8 at 0.5, 1.2e-7 at 1.0, where the
    # LayerNorm weights sit), so rtol=5e-7 (four ulps) and atol=1e-8 for the near-zero kernels. The update
    # being checked is ~6e-4 per parameter, over 1,000x either bound; a missed or doubled update fails.
    leaves = [jax.tree_util.tree_leaves(t) for t in (full.params, plain.params, initial_params())]
    for x, y in zip(leaves[0], leaves[1], strict=True):
        np.testing.assert_allclose(x, y, rtol=5e-7, atol=1e-8)
    moved = max(np.abs(np.asarray(x) - x0).max() for x, x0 in zip(leaves[0], leaves[2], strict=True))
    assert moved > 1e-4


def test_resume_from_checkpoint_is_bit_identical(tmp_path):
    """Save at step 3, restore into a fresh template, continue: equals 6 uninterrupted steps, bit for bit."""
    tx, step = clip_step(ACCUM_OPT)  # accumulation: the MultiSteps buffers must survive the round trip too
    batches = [clip_batch(10 + i) for i in range(6)]
    template = create_train_state(initial_params(), tx, 42)
    straight, _ = run(step, template, batches)

    first, _ = run(step, template, batches[:3])
    with Checkpointer(tmp_path / "ckpt", max_to_keep=2) as ckpt:
        assert ckpt.save(first, {"note": "after 3"})
        restored, meta = ckpt.restore(create_train_state(initial_params(), tx, 0))
    assert meta == {"note": "after 3"} and int(restored.step) == 3
    assert leaves_equal(restored.to_dict(), jax.device_get(first.to_dict()))  # params, opt_state, step, rng
    resumed, _ = run(step, restored, batches[3:])
    assert leaves_equal(jax.device_get(resumed.to_dict()), jax.device_get(straight.to_dict()))
    assert not np.array_equal(resumed.rng, template.rng)


def test_checkpointer_keeps_the_latest_and_reports_missing(tmp_path):
    tx = make_optimizer(CLIP_OPT, initial_params())
    state = create_train_state(initial_params(), tx, 0)
    with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        with pytest.raises(FileNotFoundError, match="no checkpoint"):
            ckpt.restore(state)
        for s in (1, 2, 3, 4):
            ckpt.save(state.replace(step=jnp.asarray(s, jnp.int32)))
        assert ckpt.all_steps() == [3, 4] and ckpt.latest_step() == 4
        assert int(ckpt.restore(state, step=3)[0].step) == 3
        with pytest.raises(FileNotFoundError, match="step 1"):
            ckpt.restore(state, step=1)


def test_bf16_compute_keeps_float32_master_weights():
    tx, step32 = clip_step(CLIP_OPT)
    _, step16 = clip_step(CLIP_OPT, jnp.bfloat16)
    state = create_train_state(initial_params(), tx, 0)
    batch = clip_batch(3)
    s32, m32 = run(step32, state, [batch])
    s16, m16 = run(step16, state, [batch])
    assert {x.dtype for x in jax.tree_util.tree_leaves(s16.params)} == {np.dtype(np.float32)}
    assert {x.dtype for x in jax.tree_util.tree_leaves(s16.opt_state) if x.ndim} == {np.dtype(np.float32)}
    # bf16 keeps 8 bits of mantissa: the loss of a fresh model (a few units) agrees to ~1e-2.
    np.testing.assert_allclose(m16[0]["loss"], m32[0]["loss"], rtol=2e-2)
    # Gradients flow back through the bf16 casts into the float32 masters (norm within a few percent).
    np.testing.assert_allclose(m16[0]["grad_norm"], m32[0]["grad_norm"], rtol=5e-2)


def test_schedule_and_bad_options():
    lr = learning_rate_schedule(OptimizerConfig(learning_rate=1.0, warmup_steps=10, total_steps=110))
    np.testing.assert_allclose([lr(0), lr(5), lr(10), lr(60), lr(110), lr(500)], [0, 0.5, 1, 0.55, 0.1, 0.1], atol=1e-6)
    with pytest.raises(ValueError, match="warmup_steps"):
        OptimizerConfig(warmup_steps=10, total_steps=5)
    with pytest.raises(ValueError, match="match no parameter.*text_encoder_model"):
        make_optimizer(OptimizerConfig(freeze=("text_encoder",)), initial_params())
