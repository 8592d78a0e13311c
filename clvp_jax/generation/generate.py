"""`generate` and `warmup`: Tortoise-style candidate generation ranked by CLVP, as one compiled program.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here B texts, M new tokens).

This file checks and prepares the inputs and runs the program that `compiling` picks; the program itself
(prefill -> decode -> rank) is `program.generation_program`. Neither function changes `jax.config`: the persistent
compilation cache is turned on by `enable_compilation_cache()` when the caller wants it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from clvp_jax.generation.compiling import ahead_or_jit, bucketed_text_length, compile_ahead, program_for
from clvp_jax.generation.decode import chunk_rows
from clvp_jax.generation.latents import check_latent_values
from clvp_jax.generation.options import GenerationOptions
from clvp_jax.generation.program import GenerationOutput
from clvp_jax.model import ClvpModelForConditionalGeneration, param_shapes

__all__ = ["GenerationOutput", "generate", "warmup"]


def _prepare_text(
    model: ClvpModelForConditionalGeneration, opts: GenerationOptions, input_ids, attention_mask
) -> tuple[jax.Array, jax.Array]:
    """Checked int32 ids and mask [B, T'], padded (masked, with the text pad id) to the bucketed length T'."""
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"input_ids must be integer token ids [texts, tokens], got {ids.dtype} {ids.shape}")
    mask = np.ones(ids.shape, np.int32) if attention_mask is None else np.asarray(attention_mask).reshape(ids.shape)
    cfg = model.config
    limit_t = cfg.decoder_config.max_text_tokens - 3
    if int(mask.sum(axis=1).max(initial=0)) > limit_t:
        raise ValueError(
            f"a text has {int(mask.sum(axis=1).max())} tokens but the conditioning encoder has room for {limit_t} "
            f"(max_text_tokens {cfg.decoder_config.max_text_tokens} - 3); split the text into sentences"
        )
    T = ids.shape[1]
    T2 = bucketed_text_length(model, opts, T)
    if T2 > T:
        # The tokenizer's pad id ([STOP] = the text eos); masked, so its value only matters for unmasked pooling.
        ids = np.pad(ids, ((0, 0), (0, T2 - T)), constant_values=cfg.text_config.eos_token_id)
        mask = np.pad(mask, ((0, 0), (0, T2 - T)))
    return jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)


def _device_count(devices: Sequence[jax.Device] | int | None) -> int:
    return devices if isinstance(devices, int) else (len(devices) if devices is not None else 1)


def generate(
    model: ClvpModelForConditionalGeneration,
    params: Mapping[str, Any],
    input_ids: ArrayLike,
    input_features: ArrayLike | None = None,
    attention_mask: ArrayLike | None = None,
    *,
    conditioning_latents: ArrayLike | None = None,
    rng: jax.Array | None = None,
    options: GenerationOptions | None = None,
    devices: Sequence[jax.Device] | int | None = None,
    candidate_offset: int = 0,
    text_indices: ArrayLike | None = None,
    **overrides,
) -> GenerationOutput:
    """Generate `num_return_sequences` speech-token candidates per text and rank them with CLVP.

    Args:
      model: the composite model (its `masked_pooling` decides how the CLVP towers pool).
      params: its parameter tree.
      input_ids: text token ids [B, T] (or [T]), right-padded; as the tokenizer gives them. The eos after the
        text is added here (the reference composite's extra eos), so do not pass Tortoise `api.tts`-style ids,
        which already end in one stop token 0: that makes the prompt one token longer than the original's.
      input_features: log-mel [B or 1, F, N] of the voice; or give `conditioning_latents`.
      attention_mask: [B, T] 1 for tokens, 0 for padding (None: no padding).
      conditioning_latents: [B or 1, D] or [D] voice latents (e.g. from `get_conditioning_latents`).
      rng: PRNG key (required when sampling). The same key gives the same output for any chunk size and device count.
      options: `GenerationOptions`; keyword `overrides` replace its fields (e.g. `max_new_tokens=64`).
      devices: shard candidate rows over these devices (or the first n); None: one device.
      candidate_offset: number the candidates from here (their keys are fold_in(fold_in(rng, text), index)), so
        that several calls of C candidates each equal one call of more candidates (e.g. to show progress).
      text_indices: [B] each text's number in the keys above (None: 0 .. B-1), so that texts generated in groups
        (the chunks of a long text, a group per call) draw what they would draw in one call of all of them.
    Returns:
      `GenerationOutput` (arrays on device; rows text-major).
    Raises:
      ValueError: bad shapes, text too long, positions out of range, missing rng or conditioning.
    """
    opts = (options or GenerationOptions()).replace(**overrides) if overrides else (options or GenerationOptions())
    dec = model.config.decoder_config
    last_pos = opts.first_position + opts.max_new_tokens - 2
    if last_pos >= dec.max_position_embeddings:
        raise ValueError(
            f"max_new_tokens {opts.max_new_tokens} needs decoder position {last_pos} but the position table has "
            f"{dec.max_position_embeddings} rows; lower max_new_tokens"
        )
    if (input_features is None) == (conditioning_latents is None):
        raise ValueError("pass exactly one of input_features (log-mel) and conditioning_latents")
    if opts.do_sample and rng is None:
        raise ValueError("sampling needs an rng key: pass rng=jax.random.key(seed)")
    rng = jax.random.key(0) if rng is None else rng
    ids, mask = _prepare_text(model, opts, input_ids, attention_mask)
    B = ids.shape[0]
    feats = lat = None
    if input_features is not None:
        feats = jnp.asarray(input_features, jnp.float32)
        if feats.ndim == 2:
            feats = feats[None]
        if feats.ndim != 3 or feats.shape[1] != dec.feature_size or feats.shape[0] not in (1, B):
            raise ValueError(
                f"input_features must be log-mel [{B} or 1, {dec.feature_size}, frames], got {feats.shape}"
            )
    else:
        if not isinstance(conditioning_latents, jax.core.Tracer):  # concrete values: refuse NaN, inf, 1e38
            check_latent_values(conditioning_latents, "conditioning_latents")
        lat = jnp.asarray(conditioning_latents, jnp.float32).reshape(-1, dec.hidden_size)
        if lat.shape[0] not in (1, B):
            raise ValueError(f"conditioning_latents must be [{B} or 1, {dec.hidden_size}], got {lat.shape}")
    n_dev = _device_count(devices)
    if n_dev > 1:
        chunk = chunk_rows(opts, B)
        if chunk % n_dev:
            raise ValueError(
                f"{chunk} rows per chunk cannot be split over {n_dev} devices; make chunk_size (or texts x "
                "candidates) a multiple of the device count"
            )
    text_idx = jnp.arange(B, dtype=jnp.int32) if text_indices is None else jnp.asarray(text_indices, jnp.int32)
    if text_idx.shape != (B,):
        raise ValueError(f"text_indices must be [{B}] (one index per text), got shape {text_idx.shape}")
    args = (params, ids, mask, feats, lat, rng, jnp.int32(opts.max_new_tokens), jnp.int32(candidate_offset), text_idx)
    return ahead_or_jit(program_for(model, opts, B, n_dev), args)(*args)


def warmup(
    model: ClvpModelForConditionalGeneration,
    params: Mapping[str, Any] | None = None,
    *,
    batch_size: int = 1,
    text_length: int = 32,
    num_frames: int | None = 517,
    options: GenerationOptions | None = None,
    devices: Sequence[jax.Device] | int | None = None,
    **overrides,
) -> jax.stages.Compiled | None:
    """Compile the program for these shapes before the first `generate` call.

    Args:
      model: the composite model.
      params: the parameter tree; or None, or a tree of `jax.ShapeDtypeStruct`, to compile from shapes alone
        (None: `param_shapes(model.config)`, float32). Then nothing but shapes is needed, so it can run before
        the weights are loaded, which keeps the compiler's working memory (about 0.6 GiB at the real size on
        CPU) out of the process's peak: `warmup(model)`, then `from_pretrained`, then `generate`. `generate`
        uses the compiled program whenever its arguments have exactly these shapes and dtypes.
      batch_size, text_length: texts per call and their (padded) token count.
      num_frames: log-mel frames of the voice; None warms up the `conditioning_latents` variant instead.
      options, devices, overrides: as `generate`'s. With several devices, real `params` are needed (the
        program is run once for one token, which compiles it through `jax.jit`).
    Returns:
      On one device, the compiled executable `generate` will run (e.g. its `memory_analysis()`); else None.
      To keep it across processes too, call `enable_compilation_cache()` first.
    """
    opts = (options or GenerationOptions()).replace(**overrides)
    cfg = model.config
    n_dev = _device_count(devices)
    ids, mask = _prepare_text(model, opts, np.full((batch_size, text_length), 2, np.int32), None)
    feats = lat = None
    if num_frames is None:
        lat = jnp.zeros((batch_size, cfg.decoder_config.hidden_size), jnp.float32)
    else:
        feats = jnp.zeros((batch_size, cfg.decoder_config.feature_size, num_frames), jnp.float32)
    fn = program_for(model, opts, batch_size, n_dev)
    shapes_only = params is None or any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(params))
    params = param_shapes(cfg) if params is None else params
    args = (
        params,
        ids,
        mask,
        feats,
        lat,
        jax.random.key(0),
        jnp.int32(1),
        jnp.int32(0),
        jnp.arange(batch_size, dtype=jnp.int32),
    )
    if n_dev == 1:
        return compile_ahead(fn, args, model.tuning)
    if shapes_only:
        raise ValueError(f"warmup over {n_dev} devices needs the real params (got shapes only)")
    jax.block_until_ready(fn(*args))
    return None
