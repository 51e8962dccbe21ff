"""Speed of ``knn_search`` (exact) against a plain chunked matmul + topk, in one run.

Speed target (issue 15, item 3): ``knn_search(x, k, precision="exact")`` within **1.5×** of a
plain chunked ``x[i:j] @ x.T`` + ``topk(k)`` at 6,000 × 256 and 12,936 × 2,048, on a quiet
machine and with a second busy process on the same cores.

For each size (``--sizes N:D ...``) and condition (``--conditions quiet contended``) the two
are timed ``--repeats`` times, interleaved (A, B, A, B, ...) so that drift hits both, after one
untimed warm-up call of each; the table gives the median and min–max of each and the ratio of
the medians. ``contended`` starts a second process on the same cores for the duration (a
CPU-bound float32 matmul loop with as many torch threads as this process, ended afterwards); its
iterations per second are reported with the quiet rate of the same loop for comparison. The
features are clustered synthetic unit vectors (``benchmarks.speed.clustering_scale``'s generator:
identities of ~17 images in look-alike families), seed 0. ``k = 31`` by default (the
clustering's ``k1 = 30`` plus one). The plain search's blocks are at most ``--block-mib`` MiB
(256) of similarities. Both return the same neighbours except at ties (``topk`` picks an
arbitrary member of a tie, ``knn_search`` the lower index, on exactly computed values): the
table gives the fraction of rows whose neighbour *sets* are identical, and for the other rows
the largest gap between the two searches' k-th similarities (a tie or near-tie when tiny).

``--jaccard-vs-dense`` instead measures target 4: Jaccard + DBSCAN at 6,000 × 256 (k1 = 30,
k2 = 6, eps = 0.5, min_samples = 4): ``dbscan_pseudo_labels`` against a vectorised dense numpy
implementation (:func:`dense_numpy_jaccard` + scikit-learn's DBSCAN on the dense matrix), target
**≥ 5×**, and whether their labels are identical. (``benchmarks.speed.clustering_scale``
compares against the loop-based reference ``reid_clustering._reference``, at 2,048-d, not this.)

Run from the repository root (the sizes and conditions of the issue by default)::

    python -m benchmarks.speed.knn                      # writes section knn-speed
    python -m benchmarks.speed.knn --jaccard-vs-dense   # writes section jaccard-vs-dense
    python -m benchmarks.speed.knn --sizes 600:64 --repeats 2 --no-write --json /tmp/k.json

``--json OUT`` also writes the figures as JSON. :func:`measure` is one size and condition of
the kNN comparison, :func:`measure_jaccard` the Jaccard + DBSCAN one.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import commit, machine, timed, write_section
from benchmarks.speed.clustering_scale import make_features
from reid_clustering import SPARSE_THRESHOLD, dbscan_pseudo_labels, knn_search

DEFAULT_SIZES = ("6000:256", "12936:2048")
TARGET_RATIO = 1.5
JACCARD_TARGET = 5.0
BLOCK_MIB = 256

# The busy neighbour of the "contended" condition: float32 matmuls on as many threads as we use,
# counting iterations; on SIGTERM it prints its rate and exits.
_BUSY = r"""
import signal, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(768, 768); b = torch.randn(768, 768)
count, start = 0, time.perf_counter()
def stop(*_):
    print(f"{count / (time.perf_counter() - start):.3f}", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
if len(sys.argv) > 2:
    deadline = start + float(sys.argv[2])
    while time.perf_counter() < deadline:
        a @ b; count += 1
    stop()
while True:
    a @ b; count += 1
"""


# --------------------------------------------------------------------------------------------
# The two searches
# --------------------------------------------------------------------------------------------


def plain_topk(
    x: torch.Tensor, k: int, block_mib: float = BLOCK_MIB
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain search: ``x[i:j] @ x.T`` then ``topk(k)``, in blocks of rows of at most
    ``block_mib`` MiB of similarities. Returns ``(similarities, indices)`` ``[N, k]``."""
    n = x.shape[0]
    rows = max(1, min(n, int(block_mib * 2**20) // (4 * n)))
    values, indices = [], []
    for start in range(0, n, rows):
        top = (x[start : start + rows] @ x.T).topk(k, dim=1)
        values.append(top.values)
        indices.append(top.indices)
    return torch.cat(values), torch.cat(indices)


def _timed(fn: Callable[[], Any], x: torch.Tensor) -> tuple[float, Any]:
    return timed(fn, x.device)


def interleaved(
    first: Callable[[], Any], second: Callable[[], Any], x: torch.Tensor, repeats: int
) -> tuple[list[float], list[float], Any, Any]:
    """Each of two functions timed ``repeats`` times, alternately (so a change of machine load
    reaches both alike), after one warm-up call of each (allocator, thread pool, caches): the
    two lists of seconds and each function's last output."""
    first(), second()
    t_first, t_second, out_first, out_second = [], [], None, None
    for _ in range(repeats):
        t, out_first = _timed(first, x)
        t_first.append(t)
        t, out_second = _timed(second, x)
        t_second.append(t)
    return t_first, t_second, out_first, out_second


def neighbour_agreement(
    x: torch.Tensor,
    ours: tuple[torch.Tensor, torch.Tensor],
    plain: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, float]:
    """How far the two searches' answers agree (they may differ only at ties)."""
    same_rows = (ours[1] == plain[1]).all(dim=1)
    same_sets = (ours[1].sort(dim=1).values == plain[1].sort(dim=1).values).all(dim=1)
    differ = (~same_sets).nonzero().flatten()
    gap = 0.0
    if differ.numel():
        # Exact (float64) k-th similarity of each search's list on the differing rows.
        xd = x.double()
        for start in range(0, differ.numel(), 256):  # [256, k, D] float64 at a time
            rows = differ[start : start + 256]
            kth = [
                (xd[rows, None, :] * xd[idx[rows]]).sum(dim=2).min(dim=1).values
                for idx in (ours[1], plain[1])
            ]
            gap = max(gap, float((kth[0] - kth[1]).abs().max()))
    return {
        "identical_rows": float(same_rows.float().mean()),
        "identical_sets": float(same_sets.float().mean()),
        "differing_rows": int(differ.numel()),
        "max_kth_gap": gap,
    }


class BusyNeighbour:
    """A second CPU-bound process on the same cores, for the ``contended`` condition."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.proc: subprocess.Popen[str] | None = None
        self.rate: float | None = None

    def __enter__(self) -> BusyNeighbour:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BUSY, str(self.threads)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the busy neighbour process did not start")
        time.sleep(0.5)  # let it reach its loop
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=30)
            self.rate = float(out.strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, ValueError, IndexError):
            self.proc.kill()
            self.proc.wait()


def quiet_busy_rate(threads: int, seconds: float = 2.0) -> float:
    """Iterations/s of the busy loop running alone (for comparison with the contended rate)."""
    done = subprocess.run(
        [sys.executable, "-c", _BUSY, str(threads), str(seconds)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# kNN speed
# --------------------------------------------------------------------------------------------


def measure(n: int, dim: int, args: argparse.Namespace, condition: str) -> dict[str, Any]:
    """knn_search against the plain search at N × D in ``condition`` (quiet or contended)."""
    x = torch.from_numpy(make_features(n, dim, args.seed)[0])
    k = args.k

    def ours() -> Any:
        return knn_search(x, k=k, precision=args.precision, similarities=not args.indices_only)

    def plain() -> Any:
        return plain_topk(x, k, args.block_mib)

    busy = BusyNeighbour(torch.get_num_threads()) if condition == "contended" else None
    if busy is not None:
        busy.__enter__()
    try:
        t_ours, t_plain, out_ours, out_plain = interleaved(ours, plain, x, args.repeats)
    finally:
        if busy is not None:
            busy.__exit__(None, None, None)
    med_ours, med_plain = statistics.median(t_ours), statistics.median(t_plain)
    ratio = med_ours / med_plain
    row = {
        "condition": condition,
        "n": n,
        "dim": dim,
        "k": k,
        "precision": args.precision,
        "knn_search_s": t_ours,
        "plain_s": t_plain,
        "knn_search_median_s": med_ours,
        "plain_median_s": med_plain,
        "ratio": ratio,
        "target_met": ratio <= TARGET_RATIO,
        "busy_rate": None if busy is None else busy.rate,
        **neighbour_agreement(x, (out_ours.similarities, out_ours.indices), out_plain),
    }
    return row


def knn_table(rows: list[dict[str, Any]], args: argparse.Namespace, extra: dict) -> str:
    lines = [
        "## kNN search against a plain matmul + topk (`python -m benchmarks.speed.knn`"
        + (" --indices-only)" if args.indices_only else ")"),
        "",
        f"Machine: {machine()}.",
        "",
        f'`knn_search(x, k={args.k}, precision="{args.precision}"'
        f"{', similarities=False' if args.indices_only else ''})` against a plain chunked "
        f"`x[i:j] @ x.T` + `topk({args.k})` (blocks of at most {args.block_mib:g} MiB), on "
        "clustered synthetic unit features (seed 0). Both timed "
        f"{args.repeats} times, interleaved (A, B, A, B, ...) after one warm-up call each, in "
        f"one process with {extra['torch_threads']} torch threads; median (min–max) seconds. "
        "`contended`: a second process ran a float32 matmul loop with as many threads on the "
        f"same cores throughout (its rate: {_rate(extra['busy_quiet_rate'])} iterations/s "
        "alone; the contended rate is in the table). Target: ratio ≤ "
        f"{TARGET_RATIO}× (knn_search time / plain time). Same neighbours: fraction of rows "
        "with identical neighbour sets (the rest: ties or near-ties, which `topk` breaks "
        "arbitrarily; `k-th gap` is the largest difference of the two lists' exact k-th "
        "similarity on those rows).",
        "",
        "| condition | N × D | knn_search s | plain s | ratio | target ≤ 1.5× | same sets | "
        "k-th gap | busy it/s |",
        "|---|---|---|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:

        def cell(times: list[float], med: float) -> str:
            return f"{med:.3f} ({min(times):.3f}–{max(times):.3f})"

        lines.append(
            f"| {r['condition']} | {r['n']:,} × {r['dim']} | "
            f"{cell(r['knn_search_s'], r['knn_search_median_s'])} | "
            f"{cell(r['plain_s'], r['plain_median_s'])} | {r['ratio']:.2f}× | "
            f"{'yes' if r['target_met'] else 'NO'} | {r['identical_sets']:.4f} | "
            f"{r['max_kth_gap']:.1e} | "
            f"{_rate(r['busy_rate'])} |"
        )
    lines += ["", f"Measured {time.strftime('%Y-%m-%d')}, commit {commit() or 'unknown'}."]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Jaccard + DBSCAN against a vectorised dense numpy implementation
# --------------------------------------------------------------------------------------------


def dense_numpy_jaccard(features: np.ndarray, k1: int = 30, k2: int = 6) -> np.ndarray:
    """The k-reciprocal Jaccard distance (``reid_clustering._reference``'s definition) written
    with dense ``N × N`` numpy arrays, vectorised: whole-matrix operations for the neighbours,
    reciprocal sets, expansion, encoding and query expansion; the final min-sum loops over rows,
    each step one ``|nz(i)| × N`` array operation. ``features`` L2-normalised ``[N, D]``."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = x.shape[0]
    sims = x @ x.T
    # 1. neighbours: the k1 largest per row, descending, ties by index
    part = np.sort(np.argpartition(-sims, k1 - 1, axis=1)[:, :k1], axis=1)
    order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
    ranked = np.take_along_axis(part, order, axis=1)
    me = np.arange(n)

    def reciprocal(width: int) -> tuple[np.ndarray, np.ndarray]:
        forward = ranked[:, :width]
        return forward, (ranked[forward, :width] == me[:, None, None]).any(axis=2)

    forward, in_r = reciprocal(k1)  # 2. R(i): forward[i][in_r[i]]
    half_forward, in_half = reciprocal(int(np.around(k1 / 2)) + 1)
    member = np.zeros((n, n), dtype=bool)
    member[np.nonzero(in_r)[0], forward[in_r]] = True
    # 3. expansion: R_half(j) of each j in R(i) joins when > 2/3 of it is in R(i)
    cand, cand_ok = half_forward[forward], in_half[forward]  # [N, k1, half]
    inside = (member[me[:, None, None], cand] & cand_ok).sum(axis=2)
    take = in_r & (inside > 2 / 3 * cand_ok.sum(axis=2))
    rows, cols = np.nonzero(take)
    ok = cand_ok[rows, cols]
    expanded = member.copy()
    expanded[np.broadcast_to(rows[:, None], ok.shape)[ok], cand[rows, cols][ok]] = True
    # 4. encoding: softmax of -(2 - 2 <x_i, x_j>) over the expanded set
    logits = np.where(expanded, -(2 - 2 * sims), -np.inf).astype(np.float32)
    del sims, member, expanded
    logits -= logits.max(axis=1, keepdims=True)
    v = np.exp(logits, out=logits)
    v /= v.sum(axis=1, keepdims=True)
    # 5. local query expansion
    if k2 != 1:
        v_qe = np.zeros_like(v)
        for t in range(k2):
            v_qe += v[ranked[:, t]]
        v = v_qe / np.float32(k2)
    # 6. Jaccard: S = sum_t min(V[i, t], V[j, t]); J = 1 - S / (2 - S), clipped at 0
    vt = np.ascontiguousarray(v.T)
    jaccard = np.empty((n, n), dtype=np.float32)
    for i in range(n):
        nz = np.flatnonzero(v[i])
        shared = np.minimum(v[i, nz][:, None], vt[nz]).sum(axis=0)
        jaccard[i] = 1 - shared / (2 - shared)
    np.maximum(jaccard, 0, out=jaccard)
    return jaccard


def dense_numpy_labels(x: np.ndarray, eps: float, k1: int, k2: int) -> np.ndarray:
    from sklearn.cluster import DBSCAN

    dist = dense_numpy_jaccard(x, k1, k2)
    return DBSCAN(eps=eps, min_samples=4, metric="precomputed").fit_predict(dist)


def measure_jaccard(args: argparse.Namespace) -> dict[str, Any]:
    n, dim = _size(args.jaccard_size)
    x = make_features(n, dim, args.seed)[0]
    xt = torch.from_numpy(x)

    def ours() -> np.ndarray:
        return dbscan_pseudo_labels(xt, args.eps, 4, args.k1, args.k2)

    def dense() -> np.ndarray:
        return dense_numpy_labels(x, args.eps, args.k1, args.k2)

    t_ours, t_dense, labels_ours, labels_dense = interleaved(ours, dense, xt, args.repeats)
    med_ours, med_dense = statistics.median(t_ours), statistics.median(t_dense)
    from sklearn.metrics import adjusted_rand_score

    return {
        "n": n,
        "dim": dim,
        "k1": args.k1,
        "k2": args.k2,
        "eps": args.eps,
        "ours_s": t_ours,
        "dense_numpy_s": t_dense,
        "ours_median_s": med_ours,
        "dense_numpy_median_s": med_dense,
        "speedup": med_dense / med_ours,
        "target_met": med_dense / med_ours >= JACCARD_TARGET,
        "labels_identical": bool(np.array_equal(labels_ours, labels_dense)),
        "ari": float(adjusted_rand_score(labels_ours, labels_dense)),
        "clusters": int(labels_ours.max() + 1),
        "outliers": int((labels_ours == -1).sum()),
        "sparse_path": n > SPARSE_THRESHOLD,
    }


def jaccard_table(r: dict[str, Any], args: argparse.Namespace) -> str:
    def cell(times: list[float], med: float) -> str:
        return f"{med:.2f} ({min(times):.2f}–{max(times):.2f})"

    return "\n".join(
        [
            "## Jaccard + DBSCAN against dense numpy (`python -m benchmarks.speed.knn "
            "--jaccard-vs-dense`)",
            "",
            f"Machine: {machine()}.",
            "",
            f"Clustered synthetic {r['dim']}-d unit features (seed 0), k1 = {r['k1']}, "
            f"k2 = {r['k2']}, DBSCAN eps = {r['eps']}, min_samples = 4. `ours`: "
            "`dbscan_pseudo_labels(x, eps, 4, k1, k2)` (its default path at this size: "
            f"{'sparse radius graph' if r['sparse_path'] else 'dense Jaccard matrix'}); "
            "`dense numpy`: `benchmarks/speed/knn.py`'s `dense_numpy_jaccard` (the same "
            "definition with dense N × N numpy arrays, vectorised) + scikit-learn's DBSCAN on "
            f"the matrix. Both include the kNN search; {args.repeats} runs each, interleaved, "
            "after one warm-up each; median (min–max) seconds. Target: ≥ "
            f"{JACCARD_TARGET:g}× faster.",
            "",
            "| N × D | ours s | dense numpy s | speed-up | target ≥ 5× | labels identical | "
            "ARI | clusters | outliers |",
            "|---|---|---|---:|---|---|---:|---:|---:|",
            f"| {r['n']:,} × {r['dim']} | {cell(r['ours_s'], r['ours_median_s'])} | "
            f"{cell(r['dense_numpy_s'], r['dense_numpy_median_s'])} | {r['speedup']:.1f}× | "
            f"{'yes' if r['target_met'] else 'NO'} | {r['labels_identical']} | "
            f"{r['ari']:.4f} | {r['clusters']:,} | {r['outliers']:,} |",
            "",
            f"Measured {time.strftime('%Y-%m-%d')}, commit {commit() or 'unknown'}.",
        ]
    )


# --------------------------------------------------------------------------------------------


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _size(text: str) -> tuple[int, int]:
    try:
        n, d = (int(v) for v in text.lower().replace("x", ":").split(":"))
    except ValueError:
        raise SystemExit(f"bad size {text!r}: expected N:D, e.g. 6000:256") from None
    return n, d


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="N:D ...")
    parser.add_argument(
        "--conditions", nargs="+", default=["quiet", "contended"], choices=["quiet", "contended"]
    )
    parser.add_argument("--k", type=int, default=31)
    parser.add_argument(
        "--precision", default="exact", choices=["exact", "auto", "bf16-candidates"]
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--indices-only",
        action="store_true",
        help="time knn_search(..., similarities=False), the search the engine runs (its own "
        "section, knn-speed-indices)",
    )
    parser.add_argument("--block-mib", type=float, default=BLOCK_MIB)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--busy-seconds",
        type=float,
        default=2.0,
        help="how long the busy loop's rate alone is taken",
    )
    parser.add_argument("--jaccard-vs-dense", action="store_true", help="target 4 instead")
    parser.add_argument("--jaccard-size", default="6000:256")
    parser.add_argument("--k1", type=int, default=30)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--eps", type=float, default=0.5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--no-write", dest="write", action="store_false")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "commit": commit() or "unknown",
    }
    if args.jaccard_vs_dense:
        row = measure_jaccard(args)
        print(json.dumps(row), flush=True)
        result["jaccard"] = row
        body = jaccard_table(row, args)
        section = "jaccard-vs-dense"
    else:
        threads = torch.get_num_threads()
        result["busy_quiet_rate"] = (
            quiet_busy_rate(threads, args.busy_seconds) if "contended" in args.conditions else None
        )
        print(f"torch threads: {threads}; busy loop alone: {result['busy_quiet_rate']} it/s")
        rows = []
        for condition in args.conditions:
            for size in args.sizes:
                n, dim = _size(size)
                rows.append(measure(n, dim, args, condition))
                print(json.dumps(rows[-1]), flush=True)
        result["rows"] = rows
        body = knn_table(rows, args, result)
        section = "knn-speed-indices" if args.indices_only else "knn-speed"
    print(body)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.write:
        write_section(section, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
