"""Multi-process generation under `jax.distributed`: two processes on this machine (one CPU device each, gloo
collectives) form one 2-device mesh; both must get the same candidates and scores as one process alone.

This is the multi-host recipe of `clvp_jax/generation/sharding.py`, run with localhost as the coordinator.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from generation_case import CASE

ROOT = Path(__file__).resolve().parents[1]
WORKER = (
    r"""
import sys
import jax
process_id, port = int(sys.argv[1]), sys.argv[2]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id)
assert jax.process_count() == 2 and jax.device_count() == 2 and jax.local_device_count() == 1, jax.devices()
"""
    + CASE
    # 2: the global mesh over both processes; 1: this process's own device alone
    + 'print("RESULT" + json.dumps({n: run(n) for n in (2, 1)}), flush=True)\njax.distributed.shutdown()\n'
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_agree_with_one():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one device per process
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(i), port],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-3000:]
            line = next(ln for ln in out.splitlines() if ln.startswith("RESULT"))
            results.append(json.loads(line[len("RESULT") :]))
    finally:
        for p in procs:
            p.kill()
    (a, b) = results
    assert a["2"]["seq"] == b["2"]["seq"]  # every process holds the same, complete result
    assert a["2"]["seq"] == a["1"]["seq"]  # and it equals one process alone
    assert len({tuple(r) for r in a["1"]["seq"]}) == 8  # 2 texts x 4 distinct candidates: not a degenerate run
    # Scores: each device runs the towers on 4 rows instead of 8, which may change matmul summation order.
    np.testing.assert_allclose(np.array(a["2"]["lpt"]), np.array(a["1"]["lpt"]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(b["2"]["lpt"]), np.array(a["2"]["lpt"]), rtol=0, atol=0)
