"""The folder listing is the architecture: data flows one way through the phases, and no import cycle.

Every ``padprep`` import (lazy ones inside functions included) goes to the same phase or an earlier
one, in the order docs/architecture.md lists them."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "padprep"
# Earlier phases first; a module may import its own phase or an earlier one.
ORDER = ["base", "input", "config", "recipe", "chat", "layout", "store", "output", "run", "train", "cli"]
BASE = {"padprep", "padprep.errors", "padprep.schema", "padprep.forking", "padprep.failpoints"}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _phase(module: str) -> str:
    if module in BASE:
        return "base"
    name = module.split(".")[1]
    return {"config": "config", "cli": "cli", "__main__": "cli"}.get(name, name)


def _imports() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("padprep") and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("padprep"))
        graph[_module(path)] = found
    return graph


def test_every_phase_is_a_known_one():
    assert {_phase(m) for m in _imports()} <= set(ORDER)


def test_imports_go_to_the_same_phase_or_an_earlier_one():
    wrong = [
        f"{m} ({_phase(m)}) imports {i} ({_phase(i)})"
        for m, imported in _imports().items()
        for i in imported
        if ORDER.index(_phase(i)) > ORDER.index(_phase(m))
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    imports = _imports()
    graph = {m: {i for i in imported if i in imports and i not in (m, "padprep")} for m, imported in imports.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in graph.get(m, ()):
            assert state.get(n) != 1, "import cycle: " + " -> ".join(path + [m, n])
            if n not in state:
                visit(n, path + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])
