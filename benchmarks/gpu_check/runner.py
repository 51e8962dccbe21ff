"""Runs the GPU check's steps in order, each in a fresh ``python -m benchmarks.gpu_check
--child`` process (or in this one) with its time limit; every step gets a result."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks.gpu_check import T0
from benchmarks.gpu_check.context import (
    DEFAULT_BUDGET,
    GRACE,
    STATUSES,
    STEP_CAPS,
    Context,
    Sizes,
    StepResult,
)
from benchmarks.gpu_check.deps import OPTIONAL, blocked, check_modules
from benchmarks.gpu_check.process import run_logged
from benchmarks.gpu_check.steps import STEPS


def run_step_here(name: str, ctx: Context) -> StepResult:
    """One step in this process; an exception is a FAIL with its message."""
    res = StepResult(name)
    t = time.perf_counter()
    try:
        STEPS[name](ctx, res)
    except Exception as e:  # noqa: BLE001 - a failing step must not stop the others
        res.status = "FAIL"
        res.summary = f"{type(e).__name__}: {str(e)[:300]}"
        res.notes.append("traceback: " + " / ".join(traceback.format_exc().splitlines()[-6:]))
    res.seconds = round(time.perf_counter() - t, 2)
    if res.status not in STATUSES:
        res.status = "FAIL"
    return res


def _run_step_child(name: str, ctx: Context, args: argparse.Namespace) -> StepResult:
    result_file = ctx.workdir / f"{name}.result.json"
    cmd = [
        sys.executable, "-m", "benchmarks.gpu_check", "--child", name,
        "--result", str(result_file), "--deadline", str(ctx.deadline),
        "--workdir", str(ctx.workdir),
        *(["--cpu"] if ctx.cpu else []),
        *(["--cluster-sizes", *map(str, args.cluster_sizes)] if args.cluster_sizes else []),
    ]  # fmt: skip
    t = time.perf_counter()
    code, tail = run_logged(cmd, timeout=ctx.remaining() + 5, prefix="  ")
    seconds = round(time.perf_counter() - t, 2)
    if result_file.exists():
        res = StepResult.from_json(json.loads(result_file.read_text()))
        res.seconds = seconds  # with the subprocess's start-up
        if code is None:
            res.status = "FAIL"
            res.notes.append("killed at its time limit after writing its result")
        return res
    res = StepResult(name, "FAIL", seconds)
    if code is None:
        res.summary = f"timed out after {seconds:.0f} s (limit of the step or the budget)"
    else:
        res.summary = f"the step's process exited with {code} without a result (crash?)"
    res.notes.append("output tail: " + " / ".join(tail[-10:]))
    return res


def run_check(
    steps: list[str],
    *,
    device: str,
    sizes: Sizes,
    budget: float = DEFAULT_BUDGET,
    in_process: bool = False,
    workdir: Path | None = None,
    args: argparse.Namespace | None = None,
    start: float | None = None,
) -> list[StepResult]:
    """Run ``steps`` in order; every step gets a result (PASS / FAIL / SKIP)."""
    start = T0 if start is None else start
    args = args or argparse.Namespace(cluster_sizes=None)
    missing, broken = check_modules()
    for module, hint in missing.items():
        print(f"MISSING third-party module {module!r} (pip install {hint})", flush=True)
    for module, error in broken.items():
        print(f"CANNOT IMPORT {module}: {error}", flush=True)
    for module, hint in OPTIONAL.items():
        if importlib.util.find_spec(module) is None:
            print(f"optional module {module!r} missing: {hint}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        for name in steps:
            now = time.time()
            print(f"\n=== {name} (t = {now - start:.0f} s) ===", flush=True)
            lacks = blocked(name, missing, broken)
            if lacks:
                results.append(StepResult(name, "FAIL", 0.0, lacks))
            elif now - start > budget:
                results.append(
                    StepResult(name, "SKIP", 0.0, f"time budget of {budget:.0f} s spent")
                )
            else:
                step_dir = Path(workdir or tmp) / name
                step_dir.mkdir(parents=True, exist_ok=True)
                deadline = min(start + budget + GRACE, now + STEP_CAPS[name])
                ctx = Context(device, sizes, deadline, step_dir)
                if in_process:
                    results.append(run_step_here(name, ctx))
                else:
                    results.append(_run_step_child(name, ctx, args))
            r = results[-1]
            print(f"=== {name}: {r.status} in {r.seconds:.1f} s: {r.summary}", flush=True)
    return results
