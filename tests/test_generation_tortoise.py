"""`generate` reproduces the ORIGINAL Tortoise greedy codes (tests/data/tortoise_tiny), both position conventions.

`gen_codes`: original `inference_speech` uncached (code c_k at mel position k + 1) = our default "training"
convention. `gen_codes_kvcache`: original KV-cache path (c_k at k + 2) = our "reference" convention. Conditioning
is given as the original's latents.

The text: the fixture's `text_ids` are the api's ids, i.e. tokenizer ids + one trailing stop 0, right-padded with
0; the original then embeds `[start, text_ids.., 0]`. `generate` takes tokenizer ids as HF's processor gives them
and adds that trailing eos itself (the reference composite's extra eos, spec §9.4), so it gets `text_ids[:, :-1]`
(the dropped column is 0 in every row) with an all-ones mask: the padding zeros are fed as real tokens, exactly as
the original does. The prefix is then token for token the original's, which step 0 checks directly.
Feeding the api ids whole gives a prefix one token too long: logits move by 0.03-0.3, which the training
convention's margins happened to survive but the KV-cache run's did not (row 1, step 4).
"""

from __future__ import annotations

import numpy as np
import pytest

from clvp_jax.checkpoint import load_original, state_dict_to_params
from clvp_jax.generation import GenerationOptions, generate
from clvp_jax.model import ClvpModelForConditionalGeneration


@pytest.fixture(scope="module")
def original(tortoise_tiny):
    orig = load_original(tortoise_tiny.folder)
    params = state_dict_to_params(orig.state_dict, orig.config)
    model = ClvpModelForConditionalGeneration(orig.config, masked_pooling=False)
    return model, params, tortoise_tiny.reference


@pytest.mark.parametrize("convention,key", [("training", "gen_codes"), ("reference", "gen_codes_kvcache")])
def test_original_greedy_codes(original, convention, key):
    model, params, ref = original
    want = ref[key]
    assert (ref["text_ids"][:, -1] == 0).all()  # the api's trailing stop (row 1) or padding (row 0)
    opts = GenerationOptions(max_new_tokens=want.shape[1], position_convention=convention, output_scores=True)
    out = generate(model, params, ref["text_ids"][:, :-1], conditioning_latents=ref["cond_latents"], options=opts)
    # The fixture's smallest deciding top-1/top-2 margins (0.040 / 0.028) are far above float32 error: exact ids.
    np.testing.assert_array_equal(np.asarray(out.sequences)[:, 1:], want)
    # Step 0 depends only on the prefix and the start token, so it equals the original's teacher-forced logits at
    # mel position 0 in both conventions. fp32 through 2 layers with O(1) random weights: ~3e-6 seen.
    np.testing.assert_allclose(np.asarray(out.scores)[:, 0], ref["ar_mel_logits"][:, 0], rtol=1e-5, atol=2e-5)
    assert (want[1] == 257).any()  # a row that stops early: stop handling and stop padding count
