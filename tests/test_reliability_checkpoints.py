"""Checkpoint reliability (issue 19): `--force` never deletes an input, outputs follow the umask and appear whole,
altered parameter files are named on load, and every bad file or failure is one line with status 2.

Each case asserts the exit status, the one-line message and the files afterwards (sources intact, no temporary).
Conversions run in-process (`convert_cli.main`) on the tiny original checkpoint; a full disk is a writer made to
fail with ENOSPC; signals go to a child process group.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clvp_jax import fs
from clvp_jax.checkpoint import CheckpointError, load_checkpoint
from clvp_jax.checkpoint import save as save_module
from clvp_jax.checkpoint.convert_cli import main
from clvp_jax.checkpoint.hashing import sha256_file
from clvp_jax.checkpoint.readers import torch_load_weights

ROOT = Path(__file__).resolve().parents[1]


def _snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file below `folder` (to prove nothing changed)."""
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _last_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def _no_temporaries(folder: Path) -> None:
    left = [p.name for p in folder.iterdir() if ".tmp-" in p.name]
    assert not left, left


@pytest.fixture(scope="module")
def ck(tortoise_tiny, tmp_path_factory) -> Path:
    """A clvp-jax checkpoint converted from the tiny original files (converted once for the module)."""
    out = tmp_path_factory.mktemp("ck") / "ck"
    assert main([str(tortoise_tiny.folder), str(out)]) == 0
    return out


@pytest.fixture
def tree(tortoise_tiny, tmp_path) -> Path:
    """parent/src (a copy of the tiny original files) with a sibling file, as in the issue's data-loss report."""
    parent = tmp_path / "parent"
    shutil.copytree(tortoise_tiny.folder, parent / "src")
    (parent / "notes.txt").write_text("the user's own file")
    (tmp_path / "link").symlink_to(parent / "src")
    return tmp_path


# (source, output): every way of spelling an output that is, holds or lies inside the source.
FORCE_CASES = [
    ("parent/src", "parent"),  # the case: the output holds the source
    ("parent/src", "parent/src"),  # the source itself
    ("parent/src", "parent/src/out"),  # inside the source
    ("parent/src", "parent/src/../src/.."),  # `..` spelling of the parent
    ("link", "parent"),  # through a symlink
    ("parent/src", "link"),  # the source reached another way
    ("parent/../parent/src", "."),  # an ancestor, spelled with `..`
]


@pytest.mark.parametrize("source, output", FORCE_CASES)
def test_force_never_replaces_an_input(tree, capsys, monkeypatch, source, output):
    monkeypatch.chdir(tree)
    before = _snapshot(tree / "parent")
    assert main([source, output, "--force"]) == 2
    assert "would overwrite the input" in _last_line(capsys)
    assert _snapshot(tree / "parent") == before  # nothing deleted or changed
    _no_temporaries(tree)
    _no_temporaries(tree / "parent")


def test_force_replaces_only_a_previous_output(tree, ck, capsys, monkeypatch):
    monkeypatch.chdir(tree)
    (tree / "mine").mkdir()
    (tree / "mine" / "data.txt").write_text("keep")
    assert main([str(ck), "mine", "--force"]) == 2
    assert "is not an output of clvp-jax" in _last_line(capsys)
    assert (tree / "mine" / "data.txt").read_text() == "keep"
    (tree / "afile").write_text("x")
    assert main([str(ck), "afile", "--force"]) == 2
    assert "is not a folder" in _last_line(capsys)
    assert main([str(ck), "out"]) == 0 and main([str(ck), "out"]) == 2
    assert "already exists" in _last_line(capsys)
    # Our previous outputs are replaced: the marked ones, and an unmarked older export or checkpoint.
    assert main([str(ck), "out", "--force", "--format", "hf"]) == 0
    (tree / "out" / fs.OUTPUT_MARKER).unlink()
    assert save_module.is_our_output(tree / "out")  # an HF export of a CLVP model, by its files
    assert main([str(ck), "out", "--force"]) == 0
    (tree / "out" / fs.OUTPUT_MARKER).unlink()
    assert main([str(ck), "out", "--force"]) == 0  # an older checkpoint, by its manifest
    _no_temporaries(tree)


def test_outputs_follow_the_umask(ck, tmp_path):
    old = os.umask(0o027)
    try:
        assert main([str(ck), str(tmp_path / "a")]) == 0
        assert main([str(ck), str(tmp_path / "b"), "--format", "hf"]) == 0
    finally:
        os.umask(old)
    for folder in (tmp_path / "a", tmp_path / "b"):
        for path in [folder, *folder.rglob("*")]:
            want = 0o750 if path.is_dir() else 0o640  # 0777 / 0666 less the umask, as mkdir and open give
            assert stat.S_IMODE(path.stat().st_mode) == want, path


