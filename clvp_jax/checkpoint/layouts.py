"""Tensor layouts: how a stored (torch) tensor relates to the tensor we keep, each one record for both directions.

A `Layout` maps one stored tensor to one of ours (`to_flax`) and back (`to_torch`), and gives the stored shape of
one of ours (`torch_shape`) so that a strict shape check happens before any tensor is read:

  SAME            stored as we keep it (nn.Linear [out, in], embeddings, norms, biases)
  TRANSPOSED      GPT-2 Conv1D [in, out] -> [out, in]
  TRAILING_UNIT   1x1 nn.Conv1d [out, in, 1] -> [out, in]

A `Split` is one stored tensor that fuses `n` of ours along its first axis (after its `layout`), either as `n`
contiguous blocks or interleaved per attention head ([heads, n, rows / heads]); `part` takes one out, `join` puts
them back. Every `to_flax` / `part` is a view (no copy) where numpy allows it, so a zero-stride stand-in gives the
result's shape without allocating.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Layout:
    """Stored as we keep it. Attributes: name (for reports)."""

    name: str = "same"

    def to_flax(self, a: np.ndarray) -> np.ndarray:
        return a

    def to_torch(self, a: np.ndarray) -> np.ndarray:
        return a

    def torch_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(shape)


@dataclasses.dataclass(frozen=True)
class Transposed(Layout):
    """Stored transposed: GPT-2's Conv1D keeps [in, out] where nn.Linear keeps [out, in]."""

    name: str = "transposed"

    def to_flax(self, a: np.ndarray) -> np.ndarray:
        return a.T

    def to_torch(self, a: np.ndarray) -> np.ndarray:
        return a.T

    def torch_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(reversed(tuple(shape)))


@dataclasses.dataclass(frozen=True)
class TrailingUnit(Layout):
    """Stored with a trailing axis of length 1: a 1x1 nn.Conv1d's [out, in, 1] is a Linear's [out, in]."""

    name: str = "trailing-unit"

    def to_flax(self, a: np.ndarray) -> np.ndarray:
        return a[..., 0]

    def to_torch(self, a: np.ndarray) -> np.ndarray:
        return a[..., None]

    def torch_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return (*shape, 1)


SAME, TRANSPOSED, TRAILING_UNIT = Layout(), Transposed(), TrailingUnit()


@dataclasses.dataclass(frozen=True)
class Split:
    """One stored tensor holding `n` same-shaped tensors of ours along its first axis (after `layout`).

    Attributes:
      n: how many tensors are fused (1: a plain layout change).
      layout: applied to the whole stored tensor before splitting (and after joining).
      heads: 1 for `n` contiguous blocks; h > 1 for rows interleaved per head as [h, n, rows / h] (the legacy
        fused qkv of Tortoise's attention blocks); None until the head count is known (see `with_heads`).
    """

    n: int = 1
    layout: Layout = SAME
    heads: int | None = 1

    def with_heads(self, heads: int) -> Split:
        """This split with its per-head interleave resolved (unchanged if it is not interleaved)."""
        return dataclasses.replace(self, heads=heads) if self.heads is None else self

    def part(self, a: np.ndarray, j: int) -> np.ndarray:
        """Tensor j (0 <= j < n) of ours out of the stored `a`."""
        if self.heads is None:
            raise ValueError("an interleaved split needs its head count: use with_heads(heads) first")
        a = self.layout.to_flax(a)
        if self.n == 1:  # also for 0-d tensors (a temperature)
            return a
        rows, rest = a.shape[0] // self.n, a.shape[1:]
        if self.heads == 1:
            return a[j * rows : (j + 1) * rows]
        return a.reshape(self.heads, self.n, rows // self.heads, *rest)[:, j].reshape(rows, *rest)

    def join(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        """The stored tensor from our `n` tensors (a fresh C-ordered array); the inverse of `part`."""
        if len(parts) != self.n or self.heads is None:
            raise ValueError(f"join needs {self.n} parts and a known head count (got {len(parts)}, {self.heads})")
        if self.n == 1:
            fused = np.asarray(parts[0])
        elif self.heads == 1:
            fused = np.concatenate([np.asarray(p) for p in parts], axis=0)
        else:
            rows, rest = parts[0].shape[0], parts[0].shape[1:]
            heads = [np.asarray(p).reshape(self.heads, rows // self.heads, *rest) for p in parts]
            fused = np.stack(heads, axis=1).reshape(self.n * rows, *rest)
        return np.array(self.layout.to_torch(fused), order="C")  # not ascontiguousarray: it makes 0-d 1-d

    def part_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The shape of each of our tensors, from the stored shape (nothing is read or allocated)."""
        return tuple(self.with_heads(1).part(np.broadcast_to(np.zeros((), np.float32), tuple(shape)), 0).shape)
