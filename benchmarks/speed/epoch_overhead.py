"""The per-epoch non-training stage of PPLR (clustering + cross agreement), timed stage by stage.

At Market-1501 (12,936) and MSMT17 (32,621) training-set sizes (``--sizes``), on clustered
synthetic features (``benchmarks.speed.clustering_scale``'s generator for the global features,
seed 0; the parts: per-part identity centres + noise, same identities), ``--dim`` (2,048)
global + ``--parts`` (3) × ``--dim`` part features, L2-normalised. Stages, as the engine runs
them (``reid_train.engine`` → ``PPLR.prepare``):

a. ``clustering``: ``dbscan_clustering(feats, eps, 4, k1=30, k2=6, sparse=<the engine's
   choice>, backend="torch")``; its kNN search alone (``knn_search(features, k=k1)``, the
   search it starts with) is timed once more afterwards and listed beside it
   (``benchmarks.speed.clustering_scale`` splits Jaccard and DBSCAN).
b. ``agreement``: ``reid_train.methods.pplr._reusable_ranking`` then
   ``cross_agreement(..., k=20, knn=reid_train.methods.pplr._knn, global_ranked=...)``, exactly
   as ``PPLR.prepare`` does: the clustering's ranked list serves as the global search.
c. ``agreement-plain``: ``cross_agreement(feats, parts, k=20, knn=<plain matmul + topk>)``
   (``benchmarks.speed.knn``'s ``plain_topk``): the baseline of speed target 2 (issue 15:
   b ≥ 2× faster than c, identical scores). The two agreements are compared exactly.
d. ``extraction`` (listed separately; ``--skip-extraction``): a ResNet-50 PPLR model
   (``build_model("pplr", "resnet50", pretrained=None)``; ``--backbone``) in eval mode,
   ``net.extract(images, parts=True)`` on random 256 × 128 images, fp32 and bf16 autocast +
   channels_last: a warm-up batch and ``--extract-batches`` timed batches of
   ``--extract-batch`` (16 on the CPU, 64 on CUDA), **extrapolated** to N images (no image
   decoding or data loading is included).

Each stage runs in a fresh subprocess, which makes its inputs, resets the kernel's peak-RSS
counter (``/proc/self/clear_refs``), runs the stage and reports its peak RSS (``VmHWM``) minus
the RSS it started from: the stage's working memory beyond its inputs; with ``--device cuda``
also ``torch.cuda.max_memory_allocated`` minus the allocated memory before the stage. Stage b
reads the clustering's result (labels, ranked list, features) from a temporary file written by
stage a.

``--agreement-only`` measures speed target 3 instead: ``cross_agreement(feats, parts, k=20,
knn=_knn)`` alone (all four searches: no clustering to reuse), at ``--sizes`` (default
100,000): time (target < 5 min on the 2-core CPU) and working memory beyond the inputs
(target < 1 GiB).

Speed target 4 (Jaccard + DBSCAN at 6,000 × 256 against a vectorised dense numpy
implementation, ≥ 5×) is ``python -m benchmarks.speed.knn --jaccard-vs-dense``.

Run from the repository root::

    python -m benchmarks.speed.epoch_overhead                  # section epoch-overhead
    python -m benchmarks.speed.epoch_overhead --device cuda    # section epoch-overhead-cuda
    python -m benchmarks.speed.epoch_overhead --agreement-only # section epoch-overhead-agreement
    python -m benchmarks.speed.epoch_overhead --quick --no-write --json /tmp/e.json  # smoke test

``--quick``: 600 × 64-d features, 3 parts, no extraction (for the tests); ``--in-process``
runs the stages in the driver's process (no subprocess start-up; each stage's memory figure then
also counts what earlier stages left allocated). ``--json OUT`` also writes the figures as
JSON. :func:`measure` is one stage, in the process that calls it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import ROOT, WorkingMemory, commit, machine, timed, write_section

DEFAULT_SIZES = (12936, 32621)
AGREEMENT_SIZES = (100000,)
QUICK_SIZE, QUICK_DIM = 600, 64
STAGES = ("clustering", "agreement", "agreement-plain", "extraction")
AGREEMENT_TARGET = 2.0  # target 2: the engine's cross agreement >= 2x faster than the plain one
TIME_TARGET_S, MEMORY_TARGET_GIB = 300.0, 1.0  # target 3, at 100k


# --------------------------------------------------------------------------------------------
# Inputs and measurements (in the stage's process)
# --------------------------------------------------------------------------------------------


def make_epoch_features(n: int, dim: int, parts: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Global ``[N, dim]`` (clustering_scale's generator) and part ``[N, parts, dim]`` unit
    features of the same identities (per-part centres, noisier than the global ones)."""
    from benchmarks.speed.clustering_scale import make_features

    g, labels = make_features(n, dim, seed)
    rng = np.random.default_rng(seed + 1)
    num_ids = int(labels.max()) + 1
    p = np.empty((n, parts, dim), dtype=np.float32)
    for q in range(parts):
        centres = rng.standard_normal((num_ids, dim), dtype=np.float32)
        for start in range(0, n, 8192):
            stop = min(n, start + 8192)
            block = centres[labels[start:stop]] + 1.3 * rng.standard_normal(
                (stop - start, dim), dtype=np.float32
            )
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            p[start:stop, q] = block
    return g, p


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[list[float], Any]:
    times, out = [], None
    for _ in range(repeats):
        seconds, out = timed(fn, device)
        times.append(seconds)
    return times, out


