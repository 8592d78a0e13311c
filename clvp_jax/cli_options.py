"""The flags `clvp-jax generate` and `speak` share: Tortoise's sampling knobs and the verbosity.

The numbers are checked by `generation.options.SamplingOverrides` (the range is in its message), before the model
load; `OptionError.name` maps back to the flag here.
"""

from __future__ import annotations

import argparse
import re

from clvp_jax.generation.options import OptionError, SamplingOverrides

FLAGS = {  # SamplingOverrides field -> the flag that sets it
    "num_samples": "--num-samples",
    "keep": "--candidates",
    "temperature": "--temperature",
    "top_p": "--top-p",
    "top_k": "--top-k",
    "repetition_penalty": "--repetition-penalty",
    "length_penalty": "--length-penalty",
    "max_new_tokens": "--max-new-tokens",
}


def add_sampling_arguments(p: argparse.ArgumentParser, *, keep_help: str, max_new_tokens_help: str) -> None:
    """The sampling group; `keep_help` says what the command does with the kept candidates."""
    g = p.add_argument_group("sampling (Tortoise's knobs; unset: the preset's value)")
    g.add_argument(
        "--num-samples",
        type=int,
        metavar="N",
        help="candidates DRAWN per chunk, then ranked by CLVP (Tortoise's num_autoregressive_samples; presets: "
        "ultra_fast 16, fast 96, standard and high_quality 256)",
    )
    g.add_argument(
        "--candidates",
        "-k",
        "--keep",
        dest="keep",
        type=int,
        metavar="K",
        help=f"candidates KEPT per chunk, best first (as Tortoise's --candidates): {keep_help}; at most --num-samples",
    )
    g.add_argument("--temperature", type=float, metavar="T", help="sampling temperature, > 0 (presets: 0.8)")
    g.add_argument(
        "--top-p", type=float, metavar="P", help="nucleus sampling mass, in (0, 1]; 1 turns it off (presets: 0.8)"
    )
    g.add_argument("--top-k", type=int, metavar="K", help="sample among the K most likely codes, >= 1 (presets: off)")
    g.add_argument(
        "--repetition-penalty", type=float, metavar="R", help="penalty on codes already said, > 0 (presets: 2.0)"
    )
    g.add_argument(
        "--length-penalty",
        type=float,
        metavar="L",
        help="accepted for Tortoise command lines and recorded; like Tortoise's, it changes nothing (only beam "
        "search reads it, and Tortoise samples)",
    )
    g.add_argument("--max-new-tokens", type=int, metavar="N", help=max_new_tokens_help)


def sampling_from(args: argparse.Namespace, usage_error) -> SamplingOverrides:
    """The sampling flags as one validated `SamplingOverrides`; `usage_error` names the flag and its range."""
    try:
        return SamplingOverrides(**{name: getattr(args, name) for name in FLAGS})
    except OptionError as err:
        raise usage_error(flag_message(err)) from None


def flag_message(err: OptionError) -> str:
    """An `OptionError`'s message in the flags' words (`--top-p must be a finite number in (0, 1], got 1.5`)."""
    text = str(err).replace(" or None", "")
    for name in sorted(FLAGS, key=len, reverse=True):
        text = re.sub(rf"\b{name}\b", FLAGS[name], text)
    return text


def add_verbosity(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="say more (where each voice's latents came from, timings)"
    )
    p.add_argument(
        "-q", "--quiet", action="count", default=0, help="no progress bars or notes (errors and warnings still)"
    )


def verbosity(args: argparse.Namespace) -> int:
    """-1 and below quiet, 0 normal, 1 and up verbose."""
    return int(args.verbose) - int(args.quiet)


__all__ = ["FLAGS", "add_sampling_arguments", "add_verbosity", "flag_message", "sampling_from", "verbosity"]
