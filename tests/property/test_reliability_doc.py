"""docs/reliability.md agrees with the code: every public callable of the four packages is
either covered by a property test or listed as not covered (no hypothesis run needed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _figure_script():
    spec = importlib.util.spec_from_file_location(
        "reliability_figure", ROOT / "scripts" / "reliability_figure.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_documented_coverage_matches_the_packages_all() -> None:
    figure = _figure_script()
    packages = figure.coverage()
    for pkg in packages:
        assert set(pkg.covered) | set(pkg.uncovered) == set(pkg.public)
        assert pkg.tests, f"{pkg.package} has no property test"
    problems = figure.check(figure.DOC.read_text(), packages)
    assert not problems, (
        "docs/reliability.md is out of date; run `python scripts/reliability_figure.py`:\n"
        + "\n".join(problems)
    )


def test_every_test_module_names_what_it_covers() -> None:
    figure = _figure_script()
    for pkg in figure.coverage():
        for test in pkg.tests:
            assert test.covers and test.doc, f"{test.name}: @covers(...) and a docstring"
