"""Readable JSON for the files clvp-jax writes: indented objects, but a list of plain values on one line."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps"]


def dumps(value: Any, level: int = 0) -> str:
    """JSON for people: one space of indent per level, a list of plain values (the codes of a candidate) on one
    line. `level` > 0 gives the text of a value nested that deep (no trailing newline); NaN is refused."""

    def dump(x: Any, level: int) -> str:
        pad, inner = " " * level, " " * (level + 1)
        if isinstance(x, dict) and x:
            items = [f"{inner}{json.dumps(str(k))}: {dump(v, level + 1)}" for k, v in x.items()]
            return "{\n" + ",\n".join(items) + f"\n{pad}}}"
        if isinstance(x, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in x):
            return "[\n" + ",\n".join(f"{inner}{dump(v, level + 1)}" for v in x) + f"\n{pad}]"
        return json.dumps(x, allow_nan=False)  # NaN is not JSON: refused upstream, and here as a last resort

    return dump(value, level) + ("\n" if level == 0 else "")
