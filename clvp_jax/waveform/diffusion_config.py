"""The frozen configuration of Tortoise's diffusion decoder (`DiffusionTts`, `diffusion_decoder.pth`).

Only the constructor arguments that change the inference graph are fields. The original's training-only knobs
(`dropout`, `use_fp16`, `layer_drop`, `unconditioned_percentage`) do not change an eval-mode forward pass:
`from_original_kwargs` accepts and drops them; any other unknown argument is an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from clvp_jax.waveform.conv import norm_groups

# Constructor arguments of the original class that only matter in training (eval mode ignores them).
TRAINING_ONLY_KWARGS = ("dropout", "use_fp16", "layer_drop", "unconditioned_percentage")
TRAILING_RESBLOCKS = 3  # plain ResBlocks after the DiffusionLayers, hard-coded in the original
INTEGRATOR_LAYERS = 3  # DiffusionLayers of conditioning_timestep_integrator, hard-coded
LATENT_CONDITIONER_BLOCKS = 4  # AttentionBlocks after the latent conditioner's conv, hard-coded
CODE_CONVERTER_BLOCKS = 3  # AttentionBlocks of the (unused by api.py) token path, hard-coded
CONTEXTUAL_EMBEDDER_BLOCKS = 5  # AttentionBlocks of the contextual embedder (width 2W), hard-coded


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """DiffusionTts hyper-parameters (names and meaning as the original constructor's).

    Attributes:
        model_channels: W, the width of the main trunk (the contextual embedder runs at 2W; the conditioning
            latent is 2W wide: W scales then W shifts).
        num_layers: DiffusionLayers (ResBlock + attention) of the trunk, before the 3 trailing ResBlocks.
        in_channels: mel bins of the noisy input and the conditioning mel (100).
        in_latent_channels: width of the AR latents fed to the latent conditioner.
        in_tokens: vocabulary of the token-input path (`code_embedding`).
        out_channels: output channels (2 * in_channels: epsilon, then the learned-range variance values).
        num_heads: attention heads of every AttentionBlock (also the width of the relative-bias tables).
    """

    model_channels: int = 1024
    num_layers: int = 10
    in_channels: int = 100
    in_latent_channels: int = 1024
    in_tokens: int = 8193
    out_channels: int = 200
    num_heads: int = 16

    def __post_init__(self) -> None:
        problems = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{field.name} must be a positive integer, got {value!r}")
        if not problems:
            if self.model_channels % self.num_heads:
                problems.append(f"model_channels {self.model_channels} is not a multiple of num_heads {self.num_heads}")
            if self.out_channels != 2 * self.in_channels:
                problems.append(
                    f"out_channels {self.out_channels} must be 2 * in_channels ({2 * self.in_channels}): "
                    "epsilon and the learned-range variance values"
                )
            for width in (self.model_channels, 2 * self.model_channels):
                try:
                    norm_groups(width)
                except ValueError as error:
                    problems.append(str(error))
        if problems:
            raise ValueError("invalid DiffusionConfig: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        """Channels per head in the trunk (the contextual embedder's heads are twice as wide)."""
        return self.model_channels // self.num_heads

    @property
    def total_layers(self) -> int:
        """Entries of `layers`: num_layers DiffusionLayers then the trailing ResBlocks."""
        return self.num_layers + TRAILING_RESBLOCKS

    @classmethod
    def tortoise(cls) -> DiffusionConfig:
        """The real `diffusion_decoder.pth` as api.py builds it (292 334 380 parameters)."""
        return cls()

    @classmethod
    def tiny(cls) -> DiffusionConfig:
        """The tiny random-weight test model of tests/data/tortoise_tiny_waveform."""
        return cls(model_channels=48, num_layers=2, in_latent_channels=32, in_tokens=30, num_heads=4)

    @classmethod
    def from_original_kwargs(cls, kwargs: Mapping[str, Any]) -> DiffusionConfig:
        """From the original constructor's keyword arguments; training-only ones are accepted and dropped (the
        model is always built for inference), unknown ones rejected."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names - set(TRAINING_ONLY_KWARGS))
        if unknown:
            raise ValueError(
                f"unknown DiffusionTts argument(s) {unknown}; known: {sorted(names | set(TRAINING_ONLY_KWARGS))}"
            )
        return cls(**{k: v for k, v in kwargs.items() if k in names})

    def to_original_kwargs(self) -> dict[str, Any]:
        """The original constructor's keyword arguments for this config, in eval form (no dropout or layer drop)."""
        kwargs: dict[str, Any] = dataclasses.asdict(self)
        kwargs.update(dropout=0, use_fp16=False, layer_drop=0, unconditioned_percentage=0)
        return kwargs
