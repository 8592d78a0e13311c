"""The tokenizer's output type (transformers' `BatchEncoding` in miniature)."""

from __future__ import annotations

from typing import Any


class BatchEncoding(dict):
    """The tokenizer's output: a dict (`input_ids`, `attention_mask`) that also allows attribute access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None
