"""Layers over ops, imported in one direction: pom.ops never imports pom.mixers
(or any other pom module), and no pom module imports itself back through others.

Imports are read from the source (``ast``), at module level and inside
functions alike, so a lazy import cannot hide a circle."""

import ast
import pathlib

import pytest

POM = pathlib.Path(__file__).resolve().parents[1] / "pom"


def module_names():
    """``{dotted name: path}`` of every module of the pom package."""
    names = {}
    for path in POM.rglob("*.py"):
        parts = path.relative_to(POM.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name, path, known):
    """The pom modules ``name`` imports (``from a import b`` counts ``a.b`` when it is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names)
    return {target for target in found if target in known and target != name}


def import_graph():
    known = module_names()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def without_package_inits(graph):
    """Drops ``package -> its own submodule`` edges: a package's ``__init__``
    re-exporting its submodules is not a circle (they never import each other back
    through it, which the remaining edges still show)."""
    return {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in graph.items()}


def test_ops_import_nothing_from_the_layers():
    graph = import_graph()
    ops = [name for name in graph if name == "pom.ops" or name.startswith("pom.ops.")]
    assert "pom.ops.polynomial.fused" in ops and "pom.ops.masking" in ops
    for name in ops:
        outside = sorted(t for t in graph[name] if not (t == "pom.ops" or t.startswith("pom.ops.")))
        assert not outside, f"{name} imports {outside}: ops take tensors and import only pom.ops"


def test_layers_reach_the_computations_through_ops():
    """pom.mixers' PoM layer imports its computations from pom.ops."""
    graph = import_graph()
    assert {"pom.ops.polynomial", "pom.ops.polynomial.forms"} <= graph["pom.mixers.polynomial"]
    assert (
        not (POM / "mixers" / "fast_polynomial.py").exists() and not (POM / "mixers" / "triton_polynomial.py").exists()
    )


def test_no_import_circle_in_pom():
    found = cycles(without_package_inits(import_graph()))
    assert not found, f"import circles in pom/: {found}"


@pytest.mark.parametrize(
    "graph, expected", [({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]), ({"a": {"b"}, "b": set()}, [])]
)
def test_cycle_finder(graph, expected):
    assert cycles(graph) == expected
