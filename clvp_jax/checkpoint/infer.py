"""The model configuration of original Tortoise checkpoints, inferred from their tensor shapes.

`infer_config` reads layer counts and widths off the key names and shapes (`autoregressive.pth`: UnifiedVoice;
`clvp2.pth`: CLVP), checks them against any values the caller gives (`original_config.json`, CLI flags) and
builds the matching `ClvpConfig`. Head counts are not in the shapes: they come from the caller (default 16).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from clvp_jax.checkpoint.errors import CheckpointError
from clvp_jax.config import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig, ConfigError
from clvp_jax.layers import rotary_r0

CONFIG_FILE = "original_config.json"
REAL_AR_HEADS = 16
XTRANSFORMERS_HEAD_DIM = 64  # CLVP never passes dim_head, so x-transformers' default holds


def _agree(what: str, given: Any, actual: Any) -> None:
    if given is not None and given != actual:
        raise ConfigError(
            f"{CONFIG_FILE} / options say {what} = {given}, but the weights have {actual}; the config does not "
            "belong to these weights (fix or remove the value)"
        )


def _count(shapes: Mapping[str, tuple], pattern: str) -> int:
    found = {int(m[1]) for k in shapes if (m := re.fullmatch(pattern, k))}
    return max(found) + 1 if found else 0


def _block_shape(shapes: Mapping[str, tuple], prefix: str, n: int, name: str) -> tuple[int, ...]:
    """Shape of x-transformers entry n's block tensor `name`, with or without tortoise's `.wrap.` segment."""
    for key in (f"{prefix}layers.{n}.1.wrap.{name}", f"{prefix}layers.{n}.1.{name}"):
        if key in shapes:
            return shapes[key]
    raise CheckpointError(f"the CLVP checkpoint has no {prefix}layers.{n}.1.wrap.{name}; it is incomplete")


def _need(shapes: Mapping[str, tuple], key: str, where: str) -> tuple[int, ...]:
    if key not in shapes:
        raise CheckpointError(f"the {where} checkpoint has no {key!r}; it is incomplete or not a Tortoise model")
    return shapes[key]


def infer_config(
    ar: Mapping[str, tuple] | None,
    clvp: Mapping[str, tuple] | None,
    ar_kwargs: Mapping[str, Any],
    clvp_kwargs: Mapping[str, Any],
    *,
    heads: int | None = None,
    start_text_token: int | None = None,
    start_mel_token: int | None = None,
    stop_mel_token: int | None = None,
) -> ClvpConfig:
    """The `ClvpConfig` of original weights from their shapes (see the module docstring for what is not in them)."""
    if ar_kwargs.get("train_solo_embeddings") or ar_kwargs.get("use_mel_codes_as_input") is False:
        raise ConfigError(
            "UnifiedVoice with train_solo_embeddings=True or use_mel_codes_as_input=False has no HF equivalent"
        )
    if clvp_kwargs and clvp_kwargs.get("use_xformers") is not True:
        raise ConfigError("only the x-transformers CLVP (use_xformers=True, CLVP-large / clvp2.pth) is supported")
    if "heads" in ar_kwargs:
        _agree("heads", heads, ar_kwargs["heads"])
    n_heads = heads or ar_kwargs.get("heads") or REAL_AR_HEADS
    text_rows = None
    dec = ClvpDecoderConfig()
    if ar is not None:
        d = _need(ar, "text_embedding.weight", "autoregressive")[1]
        text_rows = ar["text_embedding.weight"][0]
        mel_rows = _need(ar, "mel_embedding.weight", "autoregressive")[0]
        mel_pos = _need(ar, "mel_pos_embedding.emb.weight", "autoregressive")[0]
        text_pos = _need(ar, "text_pos_embedding.emb.weight", "autoregressive")[0]
        layers = _count(ar, r"gpt\.h\.(\d+)\.ln_1\.weight")
        inner = _need(ar, "gpt.h.0.mlp.c_fc.weight", "autoregressive")[1] if layers else 4 * d
        k = ar_kwargs
        types = k.get("types", 1)
        _agree("model_dim", k.get("model_dim"), d)
        _agree("layers", k.get("layers"), layers)
        _agree("number_mel_codes", k.get("number_mel_codes"), mel_rows)
        if "number_text_tokens" in k:
            _agree("number_text_tokens * types + 1", k["number_text_tokens"] * types + 1, text_rows)
        if "max_text_tokens" in k:
            _agree("max_text_tokens + 2", k["max_text_tokens"] + 2, text_pos)
        if "max_mel_tokens" in k:
            _agree(
                "max_mel_tokens + 2 + max_conditioning_inputs",
                k["max_mel_tokens"] + 2 + k.get("max_conditioning_inputs", 1),
                mel_pos,
            )
        if d % n_heads:
            raise ConfigError(f"model_dim {d} is not divisible by heads {n_heads}; pass the right --heads")
        # Constructor defaults when kwargs are given; the layout of the real model otherwise.
        kw_start_mel = k.get("start_mel_token", 8192) if k else mel_rows - 2
        kw_stop_mel = k.get("stop_mel_token", 8193) if k else mel_rows - 1
        if k.get("start_text_token") is not None:
            kw_start_text = k["start_text_token"]
        else:
            kw_start_text = k["number_text_tokens"] * types if "number_text_tokens" in k else text_rows - 1
        for name, flag in (("start_text_token", start_text_token), ("start_mel_token", start_mel_token),
                           ("stop_mel_token", stop_mel_token)):  # fmt: skip
            if name in k:
                _agree(name, flag, k[name])
        dec = ClvpDecoderConfig(
            vocab_size=mel_rows,
            max_position_embeddings=mel_pos,
            max_text_tokens=text_pos,
            hidden_size=d,
            num_hidden_layers=layers,
            num_attention_heads=n_heads,
            n_inner=None if inner == 4 * d else inner,
            num_mel_attn_blocks=_count(ar, r"conditioning_encoder\.attn\.(\d+)\.qkv\.weight"),
            feature_size=_need(ar, "conditioning_encoder.init.weight", "autoregressive")[1],
            bos_token_id=start_mel_token if start_mel_token is not None else kw_start_mel,
            eos_token_id=stop_mel_token if stop_mel_token is not None else kw_stop_mel,
        )
        start_text_token = start_text_token if start_text_token is not None else kw_start_text
    towers = {}
    for tower, dim_kw, vocab_kw, depth_kw, heads_kw in (
        ("text", "dim_text", "num_text_tokens", "text_enc_depth", "text_heads"),
        ("speech", "dim_speech", "num_speech_tokens", "speech_enc_depth", "speech_heads"),
    ):
        k = clvp_kwargs
        if clvp is None:  # no CLVP weights: the kwargs, else the real CLVP-large
            dim, latent = k.get(dim_kw, 768), k.get("dim_latent", 768)
            vocab = k.get(vocab_kw, (text_rows or 256) if tower == "text" else dec.bos_token_id)
            depth, h, inter = k.get(depth_kw, 20), k.get(heads_kw, 12), 2 * k.get(dim_kw, 768)
        else:
            p = f"{tower}_transformer.transformer.attn_layers."
            vocab, dim = _need(clvp, f"{tower}_emb.weight", "CLVP")
            latent = _need(clvp, f"to_{tower}_latent.weight", "CLVP")[0]
            entries = _count(clvp, re.escape(p) + r"layers\.(\d+)\.0\.0\.g")
            if entries % 2:
                raise CheckpointError(
                    f"the CLVP {tower} tower has {entries} layer entries; expected attention/FF pairs"
                )
            depth = entries // 2
            q_rows = _block_shape(clvp, p, 0, "to_q.weight")[0] if depth else dim
            if q_rows % XTRANSFORMERS_HEAD_DIM or q_rows != dim:
                raise ConfigError(
                    f"the CLVP {tower} tower attends with width {q_rows} (heads x 64) but is {dim} wide; HF CLVP needs "
                    "heads x 64 == width, so this checkpoint cannot be converted"
                )
            h = q_rows // XTRANSFORMERS_HEAD_DIM
            inter = _block_shape(clvp, p, 1, "net.0.proj.weight")[0] // 2 if depth else 2 * dim
            for name, given, actual in ((dim_kw, k.get(dim_kw), dim), ("dim_latent", k.get("dim_latent"), latent),
                                        (vocab_kw, k.get(vocab_kw), vocab), (depth_kw, k.get(depth_kw), depth),
                                        (heads_kw, k.get(heads_kw), h)):  # fmt: skip
                _agree(name, given, actual)
            r0 = rotary_r0(latent, h)
            inv = clvp.get(p + "rotary_pos_emb.inv_freq")
            if inv is not None and inv != ((r0 + 1) // 2,):
                raise ConfigError(
                    f"the CLVP {tower} tower rotates {2 * inv[0]} dims per head, but HF CLVP derives {r0} from "
                    f"dim_latent {latent} and {h} heads; this checkpoint cannot be represented in HF CLVP"
                )
        towers[tower] = ClvpEncoderConfig(
            vocab_size=vocab, hidden_size=dim, intermediate_size=inter, projection_dim=latent,
            num_hidden_layers=depth, num_attention_heads=h,
        )  # fmt: skip
    text, speech = towers["text"], towers["speech"]
    if text_rows is not None and clvp is not None and text.vocab_size != text_rows:
        raise ConfigError(
            f"the autoregressive text table has {text_rows} rows but the CLVP one {text.vocab_size}; HF CLVP shares one "
            "text vocabulary, so these two files do not belong together"
        )
    bos = start_text_token if start_text_token is not None else text.vocab_size - 1
    text = dataclasses.replace(text, bos_token_id=bos, eos_token_id=0)
    speech = dataclasses.replace(speech, bos_token_id=dec.bos_token_id, eos_token_id=dec.eos_token_id)
    try:
        return ClvpConfig(
            text_config=text, speech_config=speech, decoder_config=dec, projection_dim=text.projection_dim
        )
    except ConfigError as err:
        raise ConfigError(f"the original weights give an invalid config: {err}") from err
