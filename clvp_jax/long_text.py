"""Long text chunk by chunk, in bounded memory and resumable, as Tortoise's `read.py` reads a book.

The text is split into chunks (`pipeline.plan_ranking`; `|` marks manual split points). Chunks are generated a
group at a time (`pipeline.chunk_groups`, `CHUNKS_PER_CALL` by default) and each chunk's results are written as
soon as they exist, as one folder that appears whole (`fs.output_folder`):

  codes (`generate --out DIR`):  DIR/chunks/0003/{candidates.json, candidates.npz}
                                 then DIR/candidates.json and DIR/candidates.npz, the whole text
  audio (`speak -o OUT.wav`):    OUT.chunks/0003/{chunk.json, rank0.wav[, rank1.wav ...]}
                                 then OUT.wav[, OUT.rank1.wav ...] (the chunks joined) and OUT.json

Each chunk's JSON records its key (`chunk_key`): the chunk's index and text, the settings, a digest of the voice
latents, a digest of the weights and the clvp-jax version. On a rerun into the same place a chunk whose recorded
key equals the new one is kept; every other chunk is made again, as are those named in `regenerate` (and all of
them with `force`). The joined outputs are then rebuilt from the chunk folders, one chunk at a time, so memory
does not grow with the length of the text (only the list of chunk texts does). With `record=` (the CLI's
`cli_output.provenance`) every JSON carries the provenance record: the joined file the whole text's, each chunk's
the same with its own chunk only (`chunk_record`); it is not part of the key, so a kept chunk keeps the record of
the run that made it. The JSON is readable (`json_text.dumps`: a candidate's codes on one line).

Same key, same output: a chunk's randomness comes from its index (`pipeline.rank_group`,
`speech_sample.waveform_key`), so its results do not depend on which chunks were generated with it, nor on whether
the run was resumed (up to float rounding in the scores: a group's shapes change the order of a few float sums).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clvp_jax import fs
from clvp_jax.json_text import dumps
from clvp_jax.version import __version__

__all__ = ["chunk_key", "digest", "parse_regenerate", "ChunkStore", "write_codes", "write_speech"]

# report(index, chunks, status): "kept" (a finished chunk of an earlier run) or "made".
Report = Callable[[int, int, str], None]


def digest(*arrays: Any) -> str:
    """sha256 (hex, first 16 bytes) of arrays or pytrees of arrays: their paths, dtypes, shapes and bytes."""
    import jax

    h = hashlib.sha256()
    for tree in arrays:
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            x = np.ascontiguousarray(np.asarray(leaf))
            h.update(f"{jax.tree_util.keystr(path)}|{x.dtype.str}|{x.shape}|".encode())
            h.update(memoryview(x).cast("B"))
    return h.hexdigest()[:32]


def chunk_key(*, index: int, text: str, settings: dict[str, Any], voice: str, weights: str) -> dict[str, Any]:
    """What a chunk's results are made from: a finished chunk is reused only when its recorded key equals this."""
    key = {"index": index, "text": text, "settings": settings, "voice": voice, "weights": weights}
    return json.loads(json.dumps(key | {"clvp_jax": __version__}, allow_nan=False))  # as it reads back


def parse_regenerate(spec: str | None, chunks: int) -> set[int]:
    """`--regenerate 3,7` (or ranges, `2-4`) -> chunk indices, each checked to be in [0, chunks)."""
    if spec is None or not spec.strip():
        return set()
    out: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        try:
            first, _, last = part.partition("-")
            lo, hi = int(first), int(last or first)
        except ValueError:
            raise ValueError(
                f"--regenerate takes chunk numbers like 3,7 or 2-4, got {spec!r}; chunks are numbered 0 to {chunks - 1}"
            ) from None
        if hi < lo:
            raise ValueError(
                f"--regenerate: the range {part} runs backwards; write it low to high ({hi}-{lo}); chunks are "
                f"numbered 0 to {chunks - 1}"
            )
        for i in (lo, hi):
            if not 0 <= i < chunks:
                raise ValueError(
                    f"--regenerate: chunk {i} is out of range; this text has {chunks} chunk(s), numbered 0 to "
                    f"{chunks - 1}"
                )
        out |= set(range(lo, hi + 1))
    return out


