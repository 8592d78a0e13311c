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
