"""The GPU check's command line: ``python -m benchmarks.gpu_check [options]`` from the repository
root (see :mod:`benchmarks.gpu_check` for the steps and options)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import benchmarks.gpu_check as package
from benchmarks.common import commit, machine, write_section
from benchmarks.gpu_check.context import CPU_SIZES, DEFAULT_BUDGET, GPU_SIZES, Context, Sizes
from benchmarks.gpu_check.deps import reexec_with_tree_packages
from benchmarks.gpu_check.report import environment, render_report, summary_table
from benchmarks.gpu_check.runner import run_check, run_step_here
from benchmarks.gpu_check.steps import STEPS


def _step_names(values: list[str]) -> list[str]:
    names = list(STEPS)
    out = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            if item.isdigit() and 1 <= int(item) <= len(names):
                item = names[int(item) - 1]
            if item not in STEPS:
                raise SystemExit(f"unknown step {item!r}; choose from {names} or 1-{len(names)}")
            out.append(item)
    return out


def _sizes(args: argparse.Namespace) -> Sizes:
    sizes = CPU_SIZES if args.cpu else GPU_SIZES
    if args.cluster_sizes:
        sizes = dataclasses.replace(sizes, cluster_sizes=tuple(args.cluster_sizes))
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=package.__doc__.split("\n")[0])
    parser.add_argument("--cpu", action="store_true", help="CPU only, reduced sizes")
    parser.add_argument("--no-write", dest="write", action="store_false")
    parser.add_argument("--steps", nargs="+", default=list(STEPS), help="names or numbers 1-5")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="seconds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--from-json", type=Path, help="write the docs section from a results file")
    parser.add_argument("--in-process", action="store_true", help="no subprocess per step")
    parser.add_argument("--cluster-sizes", type=int, nargs="+", help="N of step 2")
    # Internal: one step in a subprocess.
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = "cpu" if args.cpu else "cuda"

    if args.child:
        ctx = Context(device, _sizes(args), args.deadline, args.workdir)
        res = run_step_here(args.child, ctx)
        args.result.write_text(json.dumps(res.to_json(), default=str))
        return 0

    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        write_section(saved["section"], saved["body"])
        return 0

    steps = _step_names(args.steps)
    if args.json is None and os.environ.get("OUT") and Path(os.environ["OUT"]).is_dir():
        args.json = Path(os.environ["OUT"]) / "gpu_check.json"  # the device tool's return folder
    if importlib.util.find_spec("torch") is None:
        print("torch is not importable with this Python: nothing can run", file=sys.stderr)
        return 2
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        print(
            f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); use --cpu for "
            "the reduced CPU rehearsal",
            file=sys.stderr,
        )
        return 2
    machine_line, env = machine(), environment()
    print(f"gpu_check: {machine_line}", flush=True)
    print("versions: " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    results = run_check(
        steps, device=device, sizes=_sizes(args), budget=args.budget,
        in_process=args.in_process, args=args,
    )  # fmt: skip
    total = time.time() - package.T0
    body = render_report(
        results, device=device, machine_line=machine_line, env=env, total_s=total,
        budget=args.budget, commit=commit(dirty=True) or "unknown (no git)",
        when=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )  # fmt: skip
    section = "gpu-check" if device == "cuda" else "gpu-check-cpu"
    print("\n" + summary_table(results), flush=True)
    print(f"\ntotal {total:.1f} s (budget {args.budget:.0f} s)", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "section": section,
            "body": body,
            "total_s": total,
            "results": [r.to_json() for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=1, default=str) + "\n")
        print(f"results written to {args.json}", flush=True)
    if args.write:
        write_section(section, body)
    return 1 if any(r.status == "FAIL" for r in results) else 0


if __name__ == "__main__":
    reexec_with_tree_packages("benchmarks.gpu_check")
    sys.exit(main())
