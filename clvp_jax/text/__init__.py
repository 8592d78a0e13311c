"""Text front end: the English normaliser, the CLVP tokenizer and the long-text splitter."""

from clvp_jax.text.normalizer import normalize, number_to_words
from clvp_jax.text.splitter import TextTooLongError, split_text
from clvp_jax.text.tokenizer import BatchEncoding, ClvpTokenizer

__all__ = ["BatchEncoding", "ClvpTokenizer", "TextTooLongError", "normalize", "number_to_words", "split_text"]
