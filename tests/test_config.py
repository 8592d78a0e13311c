"""Configs: loss-free round trips with transformers' config.json, strict unknown fields, validation messages."""

from __future__ import annotations

import json
import re

import pytest
import reference_models

from clvp_jax.config import (
    ClvpConfig,
    ClvpDecoderConfig,
    ClvpEncoderConfig,
    ConfigError,
    group_norm_groups,
    rotary_dim,
)


def _strip_versions(d: dict) -> dict:
    return {k: _strip_versions(v) if isinstance(v, dict) else v for k, v in d.items() if k != "transformers_version"}


@pytest.mark.parametrize("name", [None, *sorted(reference_models.CONFIGS)])
def test_hf_config_json_round_trips_without_loss(tmp_path, name):
    from transformers import ClvpConfig as HFConfig

    hf = HFConfig() if name is None else HFConfig.from_dict(dict(reference_models.CONFIGS[name]))
    hf.save_pretrained(tmp_path / "hf")
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    ours = ClvpConfig.from_pretrained(tmp_path / "hf")
    assert ours.to_dict() == written  # every field, bookkeeping included, survives
    ours.save_pretrained(tmp_path / "ours")
    again = HFConfig.from_pretrained(tmp_path / "ours")
    assert _strip_versions(again.to_dict()) == _strip_versions(hf.to_dict())


def test_defaults_match_reference_defaults():
    from transformers import ClvpDecoderConfig as HFDec
    from transformers import ClvpEncoderConfig as HFEnc

    for ours, theirs in ((ClvpEncoderConfig(), HFEnc()), (ClvpDecoderConfig(), HFDec())):
        ref = theirs.to_dict()
        for key, value in ours.to_dict().items():
            assert ref[key] == value, key


def test_unknown_field_is_named():
    with pytest.raises(ConfigError, match=r"unknown ClvpEncoderConfig field\(s\): \['hiden_size'\]"):
        ClvpEncoderConfig.from_dict({"hiden_size": 3})
    with pytest.raises(ConfigError, match="model_type 'clvp'"):
        ClvpConfig.from_dict({"model_type": "gpt2"})


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: ClvpEncoderConfig(hidden_size=32, num_attention_heads=2, projection_dim=32),
            "smaller than the rotary width 32",
        ),
        (lambda: ClvpEncoderConfig(hidden_size=30, num_attention_heads=4), "not divisible"),
        (lambda: ClvpEncoderConfig(summary_type="attn"), "summary_type 'attn'"),
        (lambda: ClvpDecoderConfig(hidden_size=18, num_attention_heads=2), "GroupNorm"),
        (lambda: ClvpDecoderConfig(vocab_size=100), "bos_token_id 8192 is outside the decoder vocabulary"),
        (
            lambda: ClvpConfig(text_config={"projection_dim": 512}),
            "text projection_dim 512 != speech projection_dim 768",
        ),
        (lambda: ClvpConfig(text_config={"bos_token_id": 300}), "text_config.bos_token_id 300"),
        (
            lambda: ClvpConfig(decoder_config={"decoder_fixing_codes": [83, 45, 45, 900]}),
            r"decoder_fixing_codes \[900\]",
        ),
    ],
)
def test_invalid_configs_say_what_to_change(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_group_norm_rule_and_rotary_width():
    # Spec §3: 1024->32, 64->16, 32->16, 24->8, 16->8, 12->4, 4->4.
    assert [group_norm_groups(c) for c in (1024, 64, 32, 24, 16, 12, 4)] == [32, 16, 16, 8, 8, 4, 4]
    # Spec §4: real config 768 // 24 = 32; floor of 32; odd r0 rounds up.
    assert rotary_dim(768, 12) == 32 and rotary_dim(64, 1) == 32 and rotary_dim(70, 1) == 36


def test_presets_and_file_errors(tmp_path):
    assert ClvpConfig.tortoise().speech_config.vocab_size == 8192
    tiny = ClvpConfig.tiny()
    tiny.save_pretrained(tmp_path)
    assert ClvpConfig.from_pretrained(tmp_path / "config.json") == tiny
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves nothing behind
    with pytest.raises(FileNotFoundError, match="no config file"):
        ClvpConfig.from_pretrained(tmp_path / "missing")
    (tmp_path / "bad.json").write_text('{"text_config": ')
    with pytest.raises(ConfigError, match="not valid JSON"):
        ClvpConfig.from_pretrained(tmp_path / "bad.json")


@pytest.mark.parametrize(
    "cls, field, value, expected",
    [
        (ClvpDecoderConfig, "decoder_fixing_codes", "83", "tuple"),  # was split into (8, 3)
        (ClvpDecoderConfig, "decoder_fixing_codes", [83, 45.5], "tuple"),
        (ClvpEncoderConfig, "use_rotary_embedding", "no", "bool"),  # was truthy
        (ClvpEncoderConfig, "use_rotary_embedding", 1, "bool"),
        (ClvpDecoderConfig, "hidden_size", "1024", "int"),
        (ClvpDecoderConfig, "hidden_size", True, "int"),
        (ClvpDecoderConfig, "hidden_size", 1024.5, "int"),
        (ClvpEncoderConfig, "layer_norm_eps", "1e-5", "float"),
        (ClvpEncoderConfig, "summary_type", "max", "one of 'mean'"),
        (ClvpEncoderConfig, "bos_token_id", [255], "int"),
    ],
)
def test_config_file_values_of_the_wrong_type_name_the_field(cls, field, value, expected):
    with pytest.raises(ConfigError, match=re.escape(f"{cls.__name__}.{field} must be {expected}")) as err:
        cls.from_dict({field: value})
    assert f"got {value!r}" in str(err.value)


def test_config_file_values_accept_json_number_forms():
    dec = ClvpDecoderConfig.from_dict({"hidden_size": 64.0, "layer_norm_epsilon": 1, "n_inner": None})
    assert dec.hidden_size == 64 and isinstance(dec.hidden_size, int)
    assert dec.layer_norm_epsilon == 1.0 and isinstance(dec.layer_norm_epsilon, float)
    assert ClvpDecoderConfig.from_dict({"decoder_fixing_codes": [83, 45]}).decoder_fixing_codes == (83, 45)


def test_nested_config_of_the_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"ClvpConfig\.text_config must be a ClvpEncoderConfig object"):
        ClvpConfig.from_dict({"text_config": "small"})
    with pytest.raises(ConfigError, match="must be a JSON object of fields, got list"):
        ClvpConfig.from_dict([1, 2])
