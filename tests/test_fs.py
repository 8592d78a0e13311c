"""clvp_jax.fs: atomic files and output folders, the user's umask, and what `force` may never replace."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from clvp_jax import fs


@pytest.fixture
def mask():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_appear_whole_with_the_umask(tmp_path, mask):
    target = fs.write_text(tmp_path / "a.json", "{}\n")
    assert target.read_text() == "{}\n" and _mode(target) == 0o666 & ~mask
    with pytest.raises(RuntimeError), fs.atomic_file(target, "w") as f:
        f.write("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "{}\n"  # the old content, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temporary left


def test_output_folder_appears_whole_and_replaces_only_our_outputs(tmp_path, mask):
    out = tmp_path / "out"
    with fs.output_folder(out) as tmp:
        (tmp / "x.txt").write_text("1")
        assert not out.exists()  # nothing visible until done
    assert (out / "x.txt").read_text() == "1" and (out / fs.OUTPUT_MARKER).is_file()
    assert _mode(out) == 0o777 & ~mask
    with pytest.raises(fs.OutputError, match="already exists; choose another output or pass --force"):
        fs.check_target(out, force=False)
    with pytest.raises(KeyboardInterrupt), fs.output_folder(out, force=True) as tmp:
        (tmp / "x.txt").write_text("2")
        raise KeyboardInterrupt
    assert (out / "x.txt").read_text() == "1"  # an interrupted replacement leaves the previous output
    with fs.output_folder(out, force=True) as tmp:
        (tmp / "y.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [fs.OUTPUT_MARKER, "y.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("years of work")
    with pytest.raises(fs.OutputError, match="is not an output of clvp-jax"):
        fs.check_target(theirs, force=True)
    assert fs.check_target(theirs, force=True, is_ours=lambda p: (p / "thesis.tex").exists()) == theirs.resolve()
    (tmp_path / "file").write_text("")
    with pytest.raises(fs.OutputError, match="is not a folder"):
        fs.check_target(tmp_path / "file", force=True)


def test_force_never_replaces_the_inputs_however_spelled(tmp_path):
    parent = tmp_path / "parent"
    src = parent / "src"
    src.mkdir(parents=True)
    (src / "autoregressive.pth").write_bytes(b"weights")
    (parent / fs.OUTPUT_MARKER).touch()  # even a folder that looks like ours
    (tmp_path / "link").symlink_to(parent)
    spellings = [parent, src, parent / "src" / ".." / "src", tmp_path / "link", tmp_path / "link" / "src"]
    for target in spellings:
        for source in (src, src / "autoregressive.pth", tmp_path / "link" / "src"):
            with pytest.raises(fs.OutputError, match="would overwrite the input"):
                fs.check_target(target, force=True, protect=[source])
    inside = src / "out"
    with pytest.raises(fs.OutputError, match="would overwrite the input"):
        fs.check_target(inside, force=True, protect=[src])
    assert (src / "autoregressive.pth").read_bytes() == b"weights"


def test_temporaries_of_dead_processes_are_removed_by_the_next_writer(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    stale = tmp_path / f".out.tmp-{pid}-abc"
    stale.mkdir()
    (stale / "big.bin").write_bytes(b"0" * 100)
    live = tmp_path / f".out.tmp-{os.getppid()}-def"  # a running process's: kept
    live.mkdir()
    with fs.output_folder(tmp_path / "out") as tmp:
        (tmp / "a").write_text("")
    assert not stale.exists() and live.exists()
