"""Write the generated section of docs/reliability.md from a run of the property tests.

    python scripts/reliability_figure.py            # run tests/property (fast profile), rewrite
    python scripts/reliability_figure.py --profile long   # the same with 1000 examples per test
    python scripts/reliability_figure.py --check    # coverage only, no run: is the doc current?

The run goes through pytest with ``REID_RELIABILITY_JSON`` set, so that the plugin of
tests/property/conftest.py records, per test, its outcome and the examples hypothesis ran, and
per public function the calls it accepted and refused. Coverage comes from the code, not from the
run: a package's public callables are the functions and classes named in its ``__all__``
(constants and type aliases left out), and a test covers what its ``@covers(...)`` names.
Everything between ``<!-- BEGIN reliability -->`` and ``<!-- END reliability -->`` is replaced;
the rest of the page is written by hand.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- BEGIN reliability -->", "<!-- END reliability -->"
COMMAND = "python scripts/reliability_figure.py"

#: package -> (module, the property test module that covers it, what is in scope).
PACKAGES = {
    "reid-refine": ("reid_refine", "tests.property.test_refine_properties", "every public name"),
    "reid-clustering": (
        "reid_clustering",
        "tests.property.test_clustering_properties",
        "every public name",
    ),
    "reid-eval": (
        "reid_eval",
        "tests.property.test_eval_properties",
        "metrics, distances, evaluators and re-ranking",
    ),
    "reid-backbones": (
        "reid_backbones",
        "tests.property.test_backbones_properties",
        "every public name but ONNX export; models on ResNet-18 (and IBN-a) only",
    ),
}


@dataclass
class TestInfo:
    name: str
    covers: tuple[str, ...]
    doc: str
    explicit_examples: int
    examples: int | None = None
    outcome: str | None = None


@dataclass
class PackageCoverage:
    package: str
    scope: str
    public: list[str]
    covered: list[str]
    uncovered: list[str]
    tests: list[TestInfo] = field(default_factory=list)


def public_callables(module_name: str) -> list[str]:
    """The functions and classes in a module's ``__all__`` (constants and aliases left out)."""
    module = importlib.import_module(module_name)
    names = []
    for name in module.__all__:
        obj = getattr(module, name)
        if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj)):
            names.append(name)
    return sorted(names)


def _explicit_examples(module_name: str) -> dict[str, int]:
    """``@example(...)`` decorators per test function, read from the module's source."""
    path = ROOT / (module_name.replace(".", "/") + ".py")
    counts = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            counts[node.name] = sum(
                isinstance(d, ast.Call) and getattr(d.func, "id", None) == "example"
                for d in node.decorator_list
            )
    return counts


def coverage() -> list[PackageCoverage]:
    """Per package: its public callables, which property tests cover which, and the tests."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.property.support import COVERS

    result = []
    for package, (module_name, test_module, scope) in PACKAGES.items():
        tests_mod = importlib.import_module(test_module)
        public = public_callables(module_name)
        explicit = _explicit_examples(test_module)
        tests, covered = [], set()
        for key, names in COVERS.items():
            module, _, test = key.partition("::")
            if module != test_module:
                continue
            unknown = sorted(set(names) - set(public))
            if unknown:
                raise SystemExit(f"{key} covers {unknown}, not public callables of {module_name}")
            covered |= set(names)
            doc = inspect.getdoc(getattr(tests_mod, test)) or ""
            tests.append(TestInfo(test, tuple(names), " ".join(doc.split()), explicit.get(test, 0)))
        result.append(
            PackageCoverage(
                package,
                scope,
                public,
                sorted(covered),
                sorted(set(public) - covered),
                sorted(tests, key=lambda t: t.name),
            )
        )
    return result


def run_tests(profile: str) -> dict:
    """Run tests/property under ``profile``; return the plugin's report."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        env = dict(os.environ, REID_RELIABILITY_JSON=str(report), REID_HYPOTHESIS_PROFILE=profile)
        cmd = [sys.executable, "-m", "pytest", "tests/property", "-q", "-p", "no:cacheprovider"]
        # The check of this page is no property test (and fails until the page is rewritten).
        cmd += ["--deselect", "tests/property/test_reliability_doc.py"]
        print("running:", " ".join(cmd), f"(profile {profile})", flush=True)
        done = subprocess.run(cmd, cwd=ROOT, env=env)
        if not report.is_file():
            raise SystemExit(f"pytest wrote no report (exit status {done.returncode})")
        data = json.loads(report.read_text())
        data["exit_status"] = done.returncode
        return data