def test_altered_parameter_files_are_named(ck, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad"
    shutil.copytree(ck, bad)
    victim = sorted((bad / "params" / "speech_decoder_model" / "d").iterdir())[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in a tensor chunk
    victim.write_bytes(bytes(data))
    name = victim.relative_to(bad).as_posix()
    with pytest.raises(CheckpointError, match=f"was altered after it was written: {name} \\(changed"):
        load_checkpoint(bad)
    assert main([str(bad), str(tmp_path / "o")]) == 2
    line = _last_line(capsys)
    assert name in line and "--no-verify" in line and not (tmp_path / "o").exists()
    # The documented ways to skip the check (the flipped bit may or may not still decode; only the check matters).
    for skip in (lambda: load_checkpoint(bad, verify=False), lambda: _with_env(monkeypatch, bad)):
        try:
            skip()
        except CheckpointError as err:
            assert "after it was written" not in str(err)
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"{name} \\(missing\\)"):
        load_checkpoint(bad)


def _with_env(monkeypatch, folder: Path):
    monkeypatch.setenv("CLVP_JAX_NO_VERIFY", "1")
    try:
        return load_checkpoint(folder)
    finally:
        monkeypatch.delenv("CLVP_JAX_NO_VERIFY")


def test_truncated_parameter_files_are_one_line(ck, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(ck, bad)
    for chunk in (bad / "params" / "speech_decoder_model" / "d").iterdir():
        os.truncate(chunk, 50)
    assert main([str(bad), str(tmp_path / "o"), "--no-verify"]) == 2  # past the checksums: orbax meets the damage
    line = _last_line(capsys)
    assert line.startswith("clvp-jax-convert: error: cannot read the parameters in") and "re-create" in line
    assert capsys.readouterr().err == ""  # one line only: orbax's logged tracebacks are silenced


@pytest.mark.parametrize("fmt, writer", [("clvp-jax", "save_groups"), ("hf", "write_safetensors")])
def test_a_full_disk_is_one_line_and_leaves_the_previous_output(ck, tmp_path, capsys, monkeypatch, fmt, writer):
    out = tmp_path / "out"
    assert main([str(ck), str(out), "--format", fmt]) == 0
    capsys.readouterr()
    before = _snapshot(out)
    real = getattr(save_module, writer)

    def fail_halfway(folder_or_path, *args, **kwargs):
        real(folder_or_path, *args, **kwargs)  # something is written first, as on a real disk running full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(save_module, writer, fail_halfway)
    assert main([str(ck), str(out), "--force", "--format", fmt]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "Traceback" not in "\n".join(err), err  # reading, writing, and the one error line
    assert "the disk is full (No space left on device)" in err[-1] and str(out) in err[-1]
    assert _snapshot(out) == before  # the previous output stands whole
    _no_temporaries(tmp_path)


# (file content, expected message): every class of bad `.pth`.
BAD_PTH = [
    (b"", r"is empty \(0 bytes\); expected a file written by torch.save"),
    (os.urandom(4096).replace(b"PK", b"xx").replace(b"\x80", b"\x00"), r"is not a torch checkpoint \(it starts"),
    (b'{"json": "not a checkpoint"}', r"is not a torch checkpoint"),
    ("truncated", r"truncated or corrupt .*expected a file written by torch.save"),
    (b"\x80\x02garbage pickle", r"cannot read .*: its pickle is damaged \(Unsupported operand"),
]


@pytest.mark.parametrize("content, message", BAD_PTH)
def test_bad_pth_files_name_the_file_and_the_expected_form(tortoise_tiny, tmp_path, capsys, content, message):
    path = tmp_path / "autoregressive.pth"
    if content == "truncated":
        content = (tortoise_tiny.folder / "autoregressive.pth").read_bytes()[:300_000]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as info:
        torch_load_weights(path)
    assert str(path) in str(info.value) and "malicious" not in str(info.value)
    assert main([str(path), str(tmp_path / "o")]) == 2
    assert "error: " in _last_line(capsys) and str(path) in _last_line_again(capsys, path)
    assert not (tmp_path / "o").exists()


def _last_line_again(capsys, path: Path) -> str:
    assert main([str(path), str(path.parent / "o")]) == 2
    return _last_line(capsys)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")  # os.system("true")
    with pytest.raises(CheckpointError, match=r"refused to load .*unsupported GLOBAL posix.system"):
        torch_load_weights(path)


def test_a_missing_torch_says_how_to_install_it(tortoise_tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError, match=r"autoregressive.pth .*needs torch: pip install 'clvp-jax\[torch\]'"):
        torch_load_weights(tortoise_tiny.folder / "autoregressive.pth")
    assert main([str(tortoise_tiny.folder), str(tmp_path / "o")]) == 2
    line = _last_line(capsys)
    assert "pip install 'clvp-jax[torch]'" in line and "unexpected" not in line


@pytest.mark.parametrize("name", ["config.json", "manifest.json"])
def test_bad_utf8_names_the_file(ck, tmp_path, capsys, name):
    bad = tmp_path / "bad"
    shutil.copytree(ck, bad)
    (bad / name).write_bytes(b'{"a": "\xff\xfe"}')
    assert main([str(bad), str(tmp_path / "o")]) == 2
    line = _last_line(capsys)
    assert f"{bad}/{name}" in line and ("UTF-8" in line or "utf-8" in line), line


def test_a_stale_temporary_of_a_dead_writer_is_removed(ck, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.tmp-{int(dead.stdout)}-abc"
    (stale / "params").mkdir(parents=True)
    assert main([str(ck), str(tmp_path / "out")]) == 0
    assert not stale.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# A converter whose parameter writer stalls, so that the signal lands while the output is being written.
_SLOW_CONVERT = """
import sys, time
from clvp_jax.checkpoint import save
real = save.save_groups
def slow(*args, **kwargs):
    real(*args, **kwargs)
    print("WRITTEN", file=sys.stderr, flush=True)
    time.sleep(60)
save.save_groups = slow
from clvp_jax.checkpoint.convert_cli import _script
sys.argv = ["clvp-jax-convert", *sys.argv[1:]]
_script()
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_an_interrupted_convert_leaves_no_temporary(ck, tmp_path, signum):
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_CONVERT, str(ck), str(tmp_path / "out")],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)},
        start_new_session=True,  # its own process group, signalled as a terminal signals its foreground job
    )
    try:
        for line in proc.stderr:
            if "WRITTEN" in line:
                break
        assert any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir())  # the work was under way
        time.sleep(0.2)
        os.killpg(proc.pid, signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, err
    assert "no output was written" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # the temporary folder was removed, no output appeared
