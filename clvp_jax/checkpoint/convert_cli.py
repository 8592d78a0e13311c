"""`clvp-jax-convert SRC DST`: convert a checkpoint to a clvp-jax checkpoint or an HF-format folder.

SRC is auto-detected: an HF folder (safetensors, sharded safetensors or pytorch_model.bin), a clvp-jax
checkpoint, or original Tortoise files (a folder with autoregressive.pth and/or clvp2.pth, optionally
original_config.json, or one .pth file); or a Hugging Face Hub repo id (`susnato/clvp_dev`, `Manmay/tortoise-tts`,
`--revision`), fetched into the Hub cache (`clvp_jax.checkpoint.hub`; a path that exists wins). `--dry-run` reads only names, shapes and dtypes and prints the strict
report (missing / unexpected / mis-shaped / mis-typed keys); it exits 0 when the conversion would succeed, 1 otherwise.
Errors print one line and exit with status 2. The output appears only when complete (temporary folder, then
rename; an interrupt removes it) and an existing output is replaced only with `--force`, and only when it is a
previous output of clvp-jax that neither is, holds nor lies inside an input (paths are resolved first). A clvp-jax
source's parameter files are checked against the sha256s of its manifest unless `--no-verify`.

The `clvp-jax convert` subcommand reuses `add_arguments(parser)` and `run(args)`; the repository's
`convert/convert_checkpoint.py` is a thin script over `main`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from clvp_jax import fs
from clvp_jax.checkpoint import audio_models
from clvp_jax.checkpoint.dtypes import DTYPES
from clvp_jax.checkpoint.errors import CheckpointError, WeightsMismatchError
from clvp_jax.checkpoint.format import detect_format, hf_stored_dtype
from clvp_jax.checkpoint.hashing import NO_VERIFY_ENV
from clvp_jax.checkpoint.hub import resolve_checkpoint
from clvp_jax.checkpoint.load import load_checkpoint, load_params
from clvp_jax.checkpoint.orbax_io import describe_os_error
from clvp_jax.checkpoint.readers import open_hf_state_dict
from clvp_jax.checkpoint.rules import ALL_PARTS, check_state_dict
from clvp_jax.checkpoint.save import export_hf, is_our_output, save_checkpoint
from clvp_jax.checkpoint.tortoise import AR_FILE, CLVP_FILE, load_original
from clvp_jax.config import ClvpConfig, ConfigError

PROG = "clvp-jax-convert"
_ORIGINAL_FLAGS = ("clvp", "original_config", "heads", "start_text_token", "start_mel_token", "stop_mel_token")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the converter's arguments to `parser` (used by this script and the `clvp-jax convert` subcommand)."""
    parser.add_argument(
        "source",
        type=Path,
        help="checkpoint folder (HF, clvp-jax or original Tortoise), a .pth, or a Hub repo id (Manmay/tortoise-tts)",
    )
    parser.add_argument("--revision", help="branch, tag or commit of a Hub repo id (default: main)")
    parser.add_argument("output", type=Path, nargs="?", help="output folder (not needed with --dry-run)")
    parser.add_argument("--format", choices=("clvp-jax", "hf"), default="clvp-jax", help="output format")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="parameter dtype (default: as stored)")
    parser.add_argument("--dry-run", action="store_true", help="check names and shapes only and print the report")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines (errors still print)")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing output folder (only a previous clvp-jax output)"
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help=f"skip checking a clvp-jax source's parameter files against its manifest's sha256s ({NO_VERIFY_ENV}=1)",
    )
    orig = parser.add_argument_group("original Tortoise checkpoints (values not recoverable from the weights)")
    orig.add_argument("--clvp", type=Path, help="a clvp2.pth to pair with a (fine-tuned) autoregressive.pth")
    orig.add_argument(
        "--original-config", type=Path, help="constructor kwargs JSON (default: SRC/original_config.json)"
    )
    orig.add_argument(
        "--heads", type=int, help="autoregressive attention heads (default: original_config.json, else 16)"
    )
    orig.add_argument("--start-text-token", type=int, help="text start id (default: text table rows - 1, i.e. 255)")
    orig.add_argument("--start-mel-token", type=int, help="mel start id (default: mel table rows - 2, i.e. 8192)")
    orig.add_argument("--stop-mel-token", type=int, help="mel stop id (default: mel table rows - 1, i.e. 8193)")


_QUIET = threading.local()  # `-q`: progress lines off (errors still print)


