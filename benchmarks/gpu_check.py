"""The prepared check for a short GPU loan: five timed steps, within 5 minutes on one GPU.

Steps (each in a fresh subprocess with its own timeout; a failing, crashing or hanging step is
recorded as FAIL and the next one runs; no step starts once ``--budget`` seconds are spent):

1. ``cuda-tests``: pytest on every test that is skipped without CUDA (found by reading tests/
   for ``skipif(not torch.cuda.is_available() ...)``), by node id.
2. ``pseudo-labels``: ``knn_search`` and ``dbscan_pseudo_labels(eps=0.5)`` on clustered
   synthetic 2048-d unit features (``benchmarks/clustering_scale.py``'s generator) at
   N = 12,936 and 32,621 on the GPU and on the CPU: times, and whether the labels and the kNN
   indices/similarities are identical (the kNN is designed to give the same bits on every
   device). The CPU reference at 32,621 is skipped (and said so) when the 12,936 timing
   predicts it would not fit the step's time.
3. ``evaluation``: ``reid_eval.evaluate_features`` at MSMT17 size (11,659 queries × 82,161
   gallery, 2048-d; ``benchmarks/eval_speed.py``'s generator, seed 0, so the mAP is comparable
   with that script's MSMT17 row): time and peak GPU memory, and the first 1,024 queries
   evaluated on the GPU and on the CPU compared.
4. ``train-throughput``: ResNet-50 PPLR model at 256×128, batch 64, forward + cross-entropy on
   every classifier + backward + Adam step, fp32 vs bf16 autocast + channels_last: images/s and
   peak memory.
5. ``accelerate-run``: ``accelerate launch --mixed_precision bf16 -m reid_train --config
   configs/synthetic_tiny.yaml`` for two epochs (the synthetic dataset is generated into a
   temporary folder): exit status, time, epochs, final mAP.

Nothing needs installing: the five packages are imported from ``packages/*/src`` of this
working tree (prepended to ``sys.path`` and, for the subprocesses, ``PYTHONPATH``). Third-party
modules are checked first; a step whose modules are missing is reported FAIL at once and the
others still run. Needs torch, torchvision, numpy, scipy, scikit-learn, pillow, tqdm (all
steps), pytest (step 1), accelerate and pyyaml (step 5); matplotlib is optional (without it the
tiny run is told ``runtime.plots=false``); faiss and internet access are not used.

On the GPU machine (from the repository root; the device tool's command line, with a timeout of
about 330 s: the steps stop starting at 270 s and the last one is cut at 290 s)::

    python3 benchmarks/gpu_check.py --json "$OUT/gpu_check.json"

(``--json`` defaults to ``$OUT/gpu_check.json`` when ``$OUT`` is a folder.) docs/benchmarks.md
edited there does not come back: bring ``gpu_check.json`` home and write the section
(``gpu-check``) here with::

    python benchmarks/gpu_check.py --from-json PATH/gpu_check.json

The same with explicit paths, should the script's own path set-up be in doubt::

    P=packages
    export PYTHONPATH=$P/reid-refine/src:$P/reid-clustering/src:$P/reid-backbones/src
    export PYTHONPATH=$PYTHONPATH:$P/reid-eval/src:$P/reid-train/src
    python3 benchmarks/gpu_check.py --no-write

Rehearsal without a GPU (reduced sizes: N = 2,000, a 1,000 × 5,000 evaluation, ResNet-18 at
64×32; step 1 only checks that its node ids are valid and reports SKIP)::

    OMP_NUM_THREADS=1 python benchmarks/gpu_check.py --cpu --no-write

Options: ``--steps 2 3`` (names or numbers), ``--budget SECONDS`` (default 270),
``--no-write``, ``--json PATH``, ``--in-process`` (no subprocesses; for debugging),
``--cluster-sizes N ...``. Exit status 0 when no step failed, 1 otherwise, 2 when torch sees no
GPU without ``--cpu``. ``--cpu`` writes (unless ``--no-write``) the section ``gpu-check-cpu``,
never the GPU figures'.
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import dataclasses
import datetime
import importlib
import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

T0 = time.time()  # the budget counts from here (module import)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PACKAGES = ("reid-refine", "reid-clustering", "reid-backbones", "reid-eval", "reid-train")
SRC_DIRS = [ROOT / "packages" / p / "src" for p in PACKAGES]

DEFAULT_BUDGET = 270.0
GRACE = 20.0  # a step started just before the budget ends may run this much past it
STATUSES = ("PASS", "FAIL", "SKIP")

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


def _setup_paths() -> None:
    """Import the packages from this working tree (subprocesses: :func:`_child_pythonpath`)."""
    for path in reversed([*SRC_DIRS, HERE]):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


def _child_pythonpath() -> str:
    old = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join([*(str(p) for p in SRC_DIRS), *([old] if old else [])])


_setup_paths()


# --------------------------------------------------------------------------------------------
# Sizes, context, results
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Problem sizes of the steps (GPU defaults; :data:`CPU_SIZES` for ``--cpu``)."""

    cluster_sizes: tuple[int, ...] = (12936, 32621)
    cluster_dim: int = 2048
    #: the CPU reference of a size is skipped when its predicted time exceeds this
    cpu_reference_limit_s: float = 60.0
    eval_query: int = 11659
    eval_gallery: int = 82161
    eval_ids: int = 3060
    eval_cameras: int = 15
    eval_dim: int = 2048
    #: queries evaluated on both devices and compared (0: no comparison)
    eval_check_queries: int = 1024
    train_backbone: str = "resnet50"
    train_size: tuple[int, int] = (256, 128)
    train_batch: int = 64
    train_classes: int = 1000
    train_warmup: int = 3
    train_iters: int = 10
    run_epochs: int = 2


