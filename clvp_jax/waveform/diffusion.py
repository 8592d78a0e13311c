"""Tortoise's diffusion decoder `DiffusionTts` (`diffusion_decoder.pth`): AR latents + a voice -> 100-bin mel.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here W = 1024 model channels, M AR latent frames, one
per code; N output mel frames, N' the frames of a conditioning mel; F = 100 mel bins; `clips` conditioning clips).

Architecture (spec §2): a contextual embedder (two stride-2 convs + 5 attention blocks at width 2W) turns each
conditioning mel into the 2W-wide conditioning latent (W scales | W shifts); `timestep_independent` runs once per
sample: latent conditioner (conv + 4 attention blocks) over the AR latents, GroupNorm, scale-shift by the latent,
nearest upsampling M -> N. Each sampler step then calls the model: sinusoidal timestep embedding -> MLP; the
conditioning_timestep_integrator (3 DiffusionLayers) over the aligned embedding; a k3 conv over the noisy mel;
a 1x1 conv over both; num_layers DiffusionLayers + 3 ResBlocks; GroupNorm, SiLU, conv -> [B, 200, N]
(epsilon | learned-range variance values).

Layout: the public methods take and return the original's channels-first [B, W, T]; inside, every activation is
channels-last [B, T, W], so each 1x1 conv is one [B T, in] x [in, out] matmul and each k3 conv one im2col matmul
(`waveform.nwc`; ~1.5x faster in isolation on CPU than the channels-first forms), with no transposes
between blocks. The parameters are the original's layouts unchanged.

Differences from the original, on purpose:
- `conditioning_free` may be a per-row mask, so the conditional and unconditional passes of guidance run as one
  batched call (the original makes two calls);
- `timestep_independent` routes any floating input to the latent path and integer input to the token path (the
  original tests for exactly float32, so bf16/fp16 latents would take the token path);
- the original's `0 * mean(p)` over unused parameters (a DDP trick) is left out: it only matters for NaN weights;
- dropout, layer drop and unconditioned-percentage masking are training-only and absent.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.layers import Dtype, Linear
from clvp_jax.tuning import Tuning
from clvp_jax.waveform.attention_block import AttentionBlockNWC
from clvp_jax.waveform.conv import norm_groups
from clvp_jax.waveform.diffusion_blocks import DiffusionLayer, ResBlock, timestep_embedding
from clvp_jax.waveform.diffusion_config import (
    CODE_CONVERTER_BLOCKS,
    CONTEXTUAL_EMBEDDER_BLOCKS,
    INTEGRATOR_LAYERS,
    LATENT_CONDITIONER_BLOCKS,
    TRAILING_RESBLOCKS,
    DiffusionConfig,
)
from clvp_jax.waveform.nwc import ConvNWC, GroupNormNWC


def nearest_indices(source_length: int, length: int) -> np.ndarray:
    """Source frame of each output frame of PyTorch's legacy 'nearest' resize: floor(i * M / N), exact integers.

    Not half-pixel centres (`jax.image.resize` picks another frame for ~11% of frames)."""
    return (np.arange(length, dtype=np.int64) * source_length // length).astype(np.int32)


class DiffusionTts(nn.Module):
    """The diffusion decoder; see the module docstring. Submodules are named after the torch keys.

    Inside, activations are channels-last [B, T, W] (each conv a matmul over B T rows); the public methods take
    and return the original's channels-first [B, W, T] and transpose once at their ends.

    Attributes: config; dtype (compute dtype of the matmuls; the norms' statistics, SiLU, scale-shift and
    softmax stay float32, the output is float32); tuning (`Tuning.for_backend()` by default: the conv form).
    """

    config: DiffusionConfig
    dtype: Dtype = jnp.float32
    tuning: Tuning = dataclasses.field(default_factory=Tuning.for_backend)

    def setup(self) -> None:
        cfg = self.config
        c, heads, dt, tn = cfg.model_channels, cfg.num_heads, self.dtype, self.tuning

        def attention() -> AttentionBlockNWC:
            return AttentionBlockNWC(heads, relative_position=True, dtype=dt, tuning=tn)

        def conv(features: int, kernel: int, **kwargs) -> ConvNWC:
            return ConvNWC(features, kernel, padding=kernel // 2, tuning=tn, **kwargs)

        self.inp_block = conv(c, 3)
        self.time_embed_0 = Linear(c, dtype=dt, tuning=tn)
        self.time_embed_2 = Linear(c, dtype=dt, tuning=tn)
        self.code_embedding = nn.Embed(cfg.in_tokens, c, embedding_init=nn.initializers.normal(1.0))
        self.code_converter = [attention() for _ in range(CODE_CONVERTER_BLOCKS)]
        self.code_norm = GroupNormNWC(norm_groups(c))
        self.latent_conditioner = [conv(c, 3)] + [attention() for _ in range(LATENT_CONDITIONER_BLOCKS)]
        self.contextual_embedder = [conv(c, 3, stride=2), conv(2 * c, 3, stride=2)] + [
            attention() for _ in range(CONTEXTUAL_EMBEDDER_BLOCKS)
        ]
        self.unconditioned_embedding = self.param("unconditioned_embedding", nn.initializers.normal(1.0), (1, c, 1))
        self.conditioning_timestep_integrator = [
            DiffusionLayer(heads, dtype=dt, tuning=tn) for _ in range(INTEGRATOR_LAYERS)
        ]
        self.integrating_conv = conv(c, 1)
        self.mel_head = conv(cfg.in_channels, 3)
        self.layers = [DiffusionLayer(heads, dtype=dt, tuning=tn) for _ in range(cfg.num_layers)] + [
            ResBlock(dtype=dt, tuning=tn) for _ in range(TRAILING_RESBLOCKS)
        ]
        self.out_0 = GroupNormNWC(norm_groups(c))
        self.out_2 = conv(cfg.out_channels, 3)

    # ---- once per voice ------------------------------------------------------------------------------------

    def contextual_embedding(self, mel: jax.Array) -> jax.Array:
        """The contextual embedder on raw log-mels [B, F, N'] -> [B, 2W, ceil(ceil(N' / 2) / 2)]."""
        h = mel.astype(self.dtype).transpose(0, 2, 1)  # [B, N', F]
        for block in self.contextual_embedder:
            h = block(h)
        return h.transpose(0, 2, 1)

    def get_conditioning(self, mels: jax.Array) -> jax.Array:
        """The diffusion conditioning latent [B, 2W] (W scales, then W shifts), float32.

        Args:
            mels: raw (not normalised) 24 kHz log-mels, [B, clips, F, N'] (clips of one voice per row: their
                embeddings are concatenated along time, then averaged) or [B, F, N'] (one clip per row).
        """
        if mels.ndim == 3:
            mels = mels[:, None]
        if mels.ndim != 4 or mels.shape[2] != self.config.in_channels:
            raise ValueError(
                f"get_conditioning expects mels [B, clips, {self.config.in_channels}, frames] or "
                f"[B, {self.config.in_channels}, frames], got shape {tuple(mels.shape)}"
            )
        batch, clips = mels.shape[:2]
        # [B * clips, 2W, ceil(ceil(N' / 2) / 2)]
        h = self.contextual_embedding(mels.reshape(batch * clips, *mels.shape[2:]))
        # Concatenating equal-length clips along time and averaging is the mean over clips and time.
        h = h.reshape(batch, clips, *h.shape[1:]).astype(jnp.float32)
        return h.mean(axis=(1, 3))

    # ---- once per sample -----------------------------------------------------------------------------------

    def latent_conditioning(self, latents: jax.Array) -> jax.Array:
        """The latent conditioner on AR latents [B, M, D] -> [B, W, M] (before code_norm)."""
        return self._latent_conditioning(latents).transpose(0, 2, 1)

    def _latent_conditioning(self, latents: jax.Array) -> jax.Array:  # [B, M, D] -> [B, M, W]
        h = latents.astype(self.dtype)
        for block in self.latent_conditioner:
            h = block(h)
        return h

    def timestep_independent(
        self,
        aligned_conditioning: jax.Array,
        conditioning_latent: jax.Array,
        output_length: int,
        return_code_pred: bool = False,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """The aligned embedding [B, W, N] every model call of one sample takes (`precomputed_aligned_embeddings`).

        Args:
            aligned_conditioning: AR latents [B, M, D] (floating), or speech codes [B, M] (integer: the token
                path, unused by api.py).
            conditioning_latent: [B or 1, 2W] from `get_conditioning`.
            output_length: N, the mel frames to produce (static).
            return_code_pred: also return `mel_head` of the result [B, F, N] (a training-only head).
        """
        c = self.config.model_channels
        if jnp.issubdtype(aligned_conditioning.dtype, jnp.floating):
            if aligned_conditioning.ndim != 3 or aligned_conditioning.shape[2] != self.config.in_latent_channels:
                raise ValueError(
                    f"AR latents must be [B, m, {self.config.in_latent_channels}], "
                    f"got {tuple(aligned_conditioning.shape)}"
                )
            h = self._latent_conditioning(aligned_conditioning)  # [B, M, W]
        elif jnp.issubdtype(aligned_conditioning.dtype, jnp.integer):
            if aligned_conditioning.ndim != 2:
                raise ValueError(f"speech codes must be [B, m], got {tuple(aligned_conditioning.shape)}")
            h = self.code_embedding(aligned_conditioning).astype(self.dtype)  # [B, M, W]
            for block in self.code_converter:
                h = block(h)
        else:
            raise ValueError(
                f"aligned_conditioning must be float latents or int codes, got {aligned_conditioning.dtype}"
            )
        if conditioning_latent.ndim != 2 or conditioning_latent.shape[1] != 2 * c:
            raise ValueError(f"conditioning_latent must be [B, {2 * c}], got {tuple(conditioning_latent.shape)}")
        latent = conditioning_latent.astype(jnp.float32)[:, None]  # [B, 1, 2W]
        h = (self.code_norm(h) * (1 + latent[..., :c]) + latent[..., c:]).astype(self.dtype)  # [B, M, W]
        expanded = jnp.take(h, nearest_indices(h.shape[1], output_length), axis=1)  # [B, N, W]
        if not return_code_pred:
            return expanded.transpose(0, 2, 1)
        return expanded.transpose(0, 2, 1), self.mel_head(expanded).astype(jnp.float32).transpose(0, 2, 1)

    # ---- every sampler step --------------------------------------------------------------------------------

    def time_mlp(self, embedding: jax.Array) -> jax.Array:
        """The time_embed MLP (Linear, SiLU, Linear) on a sinusoidal embedding [B, W] -> [B, W]."""
        return self.time_embed_2(nn.silu(self.time_embed_0(embedding.astype(self.dtype))))

    def time_embedding(self, timesteps: jax.Array) -> jax.Array:
        """time_embed(timestep_embedding(t)) [B, W] for original-scale integer timesteps [B]."""
        return self.time_mlp(timestep_embedding(timesteps, self.config.model_channels))

    def integrate(self, code_emb: jax.Array, time_emb: jax.Array) -> jax.Array:
        """conditioning_timestep_integrator: 3 DiffusionLayers over the aligned embedding [B, W, N]."""
        return self._integrate(code_emb.transpose(0, 2, 1), time_emb).transpose(0, 2, 1)

    def _integrate(self, code_emb: jax.Array, time_emb: jax.Array) -> jax.Array:  # [B, N, W] -> [B, N, W]
        for layer in self.conditioning_timestep_integrator:
            code_emb = layer(code_emb, time_emb)
        return code_emb

    def __call__(
        self,
        x: jax.Array,
        timesteps: jax.Array,
        aligned: jax.Array | None = None,
        conditioning_free: bool | jax.Array = False,
    ) -> jax.Array:
        """One model evaluation: [B, 2F, N] float32 (channels 0..F-1 epsilon, F..2F-1 variance values).

        Args:
            x: the noisy normalised mel [B, F, N].
            timesteps: [B] integer timesteps on the ORIGINAL 0..3999 scale (the sampler's `timestep_map[t]`).
            aligned: `timestep_independent` output [B or 1, W, N]; may be None when `conditioning_free` is True.
            conditioning_free: True (every row uses the unconditioned embedding, `aligned` is ignored), False, or
                a [B] bool mask choosing per row, so guidance's two passes run as one batched call (a 0-d bool
                array applies to every row; `aligned` is then still required).
        """
        cfg = self.config
        if x.ndim != 3 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must be [B, {cfg.in_channels}, L], got {tuple(x.shape)}")
        batch, _, length = x.shape
        if timesteps.shape != (batch,):
            raise ValueError(f"timesteps must be [B] = [{batch}], got {tuple(timesteps.shape)}")
        unconditioned = jnp.broadcast_to(  # [B, N, W]
            self.unconditioned_embedding.astype(self.dtype).transpose(0, 2, 1), (batch, length, cfg.model_channels)
        )
        if conditioning_free is True:
            code_emb = unconditioned
        else:
            if aligned is None:
                raise ValueError("aligned (the timestep_independent output) is required unless conditioning_free=True")
            if (
                aligned.ndim != 3
                or aligned.shape[0] not in (1, batch)
                or aligned.shape[1:] != (cfg.model_channels, length)
            ):
                raise ValueError(
                    f"aligned must be [{batch} or 1, {cfg.model_channels}, {length}], got {tuple(aligned.shape)}"
                )
            code_emb = jnp.broadcast_to(aligned.astype(self.dtype).transpose(0, 2, 1), unconditioned.shape)
            if conditioning_free is not False:
                mask = jnp.asarray(conditioning_free)
                if mask.shape == () and mask.dtype == jnp.bool_:  # one flag for the batch, e.g. a traced one
                    mask = jnp.broadcast_to(mask, (batch,))
                if mask.shape != (batch,) or mask.dtype != jnp.bool_:
                    raise ValueError(
                        f"conditioning_free must be a bool or a [{batch}] bool mask, got {mask.dtype} {mask.shape}"
                    )
                code_emb = jnp.where(mask[:, None, None], unconditioned, code_emb)
        time_emb = self.time_embedding(timesteps)  # [B, W]
        code_emb = self._integrate(code_emb, time_emb)
        h = self.inp_block(x.astype(self.dtype).transpose(0, 2, 1))  # [B, N, W]
        h = self.integrating_conv(jnp.concatenate([h, code_emb], axis=-1))  # [B, N, 2W] -> [B, N, W]
        for layer in self.layers:
            h = layer(h, time_emb)
        h = nn.silu(self.out_0(h))  # float32, and so is the output conv
        return self.out_2(h).transpose(0, 2, 1)

    def touch_all(self, x: jax.Array, latents: jax.Array, codes: jax.Array, mels: jax.Array) -> Any:
        """Runs every submodule once (for `init` and `jax.eval_shape`): conditioning, both token paths, the
        mel head and a model call."""
        latent = self.get_conditioning(mels)
        aligned, _ = self.timestep_independent(latents, latent, x.shape[2], return_code_pred=True)
        self.timestep_independent(codes, latent, x.shape[2])
        return self(x, jnp.zeros((x.shape[0],), jnp.int32), aligned)


def _init_inputs(config: DiffusionConfig) -> tuple[jax.Array, ...]:
    # The smallest inputs that reach every parameter; shapes of the params do not depend on them.
    return (
        jnp.zeros((1, config.in_channels, 4), jnp.float32),
        jnp.zeros((1, 2, config.in_latent_channels), jnp.float32),
        jnp.zeros((1, 2), jnp.int32),
        jnp.zeros((1, 1, config.in_channels, 8), jnp.float32),
    )


def init_params(config: DiffusionConfig, rng: jax.Array) -> dict:
    """Random parameters {'params': ...} of `DiffusionTts(config)` (float32)."""
    return DiffusionTts(config).init(rng, *_init_inputs(config), method=DiffusionTts.touch_all)


def cast_weights(variables: dict, dtype: Dtype) -> dict:
    """The parameters with every matmul weight (the leaves named "weight": conv kernels and linear layers) cast
    to `dtype` once, for `DiffusionTts(config, dtype=dtype)`; norms, the relative-bias tables and the embeddings
    stay as they are (float32), so the per-call casts inside the model are no-ops."""

    def cast(path, leaf):
        return leaf.astype(dtype) if getattr(path[-1], "key", None) == "weight" else leaf

    return jax.tree_util.tree_map_with_path(cast, variables)


def param_shapes(config: DiffusionConfig) -> dict:
    """The parameter tree {'params': ...} as `jax.ShapeDtypeStruct`s, without allocating it."""
    return jax.eval_shape(lambda: init_params(config, jax.random.key(0)))


def count_params(config: DiffusionConfig) -> int:
    """Number of parameters (the real model: 292 334 380)."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(param_shapes(config)))
