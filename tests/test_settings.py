"""`RankSettings` and `SpeechSettings`: checked once, on construction, with the message naming the setting.

No model is run here: the settings are plain values, and `check_models` reads only the models' configs.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from clvp_jax.config import ClvpConfig
from clvp_jax.generation.options import SamplingOverrides
from clvp_jax.model import ClvpModelForConditionalGeneration
from clvp_jax.pipeline import default_config
from clvp_jax.rank_settings import RankSettings
from clvp_jax.speech_settings import SpeechSettings, speech_settings
from clvp_jax.waveform.bundle import default_waveform_models
from clvp_jax.waveform.presets import speech_preset


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(seed=-1), "the seed must be an integer in [0, 2^32) = [0, 4294967295], got -1"),
        (dict(seed=2**32), "the seed must be an integer in [0, 2^32)"),
        (dict(seed=True), "the seed must be an integer"),
        (dict(preset="slow"), "unknown preset 'slow'; choose one of ultra_fast, fast, standard, high_quality"),
        (dict(candidates=0), "candidates must be an integer of at least 1, got 0"),
        (dict(max_new_tokens=0), "max_new_tokens must be an integer of at least 1, got 0"),
        (dict(dtype="float16"), "dtype 'float16': use 'float32' or 'bfloat16'"),
    ],
)
def test_rank_settings_are_checked_on_construction(changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        RankSettings(**changes)


def test_rank_settings_resolve_against_the_model():
    settings = RankSettings(preset="fast", seed=np.int64(7), sampling=SamplingOverrides(top_k=5, length_penalty=2.0))
    assert settings.drawn == 96 and RankSettings(candidates=3).drawn == 3
    small = ClvpConfig.tiny()  # its position table caps the default length below Tortoise's 500
    options = settings.options(small)
    cap = small.decoder_config.max_position_embeddings - 1
    assert cap < 500 and options.max_new_tokens == cap and options.top_k == 5 and options.num_return_sequences == 96
    record = settings.record(options)
    assert list(record) == [
        "preset",
        "candidates",
        "max_new_tokens",
        "seed",
        "dtype",
        "temperature",
        "top_p",
        "top_k",
        "repetition_penalty",
        "length_penalty",
        "pad_to_max_mel_tokens",
    ]
    assert (record["preset"], record["candidates"], record["max_new_tokens"], record["seed"]) == ("fast", 96, cap, 7)
    assert (record["top_k"], record["length_penalty"], record["temperature"]) == (5, 2.0, 0.8)
    assert RankSettings().record(RankSettings().options(small))["length_penalty"] == 1.0  # Tortoise's default


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(k=4), "k must be an integer in [1, candidates = 3], got 4"),
        (dict(k=0), "k must be an integer in [1, candidates = 3], got 0"),
        (dict(k=True), "k must be an integer in [1, candidates = 3], got True"),
        (dict(cvvp_amount=1.5), "cvvp_amount must be in [0, 1], got 1.5"),
        (dict(cvvp_amount=float("nan")), "cvvp_amount must be in [0, 1], got nan"),
        (dict(vocoder="melgan"), "vocoder must be one of univnet, hifigan, got 'melgan'"),
        (dict(sampler="euler"), "unknown sampler 'euler'"),
        (dict(seed=-1), "the seed must be an integer in [0, 2^32)"),
    ],
)
def test_speech_settings_are_checked_on_construction(changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        speech_settings(**(dict(preset="ultra_fast", candidates=3) | changes))


def test_speech_settings_join_the_preset_and_the_overrides():
    settings = speech_settings(preset="fast", k=2, sampler="ddim", diffusion_steps=12, candidates=5, seed=9)
    assert settings.ranking == RankSettings(preset="fast", candidates=5, seed=9)
    assert (settings.sampler.kind, settings.sampler.steps, settings.sampler.cond_free) == ("ddim", 12, True)
    # A ready preset is taken as it is: the override keywords are its business.
    ready = speech_preset("ultra_fast", diffusion_steps=7)
    taken = speech_settings(preset=ready, sampler="ddim", diffusion_steps=99, candidates=2)
    assert (taken.sampler, taken.ranking.candidates) == (ready.sampler, ready.candidates)
    record = settings.record(latent_length=500, diffusion_dtype="float32")
    assert record == {
        "k": 2,
        "sampler": "ddim",
        "diffusion_steps": 12,
        "cond_free": True,
        "cond_free_k": 2.0,
        "diffusion_temperature": 1.0,
        "cvvp_amount": 0.0,
        "latent_length": 500,
        "vocoder": "univnet",
        "diffusion_dtype": "float32",
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.k = 1  # type: ignore[misc]
    # Built directly, k is checked against the AR stage's candidates (the preset's when not given).
    with pytest.raises(ValueError, match=re.escape("k must be an integer in [1, candidates = 16], got 17")):
        SpeechSettings(RankSettings(preset="ultra_fast"), ready.sampler, k=17)


def test_check_models_names_what_does_not_fit():
    model = ClvpModelForConditionalGeneration(default_config())  # width 64; no parameters needed
    wm = default_waveform_models(64)
    plain = speech_settings(preset="ultra_fast")
    plain.check_models(model, wm)
    speech_settings(preset="ultra_fast", vocoder="hifigan").check_models(model, wm)  # the default has a HiFiGAN
    with pytest.raises(ValueError, match="takes AR latents of width 32 but the AR model's are 64"):
        plain.check_models(model, default_waveform_models(32))
    with pytest.raises(ValueError, match="vocoder='hifigan' needs api_fast's HiFiGAN decoder"):
        speech_settings(vocoder="hifigan").check_models(model, dataclasses.replace(wm, hifigan_config=None))
    with pytest.raises(ValueError, match="cvvp_amount > 0 needs the CVVP model"):
        speech_settings(cvvp_amount=0.5).check_models(model, wm)
