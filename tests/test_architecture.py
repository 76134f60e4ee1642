"""The shape of the code, checked: no import cycle among the project's modules (function-level imports included),
stages never import the orchestrator, and pipeline/ keeps its rooms (docs/architecture.md)."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("pipeline", "stages", "hydra_plugins")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports anywhere in it (a `from a import b` of a module b counts as a.b)."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, `level - 1` packages up
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, name, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_anywhere():
    edges = graph()
    # a package's face imports its modules and they import the package: that is not a cycle of code
    edges = {v: {w for w in ws if not (v.startswith(w + ".") and (ROOT / w.replace(".", "/") / "__init__.py")
                                       .is_file())} for v, ws in edges.items()}
    assert cycles(edges) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_stages_never_import_the_orchestrator():
    edges = graph()
    assert {v: sorted(w for w in ws if w.startswith("pipeline")) for v, ws in edges.items()
            if v.startswith("stages") and any(w.startswith("pipeline") for w in ws)} == {}


def test_pipeline_keeps_its_rooms():
    """pipeline/ holds its rooms and, at its top, only the commands users type and the results contract."""
    top = sorted(p.stem for p in (ROOT / "pipeline").glob("*.py"))
    rooms = sorted(p.name for p in (ROOT / "pipeline").iterdir() if (p / "__init__.py").is_file())
    assert rooms == ["analysis", "config", "run"]
    assert top == ["__init__", "__main__", "compare", "ingest", "plan", "report", "reproduce", "results", "select"]
