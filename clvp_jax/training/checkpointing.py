"""Whole-state checkpoints with orbax-checkpoint: save, keep the N latest, restore, resume bit-identically.

Layout (orbax `CheckpointManager`, one folder per step, written under a temporary name and renamed when
complete, so an interrupted save never leaves a half checkpoint that looks finished):

    <directory>/<step>/state/   the TrainState (step, params, opt_state, rng) as an orbax PyTree
    <directory>/<step>/meta/    JSON: whatever the caller passes (model config, run options, provenance)

Restoring needs a template state of the same structure (`create_train_state` on freshly initialised params with
the same optimizer config); its leaves give shapes, dtypes and shardings, so a state saved on one device layout
restores onto another (e.g. replicated over a mesh).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from clvp_jax.training.train_state import TrainState


class Checkpointer:
    """Saves and restores `TrainState`s in `directory`, keeping the `max_to_keep` latest.

    Args:
      directory: checkpoint root (created if missing).
      max_to_keep: number of latest checkpoints kept; None keeps all.
      save_every: only steps that are multiples of this are saved by `save` (unless `force=True`).
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 3, save_every: int = 1) -> None:
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}")
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            save_interval_steps=save_every,
            create=True,
            # Synchronous saves: the train loop donates its state buffers, so they must be read before the
            # next step runs; checkpoints of the sizes trained here take well under a second.
            enable_async_checkpointing=False,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def save(self, state: TrainState, meta: dict[str, Any] | None = None, *, force: bool = False) -> bool:
        """Save `state` under its own step (plus JSON `meta`). Returns whether a checkpoint was written."""
        step = int(jax.device_get(state.step))
        args = ocp.args.Composite(state=ocp.args.StandardSave(state.to_dict()), meta=ocp.args.JsonSave(meta or {}))
        saved = self._manager.save(step, args=args, force=force)
        self._manager.wait_until_finished()
        return bool(saved)

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore(self, like: TrainState, step: int | None = None) -> tuple[TrainState, dict[str, Any]]:
        """Restore step `step` (default: the latest) into the structure, dtypes and shardings of `like`.

        Raises:
          FileNotFoundError: no checkpoint (or not that step) in the directory.
        """
        step = self.latest_step() if step is None else step
        if step is None or step not in self._manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint{'' if step is None else f' for step {step}'} in {self.directory}; available "
                f"steps: {self.all_steps() or 'none'}. Start a fresh run or point to the right folder"
            )

        def abstract(x):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))

        template = jax.tree_util.tree_map(abstract, like.to_dict())
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore())
        )
        return TrainState(**restored["state"]), dict(restored["meta"] or {})

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
