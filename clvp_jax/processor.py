"""`ClvpProcessor`: the tokenizer and the feature extractor behind one call, as transformers' `ClvpProcessor`.

Difference from the reference (spec 14.16): flat keyword arguments of `__call__` (`padding=`, `truncation=`,
`max_length=`, `return_tensors=`, ...) go to the *tokenizer* only, so `padding=True` pads the texts and leaves
the 6 s audio padding alone (the reference passes them to both, and `padding=True` also shortens the audio
padding). `return_tensors` applies to both. Audio options go in `audio_kwargs=`, and `text_kwargs=` is also
accepted, as in transformers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from clvp_jax.audio.features import ClvpFeatureExtractor
from clvp_jax.audio.io import load_voice
from clvp_jax.fs import write_text
from clvp_jax.text.tokenizer import BatchEncoding, ClvpTokenizer

PROCESSOR_CONFIG = "processor_config.json"


class ClvpProcessor:
    """Text and audio front end of CLVP.

    Args:
        feature_extractor: a `ClvpFeatureExtractor`.
        tokenizer: a `ClvpTokenizer`.
    """

    def __init__(self, feature_extractor: ClvpFeatureExtractor, tokenizer: ClvpTokenizer):
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer

    def __repr__(self) -> str:
        return f"ClvpProcessor({self.feature_extractor!r}, {self.tokenizer!r})"

    @classmethod
    def default(cls, **tokenizer_kwargs: Any) -> ClvpProcessor:
        """The packaged Tortoise vocabulary and the Tortoise audio settings with the real `mel_norms`.

        `tokenizer_kwargs` go to `ClvpTokenizer`: `normalizer="tortoise"` selects Tortoise's own text cleaning
        (what the real weights were trained on) instead of transformers' default ("hf")."""
        return cls(ClvpFeatureExtractor.from_pretrained(None), ClvpTokenizer.from_pretrained(None, **tokenizer_kwargs))

    def __call__(
        self,
        text: str | list[str] | None = None,
        audio: Any = None,
        sampling_rate: int | None = None,
        *,
        text_kwargs: dict[str, Any] | None = None,
        audio_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> BatchEncoding:
        """Tokenise `text` and/or compute features of `audio` (clips as for `ClvpFeatureExtractor`).

        Args:
            text: a string or a list of strings.
            audio: a clip, a list of clips or a 2-D array (`raw_speech=` is accepted as an alias).
            sampling_rate: sampling rate of `audio` in Hz (other rates than 22050 are resampled).
            text_kwargs: tokenizer options; flat keyword arguments are added to these.
            audio_kwargs: feature-extractor options (padding, max_length, truncation, layout, ...).

        Returns:
            BatchEncoding with `input_ids` and `attention_mask` (the text's) for text, `input_features` for
            audio; with audio only, `attention_mask` is the per-sample audio mask, as in the reference.
        """
        audio = kwargs.pop("raw_speech", None) if audio is None else audio
        if text is None and audio is None:
            raise ValueError("ClvpProcessor needs text=, audio= or both")
        text_options = {**kwargs, **(text_kwargs or {})}
        audio_options = dict(audio_kwargs or {})
        if "return_tensors" in kwargs:
            audio_options.setdefault("return_tensors", kwargs["return_tensors"])
        out = BatchEncoding()
        if audio is not None:
            if text is not None:
                audio_options["return_attention_mask"] = False  # the model needs the text mask
            out.update(self.feature_extractor(audio, sampling_rate=sampling_rate, **audio_options))
        if text is not None:
            out.update(self.tokenizer(text, **text_options))
        return out

    def voice_features(self, voice: Any, **audio_kwargs: Any) -> np.ndarray:
        """Features of a voice for multi-clip conditioning: `voice` is a folder of clips (Tortoise's
        `voices/<name>/` layout), a list of files, or a list of clips at 22.05 kHz. Returns [clips, M, F]."""
        if isinstance(voice, (str, os.PathLike)) or (
            isinstance(voice, (list, tuple)) and voice and isinstance(voice[0], (str, os.PathLike))
        ):
            voice = load_voice(voice, self.feature_extractor.sampling_rate)
        return self.feature_extractor(list(voice), **{"return_tensors": "np", **audio_kwargs})["input_features"]

    def decode(self, *args: Any, **kwargs: Any) -> str:
        """`ClvpTokenizer.decode`."""
        return self.tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        """`ClvpTokenizer.batch_decode`."""
        return self.tokenizer.batch_decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "input_features"]

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, **tokenizer_kwargs: Any) -> ClvpProcessor:
        """Load an HF-style folder: vocab.json + merges.txt (or tokenizer.json) and preprocessor_config.json or
        processor_config.json (whose "feature_extractor" entry holds the extractor's settings). None loads the
        packaged defaults (`default()`). `tokenizer_kwargs` (e.g. `normalizer="tortoise"`) override the folder's
        tokenizer_config.json."""
        if path is None:
            return cls.default(**tokenizer_kwargs)
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no processor folder at {path}")
        return cls(ClvpFeatureExtractor.from_pretrained(path), ClvpTokenizer.from_pretrained(path, **tokenizer_kwargs))

    def save_pretrained(self, folder: str | os.PathLike, **kwargs: Any) -> list[str]:
        """Write the tokenizer files, preprocessor_config.json and processor_config.json (embedding the
        feature extractor's settings, as transformers 5 does), each atomically. Returns the written paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = [*self.tokenizer.save_pretrained(folder), *self.feature_extractor.save_pretrained(folder)]
        config = {"processor_class": "ClvpProcessor", "feature_extractor": self.feature_extractor.to_dict()}
        write_text(folder / PROCESSOR_CONFIG, json.dumps(config, indent=2) + "\n")
        return [*files, str(folder / PROCESSOR_CONFIG)]
