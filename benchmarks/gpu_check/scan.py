"""The CUDA-only tests: found by reading tests/ (an AST scan) for ``skipif(not
torch.cuda.is_available() ...)`` on test functions, classes or whole modules (``pytestmark``)."""

from __future__ import annotations

import ast
from pathlib import Path

from benchmarks.common import ROOT


def _needs_cuda(decorators: list[ast.expr]) -> bool:
    """A ``skipif`` (or marker) decorator whose source mentions ``cuda.is_available``."""
    for dec in decorators:
        text = ast.unparse(dec)
        if "cuda.is_available" in text and "skip" in text:
            return True
    return False


def cuda_only_tests(root: Path = ROOT) -> list[str]:
    """Node ids of the tests skipped without CUDA (functions, classes, or whole modules)."""
    found = []
    for path in sorted((root / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(root).as_posix()
        whole_module = any(
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
            and "cuda.is_available" in ast.unparse(node.value)
            for node in tree.body
        )
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.name.startswith("test") and (
                    whole_module or _needs_cuda(node.decorator_list)
                ):
                    found.append(f"{rel}::{node.name}")
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                if whole_module or _needs_cuda(node.decorator_list):
                    found.append(f"{rel}::{node.name}")
                    continue
                for item in node.body:
                    if (
                        isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                        and item.name.startswith("test")
                        and _needs_cuda(item.decorator_list)
                    ):
                        found.append(f"{rel}::{node.name}::{item.name}")
    return found
