"""The plan of the house, checked: the package's import graph (every import, top-level or inside a function) has no
circle, and neither the sweeper nor the launchers reach into the MLP harness. `python tests/plugin/test_layout.py`
prints the graph by folder."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "sweep"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
    return edges


ENTRY_POINTS = {"sweep.train": "mlp", "sweep.evaluate": "mlp", "sweep.report": "sweeper"}  # python -m ...


def part(module: str) -> str:
    if module in ENTRY_POINTS:
        return ENTRY_POINTS[module]
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 2 or pieces[-1] in ("sweeper", "launchers", "mlp") else "shared"


def test_the_three_parts_are_folders():
    parts = {part(m) for m in modules()}
    assert {"sweeper", "launchers", "mlp"} <= parts
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} >= {"sweeper", "launchers", "mlp"}


def test_no_module_imports_in_a_circle():
    edges = graph()
    # The package's __init__ re-exports the public API; an import of a submodule runs it, but it is not a circle
    # of the code's own making, so its edges are left out.
    edges = {m: {t for t in ts if t != "sweep"} for m, ts in edges.items() if m != "sweep"}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_neither_the_sweeper_nor_the_launchers_reach_the_harness():
    bad = [(m, t) for m, ts in graph().items() for t in ts
           if part(m) in ("sweeper", "launchers", "shared") and m != "sweep" and part(t) == "mlp"]
    assert not bad, bad


if __name__ == "__main__":
    for m, ts in sorted(graph().items(), key=lambda kv: (part(kv[0]), kv[0])):
        print(f"[{part(m)}] {m} -> {', '.join(sorted(ts)) or '-'}")
