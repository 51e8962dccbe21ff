"""What the GPU check's steps need: third-party modules, the five packages of this working tree
(imported from ``packages/*/src`` through ``PYTHONPATH``, nothing installed) and the check of
both before any step runs."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from benchmarks.common import ROOT

PACKAGES = ("reid-refine", "reid-clustering", "reid-backbones", "reid-eval", "reid-train")
SRC_DIRS = [ROOT / "packages" / p / "src" for p in PACKAGES]

# Third-party modules: import name -> what to install.
THIRD_PARTY = {
    "torch": "torch",
    "torchvision": "torchvision",
    "numpy": "numpy",
    "scipy": "scipy",
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "tqdm": "tqdm",
    "yaml": "pyyaml",
    "accelerate": "accelerate",
    "pytest": "pytest",
}
OPTIONAL = {"matplotlib": "matplotlib (training plots; without it runtime.plots=false)"}
_CORE = ("torch", "torchvision", "numpy", "scipy", "sklearn", "PIL", "tqdm")
STEP_MODULES = {  # (third-party modules, project modules) each step imports
    "cuda-tests": ((*_CORE, "pytest"), ("reid_clustering", "reid_eval")),
    "pseudo-labels": (("torch", "numpy", "scipy", "sklearn"), ("reid_clustering",)),
    "evaluation": (_CORE, ("reid_eval",)),
    "train-throughput": (("torch", "torchvision"), ("reid_backbones",)),
    "accelerate-run": ((*_CORE, "accelerate", "yaml"), ("reid_train",)),
}


def child_pythonpath() -> str:
    """``PYTHONPATH`` with the working tree's ``src`` folders first (once)."""
    old = os.environ.get("PYTHONPATH", "")
    src = [str(p) for p in SRC_DIRS]
    if old.split(os.pathsep)[: len(src)] == src:
        return old
    return os.pathsep.join([*src, *([old] if old else [])])


def reexec_with_tree_packages(module: str) -> None:
    """Run ``python -m module`` with this process's arguments again, at once, with the working
    tree's packages first on ``PYTHONPATH`` (unless they are already): the packages of this tree
    are imported, installed or not, without touching ``sys.path``."""
    path = child_pythonpath()
    if os.environ.get("PYTHONPATH", "") == path:
        return
    sys.stdout.flush()
    argv = [sys.executable, "-m", module, *sys.argv[1:]]
    os.execve(sys.executable, argv, {**os.environ, "PYTHONPATH": path})


def check_modules() -> tuple[dict[str, str], dict[str, str]]:
    """(missing third-party module -> install hint, project module -> import error)."""
    missing = {m: hint for m, hint in THIRD_PARTY.items() if importlib.util.find_spec(m) is None}
    broken = {}
    for module in ("reid_refine", "reid_clustering", "reid_backbones", "reid_eval", "reid_train"):
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - reported, not raised
            broken[module] = f"{type(e).__name__}: {e}"
    return missing, broken


def blocked(name: str, missing: dict[str, str], broken: dict[str, str]) -> str | None:
    third, project = STEP_MODULES.get(name, ((), ()))
    lacks = [m for m in third if m in missing]
    if lacks:
        return "missing modules: " + ", ".join(f"{m} (pip install {missing[m]})" for m in lacks)
    fails = [f"{m}: {broken[m]}" for m in project if m in broken]
    return "import failed: " + "; ".join(fails) if fails else None