class ChunkStore:
    """The folder of chunk folders (`root/0000`, `root/0001`, ...), each with a JSON sidecar holding its key."""

    def __init__(self, root: Path, sidecar: str) -> None:
        self.root, self.sidecar = Path(root), sidecar

    def folder(self, index: int) -> Path:
        return self.root / f"{index:04d}"

    def recorded(self, index: int) -> dict[str, Any] | None:
        """The chunk's JSON, or None when the folder is missing or not one of ours (or unreadable)."""
        folder = self.folder(index)
        try:
            if not (folder / fs.OUTPUT_MARKER).is_file():
                return None
            return json.loads((folder / self.sidecar).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def todo(self, keys: Sequence[dict[str, Any]], regenerate: Iterable[int] = (), force: bool = False) -> list[int]:
        """The chunks to make: all with `force`, else those in `regenerate` and those without a finished folder
        of the same key."""
        again = set(regenerate)
        if force:
            return list(range(len(keys)))
        return [i for i, key in enumerate(keys) if i in again or (self.recorded(i) or {}).get("key") != key]

    def prepare(self, chunks: int) -> None:
        """Create the folder (marked as ours) and remove the chunk folders past `chunks` (of a longer text)."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / fs.OUTPUT_MARKER).touch()
        for entry in self.root.iterdir():
            if entry.name.isdigit() and int(entry.name) >= chunks and (entry / fs.OUTPUT_MARKER).is_file():
                shutil.rmtree(entry)

    def write(self, index: int, fill: Callable[[Path], None]) -> None:
        """Make chunk `index`'s folder with `fill(tmp)`: it appears whole, replacing the previous one, or not at all."""
        with fs.output_folder(self.folder(index), force=True) as tmp:
            fill(tmp)


def _json_list_file(path: Path, head: dict[str, Any], items: Iterable[dict[str, Any]], tail: dict[str, Any]) -> None:
    """Write {**head, "chunks": [items...], **tail} as readable JSON (`json_text.dumps`), one item at a time
    (atomically)."""
    with fs.atomic_file(path, "w") as f:
        f.write("{\n")
        for name, value in head.items():
            f.write(f" {json.dumps(name)}: {dumps(value, 1)},\n")
        f.write(' "chunks": [')
        for n, item in enumerate(items):
            f.write(("," if n else "") + "\n  " + dumps(item, 2))
        f.write("\n ]")
        for name, value in tail.items():
            f.write(f",\n {json.dumps(name)}: {dumps(value, 1)}")
        f.write("\n}\n")


def chunk_record(record: dict[str, Any] | None, index: int) -> dict[str, Any]:
    """The provenance record of one chunk's JSON: the whole text's (`cli_output.provenance`), with only this
    chunk's entry in its "chunks"; {} without a record."""
    if record is None:
        return {}
    chunks = record.get("chunks")
    return {"provenance": record | ({"chunks": [chunks[index]]} if chunks else {})}


# ---- codes (`generate`) -------------------------------------------------------------------------------------

CODE_ARRAYS = ("sequences", "candidate_scores", "num_generated", "text_ids", "text_mask")


def _stream_npz(path: Path, chunks: int, rows: Callable[[int], dict[str, np.ndarray]], pad: dict[str, int]) -> None:
    """An .npz of arrays [chunks, ...] written row by row (one chunk's arrays in memory at a time); the arrays
    named in `pad` (value: the pad value) are right-padded to their longest row."""
    shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    for i in range(chunks):  # first pass: every row's shape (the text length differs between runs)
        for name, value in rows(i).items():
            shape, dtype = shapes.get(name, (value.shape, value.dtype))
            shapes[name] = (tuple(max(a, b) for a, b in zip(shape, value.shape, strict=True)), dtype)
    with fs.atomic_file(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, (shape, dtype) in shapes.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as entry:
                header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
                np.lib.format.write_array_header_2_0(entry, header | {"shape": (chunks, *shape)})
                for i in range(chunks):
                    row = np.asarray(rows(i)[name], dtype)
                    widths = [(0, want - have) for want, have in zip(shape, row.shape, strict=True)]
                    if row.ndim:
                        row = np.pad(row, widths, constant_values=pad.get(name, 0))
                    entry.write(np.ascontiguousarray(row).tobytes())


def write_codes(
    plan,
    *,
    model,
    params,
    out: Path,
    weights: str,
    regenerate: Iterable[int] = (),
    force: bool = False,
    group_size: int = 0,
    report: Report | None = None,
    progress: Callable[[int, int], None] | None = None,
    keep: int | None = None,
    record: dict[str, Any] | None = None,
) -> list[int]:
    """Generate and rank every chunk of `plan` (a `pipeline.RankPlan`) into the folder `out`, resuming.

    Args:
      out: the results folder (created; a previous one of ours is resumed, see the module docstring).
      weights: the digest of the weights (`digest(params)`), part of every chunk's key.
      regenerate: chunk indices made again even when finished; force: make every chunk again.
      group_size: chunks generated together (0: `pipeline.CHUNKS_PER_CALL`).
      report: report(index, chunks, "kept" | "made") per chunk; progress(done, total): candidates of a group.
      keep: candidates listed per chunk in the joined candidates.json, best first (None: every one drawn); the
        chunk folders hold every candidate drawn, and the joined .npz adds kept_index [chunks, keep].
      record: the provenance record (`cli_output.provenance`) of the joined JSON; each chunk's JSON gets it with
        its own chunk only (`chunk_record`). Neither is part of a chunk's key.
    Returns:
      the indices of the chunks made (the others were kept).
    """
    from clvp_jax.pipeline import chunk_groups, rank_group

    n = len(plan.chunks)
    say = report or (lambda i, total, status: None)
    voice = digest(plan.latents)
    keys = [
        chunk_key(index=i, text=t, settings=plan.settings, voice=voice, weights=weights)
        for i, t in enumerate(plan.chunks)
    ]
    store = ChunkStore(Path(out) / "chunks", "candidates.json")
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / fs.OUTPUT_MARKER).touch()
    store.prepare(n)
    todo = store.todo(keys, regenerate, force)
    for i in sorted(set(range(n)) - set(todo)):
        say(i, n, "kept")
    groups = chunk_groups(todo, group_size)
    for group in groups:
        ranked = rank_group(plan, group, model=model, params=params, rows=len(groups[0]), progress=progress)
        for i, (chunk, arrays) in zip(group, ranked, strict=True):

            def fill(tmp: Path, chunk=chunk, arrays=arrays, key=keys[i], i=i) -> None:
                entry = {"key": key, "text": chunk.text, "best": _asdict(chunk.best)}
                entry["candidates"] = [_asdict(c) for c in chunk.candidates]
                with fs.atomic_file(tmp / "candidates.npz", "wb") as f:
                    np.savez(f, **arrays)
                fs.write_text(tmp / "candidates.json", dumps(entry | chunk_record(record, i)))

            store.write(i, fill)
            say(i, n, "made")
    _join_codes(store, out, n, plan.settings, voice, weights, model, keep or plan.candidates, record)
    return todo


def _asdict(candidate) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(candidate)


def _join_codes(
    store: ChunkStore, out: Path, n: int, settings, voice: str, weights: str, model, keep: int, record
) -> None:
    """candidates.npz and candidates.json of the whole text from the chunk folders. The old pair is removed first
    and the JSON written last, so a failure in between leaves no pair from two runs (rerun to rebuild it)."""
    out = Path(out)
    for name in ("candidates.json", "candidates.npz"):
        (out / name).unlink(missing_ok=True)

    def rows(i: int) -> dict[str, np.ndarray]:
        with np.load(store.folder(i) / "candidates.npz", allow_pickle=False) as z:
            row = {name: z[name] for name in CODE_ARRAYS}
        kept = np.argsort(-row["candidate_scores"], kind="stable")[:keep]  # as the chunk's sorted candidates
        return row | {"best_index": row["candidate_scores"].argmax(), "kept_index": kept.astype(np.int64)}

    _stream_npz(out / "candidates.npz", n, rows, pad={"text_ids": model.config.text_config.eos_token_id})

    def entry(i: int) -> dict[str, Any]:
        chunk = _chunk_entry(store, i)
        return chunk | {"candidates": chunk["candidates"][:keep]}

    head = {"settings": settings | {"kept": keep}, "voice": voice, "weights": weights, "clvp_jax": __version__}
    tail = {} if record is None else {"provenance": record}
    _json_list_file(out / "candidates.json", head, (entry(i) for i in range(n)), tail)


def _chunk_entry(store: ChunkStore, i: int) -> dict[str, Any]:
    entry = store.recorded(i)
    if entry is None:
        raise FileNotFoundError(f"chunk {i}'s results are missing from {store.folder(i)}; run again to make it")
    entry.pop("key", None)
    entry.pop("provenance", None)  # the joined file has the whole text's
    return entry


# ---- audio (`speak`) ----------------------------------------------------------------------------------------


def _write_wav(path: Path, waveform: np.ndarray, sampling_rate: int, comment: str | None) -> None:
    import soundfile as sf

    with fs.atomic_file(path, "wb") as f:
        with sf.SoundFile(f, "w", samplerate=sampling_rate, channels=1, format="WAV", subtype="FLOAT") as wav:
            if comment:
                wav.comment = comment
            wav.write(waveform)


def speech_paths(out: Path, k: int) -> dict[str, Path]:
    """The joined outputs of `speak -o OUT.wav`: "0" -> OUT.wav, "r" -> OUT.rank{r}.wav, "json" -> OUT.json, and
    "chunks" -> the OUT.chunks folder of chunk folders."""
    stem, suffix = out.with_suffix(""), out.suffix or ".wav"
    paths = {str(r): Path(f"{stem}{'' if r == 0 else f'.rank{r}'}{suffix}") for r in range(k)}
    return paths | {"json": Path(f"{stem}.json"), "chunks": Path(f"{stem}.chunks")}


def write_speech(
    plan,
    *,
    model,
    params,
    waveform_models,
    out: Path,
    weights: str,
    regenerate: Iterable[int] = (),
    force: bool = False,
    group_size: int = 0,
    comment: str | None = None,
    report: Report | None = None,
    progress=None,
    label: str | None = None,
    record: dict[str, Any] | None = None,
) -> list[int]:
    """Speak every chunk of `plan` (a `speech.SpeechPlan`) into files beside `out`, resuming (`speech_paths`).

    Args and Returns: as `write_codes`; `weights` is the digest of the AR and waveform models' weights, `comment`
    goes in every WAV's INFO chunk, `label` (the random-weights warning) in the joined JSON, progress(stage, done,
    total) as `speech.speak_chunks` reports it.
    """
    import soundfile as sf

    from clvp_jax.audio.univnet_mel import SAMPLING_RATE
    from clvp_jax.speech import speak_chunks

    n, k = len(plan.chunks), plan.k
    say = report or (lambda i, total, status: None)
    v = plan.voice
    voice = digest(v.autoregressive, v.diffusion, np.zeros(0) if v.cvvp_mels is None else v.cvvp_mels)
    keys = [
        chunk_key(index=i, text=t, settings=plan.settings, voice=voice, weights=weights)
        for i, t in enumerate(plan.chunks)
    ]
    paths = speech_paths(Path(out), k)
    store = ChunkStore(paths["chunks"], "chunk.json")
    store.prepare(n)
    todo = store.todo(keys, regenerate, force)
    for i in sorted(set(range(n)) - set(todo)):
        say(i, n, "kept")
    made = speak_chunks(
        plan,
        todo,
        model=model,
        params=params,
        waveform_models=waveform_models,
        group_size=group_size,
        progress=progress,
    )
    for i, chunk in made:

        def fill(tmp: Path, chunk=chunk, key=keys[i], i=i) -> None:
            for r, o in enumerate(chunk.outputs):
                _write_wav(tmp / f"rank{r}.wav", o.waveform, SAMPLING_RATE, comment)
            entry = {"key": key, "text": chunk.text, "outputs": [o.to_json() for o in chunk.outputs]}
            entry["ranked"] = [_asdict(x) | {"score_used": s} for x, s in zip(chunk.ranked, chunk.scores, strict=True)]
            fs.write_text(tmp / "chunk.json", dumps(entry | chunk_record(record, i)))

        store.write(i, fill)
        say(i, n, "made")
    for r in range(k):  # the joined waveforms, a chunk at a time
        with fs.atomic_file(paths[str(r)], "wb") as f:
            with sf.SoundFile(f, "w", samplerate=SAMPLING_RATE, channels=1, format="WAV", subtype="FLOAT") as wav:
                if comment:
                    wav.comment = comment
                for i in range(n):
                    wav.write(sf.read(store.folder(i) / f"rank{r}.wav", dtype="float32")[0])
    head = {"settings": plan.settings, "random_weights": waveform_models.random_weights, "sampling_rate": SAMPLING_RATE}
    head |= {"voice": voice, "weights": weights, "clvp_jax": __version__}
    files = {f"all/{r}": str(paths[str(r)]) for r in range(k)}
    files |= {f"{i}/{r}": str(store.folder(i) / f"rank{r}.wav") for i in range(n) for r in range(k)}
    tail = {"files": files} | ({"label": label} if label else {}) | ({"provenance": record} if record else {})
    _json_list_file(paths["json"], head, (_chunk_entry(store, i) for i in range(n)), tail)
    return todo
