"""GenerationOptions validates every knob once, whether or not it is used, with the range in the message."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clvp_jax.generation.options import GenerationOptions


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
