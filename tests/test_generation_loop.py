"""The decode loop driven by a stub step function: positions, stopping, padding, limits, scores, keys."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.generation.loop import decode, first_argmax, sample_categorical
from clvp_jax.generation.processors import MinNewTokens, RepetitionPenalty

V, EOS, PAD = 11, 10, 9


def _stub(tokens, positions, cache):
    """Next token = (3 * token + position) % 10 (never eos), unless the row's target says stop now.

    `cache` is (step counter, per-row stop step); the counter checks the loop calls the stub once per step."""
    calls, stop_at = cache
    nxt = (3 * tokens + positions) % 10
    nxt = jnp.where(calls + 1 == stop_at, EOS, nxt)
    return jax.nn.one_hot(nxt, V) * 5.0 + 1.0, (calls + 1, stop_at)


def _expected(first, stop_at, n, first_position):
    out = []
    for row, tok in enumerate(first):
        seq, t = [int(tok)], int(tok)
        for k in range(1, n):
            if EOS in seq:
                seq.append(PAD)
                continue
            t = EOS if k == stop_at[row] else (3 * seq[-1] + first_position + k - 1) % 10
            seq.append(t)
        out.append(seq)
    return np.array(out)


def _run(first_position=1, limit=None, stop_at=(3, 99, 1), n=6, **kw):
    first = jnp.array([2, 4, 7])
    cache = (jnp.int32(0), jnp.asarray(stop_at))
    keys = jax.random.split(jax.random.key(0), 3)
    f = jax.jit(
        lambda fl, c, k: decode(
            _stub,
            fl,
            c,
            k,
            max_new_tokens=n,
            eos_token_id=EOS,
            pad_token_id=PAD,
            first_position=first_position,
            limit=limit,
            **kw,
        )
    )
    return f(jax.nn.one_hot(first, V) * 5.0, cache, keys), first, np.asarray(stop_at)


def test_tokens_positions_and_stop():
    for first_position in (1, 2):
        out, first, stop_at = _run(first_position)
        np.testing.assert_array_equal(out.tokens, _expected(np.asarray(first), stop_at, 6, first_position))
        assert int(out.num_steps) == 6


def test_stops_early_when_every_row_stopped():
    out, first, stop_at = _run(stop_at=(2, 3, 1), n=8)
    assert int(out.num_steps) == 4  # the last row stops at column 3; nothing runs after
    exp = _expected(np.asarray(first), stop_at, 8, 1)
    exp[:, 4:] = PAD
    np.testing.assert_array_equal(out.tokens, exp)


def test_limit_and_scores():
    out, first, stop_at = _run(limit=jnp.int32(3), output_scores=True)
    assert int(out.num_steps) == 3
    assert (np.asarray(out.tokens)[:, 3:] == PAD).all()
    scores = np.asarray(out.scores)
    # Raw logits: their argmax is the token, except after a row stopped (then the token is pad).
    np.testing.assert_array_equal(scores[:2, :3].argmax(-1), np.asarray(out.tokens)[:2, :3])
    assert (scores[:, 3:] == 0).all()


def test_min_new_tokens_and_repetition_penalty_in_the_loop():
    # Eos is forbidden for the first 2 tokens: row 2 (stop at 1) must not stop at column 1.
    out, _, _ = _run(processors=(MinNewTokens(2, EOS),))
    assert int(out.tokens[2, 1]) != EOS
    # All logits are positive, so a huge penalty pushes every seen token below every unseen one: no repeats
    # until the (unseen) eos is the best left.
    pen, _, _ = _run(processors=(RepetitionPenalty(1e6),), stop_at=(99, 99, 99), n=10)
    for row in np.asarray(pen.tokens).tolist():
        head = row[: row.index(EOS)] if EOS in row else row
        assert len(set(head)) == len(head), row
    plain, _, _ = _run(stop_at=(99, 99, 99), n=10)
    assert any(len(set(r)) < len(r) for r in np.asarray(plain.tokens).tolist())  # without it, tokens repeat


def test_sampling_depends_only_on_each_rows_key():
    def sample(logits, keys):
        return decode(
            lambda t, p, c: (jnp.zeros((t.shape[0], V)), c),
            logits,
            (),
            keys,
            max_new_tokens=5,
            do_sample=True,
            eos_token_id=EOS,
        ).tokens

    keys = jax.random.split(jax.random.key(3), 4)
    f = jax.jit(sample)
    full = np.asarray(f(jnp.zeros((4, V)), keys))
    part = np.asarray(f(jnp.zeros((2, V)), keys[2:]))
    np.testing.assert_array_equal(full[2:], part)
    assert len({tuple(r) for r in full.tolist()}) > 1  # different keys, different draws


def test_first_argmax_and_sampling_give_jax_s_indices():
    """`first_argmax` and `sample_categorical` are exact replacements (the same integers, not close ones) for
    `jnp.argmax` and `jax.random.categorical`: ties (the first index wins), -inf, a row with a NaN, top-p-like
    rows with most logits at -inf, and 200 keys over real-size rows."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 8194)).astype(np.float32)
    x[1, [5, 70, 4000]] = 9.0  # a three-way tie for the maximum
    x[2, :] = -np.inf
    x[2, 17] = 0.0  # a single survivor
    x[3, [8, 9000 % 8194]] = np.nan  # NaN rows: jnp.argmax gives the first NaN
    x[4, :] = 1.0  # every entry tied
    x[5, rng.random(8194) < 0.99] = -np.inf  # top-p: ~1% survive
    np.testing.assert_array_equal(np.asarray(jax.jit(first_argmax)(x)), np.asarray(jnp.argmax(x, axis=-1)))
    keys = jax.random.split(jax.random.key(3), 200)
    logits = jnp.asarray(np.where(np.isnan(x), 0.0, x))[jnp.arange(200) % 6]
    ours = jax.jit(jax.vmap(sample_categorical))(keys, logits)
    theirs = jax.jit(jax.vmap(jax.random.categorical))(keys, logits)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert len(set(np.asarray(ours)[0::6].tolist())) > 20  # a real draw: row 0's samples vary with the key
