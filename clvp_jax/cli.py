"""`clvp-jax`: the command line, thin over `clvp_jax.pipeline` (and `clvp_jax.checkpoint.convert_cli` for
`convert`).

  clvp-jax generate "Some text." [--voice CLIP_OR_FOLDER | --latents F.npy] [--checkpoint DIR] [--preset P]
  clvp-jax speak "Some text." [--voice CLIPS | latents.npz] [--checkpoint DIR] [--preset P] -o out.wav
  clvp-jax latents --voice CLIPS... --out voice.npy
  clvp-jax score "Some text." --speech-ids 12,55,903 [--speech-ids ...] | --speech-file codes.npy
  clvp-jax convert SRC DST [--format clvp-jax|hf] [--dtype ...] [--dry-run] [--force]
  clvp-jax info CHECKPOINT

Errors print one line and exit with status 2 (never a traceback); `CLVP_JAX_DEBUG=1` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from clvp_jax import fs
from clvp_jax.cli_long_text import add_arguments as add_long_text_arguments

PROG = "clvp-jax"


class UsageError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that every `finally`
    and temporary-output cleanup runs before the process ends with status 128 + signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame) -> None:
    raise Terminated(signum)


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(
            f"{where} is not UTF-8 text ({err.reason} at byte {err.start}); give plain UTF-8 text"
        ) from None


def _read_text(args: argparse.Namespace) -> str:
    """The text from the arguments, `--text-file` or standard input, checked to hold something to say (before any
    model is loaded: binary data, or text that normalises to nothing, is refused with what was left)."""
    from clvp_jax.pipeline import TEXT_NORMALIZER
    from clvp_jax.text import ClvpTokenizer
    from clvp_jax.text.speakable import require_speakable

    if args.text_file is not None:
        if str(args.text_file) == "-":
            text, where = _decode(sys.stdin.buffer.read(), "standard input"), "standard input"
        elif not args.text_file.is_file():
            raise UsageError(f"no text file at {args.text_file}")
        else:
            text, where = _decode(args.text_file.read_bytes(), str(args.text_file)), str(args.text_file)
    elif args.text:
        text, where = " ".join(args.text), "the text"
    elif not sys.stdin.isatty():
        text, where = _decode(sys.stdin.buffer.read(), "standard input"), "standard input"
    else:
        raise UsageError("give the text as an argument, with --text-file FILE, or on standard input")
    try:
        require_speakable(text, ClvpTokenizer.from_pretrained(normalizer=TEXT_NORMALIZER).normalize, where=where)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return text


def _check_generation_args(args: argparse.Namespace) -> None:
    """Refuse out-of-range numbers before any work (0 is an error, never "use the preset's value")."""
    from clvp_jax.pipeline import check_seed

    for flag, value in (("--candidates", args.candidates), ("--max-new-tokens", args.max_new_tokens)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    try:
        check_seed(args.seed)
    except ValueError as err:
        raise UsageError(f"--seed: {err}") from None


def _is_results_folder(folder: Path) -> bool:
    """A previous `generate --out` folder (from before output folders carried `fs.OUTPUT_MARKER`)."""
    names = {p.name for p in folder.iterdir()}
    return bool(names) and names <= {"candidates.json", "candidates.npz", fs.OUTPUT_MARKER}


def _protected(args: argparse.Namespace) -> list[Path]:
    """The inputs of a command, which its output may never be, hold or lie in."""
    paths = [getattr(args, k, None) for k in ("checkpoint", "latents", "text_file", "speech_file")]
    paths += list(getattr(args, "voice", None) or [])
    return [Path(p) for p in paths if p is not None and str(p) != "-"]


def _voice(args: argparse.Namespace):
    if not args.voice:
        return None
    missing = [v for v in args.voice if not Path(v).exists()]
    if missing:
        raise UsageError(f"voice not found: {', '.join(map(str, missing))}")
    return args.voice[0] if len(args.voice) == 1 else list(args.voice)


def _model(args: argparse.Namespace):
    from clvp_jax import pipeline
    from clvp_jax.checkpoint.hub import is_repo_id

    if args.checkpoint is None:
        _say(pipeline.DEFAULT_NOTICE)
    elif not Path(args.checkpoint).exists() and not is_repo_id(args.checkpoint):
        raise UsageError(f"no checkpoint at {args.checkpoint}")
    return pipeline.load_model(args.checkpoint, dtype=args.dtype)


def _write_outputs(out_dir: Path, result, force: bool, protect: list[Path]) -> tuple[Path, Path]:
    """Write candidates.json and candidates.npz as one folder that appears whole (`fs.output_folder`): a failure,
    an interrupt or a concurrent run never leaves a pair from two runs or half a pair."""
    import numpy as np

    text = json.dumps(result.to_json(), indent=1, allow_nan=False) + "\n"  # NaN is not JSON: refused upstream
    with fs.output_folder(out_dir, force=force, protect=protect, is_ours=_is_results_folder) as tmp:
        fs.write_text(tmp / "candidates.json", text)
        with fs.atomic_file(tmp / "candidates.npz", "wb") as f:
            np.savez(f, **result.arrays)
    return out_dir / "candidates.json", out_dir / "candidates.npz"


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from clvp_jax import pipeline
    from clvp_jax.generation.presets import PRESETS

    text = _read_text(args)
    _check_generation_args(args)
    # Every refusal the output can meet comes before the work: a file, a read-only folder, an input, not ours.
    fs.check_target(args.out, force=args.force, protect=_protected(args), is_ours=_is_results_folder)
    if args.preset not in PRESETS:
        raise UsageError(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
    if args.latents is not None and not args.latents.is_file():
        raise UsageError(f"no latents file at {args.latents}")
    quiet = args.quiet
    _say("loading model and voice")
    model, params = _model(args)
    pipeline.require_scoring(params)  # ranking needs the CLVP towers: say so before generating
    if args.latents is not None:
        import numpy as np

        from clvp_jax.generation.latents import load_conditioning_latents

        # Read by content (a .npy or a version-2 archive, whatever the name `clvp-jax latents --out` was given).
        ar = np.asarray(load_conditioning_latents(args.latents, model))
        latents = ar.mean(axis=0) if ar.ndim == 2 else ar  # [n, D] per-clip latents average into one voice
    else:
        latents = pipeline.compute_latents(model=model, params=params, voice=_voice(args))
    start = time.perf_counter()
    with tqdm(desc="candidates (first call compiles)", unit="cand", file=sys.stderr, disable=quiet) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = pipeline.rank_speech(
            text=text,
            model=model,
            params=params,
            latents=latents,
            preset=args.preset,
            candidates=args.candidates,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            dtype=args.dtype,
            progress=progress,
        )
    elapsed = time.perf_counter() - start
    json_path, npz_path = _write_outputs(args.out, result, args.force, _protected(args))
    for i, chunk in enumerate(result.chunks):
        best = chunk.best
        head = ", ".join(map(str, best.codes[:12])) + (", ..." if len(best.codes) > 12 else "")
        print(f"chunk {i}: {chunk.text!r}")
        for rank, cand in enumerate(chunk.candidates[: args.show]):
            mark = "*" if rank == 0 else " "
            print(
                f"  {mark} #{rank + 1} candidate {cand.index:3d}  score {cand.score:8.4f}  {len(cand.codes)} codes"
                + ("" if cand.stopped else " (no stop token)")
            )
        print(f"    best codes: [{head}]")
    print(f"wrote {json_path} and {npz_path} ({elapsed:.1f} s generating and ranking)")
    return 0


def cmd_speak(args: argparse.Namespace) -> int:
    from clvp_jax.cli_speak import cmd_speak as run

    return run(args, usage_error=UsageError, say=_say)


def cmd_latents(args: argparse.Namespace) -> int:
    from clvp_jax import pipeline
    from clvp_jax.generation.latents import save_conditioning_latents

    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name for the latents")
    if out.exists() and not args.force:
        raise UsageError(f"{out} exists; pass --force to replace it")
    if any(os.path.realpath(out) == os.path.realpath(p) for p in _protected(args)):
        raise UsageError(f"--out {out} is one of the inputs; choose another file name")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write in {parent} (permission denied); choose another --out")
    model, params = _model(args)
    latents = pipeline.compute_latents(model=model, params=params, voice=_voice(args))
    from clvp_jax.cli_speak import voice_diffusion_latent

    diffusion = voice_diffusion_latent(args.checkpoint, _voice(args), model)  # None: no diffusion decoder
    save_conditioning_latents(args.out, latents, diffusion)
    extra = "" if diffusion is None else f" and diffusion latent of width {diffusion.shape[-1]} (for speak)"
    print(f"wrote {args.out}: conditioning latent of width {latents.shape[-1]}{extra}")
    return 0


def _speech_sequences(args: argparse.Namespace) -> list[list[int]]:
    seqs: list[list[int]] = []
    for spec in args.speech_ids or []:
        try:
            seqs.append([int(x) for x in spec.replace(" ", "").split(",") if x])
        except ValueError:
            raise UsageError(f"--speech-ids takes comma-separated integers, got {spec!r}") from None
    if args.speech_file is not None:
        import numpy as np

        path = args.speech_file
        if not path.is_file():
            raise UsageError(f"no speech-id file at {path}")
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict) and "chunks" in data:  # a `generate` result: score every best candidate
                data = [c["best"]["codes"] for c in data["chunks"]]
            if not (isinstance(data, list) and all(isinstance(s, list) for s in data)):
                raise UsageError(f"{path} must hold a JSON list of code lists (or a `generate` candidates.json)")
            for s in data:
                if not all(isinstance(x, int) and not isinstance(x, bool) for x in s):
                    raise UsageError(f"{path}: speech codes must be integers, got {s[:8]}")
                seqs.append(list(s))
        else:
            try:
                arr = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as err:
                raise UsageError(f"{path} is not a .npy array of speech codes ({err})") from None
            if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iu" or arr.ndim not in (1, 2):
                what = f"dtype {arr.dtype}, shape {arr.shape}" if isinstance(arr, np.ndarray) else "an .npz archive"
                raise UsageError(f"{path} must hold integer speech codes [sequences, codes] or [codes], got {what}")
            seqs += [list(map(int, row)) for row in np.atleast_2d(arr)]
    if not seqs:
        raise UsageError("give speech codes with --speech-ids 1,2,3 or --speech-file codes.npy|.json")
    return seqs


def cmd_score(args: argparse.Namespace) -> int:
    from clvp_jax import pipeline

    text = _read_text(args)
    seqs = _speech_sequences(args)
    model, params = _model(args)
    pipeline.require_scoring(params)
    dec = model.config.decoder_config
    for j, seq in enumerate(seqs):
        bad = [x for x in seq if not (0 <= x < dec.bos_token_id or x == dec.eos_token_id)]
        if bad:
            raise UsageError(
                f"speech sequence {j} holds {bad[:5]}: codes are 0..{dec.bos_token_id - 1} (or the stop token "
                f"{dec.eos_token_id}); the start token {dec.bos_token_id} is not a code"
            )
        if not seq:
            raise UsageError(f"speech sequence {j} is empty; give at least one code")
    logits = pipeline.score(text=text, speech_ids=seqs, model=model, params=params)
    for j, value in enumerate(logits[0]):
        print(f"sequence {j}: {len(seqs[j])} codes  score {float(value):.4f}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from clvp_jax import pipeline
    from clvp_jax.checkpoint.hub import is_repo_id

    if not Path(args.checkpoint).exists() and not is_repo_id(args.checkpoint):
        raise UsageError(f"no checkpoint at {args.checkpoint}")
    print(json.dumps(pipeline.describe_checkpoint(args.checkpoint), indent=1, default=str))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from clvp_jax.checkpoint.convert_cli import run

    return run(args)


def _common(p: argparse.ArgumentParser, voice: bool = True) -> None:
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="model folder (HF, clvp-jax or original Tortoise) or a Hub repo id; default: packaged",
    )
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    if voice:
        p.add_argument("--voice", nargs="+", type=Path, help="voice clip(s) or a folder of clips (default: bundled LJ)")


def build_parser() -> argparse.ArgumentParser:
    from clvp_jax.checkpoint.convert_cli import add_arguments as add_convert_arguments

    parser = argparse.ArgumentParser(prog=PROG, description="CLVP (Tortoise-TTS) in JAX: generate, rank, convert.")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="text + voice -> CLVP-ranked speech-token candidates")
    g.add_argument("text", nargs="*", help="the text (or use --text-file, or standard input)")
    g.add_argument("--text-file", type=Path, help="read the text from FILE ('-' for standard input)")
    _common(g)
    g.add_argument("--latents", type=Path, help="saved conditioning latents (.npy) instead of --voice")
    g.add_argument(
        "--preset", default="ultra_fast", help="ultra_fast (16 candidates), fast (96), standard, high_quality"
    )
    g.add_argument("--candidates", type=int, help="candidates per chunk (overrides the preset)")
    g.add_argument("--max-new-tokens", type=int, help="speech tokens per candidate (default 500)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", type=Path, default=Path("clvp-jax-out"), help="folder for candidates.json/.npz")
    g.add_argument("--force", action="store_true", help="replace existing results in --out")
    g.add_argument("--show", type=int, default=3, help="candidates to list per chunk")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_generate, compiles=True)

    from clvp_jax.cli_speak import add_arguments as add_speak_arguments

    sp = sub.add_parser("speak", help="text + voice -> 24 kHz WAV (AR candidates, diffusion, vocoder)")
    add_speak_arguments(sp)
    sp.set_defaults(func=cmd_speak, compiles=True)

    lat = sub.add_parser("latents", help="voice clips -> a saved conditioning latent (.npy)")
    _common(lat)
    lat.add_argument("--out", type=Path, required=True, help="output .npy file")
    lat.add_argument("--force", action="store_true")
    lat.set_defaults(func=cmd_latents, compiles=True)

    s = sub.add_parser("score", help="CLVP similarity of a text and speech-code sequences")
    s.add_argument("text", nargs="*")
    s.add_argument("--text-file", type=Path)
    s.add_argument("--speech-ids", action="append", help="comma-separated codes (repeatable)")
    s.add_argument("--speech-file", type=Path, help=".npy [n, S] array, or JSON list of lists / generate result")
    _common(s, voice=False)
    s.set_defaults(func=cmd_score, compiles=True)

    c = sub.add_parser("convert", help="convert checkpoints (HF, original Tortoise) to clvp-jax or HF format")
    add_convert_arguments(c)
    c.set_defaults(func=cmd_convert, compiles=False)  # numpy work; its two tiny jits (~30 ms) are not worth caching

    i = sub.add_parser("info", help="what a checkpoint holds")
    i.add_argument("checkpoint", type=Path)
    i.set_defaults(func=cmd_info, compiles=True)
    add_long_text_arguments(sub, sys.modules[__name__])  # generate/speak: chunk by chunk, resumable (cli_long_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "voice", None) and getattr(args, "latents", None):
        parser.error("give --voice or --latents, not both")
    try:
        if args.compiles:
            from clvp_jax.generation.compiling import enable_compilation_cache

            # generate() never touches jax.config; the command opts in: model init, latents, generation and
            # scoring compile once per machine.
            try:
                cache = enable_compilation_cache()
                if not os.access(cache, os.W_OK | os.X_OK):
                    raise PermissionError(f"{cache} is not writable")
            except OSError as err:  # a read-only HOME or an unusable cache folder: slower, never a failure
                import jax

                jax.config.update("jax_compilation_cache_dir", None)
                _say(f"warning: compiled programs will not be cached ({err}); set CLVP_JAX_CACHE to a writable folder")
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except Terminated as sig:
        _say(f"terminated by signal {sig.signum}")
        return 128 + sig.signum
    except Exception as err:  # noqa: BLE001 - the CLI's contract: one line, status 2, no traceback
        if os.environ.get("CLVP_JAX_DEBUG"):
            raise
        message = "; ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
        _say(f"error: {message[:800]}")
        return 2


def entry() -> None:
    """The installed `clvp-jax` command: `main` with SIGTERM/SIGHUP handled like Ctrl-C.

    After an interrupt the process ends at once with `os._exit` (cleanup has run by then): a normal interpreter
    shutdown would tear down XLA while its compiler or compute threads still run, which crashed with a
    segmentation fault or `FATAL: exception not rethrown` in about half the tries.
    """
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_terminated)
    code = main()
    if code >= 128:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
