"""`clvp-jax`: the command line, thin over `clvp_jax.pipeline` (and `clvp_jax.checkpoint.convert_cli` for
`convert`). `generate` lives in `cli_generate`, `speak` in `cli_speak`; the flags they share in `cli_voice` (voices)
and `cli_options` (Tortoise's sampling knobs, -v/-q); what they write besides the data in `cli_output`. Both run
long text chunk by chunk, resumably (`cli_long_text`: --regenerate, --chunk-group; `clvp_jax.long_text`).

  clvp-jax generate "Some text." [--voice V | --latents F.npy] [--voices-dir DIR] [--checkpoint DIR] [--preset P]
                    [--num-samples N] [--candidates K] [--temperature T] ... [--regenerate I,J] [-o OUT_DIR]
  clvp-jax speak "Some text." [--voice V] [--voices-dir DIR] [--checkpoint DIR] [--preset P] ... -o out.wav
  clvp-jax generate|speak --list-voices [--voices-dir DIR]
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
from collections.abc import Sequence
from pathlib import Path

from clvp_jax import cli_options
from clvp_jax.cli_common import PROG, UsageError
from clvp_jax.cli_common import load_model as _model
from clvp_jax.cli_common import protected as _protected
from clvp_jax.cli_common import read_text as _read_text
from clvp_jax.cli_common import say as _say

__all__ = ["PROG", "UsageError", "build_parser", "entry", "main"]


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that every `finally`
    and temporary-output cleanup runs before the process ends with status 128 + signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame) -> None:
    raise Terminated(signum)


def _voice(args: argparse.Namespace):
    """`latents --voice`: one voice of clips (a name, a folder, files, `a&b`), as its clip paths; None: the default."""
    from clvp_jax import voices

    if not args.voice:
        return None
    try:
        specs = voices.resolve_voices(args.voice)
    except voices.VoiceError as err:
        raise UsageError(str(err)) from None
    if len(specs) != 1 or not specs[0].clips:
        raise UsageError(
            f"latents makes one voice's latents from its clips; --voice {' '.join(map(str, args.voice))} names "
            + (f"{len(specs)} voices" if len(specs) != 1 else "no clips (random, or a latents file)")
        )
    return [str(c) for c in specs[0].clips]


def cmd_generate(args: argparse.Namespace) -> int:
    from clvp_jax.cli_generate import cmd_generate as run

    return run(args)


def cmd_speak(args: argparse.Namespace) -> int:
    from clvp_jax.cli_speak import cmd_speak as run

    return run(args)


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
    voice = _voice(args)  # checked before the model load
    model, params = _model(args)
    latents = pipeline.compute_latents(model=model, params=params, voice=voice)
    from clvp_jax.cli_speak import voice_diffusion_latent

    diffusion = voice_diffusion_latent(args.checkpoint, voice, model)  # None: no diffusion decoder
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
    from clvp_jax import cli_long_text, cli_voice
    from clvp_jax.checkpoint.convert_cli import add_arguments as add_convert_arguments
    from clvp_jax.version import __version__

    parser = argparse.ArgumentParser(prog=PROG, description="CLVP (Tortoise-TTS) in JAX: generate, rank, convert.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser(
        "generate",
        help="text + voice -> CLVP-ranked speech-token candidates",
        description="Text + voice -> CLVP-ranked speech-token candidates, written to OUT/candidates.json and "
        "OUT/candidates.npz (with --voice a,b: OUT/<voice>/ for each voice).",
    )
    g.add_argument("text", nargs="*", help="the text (or use --text-file, or standard input)")
    g.add_argument("--text-file", type=Path, help="read the text from FILE ('-' for standard input)")
    _common(g, voice=False)
    cli_voice.add_arguments(g, latents_ok="a latents file (.npy / .npz from `clvp-jax latents`, Tortoise .pth)")
    g.add_argument("--latents", type=Path, help="saved conditioning latents (.npy) instead of --voice")
    g.add_argument(
        "--preset", default="ultra_fast", help="ultra_fast (16 candidates), fast (96), standard, high_quality"
    )
    cli_options.add_sampling_arguments(
        g,
        keep_help="listed in candidates.json (default: every candidate drawn)",
        max_new_tokens_help="speech codes per candidate (default 500)",
    )
    cli_long_text.add_arguments(g)
    g.add_argument("--seed", type=int, default=0, help="seed of every random draw, in [0, 2^32) (default 0)")
    g.add_argument(
        "-o", "--output", "--out", dest="out", type=Path, default=Path("clvp-jax-out"), help="results folder"
    )
    g.add_argument("--force", action="store_true", help="replace existing results in --output")
    g.add_argument("--show", type=int, default=3, help="candidates to print per chunk")
    cli_options.add_verbosity(g)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the outputs' provenance
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
