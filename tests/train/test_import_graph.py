"""The modules of reid-train import one another without a cycle: every import counts, the ones
under ``if TYPE_CHECKING:`` and inside functions too (a type-only cycle shows a type in the wrong
module)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "packages" / "reid-train" / "src" / "reid_train"


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The reid_train modules ``path`` imports (``from . import x`` names a module where x is
    one; ``from .m import name`` is ``m``)."""
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    found.add(sub)
                elif target in modules:
                    found.add(target)
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    paths = sorted(SRC.rglob("*.py"))
    modules = {_module(p) for p in paths}
    return {_module(p): _imports(p, modules) for p in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_graph_sees_the_known_edges() -> None:
    graph = _graph()
    assert "reid_train.registry" in graph["reid_train.config.schema"]
    assert "reid_train.config" in graph["reid_train.methods.base"]  # a type-only import
    assert "reid_train.methods.base" in graph["reid_train.methods.cluster_contrast"]


def test_no_import_cycle_among_reid_train_modules() -> None:
    cycle = _cycle(_graph())
    if cycle is not None:
        pytest.fail("import cycle: " + " -> ".join(cycle))


@pytest.mark.parametrize("limit", [300])
def test_no_class_of_reid_train_is_longer_than(limit: int) -> None:
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    long.append(f"{_module(path)}.{node.name}: {length} lines")
    assert not long, f"classes over {limit} lines: {long}"
