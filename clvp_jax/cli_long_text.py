"""`generate` and `speak` chunk by chunk: long text in bounded memory, resumable like Tortoise's `read.py`.

  clvp-jax generate --text-file book.txt --out book/          book/chunks/0000/... then book/candidates.json, .npz
  clvp-jax speak --text-file book.txt -o book.wav             book.chunks/0000/... then book.wav, book.json
  clvp-jax speak --text-file book.txt -o book.wav --regenerate 3,7     redo chunks 3 and 7, rebuild book.wav

Rerunning into the same output keeps every finished chunk whose key (text, voice, settings, weights, version) is
unchanged, makes the others, and rebuilds the joined outputs (`clvp_jax.long_text`). `|` in the text marks manual
split points. Progress: one line per chunk on standard error (none with --quiet).
`add_arguments(subparsers, cli)` adds the flags to both commands and makes them run here; `cli` is the
`clvp_jax.cli` module, passed in rather than imported (it imports this module), whose text reading, argument
checks, output checks and model loading the commands share.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from types import ModuleType


def add_arguments(sub, cli: ModuleType) -> None:
    """Add --regenerate and --chunk-group to the `generate` and `speak` subparsers and run them from here."""
    from clvp_jax.pipeline import CHUNKS_PER_CALL

    for name, run in (("generate", run_generate), ("speak", run_speak)):
        p = sub.choices[name]
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
        p.set_defaults(func=functools.partial(run, cli=cli))


class _Reporter:
    """report(index, chunks, status) -> one line per chunk on stderr: 'chunk 3/250 made in 4.1 s (1 kept)'."""

    def __init__(self, say, quiet: bool) -> None:
        self.say, self.quiet, self.kept, self.start = say, quiet, 0, time.perf_counter()

    def __call__(self, index: int, chunks: int, status: str) -> None:
        if status == "kept":
            self.kept += 1
        if self.quiet or status == "kept":
            return
        now = time.perf_counter()
        self.say(f"chunk {index + 1}/{chunks} (#{index}) {status} in {now - self.start:.1f} s")
        self.start = now

    def summary(self, chunks: int) -> str:
        return f"{chunks} chunk(s), {self.kept} kept from an earlier run, {chunks - self.kept} made"


def _check(args: argparse.Namespace, usage_error) -> None:
    if args.chunk_group < 1:
        raise usage_error(f"--chunk-group must be at least 1, got {args.chunk_group}")


def _regenerate(args: argparse.Namespace, chunks: int, usage_error) -> set[int]:
    from clvp_jax.long_text import parse_regenerate

    try:
        return parse_regenerate(args.regenerate, chunks)
    except ValueError as err:
        raise usage_error(str(err)) from None


def run_generate(args: argparse.Namespace, *, cli: ModuleType) -> int:
    """`generate`: every chunk's ranked candidates into --out DIR, each chunk's folder as it finishes."""
    from clvp_jax import fs, pipeline
    from clvp_jax.generation.presets import PRESETS
    from clvp_jax.long_text import digest, write_codes

    usage_error, say = cli.UsageError, cli._say
    text = cli._read_text(args)
    cli._check_generation_args(args)
    _check(args, usage_error)
    out: Path = args.out
    # An output of ours is resumed (force: remade); anything else in the way is refused before any work.
    fs.check_target(out, force=out.exists(), protect=cli._protected(args), is_ours=cli._is_results_folder)
    if args.preset not in PRESETS:
        raise usage_error(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
    if args.latents is not None and not args.latents.is_file():
        raise usage_error(f"no latents file at {args.latents}")
    say("loading model and voice")
    model, params = cli._model(args)
    pipeline.require_scoring(params)
    if args.latents is not None:
        import numpy as np

        from clvp_jax.generation.latents import load_conditioning_latents

        ar = np.asarray(load_conditioning_latents(args.latents, model))
        latents = ar.mean(axis=0) if ar.ndim == 2 else ar  # [n, D] per-clip latents average into one voice
    else:
        latents = pipeline.compute_latents(model=model, params=params, voice=cli._voice(args))
    plan = pipeline.plan_ranking(
        text=text,
        model=model,
        params=params,
        latents=latents,
        preset=args.preset,
        candidates=args.candidates,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        dtype=args.dtype,
    )
    again = _regenerate(args, len(plan.chunks), usage_error)
    report = _Reporter(say, args.quiet)
    start = time.perf_counter()
    write_codes(
        plan,
        model=model,
        params=params,
        out=out,
        weights=digest(params),
        regenerate=again,
        force=args.force,
        group_size=args.chunk_group,
        report=report,
    )
    elapsed = time.perf_counter() - start
    _print_codes(out, len(plan.chunks), args.show)
    print(
        f"wrote {out / 'candidates.json'} and {out / 'candidates.npz'}: {report.summary(len(plan.chunks))}, {elapsed:.1f} s"
    )
    return 0


def _print_codes(out: Path, chunks: int, show: int) -> None:
    from clvp_jax.long_text import ChunkStore

    store = ChunkStore(out / "chunks", "candidates.json")
    for i in range(chunks):
        entry = store.recorded(i) or {}
        best = entry.get("best", {})
        codes = best.get("codes", [])
        print(f"chunk {i}: {entry.get('text', '')!r}")
        for rank, cand in enumerate(entry.get("candidates", [])[:show]):
            print(
                f"  {'*' if rank == 0 else ' '} #{rank + 1} candidate {cand['index']:3d}  score {cand['score']:8.4f}  "
                f"{len(cand['codes'])} codes" + ("" if cand["stopped"] else " (no stop token)")
            )
        print(f"    best codes: [{', '.join(map(str, codes[:12]))}{', ...' if len(codes) > 12 else ''}]")


def run_speak(args: argparse.Namespace, *, cli: ModuleType) -> int:
    """`speak`: every chunk's waveforms into OUT.chunks/, each as it finishes, then the joined OUT.wav and OUT.json."""
    from clvp_jax import cli_speak
    from clvp_jax.long_text import digest, speech_paths, write_speech
    from clvp_jax.speech import plan_speech
    from clvp_jax.tts import PACKAGED_MAX_CODES, TextToSpeech
    from clvp_jax.waveform.presets import speech_preset

    usage_error, say = cli.UsageError, cli._say
    text = cli._read_text(args)
    _check(args, usage_error)
    if args.keep < 1:
        raise usage_error(f"-k/--keep must be at least 1, got {args.keep}")
    try:
        preset = speech_preset(
            args.preset, sampler=args.sampler, diffusion_steps=args.diffusion_steps, candidates=args.candidates
        )
    except (ValueError, TypeError) as err:
        raise usage_error(str(err)) from None
    if args.keep > preset.candidates:
        raise usage_error(f"-k/--keep {args.keep} is more than the {preset.candidates} candidates per chunk")
    if args.checkpoint is not None and not args.checkpoint.exists():
        raise usage_error(f"no checkpoint at {args.checkpoint}")
    voice = cli_speak.speak_voice(args.voice, usage_error)
    out: Path = args.out
    if not out.parent.is_dir():
        raise usage_error(f"cannot write {out}: the folder {out.parent} does not exist")
    paths = speech_paths(out, args.keep)
    resuming = (paths["chunks"] / ".clvp-jax-output").is_file()
    taken = [str(p) for name, p in paths.items() if name != "chunks" and p.exists()]
    if paths["chunks"].exists() and not resuming:
        raise usage_error(f"{paths['chunks']} exists and is not an output of clvp-jax; choose another -o")
    if taken and not (resuming or args.force):
        raise usage_error(f"{', '.join(taken)} exist(s); pass --force to replace or choose another -o")

    start = time.perf_counter()
    if args.checkpoint is None:
        say(cli_speak.SPEAK_NOTICE)
    say("loading models and voice")
    tts = TextToSpeech(args.checkpoint, dtype=args.dtype)
    wm = tts.waveform_models(with_cvvp=args.cvvp_amount > 0)  # a codes-only checkpoint fails here, before any work
    max_new_tokens = args.max_new_tokens
    if max_new_tokens is None and tts.random_weights:
        max_new_tokens = PACKAGED_MAX_CODES
    plan = plan_speech(
        text=text,
        model=tts.model,
        params=tts.params,
        waveform_models=wm,
        voice=voice,
        preset=preset,
        k=args.keep,
        cvvp_amount=args.cvvp_amount,
        seed=args.seed,
        max_new_tokens=max_new_tokens,
        dtype=args.dtype,
    )
    again = _regenerate(args, len(plan.chunks), usage_error)
    weights = digest(tts.params, wm.diffusion_variables, wm.vocoder_params, wm.cvvp_params or {})
    report = _Reporter(say, args.quiet)
    comment = cli_speak.RANDOM_LABEL if wm.random_weights else None
    write_speech(
        plan,
        model=tts.model,
        params=tts.params,
        waveform_models=wm,
        out=out,
        weights=weights,
        regenerate=again,
        force=args.force,
        group_size=args.chunk_group,
        comment=comment,
        report=report,
    )
    import soundfile as sf

    seconds = sf.info(str(paths["0"])).duration
    label = " (RANDOM weights: meaningless audio)" if wm.random_weights else ""
    n = len(plan.chunks)
    print(
        f"wrote {out}: {seconds:.2f} s of 24 kHz audio{label}; {report.summary(n)}, in {time.perf_counter() - start:.1f} s"
    )
    print(f"chunks in {paths['chunks']}, settings and scores in {paths['json']}", file=sys.stdout)
    return 0
