"""Bit-identity check for refactors of reid-train: fixed-seed runs of every method, compared.

A refactor that promises "no change of results" runs this once on the commit before it and once
after, on the same machine (float results differ in the last bits between CPU kernels, so the
two sides must come from one machine), and compares the records:

    python scripts/refactor_check.py run OUT_BEFORE     # on the commit before the change
    python scripts/refactor_check.py run OUT_AFTER      # after it
    python scripts/refactor_check.py compare OUT_BEFORE OUT_AFTER

Each run is a short ``configs/synthetic_tiny.yaml`` run (2 epochs of 2 iterations, one
evaluation per epoch) of one method or label source; ``compare`` reads ``metrics.jsonl`` and
``history.jsonl`` line by line and reports every field that differs, leaving out the wall times
(``times``), which differ from run to run. ``--allow KEY`` ignores a history field missing on
the second side (e.g. the pseudo-label quality a ground-truth run no longer computes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: name -> overrides of configs/synthetic_tiny.yaml
RUNS = {
    "baseline": ["method.name=baseline"],
    "pplr": ["method.name=pplr"],
    "pplr_cam": ["method.name=pplr_cam"],
    "dcls": ["method.name=dcls"],
    "ground_truth": ["method.name=baseline", "cluster.labels=ground_truth"],
    "noisy_pplr": [
        "method.name=pplr",
        "cluster.labels=noisy_ground_truth",
        "cluster.label_noise=0.2",
    ],  # fmt: skip
    "cluster_contrast": ["method.name=cluster_contrast"],
}


def run(out: Path, data: Path, names: list[str]) -> None:
    from reid_train import Trainer
    from reid_train.config import load_config

    for name in names:
        overrides = [
            f"data.data_root={data}", "runtime.plots=false", "runtime.tensorboard=false",
            *RUNS[name],
        ]  # fmt: skip
        cfg = load_config(ROOT / "configs" / "synthetic_tiny.yaml", overrides)
        Trainer(cfg, out / name, overwrite=True).fit()
        print(f"{name}: {out / name}", flush=True)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _diff(a: object, b: object, where: str, allow: set[str], out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a.keys() | b.keys():
            if key == "times":
                continue
            if key not in b and key in allow:
                continue
            if key not in a or key not in b:
                out.append(f"{where}.{key}: only on the {'first' if key in a else 'second'} side")
                continue
            _diff(a[key], b[key], f"{where}.{key}", allow, out)
    elif a != b:
        out.append(f"{where}: {a!r} != {b!r}")


def compare(first: Path, second: Path, allow: set[str]) -> int:
    problems: list[str] = []
    for name in sorted(p.name for p in first.iterdir() if p.is_dir()):
        for file in ("metrics.jsonl", "history.jsonl"):
            a, b = _lines(first / name / file), _lines(second / name / file)
            if len(a) != len(b):
                problems.append(f"{name}/{file}: {len(a)} vs {len(b)} lines")
                continue
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                _diff(x, y, f"{name}/{file}:{i + 1}", allow, problems)
    print("\n".join(problems) if problems else "identical (wall times left out)")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--data", type=Path, default=ROOT / "data" / "synthetic")
    r.add_argument("--only", nargs="+", choices=list(RUNS), default=list(RUNS))
    c = sub.add_parser("compare")
    c.add_argument("first", type=Path)
    c.add_argument("second", type=Path)
    c.add_argument("--allow", nargs="*", default=[], help="history fields the second may lack")
    args = parser.parse_args()
    if args.command == "run":
        run(args.out, args.data, args.only)
        return 0
    return compare(args.first, args.second, set(args.allow))


if __name__ == "__main__":
    sys.exit(main())
