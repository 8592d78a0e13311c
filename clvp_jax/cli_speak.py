"""`clvp-jax speak`: text + voice -> 24 kHz WAV files (thin over `clvp_jax.speech.synthesize`).

  clvp-jax speak "Some text." [--voice NAME|CLIPS..|latents|random|a&b|a,b] [--voices-dir DIR] [--checkpoint DIR]
                 [--preset P] [-o out.wav] [--text-file F] [--num-samples N] [--candidates K]
                 [--temperature T] [--top-p P] [--top-k K] [--repetition-penalty R] [--length-penalty L]
                 [--sampler ddpm|ddim|dpm++2m] [--diffusion-steps K] [--cvvp-amount A] [--seed S] [--force] [-v|-q]

Files written (each atomically, 32-bit float WAV, mono, 24 kHz), for `-o out.wav`:
  out.wav                   the best candidate of every chunk, joined
  out.rank{r}.wav           with --candidates K > 1: the rank-r candidates joined (r = 1 .. K-1)
  out.chunk{i}.wav          with more than one chunk: chunk i's best (and out.chunk{i}.rank{r}.wav with K > 1)
  out.json                  settings, per chunk the rendered candidates and every candidate ranked, provenance
With `--voice a,b` each voice gets its own set, named `out.a.wav`, `out.a.json`, `out.b.wav`, ...
Every WAV's comment holds a one-line provenance digest (clvp-jax version, checkpoint and its sha256, voice, seed,
preset, the normalised text). With the packaged default (no --checkpoint) the weights are random: the audio is
meaningless noise, and says so in its WAV comment and in the JSON.
"""

from __future__ import annotations

import argparse
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
    from clvp_jax import cli_options, cli_voice
    from clvp_jax.waveform.presets import PRESET_NAMES
    from clvp_jax.waveform.sampler import SAMPLER_KINDS

    p.add_argument("text", nargs="*", help="the text (or use --text-file, or standard input)")
    p.add_argument("--text-file", type=Path, help="read the text from FILE ('-' for standard input)")
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="a clvp-jax checkpoint, a Tortoise models folder or a Hub repo id; default: the packaged random models",
    )
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="AR compute dtype")
    p.add_argument(
        "--diffusion-dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="diffusion decoder compute dtype (bf16 matmuls, float32 norms; the vocoder stays float32)",
    )
    cli_voice.add_arguments(p, latents_ok="a latents file with the diffusion latent (.npz version 2, Tortoise .pth)")
    p.add_argument("--preset", default="ultra_fast", choices=PRESET_NAMES, help="Tortoise preset (default ultra_fast)")
    p.add_argument(
        "-o", "--output", "--out", dest="out", type=Path, default=Path("speech.wav"), help="output WAV (speech.wav)"
    )
    cli_options.add_sampling_arguments(
        p,
        keep_help="each rendered to audio and written (default 1; -k/--keep are other names for it)",
        max_new_tokens_help="speech codes per candidate (default 500; the packaged random model: 100)",
    )
    p.add_argument("--sampler", choices=SAMPLER_KINDS, help="diffusion sampler (default ddpm, Tortoise's)")
    p.add_argument("--diffusion-steps", type=int, help="diffusion steps (overrides the preset)")
    p.add_argument(
        "--vocoder",
        choices=("univnet", "hifigan"),
        default="univnet",
        help="univnet: diffusion + UnivNet (Tortoise); hifigan: api_fast's fast preview, no diffusion (hifidecoder.pth)",
    )
    p.add_argument("--cvvp-amount", type=float, default=0.0, help="mix CVVP into the ranking, 0..1 (needs cvvp.pth)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw, in [0, 2^32) (default 0)")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    cli_options.add_verbosity(p)


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


def voice_output(out: Path, name: str, several: bool) -> Path:
    """The `-o` path of one voice: `out` itself for a single voice, `out.<voice>.wav` for each of several."""
    return Path(f"{out.with_suffix('')}.{name}{out.suffix or '.wav'}") if several else out


def _taken(paths, json_path: Path) -> list[str]:
    return [str(p) for p in [*paths, json_path] if p.exists()]


