"""The layout rules of the package, checked on the source: no import cycle in parity/, the framework
chosen only in the parity/backend/ package, the command layer on top, and the two sides apart."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: str) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((REPO / package).rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every module of `known` that `path` imports, at module level or inside a function."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parents + ([base] if base else []))
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a known a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph(package: str) -> dict[str, set[str]]:
    modules = _modules(package)
    known = set(modules)
    return {name: _imports(path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_parity_has_no_import_cycle():
    graph = _graph("parity")
    assert len(graph) > 20 and "parity.backend" in graph["parity.training"]  # the graph is really read
    assert _cycles(graph) == []


def test_the_library_does_not_import_the_command_layer():
    graph = _graph("parity")
    top = {name for name in graph if name.startswith("parity.commands") or name == "parity.cli"}
    offenders = {name: sorted(deps & top) for name, deps in graph.items() if name not in top and deps & top}
    assert offenders == {}


@pytest.mark.parametrize("side, other", [("jax_impl", "torch_ref"), ("torch_ref", "jax_impl")])
def test_each_side_imports_neither_the_other_nor_the_harness(side, other):
    allowed = {"parity.config", "parity.errors"}  # plain-Python configuration and the errors it raises
    for path in sorted((REPO / side).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for imported in names:
                assert not imported.startswith(other), f"{path.name} imports {imported}"
                if imported.startswith("parity"):
                    assert imported in allowed, f"{path.name} imports {imported}"


FRAMEWORK_TEST = re.compile(r"""(==|!=)\s*["'](jax|torch)["']|["'](jax|torch)["']\s*(==|!=)""")


def test_the_framework_is_chosen_only_in_the_backend_module():
    offenders = []
    for path in sorted((REPO / "parity").rglob("*.py")):
        if "backend" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if FRAMEWORK_TEST.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []
