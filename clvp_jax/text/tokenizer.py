"""`ClvpTokenizer`: transformers' CLVP tokenizer rebuilt on the Rust `tokenizers` library, with identical ids.

Pipeline for one text (spec section 11): special-token strings are split out of the raw text (exact,
case-sensitive) -> each remaining piece goes through `normalizer.normalize` (Python regexes) -> the GPT-2
pre-split regex (`_PRE_SPLIT`) -> each word is byte-mapped (GPT-2 `bytes_to_unicode`, " " -> "Ġ") and merged by
the Rust `tokenizers` BPE model, with a word cache in front of it (as the reference caches words) -> ids.
A BPE token that is exactly "Ġ" (a lone space) becomes "[SPACE]"; tokens missing from vocab.json become "[UNK]".

The Rust model runs on an *extended* vocabulary: vocab.json plus every byte symbol, "Ġ" and every merge part and
result. `_final_ids[ext_id]` then maps each extended id to the reference's id (itself, "[SPACE]" or "[UNK]"), so
unknown symbols and merge results missing from vocab.json behave as in the reference.

`normalizer="tortoise"` gives the ids of Tortoise's own `VoiceBpeTokenizer.encode` instead: the whole text goes
through `tortoise_cleaners.clean` (no special-token strings are split out: Tortoise lowercases "[STOP]" to
"[stop]" like any other text), then Tortoise's `Whitespace` pre-split (`_TORTOISE_SPLIT`) with every space a word
of its own, which becomes "[SPACE]" (Tortoise writes "[SPACE]" for each space), then the same BPE.

Differences from the reference (all on inputs where the reference loses data or raises):
- merges.txt: a `#version` first line is skipped only when present and the last merge is kept even without a
  final newline (the reference always drops line 1 and the last line); `save_pretrained` writes the header, so
  files round-trip in both directions (the reference's own save drops one merge per round trip, spec 14.12).
- `ascii_mode="transliterate"` and `normalizer="tortoise"` (not in the reference) are options; the default is the
  reference's normaliser.
- decoding an id outside the vocabulary raises ValueError (the reference fails with a TypeError).
- Equivalence of the BPE needs a well-formed merge table (each merge's parts are single symbols or results of
  earlier merges), which any trained table is; a warning is issued for other tables.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tokenizers import Tokenizer, models

from clvp_jax.fs import write_text
from clvp_jax.text import tortoise_cleaners
from clvp_jax.text.bpe_files import (  # re-exported: importable from here as before
    MERGES_HEADER,
    VOCAB_FILES_NAMES,
    bytes_to_unicode,
    read_merges,
    read_tortoise_json,
)
from clvp_jax.text.encoding import BatchEncoding  # re-exported
from clvp_jax.text.normalizer import AsciiMode, normalize

__all__ = ["BatchEncoding", "ClvpTokenizer", "MERGES_HEADER", "VOCAB_FILES_NAMES", "Normalizer"]
__all__ += ["bytes_to_unicode", "read_merges", "read_tortoise_json"]

Normalizer = Literal["hf", "tortoise"]

_SPACE_SYMBOL = "\u0120"  # "Ġ": the byte-level symbol of " "
# The reference's GPT-2 pre-split regex, `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
# restricted to what the normaliser can output (ASCII whose only whitespace is " "), where \p{L} is [A-Za-z]
# and \p{N} is [0-9]. Python's `re` runs it several times faster than the Rust ByteLevel pre-tokenizer.
_PRE_SPLIT = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")
# Tortoise's `Whitespace` pre-tokenizer, `\w+|[^\w\s]+`, on the ASCII text its cleaners output (\w is
# [A-Za-z0-9_] there), plus each space as a one-character word: its byte symbol "Ġ" maps to "[SPACE]".
_TORTOISE_SPLIT = re.compile(r"[A-Za-z0-9_]+|[^A-Za-z0-9_\s]+| ")
_CACHE_LIMIT = 200_000  # words; the cache is cleared when it would grow past this


class ClvpTokenizer:
    """Byte-level BPE tokenizer of CLVP / Tortoise with transformers' `ClvpTokenizer` interface and ids.

    Args:
        vocab_file, merges_file: HF-style files (or pass `vocab` and `merges` directly).
        errors: how undecodable bytes are handled by `decode` (`bytes.decode` errors argument).
        unk_token, bos_token, eos_token, pad_token: special tokens; one missing from the vocabulary is added with
            the next free id (the real vocabulary has 255 entries, so "<|endoftext|>" gets id 255).
        normalizer: "hf" (default): transformers' `EnglishNormalizer` and pre-split, ids identical to transformers'
            `ClvpTokenizer`; "tortoise": Tortoise's `english_cleaners` (inflect, unidecode), the text the real
            Tortoise models were trained on, ids identical to its `VoiceBpeTokenizer.encode`. It needs a
            "[SPACE]" token in the vocabulary.
        ascii_mode: "drop" (reference) or "transliterate" non-ASCII characters, see `normalizer`; "hf" only.
        clean_up_tokenization_spaces: default of `decode`'s argument (False, as in the reference).
        model_max_length: length used by `truncation=True` / `padding="max_length"` when `max_length` is unset.
        add_prefix_space, add_bos_token, add_eos_token and other transformers init options are accepted and
            ignored, as transformers 5.24 ignores them.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "right"

    def __init__(
        self,
        vocab_file: str | os.PathLike | None = None,
        merges_file: str | os.PathLike | None = None,
        *,
        vocab: dict[str, int] | None = None,
        merges: Sequence[tuple[str, str]] | None = None,
        errors: str = "replace",
        unk_token: str = "[UNK]",
        bos_token: str = "<|endoftext|>",
        eos_token: str = "[STOP]",
        pad_token: str = "[STOP]",
        normalizer: Normalizer = "hf",
        ascii_mode: AsciiMode = "drop",
        clean_up_tokenization_spaces: bool = False,
        model_max_length: int | None = None,
        **ignored: Any,
    ):
        if vocab is None:
            if vocab_file is None:
                raise ValueError("ClvpTokenizer needs vocab_file and merges_file (or vocab= and merges=)")
            vocab = json.loads(Path(vocab_file).read_text(encoding="utf-8"))
        if merges is None:
            if merges_file is None:
                raise ValueError("ClvpTokenizer needs merges_file (or merges=)")
            merges = read_merges(merges_file)
        normalize("", ascii_mode)  # validates ascii_mode
        if normalizer not in ("hf", "tortoise"):
            raise ValueError(f"normalizer must be 'hf' (transformers) or 'tortoise' (tortoise-tts), got {normalizer!r}")
        if normalizer == "tortoise" and ascii_mode != "drop":
            raise ValueError("ascii_mode applies to normalizer='hf' only; the 'tortoise' one transliterates itself")
        if normalizer == "tortoise" and "[SPACE]" not in vocab:
            raise ValueError("normalizer='tortoise' needs a '[SPACE]' token in the vocabulary (Tortoise's spaces)")
        self.normalizer: Normalizer = normalizer
        self._pre_split = _TORTOISE_SPLIT if normalizer == "tortoise" else _PRE_SPLIT
        self.encoder: dict[str, int] = dict(vocab)
        # As dict(zip(merges, range)) in the reference: a repeated merge keeps the rank of its last occurrence.
        ranks = {tuple(pair): rank for rank, pair in enumerate(merges)}
        self.merges: list[tuple[str, str]] = sorted(ranks, key=ranks.__getitem__)
        self.errors, self.ascii_mode = errors, ascii_mode
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.model_max_length = model_max_length
        self.unk_token, self.bos_token, self.eos_token, self.pad_token = unk_token, bos_token, eos_token, pad_token

        self.added_tokens_encoder: dict[str, int] = {}
        for token in (bos_token, eos_token, unk_token, pad_token):
            if token not in self.encoder and token not in self.added_tokens_encoder:
                self.added_tokens_encoder[token] = len(self.encoder) + len(self.added_tokens_encoder)
        self.decoder = {i: t for t, i in self.encoder.items()} | {i: t for t, i in self.added_tokens_encoder.items()}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        specials = sorted(set(self.all_special_tokens), key=len, reverse=True)
        self._special_split = re.compile("(" + "|".join(map(re.escape, specials)) + ")")
        self._special_firsts = {token[0] for token in specials}  # a cheap test before the split
        self._build_backend()

    # ----------------------------------------------------------------------------------------------- building
    def _build_backend(self) -> None:
        ext_tokens = list(dict.fromkeys([*self.encoder, *self.byte_encoder.values(), _SPACE_SYMBOL]))
        ext_tokens += list(dict.fromkeys(t for a, b in self.merges for t in (a, b, a + b) if t not in self.encoder))
        ext_tokens = list(dict.fromkeys(ext_tokens))
        ext_vocab = {token: i for i, token in enumerate(ext_tokens)}
        unk = self.unk_token_id
        space = self.encoder.get("[SPACE]")
        final = [self.encoder.get(token, unk) for token in ext_tokens]
        names = list(ext_tokens)
        if space is not None:
            final[ext_vocab[_SPACE_SYMBOL]] = space
            names[ext_vocab[_SPACE_SYMBOL]] = "[SPACE]"
        self._final_ids, self._ext_names = final, names
        self._warn_if_ill_formed()
        # No pre-tokenizer: the backend receives one pre-split, byte-mapped word at a time (see `_word_ids`).
        self._backend = Tokenizer(models.BPE(vocab=ext_vocab, merges=list(self.merges), fuse_unk=False))
        self._byte_table = {byte: char for byte, char in self.byte_encoder.items() if byte < 128}
        self._cache: dict[str, list[int]] = {}

    def _warn_if_ill_formed(self) -> None:
        known = set(self.byte_encoder.values())
        for a, b in self.merges:
            if (len(a) > 1 and a not in known) or (len(b) > 1 and b not in known):
                warnings.warn(
                    f"merge {a!r} {b!r} uses a token that no earlier merge produces; such merge tables may give "
                    "ids that differ from transformers' ClvpTokenizer",
                    stacklevel=3,
                )
                return
            known.add(a + b)

    # ------------------------------------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def __len__(self) -> int:
        return len(self.encoder) + len(self.added_tokens_encoder)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.encoder, **self.added_tokens_encoder)

    def _token_id(self, token: str) -> int | None:
        return self.encoder.get(token, self.added_tokens_encoder.get(token))

    unk_token_id = property(lambda self: self._token_id(self.unk_token))
    bos_token_id = property(lambda self: self._token_id(self.bos_token))
    eos_token_id = property(lambda self: self._token_id(self.eos_token))
    pad_token_id = property(lambda self: self._token_id(self.pad_token))

    @property
    def all_special_tokens(self) -> list[str]:
        return list(dict.fromkeys([self.bos_token, self.eos_token, self.unk_token, self.pad_token]))

    @property
    def all_special_ids(self) -> list[int]:
        return [self._token_id(token) for token in self.all_special_tokens]

    def __repr__(self) -> str:
        return (
            f"ClvpTokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, normalizer={self.normalizer!r}, "
            f"ascii_mode={self.ascii_mode!r})"
        )

    # ---------------------------------------------------------------------------------------------- encoding
    def normalize(self, text: str) -> str:
        """The text this tokenizer's BPE sees: `normalizer.normalize` ("hf") or `tortoise_cleaners.clean`."""
        if self.normalizer == "tortoise":
            return tortoise_cleaners.clean(text)
        return normalize(text, self.ascii_mode)

    def _pieces(self, text: str) -> list[str | int]:
        """Split raw text into normalised pieces (str) and special-token ids (int)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str or a list of str, got {type(text).__name__}")
        if self.normalizer == "tortoise":
            return [cleaned] if (cleaned := tortoise_cleaners.clean(text)) else []
        parts = self._special_split.split(text) if any(c in text for c in self._special_firsts) else [text]
        pieces: list[str | int] = []
        for i, part in enumerate(parts):
            if i % 2:
                pieces.append(self._token_id(part))
            elif part and (normalized := normalize(part, self.ascii_mode)):
                pieces.append(normalized)
        return pieces

    def _bpe(self, words: Sequence[str]) -> list[list[int]]:
        """Extended ids of each word, merged by the Rust BPE (`words` are raw pre-split words)."""
        encode = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
        symbols = [word.translate(self._byte_table) for word in words]
        return [encoding.ids for encoding in encode(symbols, add_special_tokens=False)]

    def _encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        plans = [[self._pre_split.findall(p) if isinstance(p, str) else p for p in self._pieces(t)] for t in texts]
        cache = self._cache  # word -> final ids; like the reference's BPE cache, it persists across calls
        missing = {word for plan in plans for piece in plan if isinstance(piece, list) for word in piece}
        missing.difference_update(cache)
        if missing:
            if len(cache) + len(missing) > _CACHE_LIMIT:
                cache.clear()
                missing = {word for plan in plans for piece in plan if isinstance(piece, list) for word in piece}
            words = list(missing)
            final = self._final_ids
            for word, ext_ids in zip(words, self._bpe(words), strict=True):
                cache[word] = [final[i] for i in ext_ids]
        lookup = cache.__getitem__
        out = []
        for plan in plans:
            if len(plan) == 1 and isinstance(plan[0], list):  # the usual case: no special token in the text
                out.append(list(chain.from_iterable(map(lookup, plan[0]))))
                continue
            ids: list[int] = []
            for piece in plan:
                if isinstance(piece, list):
                    ids.extend(chain.from_iterable(map(lookup, piece)))
                else:
                    ids.append(piece)
            out.append(ids)
        return out

    def tokenize(self, text: str, **kwargs: Any) -> list[str]:
        """Token strings as the reference's `tokenize` gives them (a BPE token missing from the vocab is kept)."""
        tokens: list[str] = []
        for piece in self._pieces(text):
            if isinstance(piece, str):
                words = self._pre_split.findall(piece)
                tokens.extend(self._ext_names[i] for ext_ids in self._bpe(words) for i in ext_ids)
            else:
                tokens.append(self.decoder[piece])
        return tokens

    def encode(self, text: str, **kwargs: Any) -> list[int]:
        """Ids of one text (no special tokens are added, as in the reference)."""
        return self._encode_many([text])[0]

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        if isinstance(tokens, str):
            token_id = self._token_id(tokens)
            return self.unk_token_id if token_id is None else token_id
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def __call__(
        self,
        text: str | Sequence[str],
        *,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool | None = None,
        add_special_tokens: bool = True,
        padding_side: str | None = None,
        **kwargs: Any,
    ) -> BatchEncoding:
        """Tokenise a text or a batch of texts, as transformers' tokenizer `__call__` does.

        Args:
            text: a string or a list/tuple of strings.
            padding: False / "do_not_pad"; True / "longest" (pad to the longest text); "max_length".
            truncation: True / "longest_first" / "only_first" cut to `max_length` from the right. As in
                transformers, giving `max_length` without padding or truncation turns truncation on.
            max_length: target length (defaults to `model_max_length` where needed).
            pad_to_multiple_of: round the padded length up to a multiple of this.
            return_tensors: None (lists), "np" (int64 arrays) or "jax" (int32 arrays).
            return_attention_mask: include `attention_mask` (default True).
            add_special_tokens: accepted for compatibility; adds nothing, as in the reference.
            padding_side: "right" (default, pad id 0) or "left".

        Returns:
            BatchEncoding with `input_ids` and `attention_mask`; for a single string without tensors the values
            are flat lists, otherwise one row per text.
        """
        if kwargs.get("text_pair") is not None:
            raise NotImplementedError("text pairs are not supported (CLVP never uses them)")
        single = isinstance(text, str)
        if not single and not isinstance(text, (list, tuple)):
            raise TypeError(f"text must be a str or a list of str, got {type(text).__name__}")
        batch = self._encode_many([text] if single else list(text))
        if padding in (False, None, "do_not_pad"):
            padding = False
        elif padding is True:
            padding = "longest"
        if padding not in (False, "longest", "max_length"):
            raise ValueError(f"padding must be False, True, 'longest' or 'max_length', got {padding!r}")
        if truncation is None and max_length is not None and padding is False:
            truncation = True
        max_length = self.model_max_length if max_length is None else max_length
        if truncation not in (None, False, "do_not_truncate") and max_length is not None:
            batch = [ids[:max_length] for ids in batch]
        if padding == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs max_length (or the tokenizer's model_max_length)")
        target = max_length if padding == "max_length" else max(map(len, batch), default=0)
        if padding and pad_to_multiple_of:
            target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
        side = padding_side or self.padding_side
        masks, pad_id = [], self.pad_token_id
        for row, ids in enumerate(batch):
            fill = max(target - len(ids), 0) if padding else 0
            pad = [pad_id] * fill
            batch[row] = pad + ids if side == "left" else ids + pad
            masks.append([0] * fill + [1] * len(ids) if side == "left" else [1] * len(ids) + [0] * fill)
        out = BatchEncoding(input_ids=batch)
        if return_attention_mask is None or return_attention_mask:
            out["attention_mask"] = masks
        return self._as_tensors(out, return_tensors, single)

    @staticmethod
    def _as_tensors(out: BatchEncoding, return_tensors: str | None, single: bool) -> BatchEncoding:
        if return_tensors is None:
            if single:
                out.update({key: rows[0] for key, rows in out.items()})
            return out
        if return_tensors not in ("np", "jax"):
            raise ValueError(f"return_tensors must be None, 'np' or 'jax', got {return_tensors!r}")
        if len({len(row) for row in out["input_ids"]}) > 1:
            raise ValueError("texts have different lengths: pass padding=True to return tensors")
        for key, rows in out.items():
            array = np.asarray(rows, dtype=np.int64).reshape(len(rows), -1)
            if return_tensors == "jax":
                import jax.numpy as jnp

                array = jnp.asarray(array, dtype=jnp.int32)
            out[key] = array
        return out

    # ---------------------------------------------------------------------------------------------- decoding
    def convert_ids_to_tokens(self, ids: int | Iterable[int], skip_special_tokens: bool = False) -> Any:
        if isinstance(ids, (int, np.integer)):
            return self._id_to_token(int(ids))
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._id_to_token(i) for i in map(int, ids) if i not in skip]

    def _id_to_token(self, index: int) -> str:
        try:
            return self.decoder[index]
        except KeyError:
            raise ValueError(f"token id {index} is outside the vocabulary (size {len(self)})") from None

    def convert_tokens_to_string(self, tokens: Iterable[str]) -> str:
        raw = bytearray()
        for char in "".join(tokens):
            byte = self.byte_decoder.get(char)
            raw.extend(char.encode("utf-8") if byte is None else (byte,))
        return raw.decode("utf-8", errors=self.errors)

    def clean_up_tokenization(self, text: str) -> str:
        """The reference's clean-up: "[SPACE]" and "[STOP]" become spaces, "[UNK]" goes, double spaces shrink."""
        vocab = self.get_vocab()
        if "[SPACE]" in vocab:
            text = text.replace("[SPACE]", " ")
        if "[STOP]" in vocab:
            text = text.replace("[STOP]", " ")
        return text.replace(self.unk_token, "").replace("   ", " ").replace("  ", " ")

    def decode(
        self,
        token_ids: Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> str:
        """Text of one id sequence (list, numpy or jax array, or a single int)."""
        ids = np.asarray(token_ids).reshape(-1).tolist()
        text = self.convert_tokens_to_string(self.convert_ids_to_tokens(ids, skip_special_tokens))
        if self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces:
            text = self.clean_up_tokenization(text)
        return text

    def batch_decode(self, sequences: Any, **kwargs: Any) -> list[str]:
        """`decode` applied to each row of a batch (list of lists or a 2-D array)."""
        return [self.decode(row, **kwargs) for row in sequences]

    # ----------------------------------------------------------------------------------------- files
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, **kwargs: Any) -> ClvpTokenizer:
        """Load from a folder (vocab.json + merges.txt, else Tortoise's tokenizer.json), a tokenizer.json file, or
        the packaged Tortoise vocabulary when `path` is None. `tokenizer_config.json` options are honoured and
        `kwargs` override them."""
        if path is None:
            from clvp_jax import assets

            path = assets.ASSETS_DIR
        path = Path(path)
        if path.is_file():
            vocab, merges = read_tortoise_json(path)
            return cls(vocab=vocab, merges=merges, **kwargs)
        if not path.is_dir():
            raise FileNotFoundError(f"no tokenizer folder or tokenizer.json at {path}")
        config_file = path / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.exists() else {}
        keys = ("errors", "unk_token", "bos_token", "eos_token", "pad_token", "ascii_mode")
        options = {k: _content(config[k]) for k in keys if config.get(k) is not None}
        if config.get("text_normalizer") is not None:
            options["normalizer"] = config["text_normalizer"]
        options |= {k: config[k] for k in ("clean_up_tokenization_spaces", "model_max_length") if k in config}
        if isinstance(options.get("model_max_length"), (int, float)) and options["model_max_length"] > 1e12:
            del options["model_max_length"]  # transformers' "no limit" sentinel
        options |= kwargs
        if (path / "vocab.json").exists() and (path / "merges.txt").exists():
            return cls(path / "vocab.json", path / "merges.txt", **options)
        if (path / "tokenizer.json").exists():
            vocab, merges = read_tortoise_json(path / "tokenizer.json")
            return cls(vocab=vocab, merges=merges, **options)
        raise FileNotFoundError(f"{path} holds neither vocab.json + merges.txt nor tokenizer.json")

    def save_pretrained(self, folder: str | os.PathLike, **kwargs: Any) -> tuple[str, ...]:
        """Write vocab.json, merges.txt (with its header, so both loaders read every merge) and
        tokenizer_config.json; each file is replaced atomically. Returns the written paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "tokenizer_class": "ClvpTokenizer",
            "errors": self.errors,
            "unk_token": self.unk_token,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
        }
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        if self.normalizer != "hf":
            # Not "normalizer": transformers refuses that key (it names a tokenizer method there).
            config["text_normalizer"] = self.normalizer
        if self.ascii_mode != "drop":
            config["ascii_mode"] = self.ascii_mode
        files = {
            "vocab.json": json.dumps(self.encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
            "merges.txt": "\n".join([MERGES_HEADER, *(f"{a} {b}" for a, b in self.merges)]) + "\n",
            "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
        }
        for name, text in files.items():
            write_text(folder / name, text)
        return tuple(str(folder / name) for name in files)


def _content(value: Any) -> Any:
    """A special token may be saved as a plain string or as an AddedToken dict with a "content" key."""
    return value["content"] if isinstance(value, dict) else value
