"""clvp-jax: CLVP (Tortoise-TTS) in JAX/Flax."""

from clvp_jax.audio import ClvpFeatureExtractor, load_audio, load_voice
from clvp_jax.config import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig, ConfigError
from clvp_jax.generation import (
    GenerationOptions,
    GenerationOutput,
    enable_compilation_cache,
    generate,
    get_conditioning_latents,
    warmup,
)
from clvp_jax.loading import CheckpointError, from_pretrained
from clvp_jax.processor import ClvpProcessor
from clvp_jax.text import ClvpTokenizer, split_text
from clvp_jax.writing import export_hf, save_checkpoint

__all__ = ["ClvpConfig", "ClvpDecoderConfig", "ClvpEncoderConfig", "ConfigError"]
__all__ += ["ClvpFeatureExtractor", "ClvpProcessor", "ClvpTokenizer", "load_audio", "load_voice", "split_text"]
__all__ += ["GenerationOptions", "GenerationOutput", "enable_compilation_cache", "generate", "get_conditioning_latents"]
__all__ += ["warmup"]
__all__ += ["CheckpointError", "export_hf", "from_pretrained", "save_checkpoint"]
__version__ = "0.1.0"
