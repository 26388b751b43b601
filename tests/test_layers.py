"""The shape of the code: data flows one way, files -> Ratings -> split -> layout -> engine ->
parameters -> model -> metrics, checkpoints, analyses, server, and no module imports one that
sits above it (each import found by reading the source, lazy ones inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "rec"


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each module of rec and the modules of rec it imports."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "conf" in path.relative_to(PACKAGE).parts:
            continue
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        found[_module(path)] = {n for n in names if n == "rec" or n.startswith("rec.")}
    return found


def test_the_engine_and_the_data_never_import_what_sits_above_them():
    above = ("rec.distributed", "rec.training", "rec.pipeline", "rec.model", "rec.serve",
             "rec.analysis", "rec.api", "rec.command", "rec.hydra_config", "rec.run_config",
             "rec.bayes")
    for module, imported in _imports().items():
        if module.startswith(("rec.als", "rec.data", "rec.partition")):
            bad = [n for n in imported if n.startswith(above)]
            assert not bad, f"{module} imports {bad}"


def test_rec_has_no_import_cycle():
    graph = _imports()
    modules = set(graph)
    resolve = lambda n: n if n in modules else n.rsplit(".", 1)[0]  # `from rec.x import name`
    edges = {m: {resolve(n) for n in ns if resolve(n) in modules and resolve(n) != m}
             for m, ns in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(edges[m]):
            if n.startswith(m + ".") or m == "rec" or n == "rec":
                continue  # a package and its own submodules (its __init__ re-exports them)
            assert state.get(n) != 1, "import cycle: " + " -> ".join(path + [n])
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