GPU_SIZES = Sizes()
CPU_SIZES = Sizes(
    cluster_sizes=(2000,),
    eval_query=1000,
    eval_gallery=5000,
    eval_ids=250,
    eval_check_queries=0,
    train_backbone="resnet18",
    train_size=(64, 32),
    train_batch=16,
    train_warmup=1,
    train_iters=3,
)

# Wall-clock cap of each step (seconds; the budget may cut it shorter). Expected on an H200:
# 15-30 s each, the tiny training run 30-60 s.
STEP_CAPS = {
    "cuda-tests": 90.0,
    "pseudo-labels": 120.0,
    "evaluation": 120.0,
    "train-throughput": 90.0,
    "accelerate-run": 150.0,
}


@dataclasses.dataclass
class Context:
    device: str  # "cuda" or "cpu"
    sizes: Sizes
    deadline: float  # time.time() by which the step must be done
    workdir: Path

    @property
    def cpu(self) -> bool:
        return self.device == "cpu"

    def remaining(self) -> float:
        return self.deadline - time.time()


@dataclasses.dataclass
class StepResult:
    name: str
    status: str = "FAIL"
    seconds: float = 0.0
    summary: str = ""
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepResult:
        return cls(**data)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _gib(n_bytes: float) -> float:
    return round(n_bytes / 2**30, 3)


# --------------------------------------------------------------------------------------------
# Step 1: the CUDA-only tests
# --------------------------------------------------------------------------------------------


def _needs_cuda(decorators: list[ast.expr]) -> bool:
    """A ``skipif`` (or marker) decorator whose source mentions ``cuda.is_available``."""
    for dec in decorators:
        text = ast.unparse(dec)
        if "cuda.is_available" in text and "skip" in text:
            return True
    return False


