"""Speech-token generation with CLVP ranking.

Files, bottom up: `processors` (logit processors) and `loop` (the model-free decode loop); `options` and `presets`
(what to generate); `sharding` (rows over devices); `prefill`, `decode` and `ranking` (the three stages of the
program) and `program` (them together, `GenerationOutput`); `compiling` (the compile policy: program cache,
scheduler, bucketing, ahead-of-time executables, `enable_compilation_cache`); `generate` (`generate`, `warmup`);
`latents` (voice latents).
"""

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
