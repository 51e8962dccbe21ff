"""benchmarks/ is a package run with ``python -m benchmarks.<module>``: no module changes
``sys.path`` (official_shims excepted: putting the official checkout on it is its job), every
module imports, and every runnable module's docstring shows its own ``python -m`` command."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import benchmarks
from benchmarks.common import ROOT
from benchmarks.gpu_check import deps

BENCHMARKS = ROOT / "benchmarks"
MODULES = sorted(m.name for m in pkgutil.walk_packages(benchmarks.__path__, "benchmarks."))


def _runnable(name: str) -> bool:
    """A command (``python -m name``), not only a library module."""
    source = Path(importlib.import_module(name).__file__).read_text()
    return 'if __name__ == "__main__":' in source


def test_no_sys_path_tricks() -> None:
    found = {
        path.relative_to(ROOT).as_posix(): path.read_text().count("sys.path.insert")
        for path in BENCHMARKS.rglob("*.py")
    }
    assert {path: n for path, n in found.items() if n} == {"benchmarks/proxy/official_shims.py": 1}
    shims = (BENCHMARKS / "proxy" / "official_shims.py").read_text()
    assert "sys.path.insert(0, str(args.official_repo))" in shims


def test_every_file_is_a_module_of_the_package() -> None:
    files = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in BENCHMARKS.rglob("*.py")
    }
    assert files == {"benchmarks", *MODULES}
    assert {"benchmarks.common", "benchmarks.gpu_check.__main__"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_and_shows_its_command(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no docstring"
    if _runnable(name):
        command = f"python -m {name.removesuffix('.__main__')}"
        assert command in module.__doc__ or command in (
            importlib.import_module(name.removesuffix(".__main__")).__doc__ or ""
        ), f"{name}'s docstring does not show `{command}`"
        assert "python benchmarks/" not in module.__doc__


def test_package_docstring_lists_every_runnable_module() -> None:
    for name in MODULES:
        if _runnable(name):
            shown = name.removesuffix(".__main__")
            assert f"python -m {shown}" in benchmarks.__doc__, shown


def test_gpu_check_puts_the_working_tree_first_on_pythonpath_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = [str(p) for p in deps.SRC_DIRS]
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    path = deps.child_pythonpath()
    assert path.split(os.pathsep) == [*src, "/elsewhere"]
    monkeypatch.setenv("PYTHONPATH", path)
    assert deps.child_pythonpath() == path  # already first: unchanged (no re-run)
    monkeypatch.delenv("PYTHONPATH")
    assert deps.child_pythonpath().split(os.pathsep) == src


def test_python_m_runs_from_the_repository_root() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--from-json" in done.stdout and "--cluster-sizes" in done.stdout
