"""Speed and memory of reid-eval's evaluation at Market-1501 and MSMT17 size.

Random but structured features (identities with several images each, a bias per camera,
distractors with pid 0 in the Market-size gallery) of dimension ``--dim``; cases:

- ``loop``: the field's plain per-query numpy loop, as torchreid's ``eval_market1501``
  (argsort of the whole distance matrix, one Python iteration per query), plus mINP, with a
  stable argsort (tied float32 distances in gallery order, as the protocol says);
- ``evaluate_rank``: :func:`reid_eval.evaluate_rank` on the same full distance matrix;
- ``evaluate_features``: :func:`reid_eval.evaluate_features`, chunked, features in.

``loop`` and ``evaluate_rank`` need the full ``Q × G`` matrix (and the loop its argsort), so
they run at the sizes in ``--full-matrix-sizes`` (Market only by default: at MSMT size the
matrix, its int64 argsort and the match matrix alone take ~15 GiB). Each case runs in a fresh
subprocess so that peak memory (``ru_maxrss``, the whole process: Python, torch, inputs and the
evaluation) is its own. Times: the evaluation only (``loop``, ``evaluate_rank``: given the
distance matrix, whose computation is timed separately) or distances + evaluation
(``evaluate_features``); best of ``--repeats``. The numbers of the three cases are checked to be
identical. Prints a markdown table and writes it to docs/benchmarks.md (section
``eval-speed``) unless ``--no-write`` is given.

    python -m benchmarks.speed.eval [--sizes market,msmt] [--scale 1.0] [--dim 2048]
                                    [--device cpu|cuda] [--chunk-size N] [--repeats 3]
                                    [--full-matrix-sizes market] [--no-write]

``--scale 0.1`` divides the number of queries, gallery images and identities by 10 (a quick
correctness check; figures at a reduced scale are labelled as such).

:func:`measure` times one case on given inputs (also ``python -m benchmarks.gpu_check``'s step 3,
on :func:`make_problem`'s features).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmarks.common import ROOT, current_rss_gib, machine, peak_rss_gib, timed, write_section
from reid_eval import evaluate_features, evaluate_rank, pairwise_distance

MAX_RANK = 50
# Per-dimension scales: identity centres N(0, 1), camera offsets N(0, 0.8²), image noise
# N(0, 2.5²): at 2048-d a moderately hard problem (mAP around 50 % at scale 0.1).
NOISE = 2.5
CAMERA_BIAS = 0.8

TORCHREID_NOTE = (
    "torchreid's compiled (Cython) evaluator is not compared: the `torchreid` packages on the "
    "Python package index (0.1.x to 0.2.5, a repackaging of deep-person-reid) are source "
    "distributions without `rank_cy.pyx`, so its Cython extension cannot be built from them "
    "(it falls back to the numpy loop measured here as `loop`)."
)


@dataclass(frozen=True)
class Size:
    label: str
    num_query: int
    num_gallery: int
    num_ids: int
    num_cameras: int
    num_distractors: int


SIZES = {
    # Market-1501 test split: 3,368 queries, 15,913 gallery images (junk removed) of which
    # 2,793 are distractors, 750 identities, 6 cameras.
    "market": Size("Market-1501", 3368, 15913, 750, 6, 2793),
    # MSMT17 test split: 11,659 queries, 82,161 gallery images, 3,060 identities, 15 cameras.
    "msmt": Size("MSMT17", 11659, 82161, 3060, 15, 0),
}


def scaled(size: Size, scale: float) -> Size:
    if scale == 1.0:
        return size
    return Size(
        f"{size.label} × {scale:g}",
        max(10, round(size.num_query * scale)),
        max(50, round(size.num_gallery * scale)),
        max(5, round(size.num_ids * scale)),
        size.num_cameras,
        round(size.num_distractors * scale),
    )


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def make_problem(
    size: Size, dim: int, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Query/gallery features ``centre[pid] + bias[camera] + noise`` and their ids.

    Queries: images of random identities from random cameras. Gallery: images of random
    identities (a few dozen per identity at full size) and distractors (pid 0, each its own
    random centre). Deterministic for a seed; built block by block (no large temporaries).
    """
    rng = np.random.default_rng(seed)
    ids = np.arange(1, size.num_ids + 1)
    q_pids = rng.choice(ids, size=size.num_query)
    q_camids = rng.integers(0, size.num_cameras, size=size.num_query)
    num_real = size.num_gallery - size.num_distractors
    g_pids = np.concatenate([rng.choice(ids, size=num_real), np.zeros(size.num_distractors, int)])
    g_camids = rng.integers(0, size.num_cameras, size=size.num_gallery)
    order = rng.permutation(size.num_gallery)  # distractors spread over the gallery
    g_pids, g_camids = g_pids[order], g_camids[order]

    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(size.num_ids + 1, dim, generator=gen)  # row 0 unused
    bias = CAMERA_BIAS * torch.randn(size.num_cameras, dim, generator=gen)

    def images(pids: np.ndarray, camids: np.ndarray) -> torch.Tensor:
        out = torch.empty(len(pids), dim)
        for start in range(0, len(pids), 8192):
            stop = min(start + 8192, len(pids))
            block = torch.randn(stop - start, dim, generator=gen).mul_(NOISE)
            p = torch.from_numpy(pids[start:stop])
            centre = centres[p]
            distractor = p == 0
            centre[distractor] = torch.randn(int(distractor.sum()), dim, generator=gen)
            block += centre
            block += bias[torch.from_numpy(camids[start:stop])]
            out[start:stop] = block
        return out.to(device)

    return images(q_pids, q_camids), images(g_pids, g_camids), q_pids, g_pids, q_camids, g_camids


