"""The orbax seam of the clvp-jax format: write and read `params/<group>/`, quietly, failing in one line.

Orbax logs every failed write of every tensor with its traceback through absl (a full disk printed 38 of them,
323 lines) and then raises a `ValueError` wrapping the tensorstore message. Here its loggers are held at CRITICAL
while it works, and any failure becomes one `CheckpointError` that names the folder and the cause (`describe_os_error`
recognises a full disk, a read-only folder and missing permissions in the wrapped text).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from clvp_jax.checkpoint.errors import CheckpointError

_LOGGERS = ("absl", "orbax", "orbax.checkpoint", "tensorstore")
_ERRNO_TEXT = re.compile(r"os_error_code='?(\d+)")


@contextlib.contextmanager
def quiet_orbax() -> Iterator[None]:
    """Silence orbax's per-tensor error logging (the error itself is raised and summarised by the caller)."""
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _drop_closed_loop_reports(report) -> None:
    """`sys.unraisablehook` that drops tensorstore's late callbacks into orbax's closed event loop.

    After a failed save, writes still in flight finish on tensorstore's threads and try to wake the event loop
    orbax has already closed; each such attempt was printed as a 'RuntimeError: Event loop is closed' traceback
    after our one-line error. Those (and only those) are dropped; any other report goes to the previous hook.
    """
    if isinstance(report.exc_value, RuntimeError) and str(report.exc_value) == "Event loop is closed":
        return
    _previous_hook(report)


_previous_hook = sys.unraisablehook
_previous_excepthook = sys.excepthook


def _drop_closed_loop_exceptions(kind, value, traceback) -> None:
    """The `sys.excepthook` twin of `_drop_closed_loop_reports` (tensorstore prints through `PyErr_Print`)."""
    if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
        return
    _previous_excepthook(kind, value, traceback)


def describe_os_error(err: BaseException) -> str:
    """A short cause for a write/read failure, found in the exception, its chain, or orbax's wrapped text."""
    seen: BaseException | None = err
    code = None
    while seen is not None and code is None:
        if isinstance(seen, OSError) and seen.errno:
            code = seen.errno
        else:
            match = _ERRNO_TEXT.search(str(seen))
            code = int(match.group(1)) if match else None
        seen = seen.__cause__ or seen.__context__
    if code == errno.ENOSPC or "No space left" in str(err):
        return "the disk is full (No space left on device); free some space or choose another output folder"
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{os.strerror(code)}; choose a folder you can write"
    if code is not None:
        return os.strerror(code)
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return first[:300]


def save_groups(folder: Path, params: Mapping, parts: Sequence[str]) -> None:
    """Write one synchronous orbax item per parameter group, `folder/<group>`.

    Orbax copies whatever one save call holds, so a call per group bounds the extra memory by the largest group
    instead of the whole model. Raises `CheckpointError` (one line) on any failure.
    """
    import orbax.checkpoint as ocp  # local: orbax is slow to import and only this format needs it

    # Installed for good, not restored: the late reports can come after this function has raised.
    sys.unraisablehook, sys.excepthook = _drop_closed_loop_reports, _drop_closed_loop_exceptions
    try:
        with quiet_orbax(), ocp.Checkpointer(ocp.StandardCheckpointHandler(save_concurrent_gb=1)) as checkpointer:
            for part in parts:
                checkpointer.save(folder / part, args=ocp.args.StandardSave({part: params[part]}))
    except Exception as err:  # orbax/tensorstore raise ValueError, XlaRuntimeError, OSError... for one cause
        raise CheckpointError(f"cannot write the parameters: {describe_os_error(err)}") from err


def restore_groups(folder: Path, parts: Sequence[str]) -> dict:
    """Read the groups written by `save_groups` back into one dict. Raises `CheckpointError` (one line)."""
    import orbax.checkpoint as ocp

    params: dict = {}
    try:
        with quiet_orbax(), ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
            for part in parts:
                params.update(checkpointer.restore(folder / part))
    except Exception as err:  # damaged data surfaces as many types
        raise CheckpointError(
            f"cannot read the parameters in {folder} ({describe_os_error(err)}); the files are damaged or "
            "truncated: re-create the checkpoint"
        ) from err
    return params
