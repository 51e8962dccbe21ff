"""The repository's promises: package shape, versions, docs links, README commands, CI."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["reid-refine", "reid-clustering", "reid-backbones", "reid-eval", "reid-train"]
ALLOWED_SIBLINGS = {
    "reid-refine": set(),
    "reid-clustering": set(),
    "reid-backbones": set(),
    "reid-eval": {"reid-backbones", "reid-clustering"},
    "reid-train": {"reid-refine", "reid-clustering", "reid-backbones", "reid-eval"},
}


@pytest.mark.parametrize("package", PACKAGES)
def test_package_shape_and_version(package: str) -> None:
    folder = ROOT / "packages" / package
    module = package.replace("-", "_")
    for name in ("pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE"):
        assert (folder / name).is_file(), f"{package} lacks {name}"
    assert (folder / "src" / module / "py.typed").is_file()
    meta = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    assert meta["name"] == package
    version = importlib.import_module(module).__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    heads = re.findall(r"^## (.*)$", (folder / "CHANGELOG.md").read_text(), re.M)
    dated = [re.fullmatch(r"(\d+\.\d+\.\d+) \((\d{4}-\d\d-\d\d)\)", h) for h in heads]
    assert heads and all(dated), f"{package}: every CHANGELOG section is 'X.Y.Z (YYYY-MM-DD)'"
    assert dated[0][1] == version, f"{package}: the CHANGELOG's newest section is not {version}"
    dates = [m[2] for m in dated]
    assert dates == sorted(dates, reverse=True), f"{package}: CHANGELOG sections not newest first"
    for dep in meta["dependencies"]:
        name = re.split(r"[<>=!~ \[;]", dep, maxsplit=1)[0]
        assert not re.search(r"==", dep), f"{package} pins {dep}: pin in constraints.txt instead"
        if name.startswith("reid-"):
            assert name in ALLOWED_SIBLINGS[package], f"{package} must not depend on {name}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_package_imports_a_sibling_it_may_not_use(package: str) -> None:
    module = package.replace("-", "_")
    src = ROOT / "packages" / package / "src" / module
    allowed = {s.replace("-", "_") for s in ALLOWED_SIBLINGS[package]} | {module}
    for path in src.rglob("*.py"):
        for sib in re.findall(r"^\s*(?:from|import)\s+(reid_\w+)", path.read_text(), re.M):
            assert sib in allowed, f"{path.relative_to(ROOT)} imports {sib}"


def test_sibling_ranges_admit_the_siblings_current_versions() -> None:
    from packaging.requirements import Requirement

    versions = {p: importlib.import_module(p.replace("-", "_")).__version__ for p in PACKAGES}
    for package in PACKAGES:
        meta = tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())
        for dep in map(Requirement, meta["project"]["dependencies"]):
            if dep.name in versions:
                assert dep.specifier.contains(versions[dep.name]), (
                    f"{package} requires {dep} but {dep.name} is {versions[dep.name]}: "
                    "widen the range when bumping a sibling"
                )


def test_markdown_links_resolve() -> None:
    files = [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "packages").glob("*/README.md"),
    ]
    for md in files:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", md.read_text()):
            if "://" in target:
                continue
            assert (md.parent / target).exists(), f"{md.relative_to(ROOT)} links to {target}"


def test_readme_commands_are_the_ones_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Two commands.*?```bash\n(.*?)```", readme, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["./dev demo", "./dev test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^PYTEST_ADDOPTS=.* \./dev test$", ci, re.M)
    assert "check_installs.py" in ci


def test_dev_script_help_and_unknown_command() -> None:
    out = subprocess.run([str(ROOT / "dev"), "help"], capture_output=True, text=True)
    assert out.returncode == 0 and "./dev demo" in out.stdout
    out = subprocess.run([str(ROOT / "dev"), "frobnicate"], capture_output=True, text=True)
    assert out.returncode != 0


def test_constraints_pin_what_the_packages_need() -> None:
    pins = {
        line.split("==")[0].lower()
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    needed = set()
    for package in PACKAGES:
        meta = tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())
        deps = meta["project"]["dependencies"]
        deps += [d for ds in meta["project"].get("optional-dependencies", {}).values() for d in ds]
        needed |= {re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower() for d in deps}
    needed = {n for n in needed if not n.startswith("reid-") and n != "faiss-gpu-cu12"}
    assert needed <= pins, f"constraints.txt lacks {sorted(needed - pins)}"
    assert sys.version_info >= (3, 10)
