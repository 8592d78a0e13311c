"""`clvp-jax generate`: text + voice(s) -> CLVP-ranked speech-code candidates, chunk by chunk (`clvp_jax.long_text`).

Files written to `-o/--output` (default `clvp-jax-out/`):
  chunks/0003/      one folder per chunk, written whole as soon as the chunk is ranked: candidates.json (its key,
                    text, every candidate drawn, best first, and the provenance record) and candidates.npz
  candidates.json   the whole text, rebuilt from the chunk folders: settings, per chunk its text and the KEPT
                    candidates (best first: index, score, codes, stopped), and the provenance record
                    (`clvp_jax.cli_output`)
  candidates.npz    sequences [chunks, drawn, 1 + max_new_tokens] (start token, codes, stop token, padding),
                    candidate_scores [chunks, drawn], num_generated [chunks, drawn] (codes including the stop
                    token), best_index [chunks], kept_index [chunks, kept] (best first), text_ids and text_mask
                    [chunks, T] (the tokenised chunks, padded)
With `--voice a,b` the folder holds one such folder per voice (`OUT/a/`, `OUT/b/`), each resumed on its own. A
rerun into the same folder keeps every finished chunk whose key is unchanged (`cli_long_text`; --regenerate,
--force); a changed setting (--temperature, the seed, the voice, the weights) makes the chunks again.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from clvp_jax import cli_common, cli_long_text, cli_options, cli_output, fs


def is_results_folder(folder: Path) -> bool:
    """A previous `generate --out` folder (from before output folders carried `fs.OUTPUT_MARKER`)."""
    names = {p.name for p in folder.iterdir()}
    return bool(names) and names <= {"candidates.json", "candidates.npz", fs.OUTPUT_MARKER}


def cmd_generate(args: argparse.Namespace) -> int:
    from clvp_jax import cli_voice, pipeline
    from clvp_jax.generation.options import OptionError
    from clvp_jax.long_text import digest, write_codes
    from clvp_jax.rank_settings import RankSettings

    if args.list_voices:
        print(cli_voice.list_text(args, cli_common.UsageError))
        return 0
    # Everything the user gave is checked before the model load: text, numbers, preset, voices, the output.
    # The voices first: `--voice lj "Some text."` takes the text as a voice, and says so (cli_voice.resolve).
    specs = None if args.latents is not None else cli_voice.resolve(args, cli_common.UsageError)
    text = cli_common.read_text(args)
    cli_common.check_seed_arg(args)
    cli_long_text.check(args)
    sampling = cli_options.sampling_from(args, cli_common.UsageError)
    try:
        settings = RankSettings(
            preset=args.preset,
            candidates=sampling.num_samples,
            max_new_tokens=sampling.max_new_tokens,
            seed=args.seed,
            dtype=args.dtype,
            sampling=sampling,
        )
        sampling.check_keep(settings.drawn)
    except OptionError as err:
        raise cli_common.UsageError(cli_options.flag_message(err)) from None
    except ValueError as err:  # the preset (the numbers are the sampling flags', checked above)
        raise cli_common.UsageError(str(err)) from None
    keep = sampling.keep or settings.drawn
    names = ["voice"] if specs is None else cli_voice.output_names(specs)
    folders = [args.out] if len(names) == 1 else [args.out / name for name in names]
    # Every refusal the output can meet comes before the work: a file, a read-only folder, an input, not ours.
    # An output of ours is resumed (its finished chunks kept), so "exists" is no refusal here.
    for folder in dict.fromkeys([args.out, *folders]):
        fs.check_target(folder, force=True, protect=cli_common.protected(args), is_ours=is_results_folder)
    if args.latents is not None and not args.latents.is_file():
        raise cli_common.UsageError(f"no latents file at {args.latents}")
    if specs is not None:
        cli_voice.check_random_generators(specs, args.checkpoint, cli_common.UsageError)
    cli_common.say_if(args, 0, "loading model and voice")
    model, params = cli_common.load_model(args)
    pipeline.require_scoring(params)  # ranking needs the CLVP towers: say so before generating
    ckpt_hash = cli_output.checkpoint_hash(args.checkpoint)
    voices_latents = []  # (name, provenance of the voice, AR latent [D])
    if args.latents is not None:
        import numpy as np

        from clvp_jax.generation.latents import load_conditioning_latents

        # Read by content (a .npy or a version-2 archive, whatever the name `clvp-jax latents --out` was given).
        ar = np.asarray(load_conditioning_latents(args.latents, model))
        latents = ar.mean(axis=0) if ar.ndim == 2 else ar  # [n, D] per-clip latents average into one voice
        voices_latents.append(("voice", {"spec": str(args.latents), "latents_file": str(args.latents)}, latents))
    else:
        from clvp_jax.voices import VoiceLatents
        from clvp_jax.waveform.random_latents import DIFFUSION_CHANNELS

        width = model.config.decoder_config.hidden_size

        def compute(clips):
            return VoiceLatents(pipeline.compute_latents(model=model, params=params, voice=[str(c) for c in clips]))

        def random():
            return cli_voice.random_latents(
                seed=args.seed,
                checkpoint=args.checkpoint,
                auto_width=width,
                diffusion_width=2 * width if args.checkpoint is None else DIFFUSION_CHANNELS,
                random_weights=args.checkpoint is None,
            )

        for spec, name in zip(specs, names, strict=True):
            got = cli_voice.latents_of(
                spec,
                checkpoint_hash=ckpt_hash,
                compute=compute,
                need_diffusion=False,
                random=random,
                say=lambda line: cli_common.say_if(args, 1, line),
            )
            if got.auto.shape != (width,):
                raise cli_common.UsageError(
                    f"voice {spec.label!r}: its latent has width {got.auto.shape[-1]} but the model expects {width}; "
                    "recompute the latents with this checkpoint (clvp-jax latents)"
                )
            voices_latents.append((name, cli_voice.describe(spec, name), got.auto))
    weights = digest(params)
    quiet = cli_options.verbosity(args) < 0
    if len(folders) > 1:  # the parent of the voices' folders is ours too (check_target then accepts it)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / fs.OUTPUT_MARKER).touch()
    start = time.perf_counter()
    for (name, voice_record, latents), folder in zip(voices_latents, folders, strict=True):
        plan = pipeline.plan_ranking(text=text, model=model, params=params, latents=latents, settings=settings)
        again = cli_long_text.regenerate(args, len(plan.chunks))
        record = cli_output.provenance(
            checkpoint=args.checkpoint,
            checkpoint_sha256=ckpt_hash,
            random_weights=args.checkpoint is None,
            voice=voice_record,
            seed=args.seed,
            options=plan.settings | {"kept": keep, "sampling_flags": sampling.to_json()},
            chunks=plan.chunks,
            argv=args.argv,
        )
        report = cli_long_text.Reporter(quiet, prefix=f"[{name}] " if len(folders) > 1 else "")
        write_codes(
            plan,
            model=model,
            params=params,
            out=folder,
            weights=weights,
            regenerate=again,
            force=args.force,
            group_size=args.chunk_group,
            report=report,
            keep=keep,
            record=record,
        )
        if len(folders) > 1:
            print(f"voice {name}:")
        print_codes(folder, len(plan.chunks), min(args.show, keep))
        print(f"wrote {folder / 'candidates.json'} and {folder / 'candidates.npz'}: {report.summary(len(plan.chunks))}")
    label = " (RANDOM weights: meaningless codes)" if args.checkpoint is None else ""
    print(f"{len(folders)} voice(s){label}, {time.perf_counter() - start:.1f} s generating and ranking")
    return 0


def print_codes(folder: Path, chunks: int, show: int) -> None:
    """Print each chunk's best `show` candidates, reading one chunk folder at a time (memory does not grow with
    the text)."""
    from clvp_jax.long_text import ChunkStore

    store = ChunkStore(folder / "chunks", "candidates.json")
    for i in range(chunks):
        entry = store.recorded(i) or {}
        codes = entry.get("best", {}).get("codes", [])
        print(f"chunk {i}: {entry.get('text', '')!r}")
        for rank, cand in enumerate(entry.get("candidates", [])[:show]):
            print(
                f"  {'*' if rank == 0 else ' '} #{rank + 1} candidate {cand['index']:3d}  score {cand['score']:8.4f}  "
                f"{len(cand['codes'])} codes" + ("" if cand["stopped"] else " (no stop token)")
            )
        print(f"    best codes: [{', '.join(map(str, codes[:12]))}{', ...' if len(codes) > 12 else ''}]")
