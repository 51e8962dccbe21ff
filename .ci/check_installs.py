"""Install each package on its own and check what it brings and what it imports.

reid-refine's dependencies are resolved by pip in a brand-new, empty virtual environment
(``pip install --dry-run --report``): pip must want torch and its own needs, and nothing
forbidden. torch itself is not installed a second time (a CUDA build is about 5.5 GB, and a full
disk has failed CI before): the distributions of that resolution are linked, file by file, from
the project's ``.venv`` into one folder, after checking that ``.venv`` holds exactly the versions
pip chose. Every package then goes into its own new virtual environment that borrows that folder
through a ``.pth`` file (the local siblings it depends on are installed from packages/). For every
package the script records what pip installed, fails when a forbidden distribution came along,
imports the package in a fresh interpreter and fails when a sibling it must not depend on was
imported; reid-refine also runs a smoke training step. matplotlib is a dependency of reid-train
only; reid-eval offers it as the ``[plot]`` extra, so a plain reid-eval install must not bring it.

Usage: python .ci/check_installs.py WORK_DIR [VENV]   (run from the repository root; VENV, the
environment torch is borrowed from, defaults to .venv). The environments are deleted at the end
unless REID_CI_KEEP_VENVS=1.
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


def pip_report(env: Path, requirements: list[str], *extra: str) -> list[dict]:
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
            *extra,
            *requirements,
        ]
    )
    return json.loads(report.read_text())["install"]


def names(items: list[dict]) -> list[str]:
    return sorted(item["metadata"]["name"].lower() for item in items)


def install(env: Path, requirements: list[str], borrow: Path | None) -> list[str]:
    venv.EnvBuilder(with_pip=True, clear=True).create(env)
    if borrow is not None:
        (site_packages(env) / "_borrowed_torch.pth").write_text(str(borrow) + "\n")
    return names(pip_report(env, requirements))


# Runs in the source environment: where each distribution's files are, relative to its site dir.
LOCATE = """
import json, sys
from importlib import metadata
out = {}
for name in json.loads(sys.argv[1]):
    try:
        d = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        out[name] = None
        continue
    top = sorted({f.parts[0] for f in d.files or [] if f.parts and f.parts[0] != ".."})
    out[name] = {"version": d.version, "site": str(d.locate_file("")), "top": top}
print(json.dumps(out))
"""


def link_resolution(resolved: list[dict], source_python: Path, dest: Path) -> None:
    """Link the top-level files of each resolved distribution from the source environment."""
    wanted = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in resolved}
    found = json.loads(run([str(source_python), "-c", LOCATE, json.dumps(sorted(wanted))]))
    wrong = [
        f"{n} {found[n]['version'] if found[n] else 'missing'} (pip chose {v})"
        for n, v in wanted.items()
        if not found[n] or found[n]["version"] != v
    ]
    if wrong:
        raise SystemExit(
            f"{source_python} holds other versions than pip resolves for reid-refine: "
            f"{', '.join(wrong)}; recreate it with ./dev setup"
        )
    dest.mkdir(parents=True)
    for info in found.values():
        for top in info["top"]:
            link = dest / top
            if not link.exists():
                link.symlink_to(Path(info["site"]) / top)


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
    source = Path(sys.argv[2] if len(sys.argv) > 2 else ROOT / ".venv").resolve()
    work.mkdir(parents=True, exist_ok=True)
    failures = []

    # reid-refine's resolution from nothing: what pip would install into an empty environment.
    fresh = work / "venv-fresh"
    venv.EnvBuilder(with_pip=True, clear=True).create(fresh)
    refine = [str(ROOT / "packages/reid-refine")]
    resolved = pip_report(fresh, refine, "--dry-run", "--ignore-installed")
    wanted = names(resolved)
    print(f"reid-refine: pip would install {', '.join(wanted)} into an empty environment")
    if "torch" not in wanted:
        failures.append("reid-refine does not bring torch into an empty environment")
    bad = sorted(set(wanted) & PLAN["reid-refine"][3])
    if bad:
        failures.append(f"reid-refine would bring {', '.join(bad)}")
    borrow = work / "borrowed-torch"
    link_resolution(
        [i for i in resolved if i["metadata"]["name"].lower() != "reid-refine"],
        source / "bin/python",
        borrow,
    )

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
            # The borrowed folder comes after the venv's own site-packages, so pip may upgrade
            # the venv's setuptools; anything outside the fresh resolution is a failure.
            outside = sorted(set(installed) - set(wanted))
            if outside:
                failures.append(f"reid-refine installed {', '.join(outside)} beside torch")
            print(run([str(env / "bin/python"), "-c", REFINE_SMOKE]).strip())
    if os.environ.get("REID_CI_KEEP_VENVS") != "1":
        for path in [fresh, borrow, *(work / f"venv-{p}" for p in PLAN)]:
            shutil.rmtree(path, ignore_errors=True)  # removes borrow's links, not their targets
    for f in failures:
        print("FAIL:", f)
    print("isolated installs:", "FAILED" if failures else "all packages install on their own")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
