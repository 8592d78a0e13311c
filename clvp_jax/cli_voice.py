"""The voice arguments of `clvp-jax generate` and `clvp-jax speak`: one implementation for both.

  --voice V            a name (a sub-folder of a voices folder), a folder of clips, clip files, a latents file,
                       `random`, `a&b` (one voice from both: one latent), `a,b` (each rendered: one result per voice)
  --voices-dir DIR     a folder of voice folders, searched by name before the packaged one (repeatable)
  --list-voices        print every voice name reachable, with what it holds, and exit

Parsing and checking (`resolve`) touch only the file system (`clvp_jax.voices`), so a bad voice is refused before
the model load. `latents_of` then makes one voice's latents: a latents file or a still-valid cache beside the clips
is read, other clips go through the model and their cache is written back (`clvp_jax.voice_latents`), and `random`
comes from Tortoise's random latent generators (`rlg_auto.pth`, `rlg_diffuser.pth` in the checkpoint folder; with the
packaged default, small random generators of its widths).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from clvp_jax import voices

DEFAULT_VOICE = "lj"  # the packaged voice (clvp_jax/assets/voices/lj), when no --voice is given
RANDOM_VOICE_STREAM = 2**30 + 7  # fold_in(key(seed), this) draws the random voice, apart from the AR/waveform draws
PACKAGED_RLG_SEED = 3  # the packaged default's random generators (its widths, random weights)


def add_arguments(p: argparse.ArgumentParser, *, latents_ok: str) -> None:
    """`--voice`, `--voices-dir`, `--list-voices`; `latents_ok` says which latents files the command reads."""
    p.add_argument(
        "--voice",
        nargs="+",
        metavar="VOICE",
        help=f"a voice name (see --list-voices), a folder of clips, clip files, {latents_ok}, or 'random' "
        "(Tortoise's random latent generators); 'a&b' joins voices into one latent, 'a,b' renders each "
        f"(one result per voice); default: {DEFAULT_VOICE!r}, the packaged LJ Speech clip",
    )
    p.add_argument(
        "--voices-dir",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="a folder whose sub-folders are voices, searched by name before the packaged voices (repeatable)",
    )
    p.add_argument("--list-voices", action="store_true", help="list the voices --voice can name, and exit")


def list_text(args: argparse.Namespace, usage_error) -> str:
    """The `--list-voices` text for the `--voices-dir` folders given."""
    try:
        return voices.format_voice_list(voices.list_voices(args.voices_dir))
    except voices.VoiceError as err:
        raise usage_error(str(err)) from None


def resolve(args: argparse.Namespace, usage_error) -> list[voices.VoiceSpec]:
    """The voices `--voice` names (the packaged `lj` when none), checked; `usage_error` on any problem."""
    try:
        return voices.resolve_voices(args.voice or [DEFAULT_VOICE], args.voices_dir)
    except voices.VoiceError as err:
        hint = ""
        if args.voice and len(args.voice) > 1:  # `--voice lj "Some text."`: the text was taken as a second voice
            hint = (
                f" (--voice took {len(args.voice)} values, {' '.join(map(repr, args.voice))}: put the text before "
                "--voice, or end the voices with --)"
            )
        raise usage_error(f"{err}{hint}") from None


def check_random_generators(specs: Sequence[voices.VoiceSpec], checkpoint, usage_error) -> None:
    """Before the model load: a `random` voice with a local checkpoint folder needs its two generator files."""
    from clvp_jax.checkpoint.tortoise_rlg import FILES

    if checkpoint is None or not any(s.is_random for s in specs) or not Path(checkpoint).is_dir():
        return  # the packaged default has generators; a Hub repo id fetches them (or says what it lacks)
    missing = [name for name in FILES if not (Path(checkpoint) / name).is_file()]
    if missing:
        raise usage_error(
            f"--voice random needs {' and '.join(missing)} in {checkpoint} (Tortoise's random latent generators, in "
            "the Hugging Face Hub repo Manmay/tortoise-tts beside its other checkpoints); add them or name a voice"
        )


def output_names(specs: Sequence[voices.VoiceSpec]) -> list[str]:
    """A distinct file-name-safe name per voice (`lj`, `lj&emma`, `random`; a repeated name gets `-2`, `-3`)."""
    names, seen = [], {}
    for spec in specs:
        seen[spec.name] = seen.get(spec.name, 0) + 1
        names.append(spec.name if seen[spec.name] == 1 else f"{spec.name}-{seen[spec.name]}")
    return names


def random_latents(
    *, seed: int, checkpoint, auto_width: int, diffusion_width: int, random_weights: bool
) -> voices.VoiceLatents:
    """The `random` voice's latents for `seed` (the same seed, the same voice).

    Real checkpoints use Tortoise's generators (`rlg_auto.pth`, `rlg_diffuser.pth`, a Hub repo id fetches them);
    the packaged default (`random_weights`) uses small random generators of its own widths.
    """
    import jax

    from clvp_jax.waveform.random_latents import RandomLatentConverter, random_voice_latents

    if random_weights:
        keys = jax.random.split(jax.random.PRNGKey(PACKAGED_RLG_SEED))
        auto_vars, diffusion_vars = (
            RandomLatentConverter(width).init(key, np.zeros((1, width), np.float32))
            for key, width in zip(keys, (auto_width, diffusion_width), strict=True)
        )
        widths = None
    else:
        from clvp_jax.checkpoint.hub import resolve_checkpoint
        from clvp_jax.checkpoint.tortoise_rlg import load_random_voice_generators

        folder = resolve_checkpoint(checkpoint, need=("random_voice",))
        auto_vars, diffusion_vars = load_random_voice_generators(folder)
        widths = (auto_width, diffusion_width)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), RANDOM_VOICE_STREAM)
    made = random_voice_latents(key, auto_vars, diffusion_vars, widths=widths)
    return voices.VoiceLatents(made.auto[0], made.diffusion[0])


def latents_of(
    spec: voices.VoiceSpec,
    *,
    checkpoint_hash: str,
    compute: Callable[[Sequence[Path]], voices.VoiceLatents],
    need_diffusion: bool,
    random: Callable[[], voices.VoiceLatents],
    say: Callable[[str], None],
) -> voices.VoiceLatents:
    """One voice's latents: `random()` for the random voice, else caches, latents files and `compute(clips)`."""
    from clvp_jax.voice_latents import voice_latents

    if spec.is_random:
        say("random: latents drawn by the random latent generators")
        return random()
    return voice_latents(spec, checkpoint=checkpoint_hash, compute=compute, need_diffusion=need_diffusion, report=say)


def describe(spec: voices.VoiceSpec, name: str) -> dict:
    """The provenance record of one voice: what was asked for and where each part came from."""
    return {
        "spec": spec.label,
        "name": name,
        "random": spec.is_random,
        "sources": [
            {
                "label": s.label,
                "kind": s.kind,
                "path": str(s.path),
                "clips": [str(c) for c in s.clips],
                **({"latents_file": str(s.latents_file)} if s.latents_file is not None else {}),
            }
            for s in spec.sources
        ],
    }


__all__ = ["DEFAULT_VOICE", "add_arguments", "check_random_generators", "describe", "latents_of", "list_text"]
__all__ += ["output_names", "random_latents", "resolve"]
