"""`fix_speech_decoder_output`: the exact rules of spec §9.1 on hand-made rows, against the reference."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import reference_models
import torch

from clvp_jax.model import fix_speech_decoder_output

EOS = 257
CODES = (83, 45, 45, 248)


def test_hand_made_rows():
    B = 256  # bos, dropped
    rows = np.array(
        [
            [B, 1, 2, 3, 4, 5, 6, 7, 8],  # no eos: unchanged
            [B, 1, 2, EOS, 4, 5, 6, 7, 8],  # eos at 2: 83 from there, last three 45 45 248
            [B, 1, 2, 3, 4, 5, 6, 7, EOS],  # eos at the last position still rewrites the last three
            [B, EOS, EOS, 3, 4, 5, 6, 7, 8],  # eos first: everything fixed
        ]
    )
    out = np.asarray(jax.jit(lambda x: fix_speech_decoder_output(x, EOS, CODES))(rows))
    expected = np.array(
        [
            [1, 2, 3, 4, 5, 6, 7, 8],
            [1, 2, 83, 83, 83, 45, 45, 248],
            [1, 2, 3, 4, 5, 45, 45, 248],
            [83, 83, 83, 83, 83, 45, 45, 248],
        ]
    )
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("length", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("name", ["full_rotary", "odd_rotary"])
def test_matches_reference_including_short_rows(name, length):
    """Random rows with eos sprinkled in, at every short length, for 4 codes and for 2 codes (5, 6)."""
    hf, _ = reference_models.reference_model(name)
    dec = reference_models.ours_config(name).decoder_config
    rng = np.random.default_rng(length)
    rows = rng.integers(0, dec.vocab_size, (32, length))
    rows[rng.random(rows.shape) < 0.2] = dec.eos_token_id
    ours = np.asarray(fix_speech_decoder_output(rows, dec.eos_token_id, dec.decoder_fixing_codes))
    if length == 1:  # only the bos: the reference crashes (argmax over an empty axis); we return no codes
        with pytest.raises(IndexError):
            hf.fix_speech_decoder_output(torch.from_numpy(rows))
        assert ours.shape == (32, 0)
        return
    with torch.no_grad():
        ref = hf.fix_speech_decoder_output(torch.from_numpy(rows)).numpy()
    np.testing.assert_array_equal(ours, ref)
