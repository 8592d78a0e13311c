"""One axis legend for the package: modules point to the legend in `clvp_jax/__init__.py`, none defines its own.

A text check of module docstrings (read with ast, nothing imported): a docstring line that opens an axis block
("Axis legend", "Axis letters", "Axes:") must name `clvp_jax/__init__.py`, the pointer every module uses. A file
may add "here T means ..." after the pointer; what it may not do is start a legend of its own.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "clvp_jax"
PACKAGE_LEGEND = ROOT / "__init__.py"
POINTER = "clvp_jax/__init__.py"
# The line that opens an axis block: "Axis legend ...", "Axis letters ...", "Axes: ...", optionally indented.
_OPENER = re.compile(r"^\s*(axis\s+legend|axis\s+letters|axes\s*:)", re.IGNORECASE)


def legend_offenders(root: Path = ROOT) -> list[str]:
    """`path:line: text` for every module docstring line that opens an axis block without pointing to the package."""
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path == PACKAGE_LEGEND:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False) or ""
        for number, line in enumerate(doc.splitlines(), start=1):
            if _OPENER.match(line) and POINTER not in line:
                offenders.append(f"{path.relative_to(root.parent)}:{number}: {line.strip()}")
    return offenders


def test_no_module_defines_its_own_axis_legend():
    offenders = legend_offenders()
    assert not offenders, "modules with their own axis legend (point to the package one instead):\n" + "\n".join(
        offenders
    )


def test_package_legend_exists():
    doc = ast.get_docstring(ast.parse(PACKAGE_LEGEND.read_text(encoding="utf-8"))) or ""
    assert "Axis legend" in doc and "  B  batch" in doc


def test_check_catches_an_own_legend(tmp_path):
    # The check above must be able to fail: a module with its own legend is reported, a pointer is not.
    (tmp_path / "__init__.py").write_text('"""Package."""\n')
    (tmp_path / "own.py").write_text('"""Thing.\n\nAxis legend: N rows, V vocabulary.\n"""\n')
    (tmp_path / "axes.py").write_text('"""Thing.\n\nAxes: B batch.\n"""\n')
    (tmp_path / "ok.py").write_text(
        '"""Thing.\n\nAxis letters: see the package legend in `clvp_jax/__init__.py`.\n"""\n'
    )
    found = legend_offenders(tmp_path)
    assert [f.split(":")[0] for f in found] == [f"{tmp_path.name}/axes.py", f"{tmp_path.name}/own.py"]
