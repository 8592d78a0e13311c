"""Provenance of source files: their sha256 and size, as recorded in a clvp-jax checkpoint's manifest."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    """The hex sha256 of a file, read in `chunk`-byte blocks (a multi-GB checkpoint never sits in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def source_record(path: str | os.PathLike) -> dict:
    """{"file": name, "sha256": hex digest, "bytes": size} of one source file."""
    path = Path(path)
    return {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


# Setting this environment variable to 1 skips checksum verification on load (like `verify=False` / --no-verify).
NO_VERIFY_ENV = "CLVP_JAX_NO_VERIFY"


def folder_checksums(root: Path, under: str) -> dict[str, str]:
    """{path relative to `root`: sha256} of every file below `root/under`, sorted by path."""
    base = root / under
    files = sorted(p for p in base.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in files}


def verify_requested(verify: bool | None) -> bool:
    """`verify` when given, else True unless the environment sets `CLVP_JAX_NO_VERIFY=1`."""
    if verify is not None:
        return verify
    return os.environ.get(NO_VERIFY_ENV, "").strip().lower() not in ("1", "true", "yes")


def find_altered(root: Path, recorded: dict[str, str]) -> list[str]:
    """The recorded files under `root` that are missing or whose sha256 differs, as 'name (why)' strings."""
    altered = []
    for name, digest in recorded.items():
        path = root / name
        if not path.is_file():
            altered.append(f"{name} (missing)")
        elif sha256_file(path) != digest:
            altered.append(f"{name} (changed: {path.stat().st_size} bytes, checksum differs)")
    return altered


WEIGHT_SUFFIXES = (".pth", ".bin", ".safetensors", ".json", ".npz")  # what a checkpoint folder's identity is made of


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """One sha256 that names a checkpoint's weights, for provenance and for the voice-latents cache.

    A clvp-jax checkpoint: the sha256 of its `manifest.json` (which records every parameter file's sha256, verified on
    load). A file: its sha256. Another folder (original Tortoise `.pth` files, an HF folder): the sha256 of the
    sorted `name sha256` lines of its top-level weight and config files. Files read for this are remembered by
    path, size, inode and modification time (`remembered_sha256`), so a multi-GB Tortoise folder is hashed once,
    not on every run.
    """
    path = Path(path)
    if path.is_file():
        return remembered_sha256(path)
    if (path / "manifest.json").is_file():
        return sha256_file(path / "manifest.json")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES)
    lines = "".join(f"{p.name} {remembered_sha256(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


MEMO_FILE = "sha256-memo.json"  # in `memo_folder()`: {"path|size|inode|mtime_ns": sha256}


MEMO_ENV = "CLVP_JAX_HASH_MEMO"  # a folder for the memo (the compile cache's $CLVP_JAX_CACHE is XLA's own folder)


def memo_folder() -> Path:
    """Where remembered checksums live: `$CLVP_JAX_HASH_MEMO`, else `$XDG_CACHE_HOME/clvp_jax`, else
    `~/.cache/clvp_jax` (beside the compile cache's default `xla/` folder)."""
    if os.environ.get(MEMO_ENV):
        return Path(os.environ[MEMO_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clvp_jax"


def remembered_sha256(path: str | os.PathLike) -> str:
    """`sha256_file(path)`, remembered on disk under the file's absolute path, size, inode and modification time
    (any change to the file changes the key). Best effort: an unreadable or unwritable memo only costs the hash."""
    import json

    path = Path(path).absolute()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_ino}|{st.st_mtime_ns}"
    memo_path = memo_folder() / MEMO_FILE
    try:
        memo = json.loads(memo_path.read_text())
        memo = memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        memo = {}
    digest = memo.get(key)
    if isinstance(digest, str) and len(digest) == 64:
        return digest
    digest = sha256_file(path)
    memo = {k: v for k, v in memo.items() if not k.startswith(f"{path}|")}  # the file's stale entries go
    memo[key] = digest
    try:
        from clvp_jax.fs import write_text

        memo_path.parent.mkdir(parents=True, exist_ok=True)
        write_text(memo_path, json.dumps(memo, indent=0))
    except OSError:
        pass
    return digest
