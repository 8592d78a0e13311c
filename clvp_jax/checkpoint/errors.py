"""The two errors of checkpoint reading and writing; both say what is wrong and what to do."""

from __future__ import annotations

from collections.abc import Iterable


class CheckpointError(ValueError):
    """A checkpoint file or folder that cannot be read or written safely; the message says what to do."""


class WeightsMismatchError(ValueError):
    """Tensors that do not fit the config: lists every missing, unexpected, mis-shaped and mis-typed key.

    Attributes:
      missing: keys the config needs that the checkpoint lacks.
      unexpected: checkpoint keys that no rule consumes.
      mismatched: (key, checkpoint shape, expected shape) triples.
      mistyped: (key, checkpoint dtype name, expected dtype name) triples.
    """

    def __init__(
        self,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        mismatched: Iterable[tuple[str, tuple, tuple]] = (),
        context: str = "",
        mistyped: Iterable[tuple[str, str, str]] = (),
    ) -> None:
        self.missing, self.unexpected = list(missing), list(unexpected)
        self.mismatched, self.mistyped = list(mismatched), list(mistyped)
        lines = [f"checkpoint does not match the config{(' (' + context + ')') if context else ''}:"]
        if self.missing:
            lines.append(f"  missing ({len(self.missing)}): {', '.join(self.missing[:20])}")
        if self.unexpected:
            lines.append(f"  unexpected ({len(self.unexpected)}): {', '.join(self.unexpected[:20])}")
        for key, got, want in self.mismatched[:20]:
            lines.append(f"  mis-shaped: {key}: checkpoint {got}, config expects {want}")
        for key, got, want in self.mistyped[:20]:
            lines.append(f"  mis-typed: {key}: checkpoint {got}, expected {want}")
        if self.mistyped:
            lines.append("A floating dtype other than the stored one can be asked for (dtype= / --dtype) to cast.")
        lines.append("Check that config.json belongs to these weights (layer counts, widths, vocabulary sizes).")
        super().__init__("\n".join(lines))