def cuda_only_tests(root: Path = ROOT) -> list[str]:
    """Node ids of the tests skipped without CUDA (functions, classes, or whole modules)."""
    found = []
    for path in sorted((root / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(root).as_posix()
        whole_module = any(
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
            and "cuda.is_available" in ast.unparse(node.value)
            for node in tree.body
        )
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.name.startswith("test") and (
                    whole_module or _needs_cuda(node.decorator_list)
                ):
                    found.append(f"{rel}::{node.name}")
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                if whole_module or _needs_cuda(node.decorator_list):
                    found.append(f"{rel}::{node.name}")
                    continue
                for item in node.body:
                    if (
                        isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                        and item.name.startswith("test")
                        and _needs_cuda(item.decorator_list)
                    ):
                        found.append(f"{rel}::{node.name}::{item.name}")
    return found


def _junit_outcomes(path: Path) -> dict[str, str]:
    """``classname::name`` -> passed / failed / error / skipped, from pytest's junit XML."""
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = [child.tag for child in case]
        outcome = "passed"
        for tag in ("error", "failure", "skipped"):
            if tag in kinds:
                outcome = {"failure": "failed"}.get(tag, tag)
                break
        outcomes[name] = outcome
    return outcomes


def step_cuda_tests(ctx: Context, res: StepResult) -> None:
    ids = cuda_only_tests()
    res.figures["tests found"] = len(ids)
    res.notes.append("node ids: " + ", ".join(f"`{i}`" for i in ids))
    if not ids:
        res.status, res.summary = "FAIL", "no CUDA-only test found in tests/ (pattern changed?)"
        return
    junit = ctx.workdir / "cuda-tests.xml"
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
        f"--junitxml={junit}", "--basetemp", str(ctx.workdir / "pytest"), *ids,
    ]  # fmt: skip
    code, tail = run_logged(cmd, timeout=ctx.remaining(), prefix="    pytest| ")
    if code is None:
        res.status, res.summary = "FAIL", f"pytest timed out after {ctx.remaining():.0f} s"
        res.notes.append("output tail: " + " / ".join(tail[-8:]))
        return
    if not junit.exists():
        res.status, res.summary = "FAIL", f"pytest exited {code} without a report"
        res.notes.append("output tail: " + " / ".join(tail[-8:]))
        return
    outcomes = _junit_outcomes(junit)
    counts = collections.Counter(outcomes.values())
    for kind in ("passed", "failed", "error", "skipped"):
        res.figures[kind] = counts.get(kind, 0)
    bad = sorted(n for n, o in outcomes.items() if o in ("failed", "error"))
    if bad:
        res.notes.append("failed: " + ", ".join(bad))
        res.notes.append("output tail: " + " / ".join(tail[-8:]))
    text = ", ".join(f"{v} {k}" for k, v in counts.items())
    if ctx.cpu:
        ok = not bad and counts.get("skipped", 0) == len(ids)
        res.status = "SKIP" if ok else "FAIL"
        res.summary = f"{len(ids)} found, {text} (no CUDA: node ids checked only)"
    else:
        ok = counts.get("passed", 0) == len(ids) == len(outcomes) and code == 0
        res.status = "PASS" if ok else "FAIL"
        res.summary = f"{text} of {len(ids)} (pytest exit {code})"


# --------------------------------------------------------------------------------------------
# Step 2: pseudo labels, GPU against CPU
# --------------------------------------------------------------------------------------------


def step_pseudo_labels(ctx: Context, res: StepResult) -> None:
    import numpy as np
    import torch
    from clustering_scale import make_features

    from reid_clustering import dbscan_pseudo_labels, knn_search

    s = ctx.sizes
    eps, min_samples, k1, k2 = 0.5, 4, 30, 6
    dev = ctx.device

    def labels_and_knn(x: torch.Tensor) -> tuple[Any, Any, float, float]:
        _sync(dev)
        t = time.perf_counter()
        knn = knn_search(x, k=k1)
        _sync(dev)
        t_knn = time.perf_counter() - t
        t = time.perf_counter()
        labels = dbscan_pseudo_labels(x, eps=eps, min_samples=min_samples, k1=k1, k2=k2)
        return labels, knn, t_knn, time.perf_counter() - t

    # Warm-up (CUDA context, kernels, cuBLAS handles): not timed.
    t = time.perf_counter()
    warm = torch.from_numpy(make_features(600, s.cluster_dim, seed=1)[0])
    labels_and_knn(warm.to(dev))
    if dev != "cpu":
        labels_and_knn(warm)
    res.figures["warm-up s"] = round(time.perf_counter() - t, 2)

    compared, identical, parts, cpu_prev = 0, True, [], None
    for n in s.cluster_sizes:
        key = f"N={n}"
        t = time.perf_counter()
        x_np, _ = make_features(n, s.cluster_dim, seed=0)
        x = torch.from_numpy(x_np)
        res.figures[f"{key} features s"] = round(time.perf_counter() - t, 2)
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        lab_d, knn_d, t_knn_d, t_lab_d = labels_and_knn(x.to(dev))
        res.figures[f"{key} {dev} kNN s"] = round(t_knn_d, 3)
        res.figures[f"{key} {dev} labels s"] = round(t_lab_d, 3)
        res.figures[f"{key} clusters"] = int(lab_d.max() + 1)
        res.figures[f"{key} outliers"] = int((lab_d == -1).sum())
        if dev == "cuda":
            res.figures[f"{key} peak GPU GiB"] = _gib(torch.cuda.max_memory_allocated())
        # The CPU reference, when it is predicted to fit (kNN and Jaccard grow like N²).
        estimate = None if cpu_prev is None else cpu_prev[1] * (n / cpu_prev[0]) ** 2
        limit = min(s.cpu_reference_limit_s, ctx.remaining() - 15)
        if estimate is not None and estimate > limit:
            res.notes.append(
                f"N = {n:,}: CPU reference skipped (predicted {estimate:.0f} s from "
                f"N = {cpu_prev[0]:,}, limit {limit:.0f} s); {dev} side only"
            )
            parts.append(f"{n:,}: {dev} {t_knn_d + t_lab_d:.1f} s, no CPU reference")
            continue
        if dev == "cpu":
            res.notes.append(f"N = {n:,}: --cpu: both sides ran on the CPU (rehearsal)")
        lab_c, knn_c, t_knn_c, t_lab_c = labels_and_knn(x)
        cpu_prev = (n, t_knn_c + t_lab_c)
        res.figures[f"{key} cpu kNN s"] = round(t_knn_c, 3)
        res.figures[f"{key} cpu labels s"] = round(t_lab_c, 3)
        same_labels = bool(np.array_equal(lab_c, lab_d))
        same_idx = bool(torch.equal(knn_c.indices, knn_d.indices.cpu()))
        same_sim = bool(torch.equal(knn_c.similarities, knn_d.similarities.cpu()))
        res.figures[f"{key} labels identical"] = same_labels
        res.figures[f"{key} kNN indices identical"] = same_idx
        res.figures[f"{key} kNN similarities identical"] = same_sim
        if not same_labels:
            res.figures[f"{key} labels differing"] = int((lab_c != lab_d).sum())
            res.figures[f"{key} cpu clusters"] = int(lab_c.max() + 1)
        if not same_idx:
            rows = (knn_c.indices != knn_d.indices.cpu()).any(1)
            res.figures[f"{key} kNN rows differing"] = int(rows.sum())
        if not same_sim:
            diff = (knn_c.similarities - knn_d.similarities.cpu()).abs().max()
            res.figures[f"{key} kNN max |Δsim|"] = float(diff)
        compared += 1
        identical &= same_labels and same_idx and same_sim
        speed = (t_knn_c + t_lab_c) / max(t_knn_d + t_lab_d, 1e-9)
        parts.append(
            f"{n:,}: {dev} {t_knn_d + t_lab_d:.1f} s vs cpu {t_knn_c + t_lab_c:.1f} s "
            f"({speed:.1f}×), {'identical' if same_labels and same_idx and same_sim else 'DIFFER'}"
        )
    res.status = "PASS" if compared and identical else "FAIL"
    res.summary = "; ".join(parts) + ("" if compared else " (nothing compared)")


# --------------------------------------------------------------------------------------------
# Step 3: evaluation at MSMT17 size
# --------------------------------------------------------------------------------------------


def step_evaluation(ctx: Context, res: StepResult) -> None:
    import numpy as np
    import torch
    from eval_speed import Size, make_problem

    from reid_eval import evaluate_features

    s, dev = ctx.sizes, ctx.device
    full = (s.eval_query, s.eval_gallery) == (11659, 82161)
    size = Size(
        "MSMT17" if full else "reduced", s.eval_query, s.eval_gallery, s.eval_ids,
        s.eval_cameras, 0,
    )  # fmt: skip
    t = time.perf_counter()
    q, g, q_pids, g_pids, q_cams, g_cams = make_problem(size, s.eval_dim, seed=0, device=dev)
    _sync(dev)
    res.figures["size"] = f"{s.eval_query} × {s.eval_gallery} × {s.eval_dim}"
    res.figures["features s"] = round(time.perf_counter() - t, 2)
    if dev == "cuda":
        # Warm-up on a few queries (kernels, cuBLAS): not timed.
        with contextlib.suppress(ValueError):  # no valid query in the slice: still warmed up
            evaluate_features(q[:256], g[:4096], q_pids[:256], g_pids[:4096], q_cams[:256],
                              g_cams[:4096])  # fmt: skip
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        held = torch.cuda.memory_allocated()
        res.figures["features GiB"] = _gib(held)
    t = time.perf_counter()
    result = evaluate_features(q, g, q_pids, g_pids, q_cams, g_cams, 50)
    _sync(dev)
    seconds = time.perf_counter() - t
    res.figures["evaluate_features s"] = round(seconds, 3)
    if dev == "cuda":
        peak = torch.cuda.max_memory_allocated()
        res.figures["peak GPU GiB"] = _gib(peak)
        res.figures["peak GPU GiB above the features"] = _gib(peak - held)
    res.figures["mAP %"] = round(100 * result.mAP, 3)
    res.figures["Rank-1 %"] = round(100 * result.rank(1), 3)
    res.figures["mINP %"] = round(100 * result.mINP, 3)
    res.figures["valid queries"] = result.num_valid_queries
    ok = math.isfinite(result.mAP) and result.num_valid_queries > 0
    summary = f"{seconds:.1f} s, mAP {100 * result.mAP:.2f} %"
    if dev == "cuda":
        summary += f", peak {_gib(peak):.2f} GiB"
    m = min(s.eval_check_queries, s.eval_query)
    if dev == "cuda" and m > 0:
        sub = (q_pids[:m], g_pids, q_cams[:m], g_cams)
        on_gpu = evaluate_features(q[:m], g, *sub, 50)
        t = time.perf_counter()
        on_cpu = evaluate_features(q[:m].cpu(), g.cpu(), *sub, 50)
        res.figures[f"cpu reference ({m} queries) s"] = round(time.perf_counter() - t, 2)
        d_map = abs(on_gpu.mAP - on_cpu.mAP)
        same_ap = on_gpu.ap.shape == on_cpu.ap.shape and bool(np.array_equal(on_gpu.ap, on_cpu.ap))
        same_cmc = bool(np.array_equal(on_gpu.cmc, on_cpu.cmc))
        res.figures[f"first {m} queries: |ΔmAP| gpu vs cpu"] = d_map
        res.figures[f"first {m} queries: AP identical"] = same_ap
        res.figures[f"first {m} queries: CMC identical"] = same_cmc
        if not same_ap and on_gpu.ap.shape == on_cpu.ap.shape:
            res.figures[f"first {m} queries: max |ΔAP|"] = float(
                np.abs(on_gpu.ap - on_cpu.ap).max()
            )
        ok &= d_map <= 1e-4
        summary += f"; {m} queries vs CPU: {'identical' if same_ap and same_cmc else f'|ΔmAP| {d_map:.1e}'}"  # noqa: E501
    if full:
        res.notes.append(
            "same generator and seed as `benchmarks/eval_speed.py`'s MSMT17 row (section "
            "eval-speed): its mAP / Rank-1 should agree to rounding"
        )
    res.status = "PASS" if ok else "FAIL"
    res.summary = summary


# --------------------------------------------------------------------------------------------
# Step 4: training throughput, fp32 vs bf16 + channels_last
# --------------------------------------------------------------------------------------------


def _train_speed(mode: str, s: Sizes, dev: str) -> tuple[float, list[float], float | None]:
    """(images/s, losses of the timed iterations, peak GPU GiB) of one precision mode."""
    import torch
    from torch.nn import functional as F

    from reid_backbones import build_model

    low = mode != "fp32"
    h, w = s.train_size
    torch.manual_seed(0)
    model = build_model("pplr", s.train_backbone, num_classes=s.train_classes, input_size=(h, w))
    model = model.to(dev)
    images = torch.randn(s.train_batch, 3, h, w, device=dev)
    targets = torch.randint(0, s.train_classes, (s.train_batch,), device=dev)
    if low:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3.5e-4)

    def step() -> torch.Tensor:
        autocast = torch.autocast(dev, dtype=torch.bfloat16) if low else contextlib.nullcontext()
        with autocast:
            out = model(images)
            loss = F.cross_entropy(out.global_logits.float(), targets)
            if out.part_logits is not None:
                parts = out.part_logits.float().flatten(0, 1)
                loss = loss + F.cross_entropy(
                    parts, targets.repeat_interleave(out.part_logits.shape[1])
                )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    for _ in range(s.train_warmup):
        step()
    _sync(dev)
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    losses = [step() for _ in range(s.train_iters)]
    _sync(dev)
    seconds = time.perf_counter() - t
    peak = _gib(torch.cuda.max_memory_allocated()) if dev == "cuda" else None
    return s.train_batch * s.train_iters / seconds, [float(v) for v in losses], peak


