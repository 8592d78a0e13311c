"""`clvp_jax.pipeline`: candidate grouping does not change results; long text is split and batched."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from clvp_jax import pipeline
from clvp_jax.generation import GenerationOptions, generate
from clvp_jax.text import ClvpTokenizer


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return tiny_model


def test_candidates_split_over_calls_equal_one_call(tiny, monkeypatch):
    model, params = tiny
    latents = np.linspace(-1, 1, model.config.decoder_config.hidden_size).astype(np.float32)
    text = "First sentence here. " * 3 + "And a second, rather different one!"
    kw = dict(text=text, model=model, params=params, latents=latents, candidates=5, max_new_tokens=6, seed=11)
    one = pipeline.rank_speech(**kw)
    monkeypatch.setattr(pipeline, "CANDIDATES_PER_CALL", 2)  # 3 calls of 2; the 6th candidate is dropped
    calls = []
    three = pipeline.rank_speech(**kw, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 5), (4, 5), (5, 5)]
    np.testing.assert_array_equal(three.arrays["sequences"], one.arrays["sequences"])
    # Same tokens through differently shaped programs: only float rounding can differ in the scores.
    np.testing.assert_allclose(three.arrays["candidate_scores"], one.arrays["candidate_scores"], rtol=1e-5, atol=1e-5)
    assert [c.text for c in one.chunks] == [c.text for c in three.chunks]
    assert one.arrays["sequences"].shape == (len(one.chunks), 5, 7)


def test_long_text_is_split_to_fit(tiny):
    model, params = tiny
    latents = np.zeros(model.config.decoder_config.hidden_size, np.float32)
    long_text = " ".join(f"Sentence number {i} talks about something else entirely." for i in range(12))
    result = pipeline.rank_speech(
        text=long_text, model=model, params=params, latents=latents, candidates=1, max_new_tokens=2
    )
    assert len(result.chunks) > 1
    limit = model.config.decoder_config.max_text_tokens - 3
    assert result.arrays["text_mask"].sum(axis=1).max() <= limit


def test_score_equals_the_scores_generation_ranked_by(tiny):
    """`score` of generated codes gives the CLVP logits `generate` ranked those candidates by (both go through
    the model's `score_candidates`: text + extra eos, start token + fix)."""
    model, params = tiny
    text = "Hello there, how are you?"
    enc = ClvpTokenizer.from_pretrained()([text], return_tensors="np")
    latents = np.linspace(-1, 1, model.config.decoder_config.hidden_size).astype(np.float32)
    opts = GenerationOptions.tortoise(num_candidates=3, max_new_tokens=6, pad_to_max_mel_tokens=None)
    out = generate(model, params, enc["input_ids"], conditioning_latents=latents, rng=jax.random.key(2), options=opts)
    codes = np.asarray(out.sequences)[:, 1:]  # what was generated, stop-token padding included
    scores = pipeline.score(text=text, speech_ids=codes, model=model, params=params)
    assert scores.shape == (1, 3)
    # The same values through differently shaped programs (bucketed text, one batch vs eager): fp32 rounding only.
    np.testing.assert_allclose(scores, np.asarray(out.logits_per_text), rtol=1e-5, atol=1e-5)
