"""`clvp-jax speak`: text + voice -> 24 kHz WAV files, chunk by chunk (`speech.plan_speech`, `clvp_jax.long_text`).

  clvp-jax speak "Some text." [--voice NAME|CLIPS..|latents|random|a&b|a,b] [--voices-dir DIR] [--checkpoint DIR]
                 [--preset P] [-o out.wav] [--text-file F] [--num-samples N] [--candidates K]
                 [--temperature T] [--top-p P] [--top-k K] [--repetition-penalty R] [--length-penalty L]
                 [--sampler ddpm|ddim|dpm++2m] [--diffusion-steps K] [--vocoder univnet|hifigan]
                 [--cvvp-amount A] [--seed S] [--regenerate I,J] [--chunk-group N] [--force] [-v|-q]

Files written (32-bit float WAV, mono, 24 kHz), for `-o out.wav`; --candidates K (default 1) are rendered per chunk:
  out.chunks/0003/          one folder per chunk, written whole as soon as it is rendered: rank0.wav[, rank1.wav ...]
                            and chunk.json (its key, the rendered candidates, every candidate ranked, provenance)
  out.wav                   the best candidate of every chunk, joined (rebuilt from the chunk folders)
  out.rank{r}.wav           with --candidates K > 1: the rank-r candidates joined (r = 1 .. K-1)
  out.json                  settings, per chunk the rendered candidates and every candidate ranked, the files,
                            and the provenance record
With `--voice a,b` each voice gets its own set, named `out.a.wav`, `out.a.chunks/`, `out.a.json`, `out.b.wav`, ...
A rerun into the same output keeps every finished chunk whose key is unchanged (text, voice, settings including the
sampling flags and --vocoder, weights, version) and rebuilds the joined files (`cli_long_text`: --regenerate,
--force). Every WAV's comment holds a one-line provenance digest (clvp-jax version, checkpoint and its sha256, voice,
seed, preset, the normalised text). With the packaged default (no --checkpoint) the weights are random: the audio
is meaningless noise, and says so in its WAV comment and in the JSON.
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
    from clvp_jax import cli_long_text, cli_options, cli_voice
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
    cli_long_text.add_arguments(p)
    cli_options.add_verbosity(p)


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


def check_output(out: Path, keep: int, force: bool) -> None:
    """Before any work: `out`'s files (`long_text.speech_paths`) are free, an earlier output of ours (resumed), or
    replaced with --force; a chunk folder that is not ours is never touched."""
    from clvp_jax.cli_common import UsageError
    from clvp_jax.fs import OUTPUT_MARKER
    from clvp_jax.long_text import speech_paths

    paths = speech_paths(out, keep)
    resuming = (paths["chunks"] / OUTPUT_MARKER).is_file()
    taken = [str(p) for name, p in paths.items() if name != "chunks" and p.exists()]
    if paths["chunks"].exists() and not resuming:
        raise UsageError(f"{paths['chunks']} exists and is not an output of clvp-jax; choose another -o")
    if taken and not (resuming or force):
        raise UsageError(f"{', '.join(taken)} exist(s); pass --force to replace or choose another -o")


def cmd_speak(args: argparse.Namespace) -> int:
    """Run `speak`: each voice's chunks into OUT.chunks/ (resumable), then the joined OUT.wav and OUT.json."""
    from clvp_jax import cli_common, cli_long_text, cli_options, cli_output, cli_voice
    from clvp_jax.cli_common import UsageError
    from clvp_jax.generation.options import OptionError
    from clvp_jax.speech_settings import speech_settings
    from clvp_jax.tts import PACKAGED_MAX_CODES
    from clvp_jax.waveform.presets import speech_preset

    if args.list_voices:
        print(cli_voice.list_text(args, UsageError))
        return 0
    # Everything the user gave is checked before the model load: text, numbers, voices, the output.
    specs = cli_voice.resolve(args, UsageError)  # first: `--voice lj "Text."` takes the text as a voice
    text = cli_common.read_text(args)
    cli_common.check_seed_arg(args)
    cli_long_text.check(args)
    sampling = cli_options.sampling_from(args, UsageError)
    max_new_tokens = sampling.max_new_tokens
    if max_new_tokens is None and args.checkpoint is None:  # the packaged random model never stops by itself
        max_new_tokens = PACKAGED_MAX_CODES
    try:
        preset = speech_preset(
            args.preset, sampler=args.sampler, diffusion_steps=args.diffusion_steps, candidates=sampling.num_samples
        )
        sampling.check_keep(preset.candidates)
        if not 0 <= args.cvvp_amount <= 1:
            raise UsageError(f"--cvvp-amount must be in [0, 1], got {args.cvvp_amount}")
        settings = speech_settings(
            preset=preset,
            k=sampling.keep or 1,
            cvvp_amount=args.cvvp_amount,
            seed=args.seed,
            max_new_tokens=max_new_tokens,
            dtype=args.dtype,
            sampling=sampling,
            vocoder=args.vocoder,
        )
    except OptionError as err:
        raise UsageError(cli_options.flag_message(err)) from None
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from None
    keep = settings.k
    if args.checkpoint is not None and not args.checkpoint.exists():
        raise UsageError(f"no checkpoint at {args.checkpoint}")
    cli_voice.check_random_generators(specs, args.checkpoint, UsageError)
    names = cli_voice.output_names(specs)
    several = len(specs) > 1
    if not args.out.parent.is_dir():
        raise UsageError(f"cannot write {args.out}: the folder {args.out.parent} does not exist")
    outs = [voice_output(args.out, name, several) for name in names]
    for out in outs:
        check_output(out, keep, args.force)

    from clvp_jax.long_text import digest, speech_paths, write_speech
    from clvp_jax.speech import plan_speech
    from clvp_jax.tts import TextToSpeech
    from clvp_jax.voices import VoiceLatents

    start = time.perf_counter()
    if args.checkpoint is None:
        cli_common.say(SPEAK_NOTICE)
    cli_common.say_if(args, 0, "loading models and voice")
    with cli_common.loading(args):
        tts = TextToSpeech(args.checkpoint, dtype=args.dtype, diffusion_dtype=args.diffusion_dtype)
        # A codes-only checkpoint (or one without hifidecoder.pth for --vocoder hifigan) fails here, before any work.
        wm = tts.waveform_models(with_cvvp=settings.cvvp_amount > 0, with_hifigan=settings.vocoder == "hifigan")
        ckpt_hash = cli_output.checkpoint_hash(args.checkpoint)
    weights = digest(tts.params, wm.diffusion_variables, wm.vocoder_params, wm.cvvp_params or {})
    if settings.vocoder == "hifigan":
        weights = digest(weights, wm.hifigan_params)

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

    quiet = cli_options.verbosity(args) < 0
    for spec, name, out in zip(specs, names, outs, strict=True):
        if settings.cvvp_amount > 0 and spec.clips:
            voice = [str(c) for c in spec.clips]  # CVVP reads the clips' mels: no cache
        else:
            voice = cli_voice.latents_of(
                spec,
                checkpoint_hash=ckpt_hash,
                compute=compute,
                need_diffusion=True,
                random=random,
                say=lambda line: cli_common.say_if(args, 1, line),
            )
        plan = plan_speech(
            text=text, model=tts.model, params=tts.params, waveform_models=wm, voice=voice, settings=settings
        )
        again = cli_long_text.regenerate(args, len(plan.chunks))
        record = cli_output.provenance(
            checkpoint=args.checkpoint,
            checkpoint_sha256=ckpt_hash,
            random_weights=wm.random_weights,
            voice=cli_voice.describe(spec, name),
            seed=args.seed,
            options=plan.settings | {"sampling_flags": sampling.to_json()},
            chunks=plan.chunks,
            argv=args.argv,
        )
        label = RANDOM_LABEL if wm.random_weights else None
        report = cli_long_text.Reporter(quiet, prefix=f"[{name}] " if several else "")
        bars = _Bars(quiet)
        try:
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
                comment=cli_output.wav_comment(record, label),
                label=label,
                record=record,
                report=report,
                progress=None if quiet else bars,  # quiet: no per-step reports compiled into the sampler
            )
        finally:
            bars.close()
        import soundfile as sf

        paths = speech_paths(out, keep)
        seconds = sf.info(str(paths["0"])).duration
        random_note = " (RANDOM weights: meaningless audio)" if wm.random_weights else ""
        print(
            f"wrote {out}: {seconds:.2f} s of 24 kHz audio{random_note}, voice {name}; "
            f"{report.summary(len(plan.chunks))}"
        )
        print(f"chunks in {paths['chunks']}, settings and scores in {paths['json']}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0