def step_train_throughput(ctx: Context, res: StepResult) -> None:
    import torch

    s, dev = ctx.sizes, ctx.device
    h, w = s.train_size
    if dev == "cuda":
        torch.backends.cudnn.benchmark = True
        res.figures["cuDNN TF32 convolutions (fp32 mode)"] = torch.backends.cudnn.allow_tf32
        res.figures["TF32 matmuls (fp32 mode)"] = torch.backends.cuda.matmul.allow_tf32
    res.figures["setting"] = (
        f"pplr {s.train_backbone} {h}×{w}, batch {s.train_batch}, {s.train_classes} classes, "
        f"Adam, {s.train_iters} timed iterations after {s.train_warmup}"
    )
    speeds, ok = {}, True
    for mode in ("fp32", "bf16 + channels_last"):
        speeds[mode], losses, peak = _train_speed(mode, s, dev)
        finite = all(math.isfinite(v) for v in losses)
        ok &= finite
        res.figures[f"{mode} images/s"] = round(speeds[mode], 1)
        res.figures[f"{mode} last loss"] = round(losses[-1], 4)
        if peak is not None:
            res.figures[f"{mode} peak GPU GiB"] = peak
            torch.cuda.empty_cache()
        if not finite:
            res.notes.append(f"{mode}: non-finite loss")
    gain = speeds["bf16 + channels_last"] / speeds["fp32"]
    res.figures["bf16 + channels_last speed-up"] = round(gain, 2)
    res.status = "PASS" if ok else "FAIL"
    res.summary = (
        f"{s.train_backbone} {h}×{w}: fp32 {speeds['fp32']:.0f} img/s, bf16 + channels_last "
        f"{speeds['bf16 + channels_last']:.0f} img/s ({gain:.2f}×)"
    )


