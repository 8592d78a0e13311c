"""Package data: the Tortoise text vocabulary, mel norms and one default voice clip (see README.md here)."""

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent


def vocab_path() -> Path:
    """HF-style vocab.json of the Tortoise text BPE (255 entries)."""
    return ASSETS_DIR / "vocab.json"


def merges_path() -> Path:
    """HF-style merges.txt of the Tortoise text BPE (`#version` header + 215 merges)."""
    return ASSETS_DIR / "merges.txt"


def tortoise_tokenizer_path() -> Path:
    """Tortoise's original `tokenizer.json`."""
    return ASSETS_DIR / "tokenizer.json"


def mel_norms_path() -> Path:
    """The 80 Tortoise mel norms (float32 .npy)."""
    return ASSETS_DIR / "mel_norms.npy"


def default_voice_path() -> Path:
    """A 6 s LJ Speech clip (22.05 kHz mono 16-bit WAV) used as the default conditioning voice."""
    return ASSETS_DIR / "voices" / "lj" / "1.wav"


__all__ = ["ASSETS_DIR", "default_voice_path", "mel_norms_path", "merges_path", "tortoise_tokenizer_path", "vocab_path"]
