"""`clvp-jax generate`: text + voice(s) -> CLVP-ranked speech-code candidates (thin over `pipeline.rank_speech`).

Files written to `-o/--output` (default `clvp-jax-out/`), as one folder that appears whole:
  candidates.json   settings, per chunk its text and the kept candidates (best first: index, score, codes, stopped),
                    and the provenance record (`clvp_jax.cli_output`)
  candidates.npz    sequences [chunks, drawn, 1 + max_new_tokens] (start token, codes, stop token, padding),
                    candidate_scores [chunks, drawn], num_generated [chunks, drawn] (codes including the stop
                    token), best_index [chunks], kept_index [chunks, kept] (best first), text_ids and text_mask
                    [chunks, T] (the tokenised chunks, padded)
With `--voice a,b` the folder holds one sub-folder of both files per voice (`OUT/a/`, `OUT/b/`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from clvp_jax import cli_common, cli_options, cli_output, fs


def is_results_folder(folder: Path) -> bool:
    """A previous `generate --out` folder (from before output folders carried `fs.OUTPUT_MARKER`)."""
    names = {p.name for p in folder.iterdir()}
    return bool(names) and names <= {"candidates.json", "candidates.npz", fs.OUTPUT_MARKER}


def kept_json(result, keep: int, record: dict) -> dict:
    """`result.to_json()` with each chunk's candidates cut to the `keep` best, and the provenance record."""
    info = result.to_json()
    info["settings"]["kept"] = keep
    for chunk in info["chunks"]:
        chunk["candidates"] = chunk["candidates"][:keep]
    return info | {"provenance": record}


def write_outputs(out_dir: Path, results: list[tuple[str, dict, dict]], force: bool, protect: list[Path]):
    """Write candidates.json and candidates.npz (one voice) or a sub-folder of both per voice (`a,b`), as one
    folder that appears whole (`fs.output_folder`): a failure, an interrupt or a concurrent run never leaves a pair
    from two runs or half a pair. `results` holds (voice name, JSON, arrays)."""
    import numpy as np

    written = []
    with fs.output_folder(out_dir, force=force, protect=protect, is_ours=is_results_folder) as tmp:
        for name, info, arrays in results:
            sub = tmp if len(results) == 1 else tmp / name
            sub.mkdir(exist_ok=True)
            fs.write_text(sub / "candidates.json", cli_output.dumps(info))
            with fs.atomic_file(sub / "candidates.npz", "wb") as f:
                np.savez(f, **arrays)
            written.append(out_dir if len(results) == 1 else out_dir / name)
    return written


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from clvp_jax import cli_voice, pipeline
    from clvp_jax.generation.options import OptionError
    from clvp_jax.generation.presets import PRESETS

    if args.list_voices:
        print(cli_voice.list_text(args, cli_common.UsageError))
        return 0
    # Everything the user gave is checked before the model load: text, numbers, preset, voices, the output.
    # The voices first: `--voice lj "Some text."` takes the text as a voice, and says so (cli_voice.resolve).
    specs = None if args.latents is not None else cli_voice.resolve(args, cli_common.UsageError)
    text = cli_common.read_text(args)
    cli_common.check_seed_arg(args)
    sampling = cli_options.sampling_from(args, cli_common.UsageError)
    if args.preset not in PRESETS:
        raise cli_common.UsageError(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
    drawn = sampling.num_samples or PRESETS[args.preset]
    try:
        sampling.check_keep(drawn)
    except OptionError as err:
        raise cli_common.UsageError(cli_options.flag_message(err)) from None
    keep = sampling.keep or drawn
    # Every refusal the output can meet comes before the work: a file, a read-only folder, an input, not ours.
    fs.check_target(args.out, force=args.force, protect=cli_common.protected(args), is_ours=is_results_folder)
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

        for spec, name in zip(specs, cli_voice.output_names(specs), strict=True):
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
    results = []
    start = time.perf_counter()
    for name, voice_record, latents in voices_latents:
        label = "candidates (first call compiles)" + (f" [{name}]" if len(voices_latents) > 1 else "")
        with tqdm(desc=label, unit="cand", file=sys.stderr, disable=cli_options.verbosity(args) < 0) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            result = pipeline.rank_speech(
                text=text,
                model=model,
                params=params,
                latents=latents,
                preset=args.preset,
                candidates=sampling.num_samples,
                max_new_tokens=sampling.max_new_tokens,
                seed=args.seed,
                dtype=args.dtype,
                progress=progress,
                sampling=sampling,
            )
        record = cli_output.provenance(
            checkpoint=args.checkpoint,
            checkpoint_sha256=ckpt_hash,
            random_weights=args.checkpoint is None,
            voice=voice_record,
            seed=args.seed,
            options=result.settings | {"kept": keep, "sampling_flags": sampling.to_json()},
            chunks=[c.text for c in result.chunks],
            argv=args.argv,
        )
        results.append((name, result, record))
    elapsed = time.perf_counter() - start
    written = write_outputs(
        args.out,
        [(name, kept_json(r, keep, rec), kept_arrays(r, keep)) for name, r, rec in results],
        args.force,
        cli_common.protected(args),
    )
    for (name, result, _), folder in zip(results, written, strict=True):
        if len(results) > 1:
            print(f"voice {name}:")
        for i, chunk in enumerate(result.chunks):
            best = chunk.best
            head = ", ".join(map(str, best.codes[:12])) + (", ..." if len(best.codes) > 12 else "")
            print(f"chunk {i}: {chunk.text!r}")
            for rank, cand in enumerate(chunk.candidates[: min(args.show, keep)]):
                mark = "*" if rank == 0 else " "
                print(
                    f"  {mark} #{rank + 1} candidate {cand.index:3d}  score {cand.score:8.4f}  {len(cand.codes)} codes"
                    + ("" if cand.stopped else " (no stop token)")
                )
            print(f"    best codes: [{head}]")
        print(f"wrote {folder / 'candidates.json'} and {folder / 'candidates.npz'}")
    label = " (RANDOM weights: meaningless codes)" if args.checkpoint is None else ""
    print(f"{len(results)} voice(s){label}, {elapsed:.1f} s generating and ranking")
    return 0


def kept_arrays(result, keep: int) -> dict:
    """The .npz arrays, with `kept_index` [chunks, keep]: the kept candidates' indices, best first."""
    import numpy as np

    kept = np.asarray([[c.index for c in chunk.candidates[:keep]] for chunk in result.chunks], np.int64)
    return result.arrays | {"kept_index": kept}
