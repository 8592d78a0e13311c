"""`generate`: Tortoise-style candidate generation ranked by CLVP, as one compiled program.

Axis legend: B texts, T text tokens, C candidates per text, R = B * C rows (text-major), D decoder width,
S cache slots, M new tokens, V decoder vocabulary, P CLVP projection width.

The program (one `jax.jit`, compiled once per options x input shapes):
  1. conditioning: voice latent from log-mel features (or the given latents) and the text embeddings, built as the
     reference composite does (spec §9.4): extra eos (no bos) then the conditioning encoder's bos + eos, i.e.
     `[latent, bos, t.., eos, eos]` (T + 4 slots), followed by the decoder start token E_tok[bos] + E_pos[0]. The
     prefix carries no decoder positions (the correct Tortoise input, not the reference's step-0 bug).
     Text padding inside the prefix is excluded through the cache's `valid` mask, so a padded batch gives each
     text exactly what it gets alone.
  2. prefill once per text; each chunk of candidate rows shares its texts' prompt caches (`SharedPrefixCache`:
     no re-prefill, no copy per candidate, and each step reads a prompt once for all of its candidates);
  3. decode loop (`loop.decode`, a `lax.while_loop` that stops when every row has stopped);
  4. pad with the stop token (optional), fix (`fix_speech_decoder_output`), text and speech towers, similarity,
     best candidate per text.
Chunks run one after another (`lax.map`); each row's randomness comes from fold_in(fold_in(rng, text), candidate),
so the output does not depend on the chunk size or on how rows are sharded across devices. On CPU, programs that
decode at most `LEAN_ROWS` rows per chunk and device are compiled with XLA's memory-optimized scheduler (the same
results, a smaller temporary buffer; see `LEAN_ROWS`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.conditioning import add_bos_eos
from clvp_jax.decoder import KVCache, SharedPrefixCache, init_cache, share_prefix
from clvp_jax.generation.compiling import ahead_or_jit, compile_ahead, enable_compilation_cache
from clvp_jax.generation.loop import decode
from clvp_jax.generation.options import GenerationOptions
from clvp_jax.generation.sharding import constrain_rows, rows_mesh
from clvp_jax.model import ClvpModelForConditionalGeneration, param_shapes


@flax.struct.dataclass
class GenerationOutput:
    """Result of `generate` (rows are text-major: row r = text r // C, candidate r % C).

    Attributes:
      sequences: [R, 1 + M] raw decoder output, the start token first; stop-token padding after a row stopped.
      speech_ids: [R, S'] what CLVP scored: sequences (padded with the stop token to `pad_to_max_mel_tokens` if
        set), fixed as the reference does (first column dropped, S' = max(1 + M, pad) - 1).
      logits_per_text: [B, R] CLVP scores of every text against every candidate (as the reference).
      logits_per_speech: [R, B] its transpose.
      text_embeds: [B, P], speech_embeds: [R, P]: L2-normalised CLVP embeddings.
      candidate_scores: [B, C] each text against its own candidates.
      best_index: [B] the best candidate of each text (index within its C candidates).
      best_speech_ids: [B, S'] the best candidate's speech ids; best_sequences: [B, 1 + M].
      num_generated: [R] tokens each row generated up to and including its stop token (M if it never stopped).
      scores: [R, M, V] raw decoder logits of every step (zeros after the loop stopped), if requested.
    """

    sequences: jax.Array
    speech_ids: jax.Array
    logits_per_text: jax.Array
    logits_per_speech: jax.Array
    text_embeds: jax.Array
    speech_embeds: jax.Array
    candidate_scores: jax.Array
    best_index: jax.Array
    best_speech_ids: jax.Array
    best_sequences: jax.Array
    num_generated: jax.Array
    scores: jax.Array | None = None


def _cast_floats(tree, dtype):
    return jax.tree_util.tree_map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _prompts_of_chunk(prefill: KVCache, t_idx: jax.Array, G: int, M: int) -> SharedPrefixCache:
    """The decode cache of one chunk of rows: the G prompts its rows can span (from its first row's text on),
    shared, and empty own slots for M new tokens."""
    first = jnp.clip(t_idx[0], 0, prefill.valid.shape[0] - G)
    take = lambda x: jax.lax.dynamic_slice_in_dim(x, first, G, axis=0)  # noqa: E731
    prompts = KVCache(
        tuple(map(take, prefill.keys)), tuple(map(take, prefill.values)), take(prefill.valid), prefill.index
    )
    return share_prefix(prompts, t_idx - first, M)


def _program(
    m: ClvpModelForConditionalGeneration,
    input_ids: jax.Array,  # [B, T]
    attention_mask: jax.Array,  # [B, T]
    features: jax.Array | None,  # [B_a, F, N]
    latents: jax.Array | None,  # [B_a, D]
    rng: jax.Array,
    limit: jax.Array,  # int32 <= M: tokens to generate this call
    candidate_offset: jax.Array,  # int32: index of this call's first candidate (for its random keys)
    *,
    opts: GenerationOptions,
    mesh,
) -> GenerationOutput:
    cfg, dec, txt = m.config, m.config.decoder_config, m.config.text_config
    B, _ = input_ids.shape
    C, M = opts.num_return_sequences, opts.max_new_tokens
    R = B * C
    stop = opts.stop_token(cfg)
    cache_dtype = jnp.bfloat16 if opts.dtype == "bfloat16" else jnp.float32

    # 1. conditioning prefix [B, T + 5, D] and its slot mask.
    ids1, mask1 = add_bos_eos(input_ids, attention_mask, txt.bos_token_id, txt.eos_token_id, add_bos=False)
    _, mask2 = add_bos_eos(ids1, mask1, txt.bos_token_id, txt.eos_token_id)  # [B, T + 3]
    text = m.conditioning_encoder.text_embeddings(ids1, mask1)  # [B, T + 3, D]
    if latents is None:
        latents = m.conditioning_encoder.voice_latent(features)  # [B_a, D]
    latents = jnp.broadcast_to(latents.astype(text.dtype), (B, latents.shape[-1]))
    start = m.speech_decoder_model.embed(jnp.full((B, 1), dec.bos_token_id), jnp.zeros((B, 1), jnp.int32))
    prefix = jnp.concatenate([latents[:, None, :], text, start.astype(text.dtype)], axis=1)
    ones = jnp.ones((B, 1), mask2.dtype)
    prefix_mask = jnp.concatenate([ones, mask2, ones], axis=1)
    L = prefix.shape[1]

    # 2. prefill once per text (the cache holds exactly the prompt; candidates share it while decoding).
    cache = init_cache(dec, B, L, cache_dtype)
    out = m.speech_decoder_model.forward_embeds(prefix, prefix_mask, cache)
    prefill_logits, prefill_cache = out.logits[:, -1], out.cache  # [B, V]

    # 3. decode the R rows chunk by chunk.
    chunk = _chunk_rows(opts, B)
    n_chunks = math.ceil(R / chunk)
    rows = jnp.arange(n_chunks * chunk)
    text_of_row = jnp.minimum(rows // C, B - 1)  # the padding rows of the last chunk repeat the last text
    cand_of_row = (rows % C if C else rows) + candidate_offset
    keys = jax.vmap(lambda t, c: jax.random.fold_in(jax.random.fold_in(rng, t), c))(text_of_row, cand_of_row)
    processors = opts.processors(stop, dec.bos_token_id)
    step_fn = functools.partial(_decode_step, m)

    G = min(B, -(-chunk // max(C, 1)) + 1)  # prompts one chunk's rows can span

    def run_chunk(args):
        t_idx, row_keys = args  # [chunk], [chunk] keys
        cache = _prompts_of_chunk(prefill_cache, t_idx, G, max(M - 1, 1))  # c_{M-1} is never fed back
        cache = cache.replace(**constrain_rows(dict(keys=cache.keys, values=cache.values, group=cache.group), mesh))
        first = constrain_rows(jnp.take(prefill_logits, t_idx, axis=0), mesh)
        seen = None
        if opts.repetition_penalty not in (None, 1.0):
            seen = jnp.zeros((chunk, dec.vocab_size), bool).at[:, dec.bos_token_id].set(True)
            if opts.repetition_prompt == "tortoise":
                seen = seen.at[:, 1].set(True)
        res = decode(
            step_fn,
            first,
            cache,
            row_keys,
            max_new_tokens=M,
            processors=processors,
            do_sample=opts.do_sample,
            eos_token_id=stop,
            first_position=opts.first_position,
            limit=limit,
            seen=seen,
            output_scores=opts.output_scores,
        )
        return res.tokens, res.scores

    t_chunks = text_of_row.reshape(n_chunks, chunk)
    k_chunks = keys.reshape((n_chunks, chunk) + keys.shape[1:])
    tokens, scores = jax.lax.map(run_chunk, (t_chunks, k_chunks))
    tokens = tokens.reshape(n_chunks * chunk, M)[:R]
    if scores is not None:
        scores = scores.reshape(n_chunks * chunk, M, -1)[:R]
    sequences = jnp.concatenate([jnp.full((R, 1), dec.bos_token_id, jnp.int32), tokens], axis=1)  # [R, 1 + M]
    is_stop = tokens == stop
    num_generated = jnp.where(is_stop.any(axis=1), jnp.argmax(is_stop, axis=1) + 1, M)

    # 4. pad, fix, score, rank.
    padded = sequences
    if opts.pad_to_max_mel_tokens is not None and opts.pad_to_max_mel_tokens > 1 + M:
        extra = opts.pad_to_max_mel_tokens - (1 + M)
        padded = jnp.concatenate([sequences, jnp.full((R, extra), stop, jnp.int32)], axis=1)
    speech_ids = m.fix_speech_decoder_output(padded)
    speech = m.get_speech_features(speech_ids)
    text_embeds = m.get_text_features(ids1, mask1)
    lpt, lps, t_norm, s_norm = m.similarity(text_embeds, speech)
    own = lpt.reshape(B, B, C)[jnp.arange(B), jnp.arange(B)]  # [B, C]
    best = jnp.argmax(own, axis=1)
    best_rows = jnp.arange(B) * C + best
    return GenerationOutput(
        sequences=sequences,
        speech_ids=speech_ids,
        logits_per_text=lpt,
        logits_per_speech=lps,
        text_embeds=t_norm,
        speech_embeds=s_norm,
        candidate_scores=own,
        best_index=best,
        best_speech_ids=speech_ids[best_rows],
        best_sequences=sequences[best_rows],
        num_generated=num_generated,
        scores=scores,
    )


def _decode_step(m, tokens: jax.Array, positions: jax.Array, cache: KVCache):
    """One token per row [N] at decoder positions [N] -> (logits [N, V] float32, cache)."""
    out = m.speech_decoder_model(input_ids=tokens[:, None], position_ids=positions[:, None], cache=cache)
    return out.logits[:, 0], out.cache


# Decoding at most this many rows per device (per chunk) is bound by reading the weights: on CPU such programs are
# compiled with XLA's memory-optimized scheduler. XLA's default CPU scheduler runs independent work side by side
# (e.g. the text tower during the conditioning encoder), which at the real size adds 20-30 MB to the program's
# temporary buffer and gains nothing at 1-4 rows (same step time, measured); at 16 rows it gains 3-5%.
LEAN_ROWS = 4
_MEMORY_SCHEDULER = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def _chunk_rows(opts: GenerationOptions, batch_size: int) -> int:
    """Rows decoded together (one chunk) for `batch_size` texts."""
    rows = batch_size * opts.num_return_sequences
    return rows if opts.chunk_size is None else min(opts.chunk_size, rows)


def _program_for(model: ClvpModelForConditionalGeneration, opts: GenerationOptions, batch_size: int, n_devices: int):
    """The jitted program `generate` runs for `batch_size` texts over `n_devices` devices."""
    return _compiled(model, opts, n_devices, lean=_chunk_rows(opts, batch_size) // n_devices <= LEAN_ROWS)


@functools.lru_cache(maxsize=32)
def _compiled(model: ClvpModelForConditionalGeneration, opts: GenerationOptions, n_devices: int, lean: bool):
    """One jitted program per (model, options, device count, schedule); jit itself caches per input shape."""
    mesh = rows_mesh(n_devices)
    # The CLVP towers as loops over layers: same results, a smaller program that compiles faster.
    compute = model.clone(scan_layers=True, **({} if opts.dtype == "float32" else {"dtype": jnp.bfloat16}))

    def run(params, input_ids, attention_mask, features, latents, rng, limit, candidate_offset):
        if opts.dtype == "bfloat16":
            params = _cast_floats(params, jnp.bfloat16)
        return compute.apply(
            {"params": params},
            input_ids,
            attention_mask,
            features,
            latents,
            rng,
            limit,
            candidate_offset,
            opts=opts,
            mesh=mesh,
            method=_program,
        )

    return jax.jit(run, compiler_options=_MEMORY_SCHEDULER if lean and jax.default_backend() == "cpu" else None)


def _bucket(n: int, size: int) -> int:
    return max(size, -(-n // size) * size)


def _prepare_text(model, opts: GenerationOptions, input_ids, attention_mask):
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"input_ids must be integer token ids [texts, tokens], got {ids.dtype} {ids.shape}")
    mask = np.ones(ids.shape, np.int32) if attention_mask is None else np.asarray(attention_mask).reshape(ids.shape)
    B, T = ids.shape
    cfg = model.config
    limit_t = cfg.decoder_config.max_text_tokens - 3
    if int(mask.sum(axis=1).max(initial=0)) > limit_t:
        raise ValueError(
            f"a text has {int(mask.sum(axis=1).max())} tokens but the conditioning encoder has room for {limit_t} "
            f"(max_text_tokens {cfg.decoder_config.max_text_tokens} - 3); split the text into sentences"
        )
    if model.masked_pooling and T % opts.text_length_bucket:
        T2 = min(_bucket(T, opts.text_length_bucket), max(T, limit_t))
        ids = np.pad(ids, ((0, 0), (0, T2 - T)), constant_values=txt_pad(cfg))
        mask = np.pad(mask, ((0, 0), (0, T2 - T)))
    return jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)


def txt_pad(cfg) -> int:
    """Text pad id: the tokenizer's pad ([STOP] = the text eos)."""
    return cfg.text_config.eos_token_id


def generate(
    model: ClvpModelForConditionalGeneration,
    params,
    input_ids,
    input_features=None,
    attention_mask=None,
    *,
    conditioning_latents=None,
    rng: jax.Array | None = None,
    options: GenerationOptions | None = None,
    devices: Sequence[jax.Device] | int | None = None,
    candidate_offset: int = 0,
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
    Returns:
      `GenerationOutput` (arrays on device; rows text-major).
    Raises:
      ValueError: bad shapes, text too long, positions out of range, missing rng or conditioning.
    """
    opts = (options or GenerationOptions()).replace(**overrides) if overrides else (options or GenerationOptions())
    cfg = model.config
    dec = cfg.decoder_config
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
        lat = jnp.asarray(conditioning_latents, jnp.float32).reshape(-1, dec.hidden_size)
        if lat.shape[0] not in (1, B):
            raise ValueError(f"conditioning_latents must be [{B} or 1, {dec.hidden_size}], got {lat.shape}")
    n_dev = devices if isinstance(devices, int) else (len(devices) if devices is not None else 1)
    if n_dev > 1:
        chunk = _chunk_rows(opts, B)
        if chunk % n_dev:
            raise ValueError(
                f"{chunk} rows per chunk cannot be split over {n_dev} devices; make chunk_size (or texts x "
                "candidates) a multiple of the device count"
            )
    enable_compilation_cache()
    args = (params, ids, mask, feats, lat, rng, jnp.int32(opts.max_new_tokens), jnp.int32(candidate_offset))
    return ahead_or_jit((model, opts, n_dev), _program_for(model, opts, B, n_dev), args)(*args)


def warmup(
    model: ClvpModelForConditionalGeneration,
    params=None,
    *,
    batch_size: int = 1,
    text_length: int = 32,
    num_frames: int | None = 517,
    options: GenerationOptions | None = None,
    devices=None,
    **overrides,
) -> None:
    """Compile (and cache on disk) the program for these shapes before the first `generate` call.

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
    """
    opts = (options or GenerationOptions()).replace(**overrides)
    cfg = model.config
    n_dev = devices if isinstance(devices, int) else (len(devices) if devices is not None else 1)
    ids, mask = _prepare_text(model, opts, np.full((batch_size, text_length), 2, np.int32), None)
    feats = lat = None
    if num_frames is None:
        lat = jnp.zeros((batch_size, cfg.decoder_config.hidden_size), jnp.float32)
    else:
        feats = jnp.zeros((batch_size, cfg.decoder_config.feature_size, num_frames), jnp.float32)
    enable_compilation_cache()
    fn = _program_for(model, opts, batch_size, n_dev)
    shapes_only = params is None or any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(params))
    params = param_shapes(cfg) if params is None else params
    args = (params, ids, mask, feats, lat, jax.random.key(0), jnp.int32(1), jnp.int32(0))
    if n_dev == 1:
        compile_ahead((model, opts, n_dev), fn, args)
    elif shapes_only:
        raise ValueError(f"warmup over {n_dev} devices needs the real params (got shapes only)")
    else:
        jax.block_until_ready(fn(*args))
