"""The long-text flags and helpers of `generate` and `speak`: chunk by chunk, resumable like Tortoise's `read.py`.

  clvp-jax generate --text-file book.txt -o book/          book/chunks/0000/... then book/candidates.json, .npz
  clvp-jax speak --text-file book.txt -o book.wav          book.chunks/0000/... then book.wav, book.json
  clvp-jax speak --text-file book.txt -o book.wav --regenerate 3,7     redo chunks 3 and 7, rebuild book.wav

Rerunning into the same output keeps every finished chunk whose key (text, voice, settings, weights, version) is
unchanged, makes the others, and rebuilds the joined outputs (`clvp_jax.long_text`). `|` in the text marks manual
split points. Progress: one line per chunk on standard error (none with --quiet). The commands themselves are
`cli_generate.cmd_generate` and `cli_speak.cmd_speak`; this module sits below them, beside `cli_common`.
"""

from __future__ import annotations

import argparse
import sys
import time

from clvp_jax import cli_common

__all__ = ["Reporter", "add_arguments", "check", "regenerate"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add --regenerate and --chunk-group to a `generate` or `speak` parser."""
    from clvp_jax.pipeline import CHUNKS_PER_CALL

    p.add_argument(
        "--regenerate",
        metavar="I,J",
        help="chunks to make again although finished (numbered from 0, e.g. 3,7 or 2-4); the others of an "
        "earlier run into the same output are kept when their text, voice, settings and weights are unchanged",
    )
    p.add_argument(
        "--chunk-group",
        type=int,
        default=CHUNKS_PER_CALL,
        metavar="N",
        help=f"chunks generated together (default {CHUNKS_PER_CALL}): memory grows with N, not with the text",
    )


class Reporter:
    """report(index, chunks, status) -> one line per chunk on stderr: 'chunk 3/250 (#2) made in 4.1 s'."""

    def __init__(self, quiet: bool, prefix: str = "") -> None:
        self.quiet, self.prefix, self.kept, self.start = quiet, prefix, 0, time.perf_counter()

    def __call__(self, index: int, chunks: int, status: str) -> None:
        if status == "kept":
            self.kept += 1
        if self.quiet or status == "kept":
            return
        from tqdm import tqdm

        now = time.perf_counter()
        line = f"{cli_common.PROG}: {self.prefix}chunk {index + 1}/{chunks} (#{index}) {status} in {now - self.start:.1f} s"
        tqdm.write(line, file=sys.stderr)  # above speak's progress bars, not inside them
        sys.stderr.flush()
        self.start = now

    def summary(self, chunks: int) -> str:
        return f"{chunks} chunk(s), {self.kept} kept from an earlier run, {chunks - self.kept} made"


def check(args: argparse.Namespace) -> None:
    """Refuse a bad --chunk-group or a malformed --regenerate before any work (its range is checked once the
    chunks are known, `regenerate`)."""
    from clvp_jax.long_text import parse_regenerate

    if args.chunk_group < 1:
        raise cli_common.UsageError(f"--chunk-group must be at least 1, got {args.chunk_group}")
    try:
        parse_regenerate(args.regenerate, 2**31)  # the syntax only: "3,7", "2-4"
    except ValueError as err:
        raise cli_common.UsageError(str(err).split("; chunks are numbered")[0]) from None


def regenerate(args: argparse.Namespace, chunks: int) -> set[int]:
    """The chunk indices of --regenerate, checked against the text's `chunks`."""
    from clvp_jax.long_text import parse_regenerate

    try:
        return parse_regenerate(args.regenerate, chunks)
    except ValueError as err:
        raise cli_common.UsageError(str(err)) from None
