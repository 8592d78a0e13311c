"""The candidates' decode cache (`SharedPrefixCache`): shared prompts + own slots read block by block.

Checked against the plain uncached decoder pass over [prompt, own tokens] for every row: rows of two prompts
(one left-padded) interleaved, enough steps to cross several blocks (block 4 here).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clvp_jax.decoder import init_cache, share_prefix
from clvp_jax.model import ClvpModelForConditionalGeneration

# Online softmax vs one softmax over the concatenated keys: the same math in another order, fp32 noise only
# (logits of magnitude 1-5); the same tolerance as the other decoder-logit parity tests.
ATOL_LOGITS = 5e-5
RTOL = 1e-5


@pytest.fixture(scope="module")
def model_and_params(reference_of):
    _, _, cfg, params = reference_of("partial_rotary")  # qkv bias on, 3 heads: the decoder path with the most options
    return cfg, params


def test_shared_prefix_decoding_equals_full_pass(model_and_params):
    cfg, params = model_and_params
    dec = cfg.decoder_config
    rng = np.random.default_rng(3)
    G, L, S = 2, 6, 11  # prompts, prompt slots, decoded tokens per row
    group = np.array([0, 1, 1, 0, 1])
    N = len(group)
    prompt = rng.integers(0, dec.vocab_size, (G, L))
    prompt_mask = np.ones((G, L), np.int32)
    prompt_mask[1, :2] = 0  # prompt 1 is left-padded
    prompt_pos = np.broadcast_to(np.arange(L), (G, L))
    own = rng.integers(0, dec.vocab_size, (N, S))
    own_pos = np.broadcast_to(L + np.arange(S), (N, S))

    model = ClvpModelForConditionalGeneration(cfg)
    call = jax.jit(
        lambda p, i, pos, a, c: model.apply(
            {"params": p},
            method=lambda m: m.speech_decoder_model(input_ids=i, position_ids=pos, attention_mask=a, cache=c),
        )
    )
    full = call(
        params,
        np.concatenate([prompt[group], own], axis=1),
        np.concatenate([prompt_pos[group], own_pos], axis=1),
        np.concatenate([prompt_mask[group], np.ones((N, S), np.int32)], axis=1),
        None,
    ).logits[:, L:]

    prefill = call(params, prompt, prompt_pos, prompt_mask, init_cache(dec, G, L)).cache
    cache = share_prefix(prefill, jnp.asarray(group), S, block=4)
    assert cache.keys[0].shape[-1] == 12  # room for S = 11 tokens, rounded up to whole blocks
    steps = []
    for k in range(S):
        out = call(params, own[:, k : k + 1], own_pos[:, k : k + 1], None, cache)
        steps.append(np.asarray(out.logits[:, 0]))
        cache = out.cache
    assert int(cache.index) == S
    np.testing.assert_allclose(np.stack(steps, axis=1), np.asarray(full), rtol=RTOL, atol=ATOL_LOGITS)


def test_shared_prefix_needs_positions_and_single_tokens(model_and_params):
    cfg, params = model_and_params
    model = ClvpModelForConditionalGeneration(cfg)
    prefill = init_cache(cfg.decoder_config, 1, 3).replace(index=jnp.int32(3))
    cache = share_prefix(prefill, jnp.zeros((2,), jnp.int32), 4)
    ids = jnp.zeros((2, 1), jnp.int32)
    run = lambda **kw: model.apply({"params": params}, method=lambda m: m.speech_decoder_model(**kw))  # noqa: E731
    with pytest.raises(ValueError, match="explicit position_ids"):
        run(input_ids=ids, cache=cache)
    with pytest.raises(ValueError, match="one token per row"):
        run(input_ids=jnp.zeros((2, 2), jnp.int32), position_ids=jnp.zeros((2, 2), jnp.int32), cache=cache)
