"""Interrupting `clvp-jax generate` (Ctrl-C, SIGTERM, SIGHUP) ends it cleanly: one line, status 128 + signal.

Before the fix, about half the interrupts ended in a segmentation fault (-11) or an abort (-6) during the
interpreter's shutdown, while XLA's threads still ran.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "signum, delay, message",
    [
        (signal.SIGINT, 0.5, "interrupted"),  # while loading
        (signal.SIGINT, 3.0, "interrupted"),  # while compiling or generating
        (signal.SIGTERM, 3.0, "terminated by signal 15"),
    ],
)
def test_generate_ends_cleanly_on_a_signal(tmp_path, signum, delay, message):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "clvp_jax.cli", "generate", "--out", str(out), "Hello there, this is a test."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        start_new_session=True,  # its own process group, signalled as a terminal signals its foreground job
    )
    try:
        assert "loading" in proc.stderr.readline()
        time.sleep(delay)
        os.killpg(proc.pid, signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    if proc.returncode == 0:
        pytest.skip("generation finished before the signal arrived")  # a very fast machine: nothing to interrupt
    assert proc.returncode == 128 + signum, err
    assert err.strip().splitlines()[-1] == f"clvp-jax: {message}"
    assert "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] in ([], ["out"])  # no temporary left beside the output
