"""Writing files and folders so that nothing is half-written, nothing of the user's is lost, and modes follow umask.

Every writer of the package goes through here:
- `atomic_file(path)` / `write_text` / `write_bytes`: a file appears complete or not at all (a unique temporary
  name in the same folder, then an atomic rename).
- `output_folder(target, ...)`: a folder of outputs is built under a unique temporary sibling and appears whole
  (one rename). With `force`, it replaces only a previous output of ours (it holds `OUTPUT_MARKER`, or the
  writer's `is_ours` says so), never a folder that is, contains or lies inside a protected path (the inputs),
  however the paths are spelled (symlinks, `..`, two routes to one folder are resolved first).
- Temporaries carry the writing process's id: the next writer removes those whose process is gone (an
  uncatchable SIGKILL or a power cut), and a catchable interrupt removes its own on the way out.

`mkstemp`/`mkdtemp` create 0600/0700 entries; here files get 0666 and folders 0777, less the umask, as `open`
and `mkdir` give them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

OUTPUT_MARKER = ".clvp-jax-output"  # an empty file in every output folder we write


class OutputError(OSError):
    """An output that cannot be written where asked; the message says why and what to do."""


def umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _tmp_prefix(target: Path) -> str:
    return f".{target.name}.tmp-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete temporaries of `target` left by processes that no longer run. Returns what was removed."""
    removed = []
    parent = target.parent
    if not parent.is_dir():
        return removed
    for entry in parent.glob(f".{target.name}.tmp-*"):
        pid = entry.name[len(f".{target.name}.tmp-") :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a unique temporary beside `path` for writing (text modes: UTF-8, "\n" line ends); on success it is
    renamed to `path`, else deleted."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name to write")
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: the folder {path.parent} does not exist")
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(path))
    try:
        os.fchmod(fd, 0o666 & ~umask())
        text = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_file(path, "w") as f:
        f.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


def _related(a: Path, b: Path) -> bool:
    """Whether one of the two (resolved) paths is the other or inside it."""
    return a == b or a in b.parents or b in a.parents


def check_target(
    target: str | os.PathLike,
    *,
    force: bool,
    protect: Iterable[str | os.PathLike] = (),
    is_ours: Callable[[Path], bool] | None = None,
) -> Path:
    """Refuse, before any work, an output folder that cannot be written or must not be replaced.

    Returns the resolved target. Raises `OutputError` if `target` is a file, exists without `force`, is not a
    previous output of ours (with `force`), or is, contains or lies inside any `protect` path.
    """
    resolved = Path(os.path.realpath(Path(target).expanduser()))
    for source in protect:
        source_path = Path(os.path.realpath(Path(source).expanduser()))
        if _related(resolved, source_path):
            raise OutputError(
                f"output {target} would overwrite the input {source} (one holds the other); choose an output "
                "folder outside the inputs"
            )
    if resolved.exists() or resolved.is_symlink():
        if not resolved.is_dir():
            raise OutputError(f"output {target} exists and is not a folder; choose a folder name")
        if not force:
            raise OutputError(f"{target} already exists; choose another output or pass --force to replace it")
        empty = not any(resolved.iterdir())
        if not (empty or (resolved / OUTPUT_MARKER).is_file() or (is_ours is not None and is_ours(resolved))):
            raise OutputError(
                f"{target} exists and is not an output of clvp-jax; --force only replaces a previous output. "
                "Choose another output folder or remove it yourself"
            )
    parent = resolved.parent
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write in {parent} (permission denied); choose another output folder")
    return resolved


@contextlib.contextmanager
def output_folder(
    target: str | os.PathLike,
    *,
    force: bool = False,
    protect: Iterable[str | os.PathLike] = (),
    is_ours: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """Yield an empty temporary sibling of `target` to fill; on success it replaces `target` in one rename.

    On any exception (KeyboardInterrupt and other signals raised as exceptions included) the temporary is
    deleted and `target` is left as it was. See `check_target` for what is refused up front.
    """
    resolved = check_target(target, force=force, protect=protect, is_ours=is_ours)
    resolved.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(resolved)
    tmp = Path(tempfile.mkdtemp(dir=resolved.parent, prefix=_tmp_prefix(resolved)))
    old: Path | None = None
    try:
        os.chmod(tmp, 0o777 & ~umask())
        yield tmp
        (tmp / OUTPUT_MARKER).touch()
        if resolved.exists():
            check_target(target, force=force, protect=protect, is_ours=is_ours)  # still ours after the work
            old = Path(tempfile.mkdtemp(dir=resolved.parent, prefix=_tmp_prefix(resolved)))
            os.replace(resolved, old / "previous")
        os.replace(tmp, resolved)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "previous").exists() and not resolved.exists():
            os.replace(old / "previous", resolved)  # put the previous output back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
