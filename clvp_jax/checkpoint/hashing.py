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
    sorted `name sha256` lines of its top-level weight and config files (reads them once: seconds at real size).
    """
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if (path / "manifest.json").is_file():
        return sha256_file(path / "manifest.json")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES)
    lines = "".join(f"{p.name} {sha256_file(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()
