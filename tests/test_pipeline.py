"""`clvp_jax.pipeline`: candidate grouping does not change results; long text is split and batched."""

from __future__ import annotations

import numpy as np
import pytest

from clvp_jax import pipeline


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
    B = len(one.chunks)  # progress counts the candidates of every chunk
    assert calls == [(2 * B, 5 * B), (4 * B, 5 * B), (5 * B, 5 * B)]
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
    """`score` of generated codes gives the CLVP logits `rank_speech` ranked those candidates by (both go through
    the model's `score_candidates`: text + extra eos, start token + fix)."""
    model, params = tiny
    latents = np.linspace(-1, 1, model.config.decoder_config.hidden_size).astype(np.float32)
    text = "First sentence here. " * 3 + "And a second, rather different one!"
    # The arguments of the test above: its compiled program is reused, so only the scoring runs here.
    result = pipeline.rank_speech(
        text=text, model=model, params=params, latents=latents, candidates=5, max_new_tokens=6, seed=11
    )
    stop, pad = model.config.decoder_config.eos_token_id, result.settings["pad_to_max_mel_tokens"]
    sequences = result.arrays["sequences"][0]  # [C, 1 + M], chunk 0
    codes = np.pad(sequences[:, 1:], ((0, 0), (0, pad - sequences.shape[1])), constant_values=stop)  # as scored
    scores = pipeline.score(text=result.chunks[0].text, speech_ids=codes, model=model, params=params)
    assert scores.shape == (1, 5)
    # The same values through differently shaped programs (a batch of chunks, bucketed; one text, eager): fp32
    # rounding only.
    np.testing.assert_allclose(scores[0], result.arrays["candidate_scores"][0], rtol=1e-5, atol=1e-5)