# --------------------------------------------------------------------------------------------
# The per-query loop (torchreid's eval_market1501, plus fast-reid's mINP)
# --------------------------------------------------------------------------------------------


def loop_eval(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
) -> dict[str, Any]:
    """The plain per-query loop: argsort everything, then one Python iteration per query.

    One deviation from torchreid: a *stable* argsort. float32 distance matrices hold exact ties
    (dozens per row at Market size), which numpy's default unstable sort orders arbitrarily,
    moving mAP by ~1e-7 and single APs by up to ~1e-4; the protocol keeps ties in gallery order.
    """
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for q_idx in range(num_q):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        raw_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        last_match = np.max(np.where(raw_cmc == 1)[0])
        all_inp.append(cmc[last_match] / (last_match + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        num_rel = raw_cmc.sum()
        precision = np.asarray([x / (i + 1.0) for i, x in enumerate(raw_cmc.cumsum())])
        all_ap.append((precision * raw_cmc).sum() / num_rel)
    cmc32 = np.asarray(all_cmc).astype(np.float32).sum(0) / len(all_ap)
    return {
        "cmc": [float(v) for v in cmc32],  # float32 values, as torchreid returns them
        "mAP": float(np.mean(all_ap)),
        "mINP": float(np.mean(all_inp)),
        "num_valid": len(all_ap),
    }


# --------------------------------------------------------------------------------------------
# One case, in its own process
# --------------------------------------------------------------------------------------------


def measure(
    case: str,
    inputs: tuple[Any, ...],
    ids: tuple[np.ndarray, ...],
    *,
    device: torch.device | str,
    repeats: int = 1,
    chunk_size: int | None = None,
    max_rank: int = MAX_RANK,
) -> tuple[float, Any]:
    """Best of ``repeats`` timed evaluations of ``case`` and its result: ``loop`` (a dict) and
    ``evaluate_rank`` on ``inputs = (distmat,)``, ``evaluate_features`` (a ``RankResult``) on
    ``inputs = (query features, gallery features)``; ``ids``: query and gallery pids, camids."""
    if case == "loop":

        def fn() -> Any:
            return loop_eval(*inputs, *ids, max_rank)
    elif case == "evaluate_rank":

        def fn() -> Any:
            return evaluate_rank(*inputs, *ids, max_rank)
    elif case == "evaluate_features":

        def fn() -> Any:
            return evaluate_features(*inputs, *ids, max_rank, chunk_size=chunk_size)
    else:
        raise ValueError(f"unknown case {case!r}")
    best, result = float("inf"), None
    for _ in range(repeats):
        seconds, result = timed(fn, device)
        best = min(best, seconds)
    return best, result


def run_case(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    size = scaled(SIZES[args.size], args.scale)
    q, g, *ids = make_problem(size, args.dim, seed=0, device=device)
    out: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    if args.case in ("loop", "evaluate_rank"):
        seconds, dist = timed(lambda: pairwise_distance(q, g).cpu().numpy(), device)
        out["distmat_seconds"] = seconds
        out["distmat_sha1"] = hashlib.sha1(dist.tobytes()).hexdigest()
        del q, g
        inputs: tuple[Any, ...] = (dist,)
    else:
        inputs = (q, g)
    out["inputs_rss_gib"] = current_rss_gib()  # features, or the distance matrix

    best, result = measure(
        args.case, inputs, tuple(ids), device=device, repeats=args.repeats,
        chunk_size=args.chunk_size,
    )  # fmt: skip
    if args.case == "loop":
        metrics = result
    else:
        metrics = {
            "cmc": [float(v) for v in result.cmc],
            "mAP": result.mAP,
            "mINP": result.mINP,
            "num_valid": result.num_valid_queries,
        }
    out.update(metrics, seconds=best, peak_rss_gib=peak_rss_gib())
    if device.type == "cuda":
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def spawn_case(case: str, size: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.speed.eval",
        "--case",
        case,
        "--size",
        size,
        "--scale",
        repr(args.scale),
        "--dim",
        str(args.dim),
        "--device",
        args.device,
        "--repeats",
        str(args.repeats),
    ]
    if args.chunk_size is not None:
        cmd += ["--chunk-size", str(args.chunk_size)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"case {case} at {size} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Comparison and report
# --------------------------------------------------------------------------------------------


def compare(results: dict[str, dict[str, Any]]) -> list[str]:
    """Check that the cases agree; return one line per comparison (raise if they do not)."""
    lines = []
    rank, feats, loop = (results.get(k) for k in ("evaluate_rank", "evaluate_features", "loop"))
    if rank is not None and feats is not None:
        same = all(rank[k] == feats[k] for k in ("cmc", "mAP", "mINP", "num_valid"))
        if not same:
            raise AssertionError(f"evaluate_rank and evaluate_features differ: {rank} {feats}")
        lines.append("`evaluate_rank` = `evaluate_features`: every number bit-identical")
    if loop is not None and rank is not None:
        if loop["distmat_sha1"] != rank["distmat_sha1"]:
            raise AssertionError("the loop and evaluate_rank did not get the same matrix")
        cmc32 = [float(np.float32(v)) for v in rank["cmc"]]
        d_map = abs(loop["mAP"] - rank["mAP"])
        d_minp = abs(loop["mINP"] - rank["mINP"])
        if cmc32 != loop["cmc"] or loop["num_valid"] != rank["num_valid"] or d_map > 1e-12:
            raise AssertionError(f"the loop and evaluate_rank differ: {loop} {rank}")
        lines.append(
            "`loop` = `evaluate_rank` on the same matrix: CMC identical (in the loop's float32), "
            f"valid queries identical, |ΔmAP| = {d_map:.1e}, |ΔmINP| = {d_minp:.1e} "
            "(AP terms may be summed in another order)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="market,msmt", help="comma-separated: market, msmt")
    parser.add_argument(
        "--full-matrix-sizes", default="market", help="sizes for loop/evaluate_rank"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply Q, G and #ids")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--chunk-size", type=int, default=None, help="evaluate_features rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    parser.add_argument("--size", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args)))
        return 0

    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    full_matrix = {s.strip() for s in args.full_matrix_sizes.split(",") if s.strip()}
    unknown = (set(sizes) | full_matrix) - SIZES.keys()
    if unknown:
        parser.error(f"unknown size(s) {sorted(unknown)}; choose from {sorted(SIZES)}")
    gpu = args.device.startswith("cuda")

    rows, checks = [], []
    for name in sizes:
        size = scaled(SIZES[name], args.scale)
        cases = ["loop", "evaluate_rank"] if name in full_matrix else []
        results = {}
        for case in [*cases, "evaluate_features"]:
            results[case] = spawn_case(case, name, args)
            r = results[case]
            print(
                f"{size.label} {case}: {r['seconds']:.2f} s, peak RSS {r['peak_rss_gib']:.2f} GiB, "
                f"mAP {r['mAP']:.6f}",
                flush=True,
            )
        checks += [f"{size.label}: {line}" for line in compare(results)]
        loop_s = results["loop"]["seconds"] if "loop" in results else None
        for case, r in results.items():
            timed = "distances + evaluation" if case == "evaluate_features" else "evaluation"
            if "distmat_seconds" in r:
                timed += f" (distance matrix: {r['distmat_seconds']:.2f} s more)"
            speedup = "" if loop_s is None else f"{loop_s / r['seconds']:.1f}×"
            if case == "evaluate_features" and loop_s is not None:
                with_dist = loop_s + results["loop"]["distmat_seconds"]
                speedup = f"{with_dist / r['seconds']:.1f}× (vs loop + its matrix)"
            row = (
                f"| {size.label} | {size.num_query} × {size.num_gallery} × {args.dim} | `{case}` | "
                f"{timed} | {r['seconds']:.3f} | {speedup} | {r['peak_rss_gib']:.2f} | "
                f"{r['inputs_rss_gib']:.2f} | "
            )
            if gpu:
                row += f"{r.get('peak_gpu_gib', 0.0):.2f} | "
            row += f"{100 * r['mAP']:.2f} | {100 * r['cmc'][0]:.2f} | {100 * r['mINP']:.2f} |"
            rows.append(row)

    header = (
        "| size | Q × G × D | case | timed | seconds | speed-up vs loop | peak RSS GiB | "
        "RSS with inputs GiB | "
        + ("peak GPU GiB | " if gpu else "")
        + "mAP % | Rank-1 % | mINP % |"
    )
    align = "|---|---|---|---|---:|---:|---:|---:|" + ("---:|" if gpu else "") + "---:|---:|---:|"
    note = "" if args.scale == 1.0 else f" **Reduced scale ({args.scale:g}), not the real sizes.**"
    body = "\n".join(
        [
            f"Measured on: {machine()}; device `{args.device}`; best of {args.repeats}; "
            f"evaluate_features chunk size {args.chunk_size or 'auto'}.{note}",
            "",
            "Random structured features: identity centres N(0, 1), a per-camera offset, noise "
            f"σ = {NOISE:g} per dimension; Market-size galleries include pid-0 distractors. "
            "`loop` is the field's per-query numpy loop (torchreid's `eval_market1501`, plus "
            "mINP, with a stable argsort: float32 distance matrices hold exact ties, which the "
            "protocol keeps in gallery order) on the same distance matrix as `evaluate_rank`; "
            "`evaluate_features` computes "
            "the distances itself, chunk by chunk. Peak RSS: the whole process (Python, torch, "
            "inputs, evaluation), each case in a fresh process; RSS with inputs: the process "
            "just before the timed call, holding its inputs (features, or the distance matrix).",
            "",
            header,
            align,
            *rows,
            "",
            *[f"- {line}" for line in checks],
            f"- {TORCHREID_NOTE}",
            "",
            "Regenerate with `python -m benchmarks.speed.eval`.",
        ]
    )
    print(body)
    if not args.no_write:
        write_section("eval-speed", "## reid-eval speed\n\n" + body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
