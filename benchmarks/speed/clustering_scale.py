"""Time and peak memory of the clustering step (kNN → k-reciprocal Jaccard → DBSCAN) at scale.

For each N (default 2,000, 12,936 (Market-1501 train), 32,621 (MSMT17 train), 100,000) it runs,
each in a fresh process so peak RSS is its own:

* ``plain``: ``benchmarks.speed.plain_jaccard`` (a wrapper of ``reid_clustering._reference``), the
  loop-based dense implementation written from the algorithm (numpy brute-force kNN, per-sample
  loops, N × N matrices), only up to ``--plain-max`` samples;
* ``dense``: ``reid_clustering.compute_jaccard_distance`` (dense N × N result) + DBSCAN on it,
  up to ``--dense-max`` samples;
* ``sparse``: ``reid_clustering.dbscan_pseudo_labels(..., sparse=True)``: the radius graph.

The features are clustered synthetic 2048-d vectors (identities of ~17 images, as in Market-1501,
grouped in look-alike families), L2-normalised. The labels of every path are compared with each
other (they must be identical). Run from the repository root:

    python -m benchmarks.speed.clustering_scale      # full run (~25 min on 2 cores), writes docs
    python -m benchmarks.speed.clustering_scale --sizes 2000 --no-write   # quick check

:func:`measure` is one case (in the fresh process); :func:`measure_pseudo_labels` times the
engine's pseudo labels (kNN search, then ``dbscan_pseudo_labels``) on given features, for
``python -m benchmarks.gpu_check`` (step 2).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, ROOT, commit, peak_rss_gib, sync

DEFAULT_SIZES = (2000, 12936, 32621, 100000)
ORDER = ["plain", "dense", "sparse"]
CACHE = RESULTS / "clustering_scale.json"


def make_features(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors: families of 4 look-alike identities, ~17 images per identity."""
    rng = np.random.default_rng(seed)
    num_ids = max(2, n // 17)
    families = rng.standard_normal((num_ids // 4 + 1, dim), dtype=np.float32)
    centres = families[np.arange(num_ids) // 4] + 0.8 * rng.standard_normal(
        (num_ids, dim), dtype=np.float32
    )
    labels = np.sort(rng.integers(0, num_ids, n))
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 8192):
        stop = min(n, start + 8192)
        x[start:stop] = centres[labels[start:stop]] + 1.1 * rng.standard_normal(
            (stop - start, dim), dtype=np.float32
        )
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


def measure(impl: str, n: int, args: argparse.Namespace, labels_out: Path) -> dict:
    """One measurement, in this process (called in a fresh subprocess by the driver)."""
    import torch
    from sklearn.cluster import DBSCAN

    from reid_clustering import compute_jaccard_distance, dbscan_pseudo_labels, knn_search

    x, _ = make_features(n, args.dim, args.seed)
    rss_features = peak_rss_gib()
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    if impl == "plain":
        from benchmarks.speed.plain_jaccard import plain_jaccard_distance, plain_knn

        ranked = plain_knn(x, args.k1)
        times["knn"] = time.perf_counter() - t0
        dist = plain_jaccard_distance(x, args.k1, args.k2, ranked=ranked)
        times["jaccard"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        labels = DBSCAN(eps=args.eps, min_samples=4, metric="precomputed").fit_predict(dist)
        times["dbscan"] = time.perf_counter() - t1
    else:
        xt = torch.from_numpy(x)
        knn_search(xt, k=args.k1)  # precision="auto": bf16 candidates where the CPU has them
        times["knn"] = time.perf_counter() - t0
        if impl == "dense":  # the float32-only search, for comparison (same neighbours)
            t1 = time.perf_counter()
            knn_search(xt, k=args.k1, precision="exact")
            times["knn_exact"] = time.perf_counter() - t1
        t0 = time.perf_counter()
        if impl == "dense":
            dist = compute_jaccard_distance(xt, args.k1, args.k2, normalize=False)
            times["jaccard"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            labels = DBSCAN(eps=args.eps, min_samples=4, metric="precomputed").fit_predict(
                dist.numpy()
            )
            times["dbscan"] = time.perf_counter() - t1
        else:
            labels = dbscan_pseudo_labels(
                xt, args.eps, 4, args.k1, args.k2, sparse=True, normalize=False
            )
            times["jaccard"] = float("nan")  # inside the call below, reported as total
            times["dbscan"] = float("nan")
    times["total"] = (
        times["jaccard"] + times["dbscan"] if impl != "sparse" else time.perf_counter() - t0
    )
    np.save(labels_out, labels.astype(np.int64))
    return {
        "impl": impl,
        "n": n,
        **times,
        "peak_rss_gib": peak_rss_gib(),
        "features_rss_gib": rss_features,
        "clusters": int(labels.max() + 1),
        "outliers": int((labels == -1).sum()),
        "measured": f"{time.strftime('%Y-%m-%d')}, commit {commit() or 'unknown'}",
    }


def measure_pseudo_labels(
    x: Any, device: str, *, eps: float = 0.5, min_samples: int = 4, k1: int = 30, k2: int = 6
) -> tuple[np.ndarray, Any, float, float]:
    """The engine's pseudo labels of the features ``x`` (on their device): ``knn_search(x,
    k=k1)`` and ``dbscan_pseudo_labels``, each timed: (labels, kNN result, kNN s, labels s)."""
    from reid_clustering import dbscan_pseudo_labels, knn_search

    sync(device)
    t = time.perf_counter()
    knn = knn_search(x, k=k1)
    sync(device)
    t_knn = time.perf_counter() - t
    t = time.perf_counter()
    labels = dbscan_pseudo_labels(x, eps=eps, min_samples=min_samples, k1=k1, k2=k2)
    return labels, knn, t_knn, time.perf_counter() - t


def sparse_breakdown(n: int, args: argparse.Namespace) -> dict:
    """kNN / Jaccard / DBSCAN split of the sparse path (a separate process; times only)."""
    import scipy.sparse
    import torch
    from sklearn.cluster import DBSCAN
    from sklearn.neighbors import sort_graph_by_row_values

    from reid_clustering import compute_jaccard_distance

    x, _ = make_features(n, args.dim, args.seed)
    t0 = time.perf_counter()
    graph = compute_jaccard_distance(
        torch.from_numpy(x), args.k1, args.k2, sparse=True, max_distance=args.eps, normalize=False
    )
    t1 = time.perf_counter()
    graph = sort_graph_by_row_values(graph, copy=False, warn_when_not_sorted=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.sparse.SparseEfficiencyWarning)
        DBSCAN(eps=args.eps, min_samples=4, metric="precomputed").fit_predict(graph)
    return {"jaccard": t1 - t0, "dbscan": time.perf_counter() - t1, "nnz_per_row": graph.nnz / n}


def drive(args: argparse.Namespace) -> None:
    from benchmarks.common import write_section

    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            impls = [
                impl
                for impl, limit in (
                    ("plain", args.plain_max),
                    ("dense", args.dense_max),
                    ("sparse", None),
                )
                if limit is None or n <= limit
            ]
            labels = {}
            for impl in impls:
                out = Path(tmp) / f"{impl}_{n}.npy"
                # Each repeat is a fresh process; the row is the run with the median total.
                runs = [
                    _subprocess(["--case", impl, "--n", str(n), "--labels", str(out)], args)
                    for _ in range(args.repeats)
                ]
                result = sorted(runs, key=lambda r: r["total"])[len(runs) // 2]
                result["totals"] = sorted(r["total"] for r in runs)
                if impl == "sparse" and args.split:
                    split = _subprocess(["--case", "sparse-split", "--n", str(n)], args)
                    result.update(jaccard=split["jaccard"], dbscan=split["dbscan"])
                    result["nnz_per_row"] = split["nnz_per_row"]
                labels[impl] = np.load(out)
                rows.append(result)
                print(json.dumps(result), flush=True)
            same = all(np.array_equal(labels[impls[0]], lab) for lab in labels.values())
            notes.append(f"N = {n:,}: labels of {', '.join(impls)} identical: {same}")
            print(notes[-1], flush=True)
            if not same:
                raise SystemExit(f"labels differ at N={n}")
    if args.write:
        # Rows are cached per (N, path) so that re-measuring one size keeps the others.
        cache = json.loads(CACHE.read_text()) if CACHE.exists() else {"rows": [], "notes": {}}
        measured = {(r["n"], r["impl"]) for r in rows}
        kept = [r for r in cache["rows"] if (r["n"], r["impl"]) not in measured]
        rows = sorted(kept + rows, key=lambda r: (r["n"], ORDER.index(r["impl"])))
        notes_by_n = {
            **cache["notes"],
            **{str(n): note for n, note in zip(args.sizes, notes, strict=True)},
        }
        notes = [notes_by_n[k] for k in sorted(notes_by_n, key=int)]
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        CACHE.write_text(json.dumps({"rows": rows, "notes": notes_by_n}, indent=1) + "\n")
    body = _table(rows, notes, args)
    print(body)
    if args.write:
        write_section("clustering-scale", body)


def _subprocess(extra: list[str], args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.speed.clustering_scale",
        *extra,
        "--dim",
        str(args.dim),
        "--k1",
        str(args.k1),
        "--k2",
        str(args.k2),
        "--eps",
        str(args.eps),
        "--seed",
        str(args.seed),
    ]
    done = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(rows: list[dict], notes: list[str], args: argparse.Namespace) -> str:
    from benchmarks.common import machine

    base = {r["n"]: r["total"] for r in rows if r["impl"] == "plain"}
    lines = [
        "## Clustering at scale (`python -m benchmarks.speed.clustering_scale`)",
        "",
        f"Machine: {machine()}.",
        "",
        f"Clustered synthetic {args.dim}-d unit features (~17 images per identity, look-alike "
        f"families), k1 = {args.k1}, k2 = {args.k2}, DBSCAN eps = {args.eps}, min_samples = 4. "
        "Each row is a fresh process; peak RSS includes the interpreter, torch and the features "
        "(the `features` column is the RSS right after generating them). `plain` is "
        "`benchmarks/speed/plain_jaccard.py`, loops written from the algorithm like the reference "
        "code's; `dense` is our `compute_jaccard_distance` + DBSCAN on the N × N matrix; "
        "`sparse` is `dbscan_pseudo_labels(..., sparse=True)` (radius graph of pairs with "
        "J ≤ eps). Jaccard time includes the kNN search; kNN is also timed on its own "
        '(`kNN s`: `knn_search`\'s default `precision="auto"`, which takes the certified '
        "bf16-candidate search on CPUs with AVX512-BF16/AMX; `kNN exact s`: "
        '`precision="exact"`, float32 only; both return the same neighbours).',
        "",
        "| N | path | kNN s | kNN exact s | Jaccard s | DBSCAN s | total s | speed-up vs plain | "
        "peak RSS GiB | features GiB | clusters | outliers |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        speed = f"{base[r['n']] / r['total']:.1f}×" if r["n"] in base else "–"
        sec = lambda v: "–" if v is None or v != v else f"{v:.1f}"  # noqa: E731 (NaN: not split)
        lines.append(
            f"| {r['n']:,} | {r['impl']} | {sec(r['knn'])} | {sec(r.get('knn_exact'))} | "
            f"{sec(r.get('jaccard'))} | "
            f"{sec(r.get('dbscan'))} | {r['total']:.1f} | {speed} | {r['peak_rss_gib']:.2f} | "
            f"{r['features_rss_gib']:.2f} | {r['clusters']:,} | {r['outliers']:,} |"
        )
    lines += ["", *[f"- {note}" for note in notes]]
    spread = [
        f"{r['n']:,} {r['impl']}: " + " / ".join(f"{t:.1f}" for t in r["totals"])
        for r in rows
        if len(r.get("totals", [])) > 1
    ]
    if spread:
        lines.append(
            "- Each case ran several times, each in a fresh process; the row is the run with the "
            "median total. All totals (s): " + "; ".join(spread) + "."
        )
    when: dict[str, list[str]] = {}
    for r in rows:
        when.setdefault(r.get("measured", "before 2026-11-21 (no record)"), []).append(
            f"{r['n']:,} {r['impl']}"
        )
    lines += [f"- Measured {date}: {', '.join(cases)}." for date, cases in when.items()]
    lines.append(
        "- The sparse path's Jaccard and DBSCAN columns come from a second process "
        "(the timed run measures the whole call)."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--k1", type=int, default=30)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--eps", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plain-max", type=int, default=12936)
    parser.add_argument("--dense-max", type=int, default=32621)
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per case (fresh processes); median reported"
    )
    parser.add_argument("--no-write", dest="write", action="store_false")
    parser.add_argument("--case", choices=["plain", "dense", "sparse", "sparse-split"])
    parser.add_argument("--n", type=int)
    parser.add_argument("--labels", type=Path)
    parser.add_argument(
        "--no-split",
        dest="split",
        action="store_false",
        help="skip the second sparse run that splits Jaccard / DBSCAN time",
    )
    args = parser.parse_args()
    if args.case == "sparse-split":
        print(json.dumps(sparse_breakdown(args.n, args)))
    elif args.case:
        print(json.dumps(measure(args.case, args.n, args, args.labels)))
    else:
        drive(args)


if __name__ == "__main__":
    main()
