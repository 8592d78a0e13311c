"""Data parallelism over a 1-D device mesh (`jax.sharding`): batch rows split over devices, state replicated.

With the state replicated and the batch sharded along its first axis, the ordinary jitted train step
(`clvp_jax.training.steps`) runs SPMD: each device computes its rows, XLA inserts the all-reduce of the
gradients (and the all-gather the contrastive loss needs for its B x B similarity), and the update is the
same as on one device up to float summation order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named "data" over `devices` (default: all devices)."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devices), (DATA_AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of `tree` (e.g. the TrainState) whole on every device of `mesh`."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """Split every array of `batch` along axis 0 over the mesh; the batch size must divide evenly."""
    n = mesh.devices.size
    sizes = {k: np.shape(v)[0] for k, v in batch.items()}
    bad = {k: s for k, s in sizes.items() if s % n}
    if bad:
        raise ValueError(f"batch sizes {bad} are not divisible by the {n} devices of the mesh; use a multiple of {n}")
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    return {k: jax.device_put(v, sharding) for k, v in batch.items()}
