"""The checkpoint package's records: tensor layouts and splits both ways, the two-way original rule templates,
and dtypes checked together with shapes (listed as mis-typed unless a cast is asked for)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from clvp_jax.checkpoint import WeightsMismatchError, check_params, export_hf, load_params, params_to_state_dict
from clvp_jax.checkpoint.layouts import SAME, TRAILING_UNIT, TRANSPOSED, Split
from clvp_jax.checkpoint.rules import state_dict_to_params
from clvp_jax.checkpoint.tortoise import AR_RULES, CLVP_RULES
from clvp_jax.config import ClvpConfig
from clvp_jax.model import param_shapes


@pytest.mark.parametrize("layout", [SAME, TRANSPOSED, TRAILING_UNIT], ids=lambda layout: layout.name)
def test_layouts_invert_and_predict_the_stored_shape(layout):
    ours = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    stored = layout.to_torch(ours)
    assert tuple(stored.shape) == layout.torch_shape(ours.shape)
    np.testing.assert_array_equal(layout.to_flax(stored), ours)
    assert {"same": (5, 3), "transposed": (3, 5), "trailing-unit": (5, 3, 1)}[layout.name] == stored.shape


def test_split_parts_and_join_are_inverse():
    rng = np.random.default_rng(1)
    heads, rows = 2, 4
    parts = [rng.normal(size=(rows, 3)).astype(np.float32) for _ in range(3)]
    interleaved = Split(3, TRAILING_UNIT, heads=None).with_heads(heads)
    fused = interleaved.join(parts)  # [3 * rows, 3, 1], rows laid out [heads, (q|k|v), rows / heads]
    assert fused.shape == (3 * rows, 3, 1) and fused.flags.c_contiguous
    half = rows // heads
    for j in range(3):
        np.testing.assert_array_equal(interleaved.part(fused, j), parts[j])
        by_hand = np.concatenate([fused[(h * 3 + j) * half : (h * 3 + j + 1) * half, :, 0] for h in range(heads)])
        np.testing.assert_array_equal(by_hand, parts[j])
    assert interleaved.part_shape(fused.shape) == (rows, 3)
    blocks = Split(3, TRANSPOSED)  # GPT-2 c_attn: [in, 3 out], three contiguous blocks of columns
    fused = blocks.join(parts)
    assert fused.shape == (3, 3 * rows)
    np.testing.assert_array_equal(blocks.part(fused, 1), fused[:, rows : 2 * rows].T)
    whole = Split()  # a 0-d tensor (the CLVP temperature) stays 0-d both ways
    assert whole.join([np.float32(2.3)]).shape == () and whole.part(np.float32(2.3), 0).shape == ()


@pytest.mark.parametrize(
    "original,hf",
    [
        ("gpt.h.11.attn.c_attn.bias", ["speech_decoder_model.model.decoder.layers.11.attn.q_proj.bias"]),
        ("text_transformer.transformer.attn_layers.layers.4.0.0.g", ["text_encoder_model.layers.2.input_rmsnorm.weight"]),
        ("speech_transformer.transformer.attn_layers.layers.5.1.wrap.net.3.bias", ["speech_encoder_model.layers.2.mlp.fc2.bias"]),
        ("text_transformer.transformer.attn_layers.layers.10.1.wrap.to_v.weight", ["text_encoder_model.layers.5.self_attn.v_proj.weight"]),
    ],
)  # fmt: skip
def test_original_rules_run_both_ways(original, hf):
    rules = AR_RULES + CLVP_RULES
    found = [(rule, keys) for rule in rules if (keys := rule.hf_keys(original)) is not None]
    assert len(found) == 1, found  # one rule per key: the table has no overlaps for these
    rule, keys = found[0]
    assert keys[: len(hf)] == hf
    assert rule.original_key(hf[0]) == (original, 0)  # `wrap.` is written back, entries 2i / 2i+1 restored
    unwrapped = original.replace(".wrap.", ".")
    assert rule.hf_keys(unwrapped) == keys  # tortoise's CheckpointedLayer wrapper is optional when reading


@pytest.fixture(scope="module")
def tiny_state():
    config = ClvpConfig.tiny()
    params = jax.tree_util.tree_map(lambda s: np.full(s.shape, 0.5, s.dtype), param_shapes(config))
    return config, params, params_to_state_dict(params, config)


def test_dtypes_are_checked_with_the_shapes(tiny_state):
    config, params, state = tiny_state
    key = "speech_decoder_model.lm_head.weight"
    half = {**state, key: state[key].astype(np.float16)}
    with pytest.raises(WeightsMismatchError, match="mis-typed: speech_decoder_model.lm_head.weight") as err:
        state_dict_to_params(half, config)
    assert err.value.mistyped == [(key, "float16", "float32")] and not err.value.mismatched
    cast = state_dict_to_params(half, config, dtype=np.float32)  # a cast was asked for: accepted, then cast
    assert cast["speech_decoder_model"]["lm_head"]["weight"].dtype == np.float32
    ints = {**state, key: state[key].astype(np.int32)}
    for dtype in (None, np.float32):  # an integer tensor never fills a floating parameter
        with pytest.raises(WeightsMismatchError, match="mis-typed") as err:
            state_dict_to_params(ints, config, dtype=dtype)
        assert [k for k, _, _ in err.value.mistyped] == [key]
    check_params(params, config, dtype=np.float32)
    with pytest.raises(WeightsMismatchError, match="checkpoint float32, expected float16") as err:
        check_params(params, config, dtype=np.float16)
    assert len(err.value.mistyped) == len(jax.tree_util.tree_leaves(params))


def test_hf_folders_are_checked_against_their_declared_dtype(tmp_path, tiny_state):
    config, params, _ = tiny_state
    half = jax.tree_util.tree_map(lambda x: x.astype(np.float16), params)
    export_hf(tmp_path / "hf", config, half)  # config.json declares dtype float16
    leaf = load_params(tmp_path / "hf").params["speech_decoder_model"]["lm_head"]["weight"]
    assert leaf.dtype == np.float16
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**cfg, "dtype": "float32"}))
    with pytest.raises(WeightsMismatchError, match="mis-typed") as err:
        load_params(tmp_path / "hf")
    assert len(err.value.mistyped) == len(jax.tree_util.tree_leaves(params))
    assert load_params(tmp_path / "hf", dtype="float32").config == config  # a cast makes it loadable
