"""Voices as Tortoise users name them: `--voice lj`, `--voice lj&emma`, `--voice lj,emma`, `--voice random`, paths.

A voice spec is parsed as Tortoise's `do_tts.py` parses `--voice`:

* `,` separates voices that are rendered one after the other (`a,b` -> two outputs);
* `&` joins voices into one (`a&b` -> one latent from the clips of both);
* each part is `random` (Tortoise's random latent generators make up a voice), a voice *name* (a sub-folder of
  a voices folder: the `voice_dirs` given, in order, then the packaged one, `PACKAGED_VOICES_DIR`; the first
  folder that has the name wins), a folder of clips, an audio file, or a latents file (`.pth` as Tortoise's
  `get_conditioning_latents.py` writes it, `.npy` as `clvp-jax latents` writes it, or a `.npz` cache).
  A part that contains a path separator, starts with `.` or `~`, or ends in an audio or latents extension is
  always a path; any other part is a name first and a path (relative to the working folder) second.
  A voice folder is its audio clips (name order, as `load_voice` reads them); only a folder without clips may
  instead hold one latents file (Tortoise's `voices/cond_latent_example/pat.pth` layout).
  A whole spec that is itself an existing path is taken literally, so paths holding `,` or `&` still work.

Resolution is pure and fast (directory listings and `stat` only: no audio is decoded, no model is touched), so
the CLI validates `--voice` before the ~30 s model load; every problem is a `VoiceError` that says what was
looked for, where, and what exists.

Cached latents: `clvp_jax.voice_latents.save_cached_latents` writes `<voice folder>/clvp_jax_latents.npz` (`CACHE_FILE`) holding the
voice's latents, the names of the clips they came from and the checkpoint they were made with. `resolve_voices`
finds it and reports whether it is still valid (`CacheInfo.problem`): it is reused only when it lists exactly the
folder's current clips, none of them changed since (each clip's size and modification time are recorded: stricter
than "the cache is newer than every clip", which misses a clip replaced by an older file and never recovers from a
clip dated in the future), and it was made by the same checkpoint hash.
`clvp_jax.voice_latents.voice_latents(spec, checkpoint=..., compute=...)` puts it together: caches or latents files where they are
valid, the model (`compute`) elsewhere, a fresh cache written back.

Combining (`a&b`) follows Tortoise: clip voices are averaged over *all their clips* (Tortoise concatenates the clip
lists; here each voice's latent, itself a mean over its clips, is weighted by its clip count, which is the same
number and lets each voice be cached on its own); latents files are averaged with equal weights (Tortoise's
`load_voices`). Like Tortoise, clip voices and latents-file voices cannot be joined, and `random` cannot be joined.
Unlike Tortoise (which warns and falls back to `random`), that is an error.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here D the AR conditioning latent width, 1024 real; the
diffusion conditioning latent is 2W wide, 2048 real).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from clvp_jax.assets import ASSETS_DIR
from clvp_jax.audio.io import AUDIO_EXTENSIONS

RANDOM_VOICE = "random"  # the reserved name of Tortoise's random voice
PACKAGED_VOICES_DIR = ASSETS_DIR / "voices"  # the voices shipped with the package (searched last)
CACHE_FILE = "clvp_jax_latents.npz"  # the cached latents of a voice folder, beside its clips
CACHE_FORMAT = "clvp-jax voice latents 1"  # the `format` entry of a cache file; another value is not read
LATENT_EXTENSIONS = (".pth", ".npy", ".npz")  # Tortoise latents, `clvp-jax latents` output, our cache format

SourceKind = Literal["named", "folder", "file", "latents"]


class VoiceError(ValueError):
    """A voice that cannot be used: the message names what was looked for, where, and what to do."""


# ---------------------------------------------------------------------------------------------------------------
# What resolution returns


@dataclass(frozen=True)
class CacheInfo:
    """A cache file found beside a voice's clips.

    Attributes:
      path: the `CACHE_FILE`.
      checkpoint: the checkpoint hash it was made with ('' when unreadable).
      clips: the clip file names it was made from.
      has_diffusion: whether it holds a diffusion conditioning latent too.
      stale: None when it lists exactly the folder's current clips, each with the size and modification time it
        had when the cache was made; otherwise why not.
    """

    path: Path
    checkpoint: str
    clips: tuple[str, ...]
    has_diffusion: bool
    stale: str | None

    def problem(self, checkpoint: str, need_diffusion: bool = False) -> str | None:
        """None when the cache can be reused for `checkpoint`, else the reason it cannot."""
        if self.stale is not None:
            return self.stale
        if self.checkpoint != checkpoint:
            return f"made by checkpoint {self.checkpoint[:12] or '?'}, not {checkpoint[:12]}"
        if need_diffusion and not self.has_diffusion:
            return "it holds no diffusion latent"
        return None


@dataclass(frozen=True)
class VoiceSource:
    """One part of a voice spec (`lj`, `path/to/folder`, `clip.wav`, `pat.pth`).

    Attributes:
      label: the part as written.
      kind: 'named' (found in a voices folder), 'folder', 'file' (one audio clip) or 'latents' (a latents file).
      path: the voice folder, the clip, or the latents file.
      clips: the audio clips, in name order (empty for 'latents').
      latents_file: the latents file of a 'latents' source (a file given, or a folder whose only content it is).
      cache: the cache found beside the clips, if any.
      cache_path: where `save_cached_latents` writes (None: loose files, latents files and packaged voices,
        whose folder is not the user's to write in).
    """

    label: str
    kind: SourceKind
    path: Path
    clips: tuple[Path, ...] = ()
    latents_file: Path | None = None
    cache: CacheInfo | None = None
    cache_path: Path | None = None

    @property
    def weight(self) -> int:
        """How much this source counts in a `&` average: its clip count (latents files: 1)."""
        return len(self.clips) if self.clips else 1


@dataclass(frozen=True)
class VoiceSpec:
    """One voice to render: `random`, or one or more sources joined into one latent (`a&b`).

    Attributes:
      label: the spec part as written (`lj&emma`).
      sources: the joined sources (empty for the random voice).
    """

    label: str
    sources: tuple[VoiceSource, ...]

    @property
    def is_random(self) -> bool:
        return not self.sources

    @property
    def clips(self) -> tuple[Path, ...]:
        """Every clip of every source, in order."""
        return tuple(clip for source in self.sources for clip in source.clips)

    @property
    def name(self) -> str:
        """A file-name-safe name for outputs: voice names as given, paths by their last component, `&`-joined."""
        if self.is_random:
            return RANDOM_VOICE
        parts = [
            s.label if s.kind == "named" else (s.path.stem if s.path.is_file() else s.path.name) for s in self.sources
        ]
        return "&".join(re.sub(r"[^A-Za-z0-9._-]+", "_", p).strip("._") or "voice" for p in parts)


@dataclass(frozen=True)
class VoiceLatents:
    """A voice's conditioning latents.

    Attributes:
      auto: float32 [D], the autoregressive model's conditioning latent.
      diffusion: float32 [2W], the diffusion decoder's conditioning latent, or None when not computed.
    """

    auto: np.ndarray
    diffusion: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------------------------
# Voice folders


def _search_dirs(voice_dirs: Sequence[str | os.PathLike]) -> list[tuple[Path, bool]]:
    """(folder, packaged) in search order; the given folders must exist."""
    dirs = []
    for d in voice_dirs:
        path = Path(d).expanduser()
        if not path.is_dir():
            what = "is a file, not a folder" if path.exists() else "does not exist"
            raise VoiceError(f"voices folder {path} {what}; pass a folder whose sub-folders are voices (--voices-dir)")
        dirs.append((path, False))
    if PACKAGED_VOICES_DIR.is_dir():
        dirs.append((PACKAGED_VOICES_DIR, True))
    return dirs


def _named_folders(voice_dirs: Sequence[str | os.PathLike]) -> dict[str, tuple[Path, bool]]:
    """voice name -> (its folder, packaged); the first voices folder that has a name wins."""
    found: dict[str, tuple[Path, bool]] = {}
    for root, packaged in _search_dirs(voice_dirs):
        for entry in sorted(root.iterdir()):
            if entry.is_dir() and not entry.name.startswith(".") and entry.name != RANDOM_VOICE:
                found.setdefault(entry.name, (entry, packaged))
    return found


def clip_stats(clips: Sequence[Path]) -> dict[str, tuple[int, int]]:
    """clip name -> (size in bytes, modification time in ns): what a cache records to notice an edited clip."""
    return {c.name: (c.stat().st_size, c.stat().st_mtime_ns) for c in clips}


def read_cache(path: Path, clips: Sequence[Path]) -> CacheInfo:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["format"]) != CACHE_FORMAT:
                raise ValueError(f"format {str(npz['format'])!r}, not {CACHE_FORMAT!r}")
            checkpoint, has_diffusion = str(npz["checkpoint"]), "diffusion" in npz
            names = tuple(str(n) for n in npz["clips"])
            stats = zip(npz["clip_sizes"].tolist(), npz["clip_mtimes_ns"].tolist(), strict=True)
            recorded = dict(zip(names, stats, strict=True))  # a length mismatch is a corrupt file: unreadable
    except Exception as error:  # a truncated or foreign file is reported, not fatal: it is simply not reused
        return CacheInfo(path, "", (), False, f"unreadable ({type(error).__name__}: {error})")
    current = clip_stats(clips)
    stale = None
    if set(recorded) != set(current):
        added, removed = sorted(set(current) - set(recorded)), sorted(set(recorded) - set(current))
        stale = "the clips changed since it was made" + "".join(
            f" ({what}: {', '.join(items)})" for what, items in (("added", added), ("removed", removed)) if items
        )
    else:
        changed = [name for name in current if tuple(current[name]) != tuple(recorded[name])]
        if changed:
            stale = f"{', '.join(changed)} changed since it was made (size or modification time)"
    return CacheInfo(path, checkpoint, names, has_diffusion, stale)


def is_file(path: Path | None) -> bool:
    return path is not None and path.is_file()


def _folder_source(label: str, kind: SourceKind, folder: Path, packaged: bool = False) -> VoiceSource:
    """Scan a voice folder: its audio clips (name order), else its one latents file; a cache beside the clips."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    clips = tuple(p for p in files if p.suffix.lower() in AUDIO_EXTENSIONS)
    what = f"voice {label!r} (folder {folder})" if kind == "named" else f"voice folder {folder}"
    if clips:
        empty = [c.name for c in clips if c.stat().st_size == 0]
        if empty:
            raise VoiceError(f"{what}: {', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty (0 bytes)")
        cache_file = folder / CACHE_FILE
        cache = read_cache(cache_file, clips) if is_file(cache_file) else None
        return VoiceSource(label, kind, folder, clips, None, cache, None if packaged else cache_file)
    latents = [p for p in files if p.suffix.lower() in LATENT_EXTENSIONS and p.name != CACHE_FILE]
    if len(latents) == 1:
        return VoiceSource(label, "latents", folder, latents_file=latents[0])
    if latents:
        raise VoiceError(
            f"{what} holds no audio clips and several latents files ({', '.join(p.name for p in latents)}); "
            "keep one, or give the file itself"
        )
    held = f"it holds {', '.join(p.name for p in files[:8])}" if files else "it is empty"
    raise VoiceError(
        f"{what} holds no audio files ({', '.join(AUDIO_EXTENSIONS)}) and no latents file "
        f"({', '.join(LATENT_EXTENSIONS)}); {held}. Put the voice's clips in it"
    )


def _path_source(label: str, path: Path) -> VoiceSource:
    if path.is_dir():
        return _folder_source(label, "folder", path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise VoiceError(f"voice {label!r}: no file or folder at {path}")
    if suffix in AUDIO_EXTENSIONS:
        if path.stat().st_size == 0:
            raise VoiceError(f"voice clip {path} is empty (0 bytes)")
        return VoiceSource(label, "file", path, clips=(path,))
    if suffix in LATENT_EXTENSIONS:
        return VoiceSource(label, "latents", path, latents_file=path)
    raise VoiceError(
        f"voice {label!r}: {path} is neither an audio file ({', '.join(AUDIO_EXTENSIONS)}) nor a latents file "
        f"({', '.join(LATENT_EXTENSIONS)})"
    )


def _looks_like_path(part: str) -> bool:
    suffix = Path(part).suffix.lower()
    return (
        "/" in part or os.sep in part or part.startswith((".", "~")) or suffix in AUDIO_EXTENSIONS + LATENT_EXTENSIONS
    )


def _source(part: str, named: dict[str, tuple[Path, bool]], voice_dirs: Sequence[str | os.PathLike]) -> VoiceSource:
    if _looks_like_path(part):
        return _path_source(part, Path(part).expanduser())
    if part in named:
        folder, packaged = named[part]
        return _folder_source(part, "named", folder, packaged)
    if Path(part).exists():
        return _path_source(part, Path(part))
    where = ", ".join(str(d) for d, _ in _search_dirs(voice_dirs)) or "no voices folder"
    known = ", ".join(sorted(named)) or "none"
    raise VoiceError(
        f"unknown voice {part!r}: no voice of that name in {where}, and no file or folder {part!r} here. "
        f"Known voices: {known}, and {RANDOM_VOICE!r}. Add folders with --voices-dir, or give a path"
    )


# ---------------------------------------------------------------------------------------------------------------
# Public entry points


def resolve_voices(
    spec: str | Sequence[str | os.PathLike], voice_dirs: Sequence[str | os.PathLike] = ()
) -> list[VoiceSpec]:
    """Parse and check a `--voice` value; no model and no audio decoding is needed.

    Args:
      spec: `'lj'`, `'lj&emma'`, `'lj,emma'`, `'random'`, paths, or a mix (see the module docstring). A sequence
        of several entries (the old `--voice a.wav b.wav`) is one voice joining them all, each entry one part
        taken as written (no `,`/`&` splitting); a one-entry sequence, or a Path, is parsed as its text.
      voice_dirs: voices folders searched by name, in order, before the packaged one.
    Returns:
      The voices to render, in order (one per `,` part).
    Raises:
      VoiceError naming the problem: an unknown name (with the known ones and where they were looked for), a
      missing path, a folder without clips, an empty clip, an empty part, `random` or latents joined with clips.
    """
    named = _named_folders(voice_dirs)
    if not isinstance(spec, (str, os.PathLike)) and len(spec) == 1:
        spec = spec[0]
    if isinstance(spec, (str, os.PathLike)):  # a Path (argparse `type=Path`) is parsed as its text
        text = os.fspath(spec).strip()
        if not text:
            raise VoiceError(f"the voice is empty; give a voice name ({', '.join(sorted(named))}), a path or 'random'")
        literal = ("," in text or "&" in text) and Path(text).expanduser().exists()
        groups = [[text]] if literal else [group.split("&") for group in text.split(",")]
    else:
        if not spec:
            raise VoiceError("no voice given; give a voice name, a path or 'random'")
        groups = [[os.fspath(part) for part in spec]]
    voices = []
    for group in groups:
        parts = [part.strip() for part in group]
        label = "&".join(parts)
        if any(not part for part in parts):
            raise VoiceError(f"empty voice name in {label!r} (in {spec!r}); write names like 'a&b' or 'a,b'")
        if RANDOM_VOICE in parts:
            if len(parts) > 1:
                raise VoiceError(
                    f"{label!r}: the random voice cannot be joined with other voices; use 'random' on its own "
                    "(or 'random,other' to render both)"
                )
            voices.append(VoiceSpec(RANDOM_VOICE, ()))
            continue
        sources = tuple(_source(part, named, voice_dirs) for part in parts)
        kinds = {"latents" if s.kind == "latents" else "clips" for s in sources}
        if len(kinds) > 1:
            raise VoiceError(
                f"{label!r} joins voices given as clips with voices given as latents files "
                f"({', '.join(s.label for s in sources if s.kind == 'latents')}); join clips with clips or latents "
                "with latents (as Tortoise)"
            )
        voices.append(VoiceSpec(label, sources))
    return voices


@dataclass(frozen=True)
class VoiceEntry:
    """One voice of `list_voices`.

    Attributes:
      name: the voice name.
      folder: its folder.
      packaged: whether it ships with clvp-jax.
      source: the resolved voice, or None when the folder cannot be used.
      problem: why the folder cannot be used (None when it can).
      shadows: folders of the same name later in the search order, hidden by this one.
    """

    name: str
    folder: Path
    packaged: bool
    source: VoiceSource | None
    problem: str | None
    shadows: tuple[Path, ...] = ()


def list_voices(voice_dirs: Sequence[str | os.PathLike] = ()) -> list[VoiceEntry]:
    """Every voice name reachable with `voice_dirs` (then the packaged folder), by name; unusable ones are listed
    with their problem rather than left out, so `--list-voices` shows why a folder does not work."""
    seen: dict[str, list[tuple[Path, bool]]] = {}
    for root, packaged in _search_dirs(voice_dirs):
        for entry in sorted(root.iterdir()):
            if entry.is_dir() and not entry.name.startswith(".") and entry.name != RANDOM_VOICE:
                seen.setdefault(entry.name, []).append((entry, packaged))
    entries = []
    for name in sorted(seen):
        (folder, packaged), *hidden = seen[name]
        try:
            source, problem = _folder_source(name, "named", folder, packaged), None
        except VoiceError as error:
            source, problem = None, str(error)
        entries.append(VoiceEntry(name, folder, packaged, source, problem, tuple(f for f, _ in hidden)))
    return entries


def describe_source(source: VoiceSource, checkpoint: str | None = None) -> str:
    """One line about a source: what it holds and, with `checkpoint`, whether its cache will be reused."""
    if source.kind == "latents":
        return f"{source.label}: latents file {source.latents_file}"
    n = len(source.clips)
    folder = source.path if source.path.is_dir() else source.path.parent
    text = f"{source.label}: {n} clip{'s' if n != 1 else ''} in {folder}"
    if source.cache is not None:
        problem = source.cache.stale if checkpoint is None else source.cache.problem(checkpoint)
        text += "; cached latents" + (f" not reused: {problem}" if problem else " reused" if checkpoint else " (fresh)")
    return text


def format_voice_list(entries: Sequence[VoiceEntry]) -> str:
    """The `--list-voices` text: one line per voice, then the random voice."""
    lines = []
    width = max([len(e.name) for e in entries] + [len(RANDOM_VOICE)])
    for e in entries:
        if e.source is None:
            detail = f"UNUSABLE: {e.problem}"
        elif e.source.kind == "latents":
            detail = f"latents file {e.source.latents_file.name}"
        else:
            n = len(e.source.clips)
            detail = f"{n} clip{'s' if n != 1 else ''}"
            if e.source.cache is not None:
                detail += ", cached latents" + (f" (stale: {e.source.cache.stale})" if e.source.cache.stale else "")
        where = "packaged" if e.packaged else str(e.folder)
        hidden = f"; hides {', '.join(map(str, e.shadows))}" if e.shadows else ""
        lines.append(f"{e.name:<{width}}  {detail}  [{where}{hidden}]")
    lines.append(
        f"{RANDOM_VOICE:<{width}}  a new voice from Tortoise's random latent generators (rlg_auto, rlg_diffuser)"
    )
    return "\n".join(lines)


__all__ = [
    "CACHE_FILE",
    "PACKAGED_VOICES_DIR",
    "RANDOM_VOICE",
    "CacheInfo",
    "VoiceEntry",
    "VoiceError",
    "VoiceLatents",
    "VoiceSource",
    "VoiceSpec",
    "describe_source",
    "format_voice_list",
    "list_voices",
    "resolve_voices",
]
