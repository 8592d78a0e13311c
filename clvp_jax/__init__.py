"""clvp-jax: CLVP (Tortoise-TTS) in JAX/Flax."""

from clvp_jax.config import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig, ConfigError

__all__ = ["ClvpConfig", "ClvpDecoderConfig", "ClvpEncoderConfig", "ConfigError"]
__version__ = "0.1.0"
