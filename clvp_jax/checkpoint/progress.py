"""Progress lines while a checkpoint is read: which file or group, how big, and when it is done.

A real-size load reads several GB and takes tens of seconds; the command line shows each stage as it starts.
The loaders call `report(message)`; nothing is printed unless the caller asked for it with
`with reporting(print_line): ...` (a context variable, so library users and tests see nothing by default, and
concurrent loads in other threads keep their own).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator
from pathlib import Path

_SINK: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "clvp_jax_load_progress", default=None
)


def report(message: str) -> None:
    """Send one progress line to the active `reporting` sink, if any."""
    sink = _SINK.get()
    if sink is not None:
        sink(message)


def size_of(paths: Path | os.PathLike | list) -> str:
    """The total size of `paths` (files; missing ones count 0), human-readable: '1.62 GB', '340 MB'."""
    items = paths if isinstance(paths, list | tuple) else [paths]
    total = sum(Path(p).stat().st_size for p in items if Path(p).is_file())
    return f"{total / 1e9:.2f} GB" if total >= 1e9 else f"{total / 1e6:.0f} MB"


@contextlib.contextmanager
def reporting(sink: Callable[[str], None] | None) -> Iterator[None]:
    """Within the block, loaders send their progress lines to `sink` (None: silence)."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


__all__ = ["report", "reporting", "size_of"]
