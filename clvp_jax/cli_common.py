"""What the `clvp-jax` subcommands share: the one-line error, notes on standard error, reading and checking the
text, the seed and the checkpoint argument. Below `cli`, `cli_generate` and `cli_speak` (imports only go down)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from clvp_jax import cli_options

PROG = "clvp-jax"


class UsageError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(
            f"{where} is not UTF-8 text ({err.reason} at byte {err.start}); give plain UTF-8 text"
        ) from None


def read_text(args: argparse.Namespace) -> str:
    """The text from the arguments, `--text-file` or standard input, checked to hold something to say (before any
    model is loaded: binary data, or text that normalises to nothing, is refused with what was left)."""
    from clvp_jax.pipeline import TEXT_NORMALIZER
    from clvp_jax.text import ClvpTokenizer
    from clvp_jax.text.speakable import require_speakable

    if args.text_file is not None:
        if str(args.text_file) == "-":
            text, where = decode(sys.stdin.buffer.read(), "standard input"), "standard input"
        elif not args.text_file.is_file():
            raise UsageError(f"no text file at {args.text_file}")
        else:
            text, where = decode(args.text_file.read_bytes(), str(args.text_file)), str(args.text_file)
    elif args.text:
        text, where = " ".join(args.text), "the text"
    elif not sys.stdin.isatty():
        text, where = decode(sys.stdin.buffer.read(), "standard input"), "standard input"
    else:
        raise UsageError("give the text as an argument, with --text-file FILE, or on standard input")
    try:
        require_speakable(text, ClvpTokenizer.from_pretrained(normalizer=TEXT_NORMALIZER).normalize, where=where)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return text


def check_seed_arg(args: argparse.Namespace) -> None:
    """Refuse a bad seed before any work (the sampling numbers are `SamplingOverrides`' to check)."""
    from clvp_jax.pipeline import check_seed

    try:
        check_seed(args.seed)
    except ValueError as err:
        raise UsageError(f"--seed: {err}") from None


def say_if(args: argparse.Namespace, level: int, message: str) -> None:
    """A note on standard error when the verbosity (-v/-q) is at least `level` (0: normal)."""
    if cli_options.verbosity(args) >= level:
        say(message)


def protected(args: argparse.Namespace) -> list[Path]:
    """The inputs of a command, which its output may never be, hold or lie in."""
    paths = [getattr(args, k, None) for k in ("checkpoint", "latents", "text_file", "speech_file")]
    paths += list(getattr(args, "voice", None) or [])
    return [Path(p) for p in paths if p is not None and str(p) != "-"]


@contextlib.contextmanager
def loading(args: argparse.Namespace) -> Iterator[None]:
    """Within the block, every checkpoint file or group read prints a line with the time since the block began
    (`clvp_jax.checkpoint.progress`): a real-size load takes tens of seconds and should not look hung. Not with -q."""
    from clvp_jax.checkpoint.progress import reporting

    start = time.perf_counter()
    quiet = int(getattr(args, "verbose", 0) or 0) - int(bool(getattr(args, "quiet", False))) < 0

    def line(message: str) -> None:
        say(f"[{time.perf_counter() - start:6.1f} s] {message}")

    with reporting(None if quiet else line):
        yield


def load_model(args: argparse.Namespace):
    from clvp_jax import pipeline
    from clvp_jax.checkpoint.hub import is_repo_id

    if args.checkpoint is None:
        say(pipeline.DEFAULT_NOTICE)
    elif not Path(args.checkpoint).exists() and not is_repo_id(args.checkpoint):
        raise UsageError(f"no checkpoint at {args.checkpoint}")
    with loading(args):
        return pipeline.load_model(args.checkpoint, dtype=args.dtype)


__all__ = [
    "PROG",
    "UsageError",
    "check_seed_arg",
    "decode",
    "load_model",
    "loading",
    "protected",
    "read_text",
    "say",
    "say_if",
]
