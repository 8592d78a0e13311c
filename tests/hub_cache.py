"""A Hugging Face Hub cache folder built by a test: the layout `huggingface_hub` itself reads (no network, no mock)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_hub_cache(cache: Path, repo: str, files: dict[str, Path], *, commit: str = COMMIT, refs=("main",)) -> Path:
    """Put `files` (name -> source file) into `cache` as `huggingface_hub` stores a download; the snapshot folder."""
    owner, name = repo.split("/")
    store = cache / f"models--{owner}--{name}"
    snapshot = store / "snapshots" / commit
    (store / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for filename, source in files.items():
        data = Path(source).read_bytes()
        blob = store / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / filename).symlink_to(os.path.relpath(blob, snapshot))
    (store / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (store / "refs" / ref).write_text(commit)  # no newline, as the library writes it
    return snapshot
