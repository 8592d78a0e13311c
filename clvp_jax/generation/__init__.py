"""Speech-token generation with CLVP ranking: processors, the decode loop, `generate`, sharding, latents."""

from clvp_jax.generation.compiling import enable_compilation_cache
from clvp_jax.generation.generate import GenerationOutput, generate, warmup
from clvp_jax.generation.latents import (
    get_conditioning_latents,
    load_conditioning_latents,
    save_conditioning_latents,
)
from clvp_jax.generation.options import GenerationOptions

__all__ = [
    "GenerationOptions",
    "GenerationOutput",
    "enable_compilation_cache",
    "generate",
    "get_conditioning_latents",
    "load_conditioning_latents",
    "save_conditioning_latents",
    "warmup",
]
