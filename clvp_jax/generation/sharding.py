"""Sharding of candidate rows over devices (`jax.sharding`), single host or many.

Axis letters: see the package legend in `clvp_jax/__init__.py` (R candidate rows, text x candidate).

Generation is data-parallel over rows: each row's tokens depend only on its own key and its text's prefill, so
rows can be split over any number of devices without changing results. The program is written for one global
device mesh with a single axis "rows"; `constrain_rows` marks the row axis of the per-chunk cache and logits as
sharded over it and XLA's SPMD partitioner splits the decode loop accordingly (parameters stay replicated).

Across hosts: start every process with `jax.distributed.initialize(coordinator_address, num_processes,
process_id)` (on CPU also set `jax.config.update("jax_cpu_collectives_implementation", "gloo")`), call
`generate(..., devices=jax.device_count())` with the same inputs and key on every process; the mesh then spans
`jax.devices()` (all hosts) and every process receives the same, fully replicated outputs.
`tests/test_generation_distributed.py` runs this with two processes on one machine (localhost coordinator, one
CPU device each) and checks both get exactly what one process alone gets.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

ROWS = "rows"


def rows_mesh(n_devices: int) -> Mesh | None:
    """A 1-D mesh over the first `n_devices` global devices, or None for a single device."""
    if n_devices <= 1:
        return None
    devices = jax.devices()
    if n_devices > len(devices):
        raise ValueError(
            f"asked for {n_devices} devices but JAX sees {len(devices)}; on CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={n_devices} before importing jax"
        )
    return Mesh(np.asarray(devices[:n_devices]), (ROWS,))


def constrain_rows(tree: Any, mesh: Mesh | None) -> Any:
    """Shard the leading (row) axis of every array in `tree` with ndim >= 1 over the mesh; identity without one."""
    if mesh is None:
        return tree

    def one(x):
        if getattr(x, "ndim", 0) == 0:
            return x
        spec = PartitionSpec(ROWS, *([None] * (x.ndim - 1)))
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    return jax.tree_util.tree_map(one, tree)