# --------------------------------------------------------------------------------------------
# Step 5: a two-epoch tiny run under accelerate launch
# --------------------------------------------------------------------------------------------


def _launcher() -> list[str]:
    exe = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if exe:
        return [exe, "launch"]
    return [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch"]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def step_accelerate_run(ctx: Context, res: StepResult) -> None:
    s = ctx.sizes
    out, data = ctx.workdir / "tiny-run", ctx.workdir / "synthetic-data"
    threads = os.environ.get("OMP_NUM_THREADS") or str(min(8, os.cpu_count() or 1))
    cmd = [
        *_launcher(), "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "bf16",
        "--dynamo_backend", "no", "--num_cpu_threads_per_process", threads,
        *(["--cpu"] if ctx.cpu else []),
        "-m", "reid_train", "--config", str(ROOT / "configs" / "synthetic_tiny.yaml"),
        "--output-dir", str(out), f"data.data_root={data}", f"optim.epochs={s.run_epochs}",
    ]  # fmt: skip
    if importlib.util.find_spec("matplotlib") is None:
        cmd.append("runtime.plots=false")
        res.notes.append("matplotlib missing: ran with runtime.plots=false")
    env = {"TQDM_DISABLE": "1"}
    if ctx.cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    shown = " ".join(cmd[cmd.index("--num_processes") - 1 :])
    res.notes.append(
        "command: `accelerate "
        + shown.replace(str(ctx.workdir), "TMP").replace(str(ROOT) + os.sep, "")
        + "`"
    )
    t = time.perf_counter()
    code, tail = run_logged(cmd, timeout=ctx.remaining(), prefix="    train| ", env=env)
    seconds = time.perf_counter() - t
    res.figures["wall s"] = round(seconds, 1)
    res.figures["exit status"] = "timeout" if code is None else code
    history = _jsonl(out / "history.jsonl")
    metrics = _jsonl(out / "metrics.jsonl")
    res.figures["epochs logged"] = len(history)
    res.figures["epochs trained"] = sum(bool(h.get("trained")) for h in history)
    if history:
        last = history[-1]
        res.figures["last epoch times s"] = {
            k: round(v, 2) for k, v in last.get("times", {}).items()
        }
        res.figures["last epoch clusters"] = last.get("clusters")
    if metrics:
        res.figures["final mAP %"] = round(100 * metrics[-1]["mAP"], 2)
        res.figures["final Rank-1 %"] = round(100 * metrics[-1].get("rank1", float("nan")), 2)
    ok = code == 0 and len(history) == s.run_epochs
    if not ok:
        res.notes.append("output tail: " + " / ".join(tail[-12:]))
    res.status = "PASS" if ok else "FAIL"
    res.summary = (
        f"exit {res.figures['exit status']} in {seconds:.1f} s, {len(history)} epochs logged"
        + (f", final mAP {res.figures['final mAP %']:.1f} %" if metrics else "")
    )


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------

STEPS: dict[str, Callable[[Context, StepResult], None]] = {
    "cuda-tests": step_cuda_tests,
    "pseudo-labels": step_pseudo_labels,
    "evaluation": step_evaluation,
    "train-throughput": step_train_throughput,
    "accelerate-run": step_accelerate_run,
}
STEP_MODULES = {  # (third-party modules, project modules) each step imports
    "cuda-tests": ((*_CORE, "pytest"), ("reid_clustering", "reid_eval")),
    "pseudo-labels": (("torch", "numpy", "scipy", "sklearn"), ("reid_clustering",)),
    "evaluation": (_CORE, ("reid_eval",)),
    "train-throughput": (("torch", "torchvision"), ("reid_backbones",)),
    "accelerate-run": ((*_CORE, "accelerate", "yaml"), ("reid_train",)),
}


def run_logged(
    cmd: list[str],
    *,
    timeout: float,
    prefix: str = "",
    env: dict[str, str] | None = None,
    echo: bool = True,
) -> tuple[int | None, list[str]]:
    """Run ``cmd`` in its own process group, echoing its output with ``prefix``.

    Returns (exit status, or None when it was killed at ``timeout``; the last 60 lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=60)
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": _child_pythonpath(), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            if echo:
                print(prefix + line, flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code: int | None = proc.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        code = None
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    reader.join(timeout=5)
    return code, list(tail)


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


def _blocked(name: str, missing: dict[str, str], broken: dict[str, str]) -> str | None:
    third, project = STEP_MODULES.get(name, ((), ()))
    lacks = [m for m in third if m in missing]
    if lacks:
        return "missing modules: " + ", ".join(f"{m} (pip install {missing[m]})" for m in lacks)
    fails = [f"{m}: {broken[m]}" for m in project if m in broken]
    return "import failed: " + "; ".join(fails) if fails else None


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
        sys.executable, str(Path(__file__).resolve()), "--child", name,
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
            blocked = _blocked(name, missing, broken)
            if blocked:
                results.append(StepResult(name, "FAIL", 0.0, blocked))
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


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value != 0 and abs(value) < 1e-2:
            return f"{value:.3g}"
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def environment() -> dict[str, str]:
    """Versions and the device, for the report."""
    info = {}
    for module in ("torch", "torchvision", "accelerate", "numpy", "scipy", "sklearn"):
        try:
            info[module] = importlib.import_module(module).__version__
        except Exception:  # noqa: BLE001
            info[module] = "missing"
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = (
                f"{props.name}, {props.total_memory / 2**30:.0f} GiB, capability "
                f"{props.major}.{props.minor}, CUDA {torch.version.cuda}, cuDNN "
                f"{torch.backends.cudnn.version()}, bf16 {torch.cuda.is_bf16_supported()}"
            )
    except Exception as e:  # noqa: BLE001
        info["gpu"] = f"error: {e}"
    return info


def _commit() -> str:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            timeout=10,
        )  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    sha = proc.stdout.strip()
    return f"{sha}{' + local changes' if dirty else ''}" if sha else "unknown (no git)"


def summary_table(results: list[StepResult]) -> str:
    rows = [("step", "status", "s", "summary")]
    rows += [(r.name, r.status, f"{r.seconds:.1f}", r.summary) for r in results]
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(row[i].ljust(width[i]) for i in range(3)) + "  " + row[3] for row in rows]
    lines.insert(1, "-" * (sum(width) + 6 + 7))
    return "\n".join(lines)


def render_report(
    results: list[StepResult], *, device: str, machine_line: str, env: dict[str, str],
    total_s: float, budget: float, commit: str, when: str,
) -> str:  # fmt: skip
    mode = "GPU" if device == "cuda" else "`--cpu` rehearsal at reduced sizes (no GPU figures)"
    lines = [
        "## GPU check (`benchmarks/gpu_check.py`)",
        "",
        f"Machine: {machine_line}.",
        "",
        f"Run {when}, commit {commit}; mode: {mode}; {total_s:.0f} s in all (budget "
        f"{budget:.0f} s). Versions: "
        + ", ".join(f"{k} {v}" for k, v in env.items() if k != "gpu")
        + (f". GPU: {env['gpu']}." if "gpu" in env else "."),
        "",
        "| step | status | s | summary |",
        "|---|---|---:|---|",
    ]
    for r in results:
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.summary} |")
    lines.append("")
    for r in results:
        if not r.figures and not r.notes:
            continue
        figures = "; ".join(f"{k}: {_fmt(v)}" for k, v in r.figures.items())
        lines.append(f"- **{r.name}**: {figures}" if figures else f"- **{r.name}**")
        lines += [f"  - {note}" for note in r.notes]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
        from _report import write_section

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
    from _report import machine, write_section

    machine_line, env = machine(), environment()
    print(f"gpu_check: {machine_line}", flush=True)
    print("versions: " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    results = run_check(
        steps, device=device, sizes=_sizes(args), budget=args.budget,
        in_process=args.in_process, args=args,
    )  # fmt: skip
    total = time.time() - T0
    body = render_report(
        results, device=device, machine_line=machine_line, env=env, total_s=total,
        budget=args.budget, commit=_commit(),
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
    sys.exit(main())