def cmd_speak(args: argparse.Namespace, *, usage_error, say) -> int:
    """Run `speak`; `usage_error` is the CLI's one-line error class, `say(message)` its stderr notice."""
    from clvp_jax import cli_common, cli_options, cli_output, cli_voice
    from clvp_jax.fs import write_text
    from clvp_jax.generation.options import OptionError
    from clvp_jax.waveform.presets import speech_preset

    if args.list_voices:
        print(cli_voice.list_text(args, usage_error))
        return 0
    # Everything the user gave is checked before the model load: text, numbers, voices, the output.
    specs = cli_voice.resolve(args, usage_error)  # first: `--voice lj "Text."` takes the text as a voice
    text = cli_common.read_text(args)
    cli_common.check_seed_arg(args)
    sampling = cli_options.sampling_from(args, usage_error)
    try:
        preset = speech_preset(
            args.preset, sampler=args.sampler, diffusion_steps=args.diffusion_steps, candidates=sampling.num_samples
        )
        sampling.check_keep(preset.candidates)
    except OptionError as err:
        raise usage_error(cli_options.flag_message(err)) from None
    except (ValueError, TypeError) as err:
        raise usage_error(str(err)) from None
    keep = sampling.keep or 1
    if not 0 <= args.cvvp_amount <= 1:
        raise usage_error(f"--cvvp-amount must be in [0, 1], got {args.cvvp_amount}")
    if args.checkpoint is not None and not args.checkpoint.exists():
        raise usage_error(f"no checkpoint at {args.checkpoint}")
    cli_voice.check_random_generators(specs, args.checkpoint, usage_error)
    names = cli_voice.output_names(specs)
    several = len(specs) > 1
    if not args.out.parent.is_dir():
        raise usage_error(f"cannot write {args.out}: the folder {args.out.parent} does not exist")
    if not args.force:
        for name in names:
            out = voice_output(args.out, name, several)
            if out.exists():
                raise usage_error(f"{out} exists; pass --force to replace it or choose another -o")

    from clvp_jax.tts import TextToSpeech
    from clvp_jax.voices import VoiceLatents

    start = time.perf_counter()
    if args.checkpoint is None:
        say(SPEAK_NOTICE)
    if cli_options.verbosity(args) >= 0:
        say("loading models and voice")
    tts = TextToSpeech(args.checkpoint, dtype=args.dtype, diffusion_dtype=args.diffusion_dtype)
    # A codes-only checkpoint (or one without hifidecoder.pth for --vocoder hifigan) fails here, before any work.
    wm = tts.waveform_models(with_cvvp=args.cvvp_amount > 0, with_hifigan=args.vocoder == "hifigan")
    ckpt_hash = cli_output.checkpoint_hash(args.checkpoint)

    def compute(clips):
        v = tts.get_conditioning_latents([str(c) for c in clips])
        return VoiceLatents(v.autoregressive, v.diffusion)

    def random():
        return cli_voice.random_latents(
            seed=args.seed,
            checkpoint=args.checkpoint,
            auto_width=tts.model.config.decoder_config.hidden_size,
            diffusion_width=wm.diffusion_width,
            random_weights=tts.random_weights,
        )

    for spec, name in zip(specs, names, strict=True):
        if args.cvvp_amount > 0 and spec.clips:
            voice = [str(c) for c in spec.clips]  # CVVP reads the clips' mels: no cache
        else:
            voice = cli_voice.latents_of(
                spec,
                checkpoint_hash=ckpt_hash,
                compute=compute,
                need_diffusion=True,
                random=random,
                say=lambda line: cli_options.verbosity(args) >= 1 and say(line),
            )
        quiet = cli_options.verbosity(args) < 0
        bars = _Bars(quiet)
        try:
            result = tts.tts_with_preset(
                text,
                voice=voice,
                preset=args.preset,
                k=keep,
                sampler=args.sampler,
                diffusion_steps=args.diffusion_steps,
                candidates=sampling.num_samples,
                cvvp_amount=args.cvvp_amount,
                seed=args.seed,
                max_new_tokens=sampling.max_new_tokens,
                progress=None if quiet else bars,  # quiet: no per-step reports compiled into the sampler
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                repetition_penalty=sampling.repetition_penalty,
                length_penalty=sampling.length_penalty,
                vocoder=args.vocoder,
            )
        finally:
            bars.close()
        out = voice_output(args.out, name, several)
        paths = output_paths(out, len(result.chunks), keep)
        json_path = out.with_suffix(".json")
        if not args.force and (taken := _taken(paths.values(), json_path)):
            raise usage_error(f"{', '.join(taken)} exist(s); pass --force to replace or choose another -o")
        record = cli_output.provenance(
            checkpoint=args.checkpoint,
            checkpoint_sha256=ckpt_hash,
            random_weights=result.random_weights,
            voice=cli_voice.describe(spec, name),
            seed=args.seed,
            options=result.settings | {"sampling_flags": sampling.to_json()},
            chunks=[c.text for c in result.chunks],
            argv=args.argv,
        )
        comment = cli_output.wav_comment(record, RANDOM_LABEL if result.random_weights else None)
        joined = result.waveforms
        for (chunk, rank), path in paths.items():
            wav = joined[rank] if chunk is None else result.chunks[chunk].outputs[rank].waveform
            write_wav(path, wav, result.sampling_rate, comment)
        files = {f"{c if c is not None else 'all'}/{r}": str(p) for (c, r), p in paths.items()}
        info = result.to_json() | {"files": files, "provenance": record}
        if result.random_weights:
            info["label"] = RANDOM_LABEL
        write_text(json_path, cli_output.dumps(info))
        seconds = result.waveform.size / result.sampling_rate
        for i, chunk in enumerate(result.chunks):
            best = chunk.outputs[0]
            print(
                f"chunk {i}: {chunk.text!r}: candidate {best.candidate.index} (score {best.score:.4f}), "
                f"{len(best.candidate.codes)} codes, {best.frames} latent frames, "
                f"{best.waveform.size / result.sampling_rate:.2f} s"
            )
        label = " (RANDOM weights: meaningless audio)" if result.random_weights else ""
        print(f"wrote {out}: {seconds:.2f} s of 24 kHz audio{label}, voice {name}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0
