"""`describe_checkpoint`: what a checkpoint holds (`clvp-jax info`), read without building the model."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np


def describe_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """What a checkpoint holds: format, config summary, parameter count and dtype, provenance."""
    from clvp_jax.checkpoint import load_params

    loaded = load_params(path)
    leaves = jax.tree_util.tree_leaves(loaded.params)
    dtypes = sorted({str(np.asarray(x).dtype) for x in leaves})
    cfg = loaded.config
    dec, text, speech = cfg.decoder_config, cfg.text_config, cfg.speech_config
    return {
        "path": str(path),
        "format": loaded.format,
        "parts": list(loaded.parts),
        "parameters": int(sum(np.size(x) for x in leaves)),
        "dtypes": dtypes,
        "decoder": f"{dec.num_hidden_layers} layers x {dec.hidden_size}, {dec.num_attention_heads} heads, vocab {dec.vocab_size}",
        "text_encoder": f"{text.num_hidden_layers} layers x {text.hidden_size}, vocab {text.vocab_size}",
        "speech_encoder": f"{speech.num_hidden_layers} layers x {speech.hidden_size}, vocab {speech.vocab_size}",
        "sources": [str(s) for s in loaded.sources],
        "manifest": loaded.manifest,
    }
