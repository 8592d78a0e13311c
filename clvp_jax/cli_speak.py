"""`clvp-jax speak`: text + voice -> 24 kHz WAV files (thin over `clvp_jax.speech.synthesize`).

  clvp-jax speak "Some text." [--voice CLIPS.. | --voice latents.npz] [--checkpoint DIR] [--preset P] -o out.wav
                 [--text-file F] [-k N] [--candidates N] [--sampler ddpm|ddim|dpm++2m] [--diffusion-steps K]
                 [--cvvp-amount A] [--seed S] [--force] [--quiet]

Files written (each atomically, 32-bit float WAV, mono, 24 kHz), for `-o out.wav`:
  out.wav                   the best candidate of every chunk, joined
  out.rank{r}.wav           with -k > 1: the rank-r candidates joined (r = 1 .. k-1)
  out.chunk{i}.wav          with more than one chunk: chunk i's best (and out.chunk{i}.rank{r}.wav with -k)
  out.json                  settings, per chunk the rendered candidates and every candidate ranked
With the packaged default (no --checkpoint) the weights are random: the audio is meaningless noise, and says so in
its WAV comment and in the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

RANDOM_LABEL = "clvp-jax packaged default: RANDOM weights, meaningless audio (not speech)"
SPEAK_NOTICE = (
    "using the packaged default models: RANDOM weights (real vocabulary and voice clip), so the WAV is meaningless "
    "noise, not speech. Put Tortoise's autoregressive.pth, clvp2.pth, diffusion_decoder.pth and vocoder.pth in a "
    "folder (from the Hugging Face hub repository Manmay/tortoise-tts) and pass --checkpoint FOLDER."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `speak` options."""
    from clvp_jax.waveform.presets import PRESET_NAMES
    from clvp_jax.waveform.sampler import SAMPLER_KINDS

    p.add_argument("text", nargs="*", help="the text (or use --text-file, or standard input)")
    p.add_argument("--text-file", type=Path, help="read the text from FILE ('-' for standard input)")
    p.add_argument("--checkpoint", type=Path, help="Tortoise models folder; default: the packaged random models")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="AR compute dtype")
    p.add_argument(
        "--voice",
        nargs="+",
        help="a voice name (lj, lj&emma: see clvp_jax.voices), clip(s), a folder of clips, or a latents file with "
        "the diffusion latent (.npz version 2, Tortoise .pth); default: the packaged LJ clip",
    )
    p.add_argument("--preset", default="ultra_fast", choices=PRESET_NAMES, help="Tortoise preset (default ultra_fast)")
    p.add_argument("-o", "--out", type=Path, default=Path("speech.wav"), help="output WAV (default speech.wav)")
    p.add_argument("-k", "--keep", type=int, default=1, help="best candidates rendered and kept per chunk")
    p.add_argument("--candidates", type=int, help="AR candidates per chunk (overrides the preset)")
    p.add_argument("--sampler", choices=SAMPLER_KINDS, help="diffusion sampler (default ddpm, Tortoise's)")
    p.add_argument("--diffusion-steps", type=int, help="diffusion steps (overrides the preset)")
    p.add_argument(
        "--vocoder",
        choices=("univnet", "hifigan"),
        default="univnet",
        help="univnet: diffusion + UnivNet (Tortoise); hifigan: api_fast's fast preview, no diffusion (hifidecoder.pth)",
    )
    p.add_argument("--cvvp-amount", type=float, default=0.0, help="mix CVVP into the ranking, 0..1 (needs cvvp.pth)")
    p.add_argument("--max-new-tokens", type=int, help="speech codes per candidate (default 500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _text(args: argparse.Namespace, usage_error) -> str:
    if args.text_file is not None:
        if str(args.text_file) == "-":
            return sys.stdin.read()
        if not args.text_file.is_file():
            raise usage_error(f"no text file at {args.text_file}")
        return args.text_file.read_text()
    if args.text:
        return " ".join(args.text)
    if not sys.stdin.isatty():
        return sys.stdin.read()
    raise usage_error("give the text as an argument, with --text-file FILE, or on standard input")


def output_paths(out: Path, chunks: int, keep: int) -> dict[tuple[int | None, int], Path]:
    """(chunk or None for the joined text, rank) -> file, as the module docstring lists them."""
    stem, suffix = out.with_suffix(""), out.suffix or ".wav"
    rank = lambda r: "" if r == 0 else f".rank{r}"  # noqa: E731
    paths = {(None, r): Path(f"{stem}{rank(r)}{suffix}") for r in range(keep)}
    if chunks > 1:
        paths |= {(i, r): Path(f"{stem}.chunk{i}{rank(r)}{suffix}") for i in range(chunks) for r in range(keep)}
    return paths


def write_wav(path: Path, waveform, sampling_rate: int, comment: str | None) -> None:
    """A mono 32-bit float WAV, atomically (`fs.atomic_file`), with `comment` in its INFO chunk."""
    import soundfile as sf

    from clvp_jax.fs import atomic_file

    with atomic_file(path, "wb") as f:
        with sf.SoundFile(f, "w", samplerate=sampling_rate, channels=1, format="WAV", subtype="FLOAT") as wav:
            if comment:
                wav.comment = comment
            wav.write(waveform)


def speak_voice(spec: list[str] | None, usage_error):
    """`--voice` -> what `synthesize` takes: None, a list of clip paths, or `voices.VoiceLatents`."""
    if not spec:
        return None
    from clvp_jax import voice_latents, voices

    try:
        resolved = voices.resolve_voices(spec)
    except voices.VoiceError as err:
        raise usage_error(str(err)) from None
    if len(resolved) != 1:
        raise usage_error(f"speak renders one voice per run; --voice names {len(resolved)} (run it once per voice)")
    (one,) = resolved
    if one.is_random:
        raise usage_error("speak has no random voice yet: give a voice name, clips or a latents file")
    if one.clips:
        return [str(c) for c in one.clips]
    parts = [(_latents_file(s.latents_file), 1) for s in one.sources]
    latents = voice_latents.combine_latents(parts)
    if latents.diffusion is None:
        files = ", ".join(str(s.latents_file) for s in one.sources)
        raise usage_error(f"{files} holds no diffusion latent (enough for codes, not audio); give the voice's clips")
    return latents


def _latents_file(path: Path):
    """A latents file as `voices.VoiceLatents`: clvp-jax's versioned latents file (`generation.latents`, what
    `save_conditioning_latents` writes), else the formats `voice_latents.load_latents_file` reads (Tortoise's .pth, the
    voice-folder cache)."""
    from clvp_jax import voice_latents, voices
    from clvp_jax.generation.latents import LatentsFileError, load_voice_latents

    if path.suffix.lower() in (".npz", ".npy"):
        try:
            latents = load_voice_latents(path)
        except LatentsFileError:
            return voice_latents.load_latents_file(path)
        auto = latents.autoregressive
        return voices.VoiceLatents(auto if auto.ndim == 1 else auto.mean(axis=0), latents.diffusion)
    return voice_latents.load_latents_file(path)


def voice_diffusion_latent(checkpoint: Path | None, voice, model):
    """For `clvp-jax latents`: the diffusion latent of the voice's clips when the checkpoint has the diffusion
    decoder (the packaged default has one), so the file it writes serves `speak` too; None when it has not (or
    the voice is already a latents file)."""
    from clvp_jax.audio import load_voice
    from clvp_jax.speech import AR_SAMPLING_RATE, diffusion_latent
    from clvp_jax.waveform.bundle import default_waveform_models, load_waveform_models, missing_audio_files

    if isinstance(voice, (str, Path)) and Path(voice).suffix.lower() in (".npy", ".npz", ".pth"):
        return None
    if checkpoint is None:
        wm = default_waveform_models(model.config.decoder_config.hidden_size)
    elif missing_audio_files(checkpoint):
        return None
    else:
        wm = load_waveform_models(checkpoint)
    if voice is None:
        from clvp_jax.assets import default_voice_path

        voice = default_voice_path()
    return diffusion_latent(wm, load_voice(voice, AR_SAMPLING_RATE))


class _Bars:
    """One tqdm bar per stage, opened on its first report."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bars = quiet, {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        units = {"candidates": "cand", "diffusion": "step", "vocoder": "sample"}
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(desc=stage, unit=units.get(stage, "it"), file=sys.stderr, disable=self.quiet)
        bar.total = total
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def cmd_speak(args: argparse.Namespace, *, usage_error, say) -> int:
    """Run `speak`; `usage_error` is the CLI's one-line error class, `say(message)` its stderr notice."""
    from clvp_jax.waveform.presets import speech_preset

    text = _text(args, usage_error)
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
    voice = speak_voice(args.voice, usage_error)
    if not args.out.parent.is_dir():
        raise usage_error(f"cannot write {args.out}: the folder {args.out.parent} does not exist")
    if not args.force and args.out.exists():
        raise usage_error(f"{args.out} exists; pass --force to replace it or choose another -o")

    from clvp_jax.tts import TextToSpeech

    start = time.perf_counter()
    if args.checkpoint is None:
        say(SPEAK_NOTICE)
    say("loading models and voice")
    tts = TextToSpeech(args.checkpoint, dtype=args.dtype)
    # A codes-only checkpoint (or one without hifidecoder.pth for --vocoder hifigan) fails here, before any work.
    tts.waveform_models(with_cvvp=args.cvvp_amount > 0, with_hifigan=args.vocoder == "hifigan")
    bars = _Bars(args.quiet)
    try:
        result = tts.tts_with_preset(
            text,
            voice=voice,
            preset=args.preset,
            k=args.keep,
            sampler=args.sampler,
            diffusion_steps=args.diffusion_steps,
            candidates=args.candidates,
            cvvp_amount=args.cvvp_amount,
            seed=args.seed,
            max_new_tokens=args.max_new_tokens,
            progress=None if args.quiet else bars,  # quiet: no per-step reports compiled into the sampler
            vocoder=args.vocoder,
        )
    finally:
        bars.close()
    paths = output_paths(args.out, len(result.chunks), args.keep)
    if not args.force:
        taken = [str(p) for p in paths.values() if p.exists()] + [str(args.out.with_suffix(".json"))] * int(
            args.out.with_suffix(".json").exists()
        )
        if taken:
            raise usage_error(f"{', '.join(taken)} exist(s); pass --force to replace or choose another -o")
    comment = RANDOM_LABEL if result.random_weights else None
    joined = result.waveforms
    for (chunk, rank), path in paths.items():
        wav = joined[rank] if chunk is None else result.chunks[chunk].outputs[rank].waveform
        write_wav(path, wav, result.sampling_rate, comment)
    from clvp_jax.fs import write_text

    info = result.to_json() | {"files": {f"{c if c is not None else 'all'}/{r}": str(p) for (c, r), p in paths.items()}}
    if result.random_weights:
        info["label"] = RANDOM_LABEL
    write_text(args.out.with_suffix(".json"), json.dumps(info, indent=1) + "\n")
    elapsed = time.perf_counter() - start
    seconds = result.waveform.size / result.sampling_rate
    for i, chunk in enumerate(result.chunks):
        best = chunk.outputs[0]
        print(
            f"chunk {i}: {chunk.text!r}: candidate {best.candidate.index} (score {best.score:.4f}), "
            f"{len(best.candidate.codes)} codes, {best.frames} latent frames, {best.waveform.size / result.sampling_rate:.2f} s"
        )
    label = " (RANDOM weights: meaningless audio)" if result.random_weights else ""
    print(f"wrote {args.out}: {seconds:.2f} s of 24 kHz audio{label}, in {elapsed:.1f} s")
    return 0
