"""Hypothesis profiles of the property tests, and the plugin that counts their examples.

Profiles, chosen by the environment variable ``REID_HYPOTHESIS_PROFILE``:

* ``fast`` (the default, what ``./dev test`` and CI run): derandomized (a fixed seed: the same
  cases on every run and machine), 40 examples per test, no deadline, no example database
  written to disk; keeps the property tests to well under a minute on 2 busy cores.
* ``long``: 1000 examples per test from a fresh random seed, for a nightly-style run; a
  failure prints the seed blob to reproduce it::

      REID_HYPOTHESIS_PROFILE=long python -m pytest tests/property -x -q

The plugin: when ``REID_RELIABILITY_JSON`` names a file, the session writes to it, per property
test, its outcome and the number of examples it ran (explicit ``@example`` cases included).
``scripts/reliability_figure.py`` runs the tests that way and writes ``docs/reliability.md``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.property.support import CALLS, EXAMPLES

PROFILE_ENV = "REID_HYPOTHESIS_PROFILE"
REPORT_ENV = "REID_RELIABILITY_JSON"

_COMMON = {
    "deadline": None,  # the first call of a torch op can take a while (lazy initialisation)
    "database": None,  # nothing written under the repository
    "suppress_health_check": (HealthCheck.too_slow, HealthCheck.data_too_large),
}
settings.register_profile("fast", max_examples=40, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=1000, print_blob=True, **_COMMON)

_profile = os.environ.get(PROFILE_ENV, "fast")
if _profile not in ("fast", "long"):
    raise pytest.UsageError(f"${PROFILE_ENV} must be 'fast' or 'long', got {_profile!r}")
settings.load_profile(_profile)

_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        _outcomes[report.nodeid] = report.outcome


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(REPORT_ENV)
    if not target:
        return
    tests = {}
    for nodeid, outcome in _outcomes.items():
        path, _, name = nodeid.partition("::")
        module = path.removesuffix(".py").replace("/", ".")
        key = f"{module}::{name}"
        tests[key] = {"nodeid": nodeid, "outcome": outcome, "examples": EXAMPLES.get(key, 0)}
    calls = {f"{name} {verdict}": count for (name, verdict), count in sorted(CALLS.items())}
    report = {"profile": _profile, "tests": tests, "calls": calls}
    Path(target).write_text(json.dumps(report, indent=1) + "\n")
