"""The two errors of checkpoint reading and writing; both say what is wrong and what to do."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

_SHOWN = 20  # entries listed per kind; the counts are always complete


class CheckpointError(ValueError):
    """A checkpoint file or folder that cannot be read or written safely; the message says what to do."""


class WeightsMismatchError(ValueError):
    """Tensors that do not fit the config: lists every missing, unexpected, mis-shaped and mis-typed key.

    The one error of every strict converter (the HF / original autoregressive + CLVP tables, and the waveform-stage
    files through `clvp_jax.checkpoint.strict`); a converter may subclass it to keep its own name and `HINT`.

    Attributes:
      missing: keys the config needs that the checkpoint lacks.
      unexpected: checkpoint keys that no rule consumes.
      mismatched: (key, checkpoint shape, expected shape) triples.
      mistyped: (key, checkpoint dtype name, expected dtype name) triples.
      other: {kind: [entries]} of any further problem (a buffer of the wrong value, mixed weight-norm forms).
      HINT: (class) what to do, the message's last line when no `hint=` is given; None: the advice of the
        autoregressive + CLVP converter (cast with dtype=, check config.json).
    """

    HINT: ClassVar[str | None] = None

    def __init__(
        self,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        mismatched: Iterable[tuple[str, object, object]] = (),
        context: str = "",
        mistyped: Iterable[tuple[str, str, str]] = (),
        *,
        other: Mapping[str, Iterable[str]] | None = None,
        hint: str | None = None,
    ) -> None:
        self.missing, self.unexpected = list(missing), list(unexpected)
        self.mismatched, self.mistyped = list(mismatched), list(mistyped)
        self.other = {kind: list(entries) for kind, entries in (other or {}).items() if entries}
        lines = [f"checkpoint does not match the config{(' (' + context + ')') if context else ''}:"]
        for kind, entries in (("missing", self.missing), ("unexpected", self.unexpected), *self.other.items()):
            if entries:
                more = f", ... ({len(entries) - _SHOWN} more)" if len(entries) > _SHOWN else ""
                lines.append(f"  {kind} ({len(entries)}): {', '.join(entries[:_SHOWN])}{more}")
        for key, got, want in self.mismatched[:_SHOWN]:
            lines.append(f"  mis-shaped: {key}: checkpoint {got}, config expects {want}")
        for key, got, want in self.mistyped[:_SHOWN]:
            lines.append(f"  mis-typed: {key}: checkpoint {got}, expected {want}")
        hidden = max(len(self.mismatched) - _SHOWN, 0) + max(len(self.mistyped) - _SHOWN, 0)
        if hidden:
            lines.append(f"  ... and {hidden} more mis-shaped or mis-typed")
        hint = hint if hint is not None else self.HINT
        if hint is not None:
            lines.append(hint)
        else:  # the autoregressive + CLVP converter, whose loaders can cast
            if self.mistyped:
                lines.append("A floating dtype other than the stored one can be asked for (dtype= / --dtype) to cast.")
            lines.append("Check that config.json belongs to these weights (layer counts, widths, vocabulary sizes).")
        super().__init__("\n".join(lines))
