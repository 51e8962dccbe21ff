"""The GPU check's five steps. Each fills a :class:`StepResult` (status, summary, figures,
notes); an exception is the runner's FAIL. Steps 2-4 time the measurements of
``benchmarks.speed`` (the pseudo labels of ``clustering_scale``, the evaluation of ``eval``, the
training step of ``backbone``) on the GPU and compare with the CPU."""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import math
import os
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, read_jsonl, sync
from benchmarks.gpu_check.context import Context, StepResult
from benchmarks.gpu_check.process import run_logged
from benchmarks.gpu_check.scan import cuda_only_tests


def _gib(n_bytes: float) -> float:
    return round(n_bytes / 2**30, 3)


# --------------------------------------------------------------------------------------------
# Step 1: the CUDA-only tests
# --------------------------------------------------------------------------------------------


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

    from benchmarks.speed.clustering_scale import make_features, measure_pseudo_labels

    s = ctx.sizes
    dev = ctx.device

    def labels_and_knn(x: torch.Tensor) -> tuple[Any, Any, float, float]:
        return measure_pseudo_labels(x, dev, eps=0.5, min_samples=4, k1=30, k2=6)

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

    from benchmarks.speed.eval import Size, make_problem, measure
    from reid_eval import evaluate_features

    s, dev = ctx.sizes, ctx.device
    full = (s.eval_query, s.eval_gallery) == (11659, 82161)
    size = Size(
        "MSMT17" if full else "reduced", s.eval_query, s.eval_gallery, s.eval_ids,
        s.eval_cameras, 0,
    )  # fmt: skip
    t = time.perf_counter()
    q, g, q_pids, g_pids, q_cams, g_cams = make_problem(size, s.eval_dim, seed=0, device=dev)
    sync(dev)
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
    ids = (q_pids, g_pids, q_cams, g_cams)
    seconds, result = measure("evaluate_features", (q, g), ids, device=dev, max_rank=50)
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
            "same generator and seed as `python -m benchmarks.speed.eval`'s MSMT17 row (section "
            "eval-speed): its mAP / Rank-1 should agree to rounding"
        )
    res.status = "PASS" if ok else "FAIL"
    res.summary = summary


# --------------------------------------------------------------------------------------------
# Step 4: training throughput, fp32 vs bf16 + channels_last
# --------------------------------------------------------------------------------------------


def step_train_throughput(ctx: Context, res: StepResult) -> None:
    import torch

    from benchmarks.speed.backbone import measure_train_step

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
        speeds[mode], losses, peak = measure_train_step(
            "pplr", bf16_channels_last=mode != "fp32", backbone=s.train_backbone,
            size=s.train_size, batch=s.train_batch, num_classes=s.train_classes,
            warmup=s.train_warmup, iters=s.train_iters, device=dev,
        )  # fmt: skip
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
    history = read_jsonl(out / "history.jsonl", missing_ok=True)
    metrics = read_jsonl(out / "metrics.jsonl", missing_ok=True)
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


STEPS: dict[str, Callable[[Context, StepResult], None]] = {
    "cuda-tests": step_cuda_tests,
    "pseudo-labels": step_pseudo_labels,
    "evaluation": step_evaluation,
    "train-throughput": step_train_throughput,
    "accelerate-run": step_accelerate_run,
}
