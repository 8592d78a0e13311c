"""Audio front end: loading and validating clips, and CLVP's log-mel features."""

from clvp_jax.audio.features import ClvpFeatureExtractor, log_mel_spectrogram, mel_filter_bank
from clvp_jax.audio.io import AudioError, load_audio, load_voice

__all__ = ["AudioError", "ClvpFeatureExtractor", "load_audio", "load_voice", "log_mel_spectrogram", "mel_filter_bank"]