def render(packages: list[PackageCoverage], report: dict) -> str:
    import hypothesis

    tests = report["tests"]
    calls = report.get("calls", {})
    lines = [
        f"Generated by `{COMMAND}` (profile `{report['profile']}`, hypothesis "
        f"{hypothesis.__version__}); do not edit by hand.",
        "",
        "| package | in scope | property tests | public callables covered | generated cases "
        "run | calls accepted / refused |",
        "|---|---|---|---|---|---|",
    ]
    total_cases = 0
    for pkg in packages:
        for t in pkg.tests:
            entry = tests.get(f"{PACKAGES[pkg.package][1]}::{t.name}", {})
            t.examples, t.outcome = entry.get("examples"), entry.get("outcome", "not run")
        cases = sum(t.examples or 0 for t in pkg.tests)
        total_cases += cases
        names = set(pkg.public)
        accepted = sum(v for k, v in calls.items() if k.split()[0] in names and "accepted" in k)
        refused = sum(v for k, v in calls.items() if k.split()[0] in names and "refused" in k)
        lines.append(
            f"| `{pkg.package}` | {pkg.scope} | {len(pkg.tests)} | {len(pkg.covered)} / "
            f"{len(pkg.public)} | {cases} | {accepted} / {refused} |"
        )
    lines += [
        "",
        f"{total_cases} generated cases in all (explicit `@example` cases included).",
        "",
        *corpus_lines(),
    ]
    for pkg in packages:
        lines += ["", f"### `{pkg.package}`", ""]
        lines.append(f"Covered ({len(pkg.covered)} / {len(pkg.public)}): " + _names(pkg.covered))
        lines.append("")
        lines.append(
            f"Not covered ({len(pkg.uncovered)}): " + (_names(pkg.uncovered) or "none") + "."
        )
        lines.append("")
        for t in pkg.tests:
            outcome = "" if t.outcome == "passed" else f", **{t.outcome}**"
            lines.append(
                f"- `{t.name}` ({t.examples} cases, {t.explicit_examples} of them explicit "
                f"`@example`s{outcome}), covers {_names(t.covers)}: {t.doc}"
            )
    return "\n".join(lines)


def corpus_lines() -> list[str]:
    """The commands' malformed-input corpus (tests/integration/test_malformed_corpus.py): its
    cases by kind and by command (counted from ``CASES``, not run here)."""
    from tests.integration import test_malformed_corpus as corpus

    kinds: dict[str, list[str]] = {}
    for case in corpus.CASES:
        kinds.setdefault(case.kind, []).append(case.id)
    valid = len(corpus.test_unusual_but_valid_images_work.pytestmark[0].args[1])
    lines = [
        "### The commands: malformed-input corpus",
        "",
        f"`tests/integration/test_malformed_corpus.py`: {len(corpus.CASES)} malformed files and "
        "layouts, each run through `reid-eval` or `reid-train`, which must exit with status 2, "
        "name the file (or key) and the fix in one message, print no traceback, write nothing "
        "outside the run folder (and never a finished-looking one) and never run a `.pth`'s "
        f"code; plus {valid} unusual but valid images that must be read (finite unit features).",
        "",
        "| kind | cases |",
        "|---|---|",
    ]
    lines += [f"| {kind} | {len(ids)}: {', '.join(ids)} |" for kind, ids in kinds.items()]
    return lines


def _names(names) -> str:
    return ", ".join(f"`{n}`" for n in names)


def replace_section(text: str, body: str) -> str:
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"{DOC} lacks the {BEGIN} / {END} markers")
    return f"{head}{BEGIN}\n{body}\n{END}{tail}"


def documented_coverage(text: str) -> dict[str, tuple[int, int, list[str]]]:
    """package -> (covered, total, the names listed as not covered), read from the doc."""
    section = text.partition(BEGIN)[2].partition(END)[0]
    found = {}
    for block in section.split("\n### ")[1:]:
        if not block.startswith("`"):  # the commands' corpus: not a package
            continue
        package = block.split("`")[1]
        covered_line = next(x for x in block.splitlines() if x.startswith("Covered ("))
        missing_line = next(x for x in block.splitlines() if x.startswith("Not covered ("))
        count = covered_line.split("(", 1)[1].split(")", 1)[0]
        covered, total = (int(v) for v in count.split(" / "))
        missing = re.findall(r"`([^`]+)`", missing_line.split(": ", 1)[1])
        found[package] = (covered, total, missing)
    return found


def check(text: str, packages: list[PackageCoverage]) -> list[str]:
    """The differences between the doc's coverage figures and the code's."""
    problems = []
    doc = documented_coverage(text)
    for pkg in packages:
        if pkg.package not in doc:
            problems.append(f"{pkg.package}: no section in {DOC.name}")
            continue
        covered, total, missing = doc[pkg.package]
        want = (len(pkg.covered), len(pkg.public), pkg.uncovered)
        if (covered, total, missing) != want:
            problems.append(
                f"{pkg.package}: the doc says {covered} / {total}, not covered {missing}; the "
                f"code gives {want[0]} / {want[1]}, not covered {want[2]}"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("fast", "long"), default="fast")
    parser.add_argument(
        "--check", action="store_true", help="compare the doc's coverage with the code; no run"
    )
    args = parser.parse_args(argv)
    packages = coverage()
    text = DOC.read_text()
    if args.check:
        problems = check(text, packages)
        for p in problems:
            print(p)
        return 1 if problems else 0
    report = run_tests(args.profile)
    DOC.write_text(replace_section(text, render(packages, report)))
    print(f"wrote {DOC.relative_to(ROOT)}")
    return report["exit_status"]


if __name__ == "__main__":
    raise SystemExit(main())