def _log(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _progress(message: str) -> None:
    """A progress line (per file read, per stage written), unless `-q`."""
    if not getattr(_QUIET, "on", False):
        _log(message)


def _one_line(err: BaseException) -> str:
    text = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
    if isinstance(err, WeightsMismatchError):
        text = (text[:600] + " ...") if len(text) > 600 else text
        text += " (run with --dry-run for the full report)"
    return text or type(err).__name__


def _os_line(err: OSError) -> str:
    """An OSError in one line: ours carry their message; the system's get the file name and the cause."""
    if isinstance(err, fs.OutputError) or not err.strerror:
        return _one_line(err)
    name = f"{err.filename}: " if err.filename else ""
    return f"{name}{describe_os_error(err)}"


def _summary(config: ClvpConfig) -> str:
    d, t, s = config.decoder_config, config.text_config, config.speech_config
    return (
        f"decoder {d.num_hidden_layers}x{d.hidden_size} ({d.num_attention_heads} heads, vocab {d.vocab_size}, "
        f"{d.num_mel_attn_blocks} mel blocks); text tower {t.num_hidden_layers}x{t.hidden_size} "
        f"({t.num_attention_heads} heads, vocab {t.vocab_size}); speech tower {s.num_hidden_layers}x{s.hidden_size} "
        f"({s.num_attention_heads} heads, vocab {s.vocab_size}); projection {t.projection_dim}"
    )


def dry_run(source: Path, options: dict, dtype: str | None = None, verify: bool | None = None) -> int:
    """Print the strict conversion report for `source` without reading tensor data. Returns 0 if clean, else 1.

    `dtype` (a cast the conversion would apply) lets floating tensors of another dtype pass the check.
    """
    fmt = detect_format(source)
    print(f"source: {source} ({fmt})")
    ignored: Sequence[str] = ()
    unexpected_original: Sequence[str] = ()
    stored_dtype = "float32"
    if fmt == "clvp-jax":
        loaded = load_checkpoint(source, verify=verify)  # verifies manifest, checksums, tree and dtype
        print(f"config: {_summary(loaded.config)}\nparts: {', '.join(loaded.parts)}")
        print(f"audio models: {', '.join(audio_models.available(source)) or 'none (makes codes, not audio)'}")
        print("OK: a valid clvp-jax checkpoint")
        return 0
    if fmt == "hf":
        config, state, parts = ClvpConfig.from_pretrained(source), open_hf_state_dict(source), ALL_PARTS
        stored_dtype = hf_stored_dtype(source)
    else:
        orig = load_original(source, strict=False, **options)
        config, state, parts = orig.config, orig.state_dict, orig.parts
        ignored, unexpected_original = orig.ignored, orig.unexpected
        print(f"files: {', '.join(str(p) for p in orig.sources)}")
        audio = [audio_models.AUDIO_MODELS[n].file for n in audio_models.available(source)] if source.is_dir() else []
        print(f"audio models (read and checked by the conversion itself): {', '.join(audio) or 'none'}")
    print(f"config: {_summary(config)}\nparts: {', '.join(parts)}")
    if ignored:
        print(f"ignored by name ({len(ignored)}): {', '.join(ignored)}")
    problems = 0
    if unexpected_original:
        problems += len(unexpected_original)
        print(f"unexpected original keys ({len(unexpected_original)}):", *unexpected_original, sep="\n  ")
    try:
        check_state_dict(state, config, dtype=dtype, parts=parts, stored_dtype=stored_dtype)
    except WeightsMismatchError as err:
        for title, items in (("missing", err.missing), ("unexpected", err.unexpected)):
            if items:
                print(f"{title} ({len(items)}):", *items, sep="\n  ")
        if err.mismatched:
            print(f"mis-shaped ({len(err.mismatched)}):")
            for key, got, want in err.mismatched:
                print(f"  {key}: checkpoint {got}, config expects {want}")
        if err.mistyped:
            print(f"mis-typed ({len(err.mistyped)}; --dtype casts floating tensors):")
            for key, got, want in err.mistyped:
                print(f"  {key}: checkpoint {got}, expected {want}")
        problems += len(err.missing) + len(err.unexpected) + len(err.mismatched) + len(err.mistyped)
    print(
        "OK: every key consumed or ignored by name, every parameter filled"
        if not problems
        else f"{problems} problem(s)"
    )
    return 1 if problems else 0


def _inputs(source: Path, options: dict) -> list[Path]:
    """Every path the conversion reads: the output may never be, contain or lie inside one of them."""
    return [source, *(Path(options[k]) for k in ("clvp", "original_config") if options.get(k) is not None)]


def convert(
    source: Path,
    output: Path,
    *,
    fmt: str,
    dtype: str | None,
    force: bool,
    options: dict,
    verify: bool | None = None,
) -> Path:
    """Convert `source` (any readable format) into `output` ('clvp-jax' or 'hf'). Returns the output path.

    The output is checked before anything is read (`fs.check_target`): it must not be, hold or lie inside an
    input, and with `force` it may only replace a previous output of ours.
    """
    started = time.perf_counter()
    protect = _inputs(source, options)
    fs.check_target(output, force=force, protect=protect, is_ours=is_our_output)
    source_format = detect_format(source)
    folder = source if source.is_dir() else None
    if source_format == "tortoise":
        names = [f for f in (AR_FILE, CLVP_FILE) if folder is None or (folder / f).is_file()]
        sizes = ", ".join(f"{n} {(folder / n if folder else source).stat().st_size / 1e6:.1f} MB" for n in names)
        _progress(f"reading {source} (tortoise: {sizes if folder else source.name})")
    else:
        _progress(f"reading {source} ({source_format})")
    loaded = load_params(source, dtype=dtype, verify=verify, **options)
    read_in = time.perf_counter() - started
    audio = {}
    if folder is not None and source_format in ("tortoise", "clvp-jax"):
        if fmt == "hf":
            if audio_models.available(folder):
                _progress("the HF format holds the AR + CLVP model only: the audio models are not exported")
        else:
            audio = audio_models.convert_folder(folder, log=_progress, verify=verify)
            absent = [m.file for n, m in audio_models.AUDIO_MODELS.items() if n not in audio]
            if absent and source_format == "tortoise":
                _progress(f"not in {folder}, so not converted: {', '.join(absent)}")
    _progress(f"writing {output} ({fmt}, parts: {', '.join([*loaded.parts, *audio])}; read in {read_in:.1f} s)")
    if fmt == "hf":
        export_hf(output, loaded.config, loaded.params, force=force, protect=protect)
    else:
        save_checkpoint(
            output,
            loaded.config,
            loaded.params,
            sources=[p for p in loaded.sources if p.is_file()],
            dtype=dtype,
            force=force,
            source_format=loaded.format,
            protect=protect,
            audio=audio,
        )
    _progress(f"done in {time.perf_counter() - started:.1f} s")
    return output


def run(args: argparse.Namespace) -> int:
    """Run a parsed command line. Returns the exit status; errors print one line (status 2), never a traceback."""
    try:
        options = {k: getattr(args, k) for k in _ORIGINAL_FLAGS if getattr(args, k, None) is not None}
        _QUIET.on = bool(getattr(args, "quiet", False))
        # A Hub repo: the files of codes are needed; every audio model the repo has comes too (one checkpoint).
        source = resolve_checkpoint(
            args.source, revision=getattr(args, "revision", None), optional=("audio", "cvvp", "random_voice", "hifigan")
        )
        verify = False if getattr(args, "no_verify", False) else None
        if args.dry_run:
            return dry_run(source, options, getattr(args, "dtype", None), verify)
        if args.output is None:
            raise CheckpointError("an output folder is needed (or pass --dry-run)")
        convert(
            source, args.output, fmt=args.format, dtype=args.dtype, force=args.force, options=options, verify=verify
        )
        return 0
    except KeyboardInterrupt:
        _log("interrupted; no output was written (the partial output was removed)")
        return 130
    except OSError as err:
        _log(f"error: {_os_line(err)}")
        return 2
    except (CheckpointError, WeightsMismatchError, ConfigError, ImportError) as err:  # ImportError: the [torch] extra
        _log(f"error: {_one_line(err)}")
        return 2
    except Exception as err:  # never a traceback on the command line
        _log(f"error: unexpected {type(err).__name__}: {_one_line(err)}")
        return 2


class _Signalled(BaseException):
    """SIGTERM or SIGHUP raised in the main thread (like Ctrl-C's KeyboardInterrupt), so the output's cleanup runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_signalled(signum: int, frame) -> None:
    raise _Signalled(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """The `clvp-jax-convert` console script. Returns the exit status (0 done, 1 dry-run problems, 2 errors,
    130 / 128 + signal when interrupted; the partial output is removed first)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()  # handlers can only be set there
    signals = (signal.SIGTERM, signal.SIGHUP) if main_thread else ()
    previous = {signum: signal.signal(signum, _raise_signalled) for signum in signals}
    try:
        return run(args)
    except _Signalled as sig:
        _log(f"terminated by signal {sig.signum}; no output was written (the partial output was removed)")
        return 128 + sig.signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _script() -> None:
    """The installed entry point: `main`, then an immediate exit after an interrupt (see `clvp_jax.cli.entry`)."""
    code = main()
    if code >= 128:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _script()
