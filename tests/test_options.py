"""GenerationOptions validates every knob once, whether or not it is used, with the range in the message."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clvp_jax.generation.options import GenerationOptions, OptionError, SamplingOverrides


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(top_p=1.5), "top_p must be a finite number in (0, 1] or None, got 1.5"),
        (dict(top_p=math.nan), "top_p must be a finite number in (0, 1] or None, got nan"),
        (dict(top_p=0.0), "top_p must be a finite number in (0, 1]"),
        (dict(top_k=0), "top_k must be an integer >= 1 or None, got 0"),
        (dict(top_k=-3), "top_k must be an integer >= 1 or None, got -3"),
        (dict(top_k=2.5), "top_k must be an integer >= 1 or None, got 2.5"),
        (dict(temperature=math.inf), "temperature must be a finite number > 0, got inf"),
        (dict(temperature=0.0), "temperature must be a finite number > 0, got 0.0"),
        (dict(repetition_penalty=math.nan), "repetition_penalty must be a finite number > 0 or None, got nan"),
        (dict(max_new_tokens=0), "max_new_tokens must be an integer >= 1, got 0"),
        (dict(max_new_tokens=True), "max_new_tokens must be an integer >= 1, got True"),
        (dict(num_return_sequences=0), "num_return_sequences must be an integer >= 1, got 0"),
        (dict(chunk_size=0), "chunk_size must be an integer >= 1 or None, got 0"),
    ],
)
def test_bad_values_are_refused_with_their_range(changes, message):
    # Greedy options (do_sample False) never use the warpers; the values are still refused, as the messages promise.
    for base in (GenerationOptions.greedy(8), GenerationOptions.tortoise(4, 8)):
        with pytest.raises(ValueError) as err:
            base.replace(**changes)
        assert message in str(err.value)


def test_numpy_numbers_are_accepted():
    opts = GenerationOptions.tortoise(np.int64(4), np.int32(8), top_k=np.int64(5), temperature=np.float32(0.7))
    assert opts.num_return_sequences == 4 and opts.top_k == 5


@pytest.mark.parametrize(
    "changes, name, message",
    [
        (dict(num_samples=0), "num_samples", "num_samples must be an integer >= 1 or None, got 0"),
        (dict(keep=0), "keep", "keep must be an integer >= 1 or None, got 0"),
        (dict(num_samples=2, keep=3), "keep", "keep must be at most num_samples = 2 (the candidates drawn), got 3"),
        (dict(temperature=0.0), "temperature", "temperature must be a finite number > 0 or None, got 0.0"),
        (dict(top_p=1.01), "top_p", "top_p must be a finite number in (0, 1] or None, got 1.01"),
        (dict(top_k=0), "top_k", "top_k must be an integer >= 1 or None, got 0"),
        (dict(repetition_penalty=-1.0), "repetition_penalty", "repetition_penalty must be a finite number > 0"),
        (dict(length_penalty=math.nan), "length_penalty", "length_penalty must be a finite number (any sign)"),
        (dict(max_new_tokens=0), "max_new_tokens", "max_new_tokens must be an integer >= 1 or None, got 0"),
        (dict(top_k=True), "top_k", "top_k must be an integer >= 1 or None, got True"),
    ],
)
def test_sampling_overrides_are_checked_on_construction(changes, name, message):
    with pytest.raises(OptionError) as err:
        SamplingOverrides(**changes)
    assert err.value.name == name and message in str(err.value)


def test_sampling_overrides_replace_only_what_is_given():
    from clvp_jax.config import ClvpConfig
    from clvp_jax.generation.presets import preset_options

    base = preset_options("ultra_fast", config=ClvpConfig.tiny(), max_new_tokens=8)
    assert SamplingOverrides().apply(base) == base  # nothing given: Tortoise's settings
    got = preset_options(
        "ultra_fast",
        config=ClvpConfig.tiny(),
        max_new_tokens=8,
        sampling=SamplingOverrides(temperature=0.5, top_k=40, length_penalty=3.0),
    )
    assert (got.temperature, got.top_k, got.top_p, got.repetition_penalty) == (0.5, 40, 0.8, 2.0)
    assert got.num_return_sequences == 16  # counts are the caller's (candidates=), never the warpers'
    SamplingOverrides(keep=16).check_keep(16)
    with pytest.raises(OptionError, match="keep must be at most the 16 candidates drawn per chunk, got 17"):
        SamplingOverrides(keep=17).check_keep(16)
