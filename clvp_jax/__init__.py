"""clvp-jax: CLVP (Tortoise-TTS) in JAX/Flax.

Axis legend, one for the whole package (shape comments such as `# [B, T, D]` and einsum strings use these
letters; a file that needs a new letter adds it here rather than redefining one):
  B  batch: the rows of one call (texts, clips, or candidate rows)
  T  positions of the sequence a module is given: text tokens (text tower, conditioning encoder), speech codes
     (speech tower), the new tokens of a decoder call, the queries of attention
  S  attention keys: the T positions without a cache, the cache slots with one
  L  prompt slots: the conditioning prefix a decoder is prefilled with (T + 3 or T + 4)
  M  speech codes a row generates: the new-token budget, the own slots of a shared-prefix cache
  C  candidates per text;  R  candidate rows (R = B * C, text-major);  G  prompts that rows share
  D  width;  I  MLP inner width;  P  CLVP projection width;  V  decoder vocabulary
  H  heads;  K  head dim;  E  rotary width (2 * ceil(r0 / 2))
  F  mel bins;  N  mel frames;  A  audio samples;  Y  STFT frequency bins (n_fft // 2 + 1)
Layers are not an axis (per-layer tuples and subtrees; only the stacked tower loop stacks them, `[n_layers, ...]`);
a size that has no letter is spelled out (`block`, `rows`).
"""

from clvp_jax.audio import ClvpFeatureExtractor, load_audio, load_voice
from clvp_jax.checkpoint import CheckpointError, export_hf, from_pretrained, save_checkpoint
from clvp_jax.config import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig, ConfigError
from clvp_jax.generation import (
    GenerationOptions,
    GenerationOutput,
    enable_compilation_cache,
    generate,
    get_conditioning_latents,
    warmup,
)
from clvp_jax.processor import ClvpProcessor
from clvp_jax.text import ClvpTokenizer, split_text
from clvp_jax.tuning import Tuning
from clvp_jax.version import __version__ as __version__

__all__ = ["ClvpConfig", "ClvpDecoderConfig", "ClvpEncoderConfig", "ConfigError"]
__all__ += ["ClvpFeatureExtractor", "ClvpProcessor", "ClvpTokenizer", "load_audio", "load_voice", "split_text"]
__all__ += ["GenerationOptions", "GenerationOutput", "enable_compilation_cache", "generate", "get_conditioning_latents"]
__all__ += ["warmup"]
__all__ += ["CheckpointError", "export_hf", "from_pretrained", "save_checkpoint"]
__all__ += ["Tuning"]