def _plain_knn(x: torch.Tensor, m: int) -> torch.Tensor:
    from benchmarks.speed.knn import plain_topk

    return plain_topk(x, m)[1]


def measure(stage: str, args: argparse.Namespace) -> dict[str, Any]:
    """One stage in this (fresh) process; returns its figures."""
    device = torch.device(args.device)
    mem = WorkingMemory(device)
    n = args.n
    if stage == "extraction":
        return _run_extraction(args, device, mem)

    from reid_clustering import DBSCANResult, dbscan_clustering, knn_search
    from reid_refine import cross_agreement
    from reid_train.methods.pplr import _knn, _reusable_ranking
    from reid_train.pseudo_labels import sparse_path as _sparse_path

    g_np, p_np = make_epoch_features(n, args.dim, args.parts, args.seed)
    feats = torch.from_numpy(g_np).to(device)
    parts = torch.from_numpy(p_np).to(device)
    del g_np, p_np
    warm = min(n, 300)  # warm-up on a slice: thread pools, allocator, lazy imports
    result: dict[str, Any] = {"stage": stage, "n": n, "device": str(device)}

    if stage == "clustering":
        sparse = _sparse_path(None, n, device)

        def fn() -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # NoClustersWarning: reported as counts
                return dbscan_clustering(
                    feats, args.eps, 4, args.k1, args.k2, sparse=sparse, backend="torch"
                )

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dbscan_clustering(feats[:warm], args.eps, 4, min(args.k1, warm - 1), args.k2)
        mem.start()
        times, found = _timed(fn, device, args.repeats)
        result.update(mem.stop())
        knn_times, _ = _timed(lambda: knn_search(found.features, k=args.k1), device, 1)
        labels = found.labels
        result.update(
            knn_s=knn_times[0],
            sparse=bool(n > 8192 if sparse is None else sparse),
            clusters=int(labels.max() + 1),
            outliers=int((labels == -1).sum()),
        )
        torch.save(
            {
                "labels": torch.from_numpy(labels),
                "ranked": found.ranked.cpu(),
                "features": found.features.cpu(),
            },
            args.save,
        )
    elif stage == "agreement":
        saved = torch.load(args.load)
        clustering = DBSCANResult(
            saved["labels"].numpy(), saved["ranked"].to(device), saved["features"].to(device)
        )
        del saved
        reused: list[bool] = []

        def fn() -> Any:  # PPLR.prepare, up to the agreement
            reuse = _reusable_ranking(
                clustering, feats, clustered_all_rows=True, camera_debias=False, k=args.k
            )
            reused.append(reuse is not None)
            global_feats, ranked = (
                (feats, None) if reuse is None else (reuse.features, reuse.ranked)
            )
            return cross_agreement(global_feats, parts, k=args.k, knn=_knn, global_ranked=ranked)

        cross_agreement(feats[:warm], parts[:warm], k=min(args.k, warm - 2), knn=_knn)
        mem.start()
        times, agreement = _timed(fn, device, args.repeats)
        result.update(mem.stop())
        result["reused_ranking"] = all(reused)
        torch.save(agreement.cpu(), args.save)
    elif stage == "agreement-plain":

        def fn() -> Any:
            return cross_agreement(feats, parts, k=args.k, knn=_plain_knn)

        cross_agreement(feats[:warm], parts[:warm], k=min(args.k, warm - 2), knn=_plain_knn)
        mem.start()
        times, agreement = _timed(fn, device, args.repeats)
        result.update(mem.stop())
        torch.save(agreement.cpu(), args.save)
    elif stage == "agreement-only":

        def fn() -> Any:
            return cross_agreement(feats, parts, k=args.k, knn=_knn)

        cross_agreement(feats[:warm], parts[:warm], k=min(args.k, warm - 2), knn=_knn)
        mem.start()
        times, _ = _timed(fn, device, args.repeats)
        result.update(mem.stop())
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    result["inputs_gib"] = n * (1 + args.parts) * args.dim * 4 / 2**30
    result.update(seconds=times, median_s=statistics.median(times))
    return result


