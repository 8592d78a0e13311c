"""The package's import graph: no cycle and no private name imported across modules (read from the source, ast).

Every `import` statement counts, function-local ones too (a deferred import hides a cycle from Python's import
machinery, not from the design), except those under `if TYPE_CHECKING:`. `from P import m` where `P.m` is a module
is an edge to `P.m` (the import system loads it without needing the rest of `P`); any other `from P import x` is
an edge to `P` itself. Parents a module sits in are not edges of their own (Python initialises them first).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "clvp_jax"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def _modules(root: Path = ROOT) -> dict[str, Path]:
    """{dotted module name: file} for every module of the package (a package is its `__init__.py`)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST):
    """Every Import / ImportFrom node outside `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[str]]:
    """(edges {module: modules of the package it imports}, private imports ["importer: from X import _y"])."""
    modules = _modules(root)
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private = []
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in _import_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges[module].update(a.name for a in node.names if a.name in modules)
                continue
            source = _absolute(node, module, is_package)
            for alias in node.names:
                if f"{source}.{alias.name}" in modules:
                    edges[module].add(f"{source}.{alias.name}")
                elif source in modules:
                    edges[module].add(source)
                    name = alias.name
                    if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
                        private.append(f"{module}: from {source} import {name}")
    for module in edges:
        edges[module].discard(module)
    return edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_import_graph_has_no_cycle():
    edges, _ = import_graph()
    found = cycles(edges)
    assert not found, "import cycles (modules that import each other, directly or not):\n" + "\n".join(
        " <-> ".join(c) for c in found
    )


def test_no_private_name_is_imported_across_modules():
    _, private = import_graph()
    assert not private, "private names imported from another module (make them public or move them):\n" + "\n".join(
        private
    )


def test_the_checks_can_fail(tmp_path):
    """A planted cycle and a planted private import are both found (the tests above are not vacuous)."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from clvp_jax.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import _hidden\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from clvp_jax import a\n")
    edges, private = import_graph(pkg)
    assert cycles(edges) == [["clvp_jax.a", "clvp_jax.sub.b"]]
    assert private == ["clvp_jax.sub.b: from clvp_jax.a import _hidden"]
    assert edges["clvp_jax.c"] == set()
