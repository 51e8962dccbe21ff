"""Install each package on its own and check what it brings and what it imports.

reid-refine goes into a brand-new virtual environment (torch and its own needs are installed
from scratch) and must bring nothing else. Each other package goes into its own new virtual
environment that borrows that torch through a ``.pth`` file (torch is the only multi-GB
download, and the local siblings it depends on are installed from packages/). For every package
the script records what pip installed, fails when a forbidden distribution came along, imports
the package in a fresh interpreter and fails when a sibling it must not depend on was imported.
matplotlib is a dependency of reid-train only; reid-eval offers it as the ``[plot]`` extra, so a
plain reid-eval install must not bring it.

Usage: python .ci/check_installs.py WORK_DIR   (run from the repository root)
The environments (about 6 GB) are deleted at the end unless REID_CI_KEEP_VENVS=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"

SIBLINGS = ["reid_refine", "reid_clustering", "reid_backbones", "reid_eval", "reid_train"]

# package -> (local packages installed with it, module, siblings it may import, forbidden dists)
PLAN = {
    "reid-refine": (
        [],
        "reid_refine",
        {"reid_refine"},
        {"numpy", "scipy", "scikit-learn", "torchvision", "accelerate", "faiss-cpu", "pillow"},
    ),
    "reid-clustering": (
        [],
        "reid_clustering",
        {"reid_clustering"},
        {"torchvision", "accelerate", "faiss-cpu", "faiss-gpu-cu12"},
    ),
    "reid-backbones": (
        [],
        "reid_backbones",
        {"reid_backbones"},
        {"scipy", "scikit-learn", "accelerate", "faiss-cpu"},
    ),
    "reid-eval": (
        ["reid-backbones", "reid-clustering"],
        "reid_eval",
        {"reid_eval", "reid_backbones", "reid_clustering"},
        {"accelerate", "matplotlib"},
    ),
    "reid-train": (
        ["reid-backbones", "reid-clustering", "reid-eval", "reid-refine"],
        "reid_train",
        set(SIBLINGS),
        set(),
    ),
}


def run(cmd: list[str]) -> str:
    print("+", " ".join("<script>" if "\n" in c else c for c in cmd), flush=True)
    proc = subprocess.run(cmd, text=True, capture_output=True)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
        raise SystemExit(f"command failed with status {proc.returncode}")
    return proc.stdout


def site_packages(env: Path) -> Path:
    return next((env / "lib").glob("python3*/site-packages"))


def install(env: Path, requirements: list[str], borrow: Path | None) -> list[str]:
    venv.EnvBuilder(with_pip=True, clear=True).create(env)
    if borrow is not None:
        (site_packages(env) / "_borrowed_torch.pth").write_text(str(borrow) + "\n")
    report = env / "pip-report.json"
    run(
        [
            str(env / "bin/python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(CONSTRAINTS),
            "--report",
            str(report),
            *requirements,
        ]
    )
    items = json.loads(report.read_text())["install"]
    return sorted(item["metadata"]["name"].lower() for item in items)


def imported_siblings(env: Path, module: str) -> set[str]:
    code = (
        f"import sys, json, {module}; "
        f"print(json.dumps(sorted(m for m in sys.modules if m in {SIBLINGS!r})))"
    )
    return set(json.loads(run([str(env / "bin/python"), "-c", code]).strip().splitlines()[-1]))


# Runs in the reid-refine environment (torch only): the package must work there, not just import.
REFINE_SMOKE = """
import torch
from reid_refine import aals_loss, cross_agreement, dcls_loss, pglr_loss
g = torch.nn.functional.normalize(torch.randn(40, 16), dim=1)
p = torch.nn.functional.normalize(torch.randn(40, 3, 16), dim=2)
c = cross_agreement(g, p, k=5)
y = torch.randint(0, 4, (40,))
gl = torch.randn(40, 4, requires_grad=True)
pl = torch.randn(40, 3, 4, requires_grad=True)
loss = aals_loss(pl, y, c) + pglr_loss(gl, pl, y, c) + dcls_loss(gl, pl, g, p, y).total
loss.backward()
assert c.shape == (40, 3) and torch.isfinite(loss) and gl.grad is not None
print("reid-refine smoke run: loss", round(loss.item(), 4))
"""


def main() -> int:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / ".ci/work").resolve()
    work.mkdir(parents=True, exist_ok=True)
    failures = []
    borrow = None
    for package, (local, module, allowed, forbidden) in PLAN.items():
        env = work / f"venv-{package}"
        requirements = [str(ROOT / "packages" / p) for p in [*local, package]]
        installed = install(env, requirements, borrow)
        print(f"{package}: pip installed {', '.join(installed)}")
        bad = sorted(set(installed) & forbidden)
        if bad:
            failures.append(f"{package} brought {', '.join(bad)}")
        extra = imported_siblings(env, module) - allowed
        if extra:
            failures.append(f"importing {module} imported {', '.join(sorted(extra))}")
        if package == "reid-refine":
            if "torch" not in installed:
                failures.append("reid-refine did not install torch into its fresh environment")
            borrow = site_packages(env)
            print(run([str(env / "bin/python"), "-c", REFINE_SMOKE]).strip())
    if os.environ.get("REID_CI_KEEP_VENVS") != "1":  # ~6 GB, mostly the fresh torch
        for package in PLAN:
            shutil.rmtree(work / f"venv-{package}", ignore_errors=True)
    for f in failures:
        print("FAIL:", f)
    print("isolated installs:", "FAILED" if failures else "all packages install on their own")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
