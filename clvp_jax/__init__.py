"""clvp-jax: CLVP (Tortoise-TTS) in JAX/Flax."""

from clvp_jax.audio import ClvpFeatureExtractor, load_audio, load_voice
from clvp_jax.checkpoint import CheckpointError, export_hf, from_pretrained, save_checkpoint
from clvp_jax.config import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig, ConfigError
from clvp_jax.generation import GenerationOptions, GenerationOutput, generate, get_conditioning_latents, warmup
from clvp_jax.processor import ClvpProcessor
from clvp_jax.text import ClvpTokenizer, split_text
from clvp_jax.version import __version__ as __version__

__all__ = ["ClvpConfig", "ClvpDecoderConfig", "ClvpEncoderConfig", "ConfigError"]
__all__ += ["ClvpFeatureExtractor", "ClvpProcessor", "ClvpTokenizer", "load_audio", "load_voice", "split_text"]
__all__ += ["GenerationOptions", "GenerationOutput", "generate", "get_conditioning_latents", "warmup"]
__all__ += ["CheckpointError", "export_hf", "from_pretrained", "save_checkpoint"]