def _run_extraction(args: argparse.Namespace, device: torch.device, mem: WorkingMemory) -> dict:
    from reid_backbones import build_model

    torch.manual_seed(args.seed)
    net = build_model("pplr", args.backbone, pretrained=None, num_parts=args.parts)
    net = net.to(device).eval()
    height, width = args.image_size
    images = torch.randn(args.extract_batch, 3, height, width, device=device)
    result: dict[str, Any] = {"stage": "extraction", "n": args.n, "device": str(device)}
    result.update(
        backbone=args.backbone,
        batch=args.extract_batch,
        batches=args.extract_batches,
        image_size=[height, width],
    )
    mem.start()
    per_mode = {}
    for mode in args.extract_modes:
        x, model = images, net
        if mode == "bf16":  # as a bf16 run with runtime.channels_last extracts
            x = images.contiguous(memory_format=torch.channels_last)
            model = copy.deepcopy(net).to(memory_format=torch.channels_last)
        autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16)
            if mode == "bf16"
            else contextlib.nullcontext()
        )

        def fn(model: Any = model, x: torch.Tensor = x, autocast: Any = autocast) -> Any:
            with torch.no_grad(), autocast:
                return model.extract(x, parts=True)

        fn()  # warm-up batch
        times, _ = _timed(fn, device, args.extract_batches)
        rate = args.extract_batch / statistics.median(times)
        per_mode[mode] = {"batch_s": times, "images_per_s": rate, "extrapolated_s": args.n / rate}
    result.update(mem.stop())
    result["modes"] = per_mode
    result["inputs_gib"] = 0.0
    first = per_mode[args.extract_modes[0]]
    result.update(seconds=[first["extrapolated_s"]], median_s=first["extrapolated_s"])
    return result


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _child(stage: str, n: int, args: argparse.Namespace, **paths: Path) -> dict[str, Any]:
    """Run one stage in a fresh process (in this one with ``--in-process``)."""
    if args.in_process:
        out = measure(stage, argparse.Namespace(**{**vars(args), "n": n, **paths}))
        print(json.dumps(out), flush=True)
        return out
    cmd = [
        sys.executable, "-m", "benchmarks.speed.epoch_overhead", "--stage", stage,
        "--n", str(n), "--dim", str(args.dim), "--parts", str(args.parts),
        "--k", str(args.k), "--k1", str(args.k1),
        "--k2", str(args.k2), "--eps", str(args.eps), "--seed", str(args.seed),
        "--device", args.device, "--repeats", str(args.repeats),
        "--extract-batch", str(args.extract_batch),
        "--extract-batches", str(args.extract_batches),
        "--image-size", *(str(v) for v in args.image_size),
        "--extract-modes", *args.extract_modes, "--backbone", args.backbone,
    ]  # fmt: skip
    for name, path in paths.items():
        cmd += [f"--{name}", str(path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"stage {stage} at N={n} failed:\n{done.stderr[-4000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(out), flush=True)
    return out


def _compare(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    differ = (a != b).any(dim=1)
    return {
        "scores_identical": bool(torch.equal(a, b)),
        "rows_differing": int(differ.sum()),
        "max_abs_diff": float((a - b).abs().max()) if a.numel() else 0.0,
    }


def drive(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    for n in args.sizes:
        entry: dict[str, Any] = {"n": n, "stages": {}}
        with tempfile.TemporaryDirectory(prefix="epoch_overhead_") as tmp:
            t = Path(tmp)
            if args.agreement_only:
                r = _child("agreement-only", n, args)
                entry["stages"]["agreement-only"] = r
                entry["under_5_min"] = r["median_s"] < TIME_TARGET_S
                entry["under_1_gib"] = r["working_gib"] < MEMORY_TARGET_GIB
            else:
                st = entry["stages"]
                st["clustering"] = _child("clustering", n, args, save=t / "clustering.pt")
                st["agreement"] = _child(
                    "agreement", n, args, load=t / "clustering.pt", save=t / "engine.pt"
                )
                st["agreement-plain"] = _child("agreement-plain", n, args, save=t / "plain.pt")
                entry.update(_compare(torch.load(t / "engine.pt"), torch.load(t / "plain.pt")))
                if not args.skip_extraction:
                    st["extraction"] = _child("extraction", n, args)
                engine, plain = st["agreement"]["median_s"], st["agreement-plain"]["median_s"]
                entry["per_epoch_s"] = st["clustering"]["median_s"] + engine
                entry["plain_over_engine"] = plain / engine
                entry["target_met"] = plain / engine >= AGREEMENT_TARGET
        results.append(entry)
    return {
        "machine": machine(),
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "commit": commit() or "unknown",
        "mode": "agreement-only" if args.agreement_only else "epoch",
        "config": {
            "dim": args.dim,
            "parts": args.parts,
            "k": args.k,
            "k1": args.k1,
            "k2": args.k2,
            "eps": args.eps,
            "seed": args.seed,
            "repeats": args.repeats,
        },  # fmt: skip
        "sizes": results,
    }


def _secs(r: dict[str, Any]) -> str:
    times = r["seconds"]
    if len(times) == 1:
        return f"{times[0]:.2f}"
    return f"{r['median_s']:.2f} ({min(times):.2f}–{max(times):.2f})"


def _mem(r: dict[str, Any]) -> str:
    text = f"{r['working_gib']:.2f}"
    if "gpu_working_gib" in r:
        text += f" (GPU {r['gpu_working_gib']:.2f})"
    return text


def table(report: dict[str, Any], args: argparse.Namespace) -> str:
    cfg = report["config"]
    on = f"device `{report['device']}`"
    head = [
        f"Machine: {report['machine']}; {on}.",
        "",
        f"Clustered synthetic unit features (seed {cfg['seed']}): {cfg['dim']}-d global + "
        f"{cfg['parts']} × {cfg['dim']}-d parts (`inputs`: their size). Each stage runs in a "
        "fresh process; `working GiB`: its peak resident set minus the resident set when it "
        "started, i.e. the memory it needed beyond its inputs (with CUDA, in brackets: peak "
        "allocated GPU memory beyond the allocated inputs). Seconds: "
        + (f"median (min–max) of {cfg['repeats']} runs." if cfg["repeats"] > 1 else "one run.")
        + f" Measured {time.strftime('%Y-%m-%d')}, commit {report['commit']}.",
        "",
    ]
    if report["mode"] == "agreement-only":
        lines = [
            "## Cross agreement at scale (`python -m benchmarks.speed.epoch_overhead "
            "--agreement-only`)",
            "",
            *head,
            f"`cross_agreement(feats, parts, k={cfg['k']}, knn=reid_train.methods.pplr._knn)`: "
            "all four searches by `reid_clustering.knn_search` (no clustering ranked list to "
            f"reuse). Targets (issue 15, item 3): under {TIME_TARGET_S / 60:g} minutes and under "
            f"{MEMORY_TARGET_GIB:g} GiB of working memory beyond the inputs.",
            "",
            "| N | inputs GiB | seconds | working GiB | < 5 min | < 1 GiB |",
            "|---:|---:|---:|---:|---|---|",
        ]
        for e in report["sizes"]:
            r = e["stages"]["agreement-only"]
            lines.append(
                f"| {e['n']:,} | {r['inputs_gib']:.2f} | {_secs(r)} | {_mem(r)} | "
                f"{_yes(e['under_5_min'])} | {_yes(e['under_1_gib'])} |"
            )
        return "\n".join(lines)
    lines = [
        "## Per-epoch overhead of PPLR (`python -m benchmarks.speed.epoch_overhead`)",
        "",
        *head,
        f"Stages as the engine runs them: `clustering` = `dbscan_clustering(eps={cfg['eps']}, "
        f'min_samples=4, k1={cfg["k1"]}, k2={cfg["k2"]}, backend="torch")` (the engine\'s '
        "sparse choice; `kNN alone` = its first step, `knn_search(features, k=k1)`, timed "
        "again separately); `agreement` = `PPLR.prepare`'s `_reusable_ranking` + "
        f"`cross_agreement(k={cfg['k']}, knn=_knn, global_ranked=<the clustering's list>)`; "
        "`agreement, plain` = `cross_agreement(k, knn=<plain chunked matmul + topk>)`, the "
        "baseline of target 2 (≥ 2× slower than `agreement`, identical scores). `per epoch` = "
        f"clustering + agreement. `extraction` (not part of the total): a {args.backbone} PPLR "
        "model (random weights) in eval mode, `extract(images, parts=True)` on random "
        f"{args.image_size[0]}×{args.image_size[1]} images, batches of {args.extract_batch}: "
        "images/s measured on a few batches and **extrapolated** to N images (no decoding or "
        "data loading).",
        "",
        "| N | stage | seconds | working GiB | notes |",
        "|---:|---|---:|---:|---|",
    ]
    for e in report["sizes"]:
        st, n = e["stages"], f"{e['n']:,}"
        c, a, p = st["clustering"], st["agreement"], st["agreement-plain"]
        lines += [
            f"| {n} | clustering | {_secs(c)} | {_mem(c)} | kNN alone {c['knn_s']:.2f} s; "
            f"{'sparse' if c['sparse'] else 'dense'} path; {c['clusters']:,} clusters, "
            f"{c['outliers']:,} outliers; inputs {c['inputs_gib']:.2f} GiB |",
            f"| {n} | agreement | {_secs(a)} | {_mem(a)} | clustering's ranked list reused: "
            f"{a['reused_ranking']} |",
            f"| {n} | **per epoch** | **{e['per_epoch_s']:.2f}** | | clustering + agreement |",
            f"| {n} | agreement, plain | {_secs(p)} | {_mem(p)} | plain / agreement = "
            f"{e['plain_over_engine']:.2f}× (target ≥ 2×: {_yes(e['target_met'])}); scores "
            f"identical: {e['scores_identical']} ({e['rows_differing']} rows differ, largest "
            f"difference {e['max_abs_diff']:.2g}) |",
        ]
        if "extraction" in st:
            x = st["extraction"]
            for mode, m in x["modes"].items():
                lines.append(
                    f"| {n} | extraction {mode} | {m['extrapolated_s']:.1f} | {_mem(x)} | "
                    f"extrapolated: {m['images_per_s']:.1f} images/s over {x['batches']} "
                    f"batches of {x['batch']} |"
                )
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--dim", type=int)
    parser.add_argument("--parts", type=int, default=3)
    parser.add_argument("--k", type=int, default=20, help="cross agreement k (agreement_k)")
    parser.add_argument("--k1", type=int, default=30)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--eps", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per stage")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--agreement-only", action="store_true", help="target 3 (100k)")
    parser.add_argument("--skip-extraction", action="store_true")
    parser.add_argument("--extract-batch", type=int)
    parser.add_argument("--extract-batches", type=int, default=3)
    parser.add_argument("--extract-modes", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--image-size", type=int, nargs=2, default=[256, 128])
    parser.add_argument("--backbone", default="resnet50", help="of the extraction's model")
    parser.add_argument("--quick", action="store_true", help="600 x 64-d, no extraction")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the stages in this process (faster start; memory figures less clean)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--no-write", dest="write", action="store_false")
    # internal: one stage in this process
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--load", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.extract_batch is None:
        args.extract_batch = 64 if args.device.startswith("cuda") else 16
    if args.quick:
        args.sizes = args.sizes or [QUICK_SIZE]
        args.dim = args.dim or QUICK_DIM
        args.skip_extraction = True
    args.sizes = args.sizes or list(AGREEMENT_SIZES if args.agreement_only else DEFAULT_SIZES)
    args.dim = args.dim or 2048
    if args.stage:
        print(json.dumps(measure(args.stage, args)))
        return 0

    report = drive(args)
    body = table(report, args)
    print(body)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.write:
        section = "epoch-overhead-agreement" if args.agreement_only else "epoch-overhead"
        if args.device.startswith("cuda"):
            section += "-cuda"
        write_section(section, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
