"""Compare one row's gap to a reference row between two ``--json`` records of the evidence scripts.

A probe changes one thing in the regime (the input size, say) and reruns a few rows with the
same seeds; the question is whether a row's paired gap to its reference moved. For each record
this prints both rows' mAP (mean ± std over ``--seeds``), the row's paired gap to the reference
(95 % t interval), the change of that gap from the first record to the second (paired by seed),
and each row's last-epoch cross agreement per part (mean over the seeds). From the repository
root, for the 128×64 probe of docs/benchmarks.md:

    python -m benchmarks.proxy.compare_runs benchmarks/results/synthetic_ablation_t0_s100.json \\
        benchmarks/results/probe_128x64_t0_s100.json --labels 96x48 128x64 --seeds 1 2 3 \\
        --reference "baseline (part model)" --row "PPLR: AALS + PGLR"
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from benchmarks.proxy.stats import mean_std, paired_ci


def _by_seed(runs: list[dict], row: str, seeds: list[int]) -> dict[int, dict]:
    found = {r["seed"]: r for r in runs if r["row"] == row and r["seed"] in seeds}
    missing = sorted(set(seeds) - set(found))
    if missing:
        raise SystemExit(f"row {row!r} has no run of seed(s) {missing} in the record")
    return found


def _ci(values: list[float]) -> str:
    d, lo, hi = paired_ci(values, [0.0] * len(values))
    return f"{d:+.1f} ({lo:+.1f}, {hi:+.1f})" if len(values) > 1 else f"{d:+.1f}"


def _agreement(runs: dict[int, dict]) -> str:
    """Last-epoch cross agreement per part, mean over the seeds ('–' without parts)."""
    parts = [r["epochs"][-1].get("agreement") or [] for r in runs.values()]
    if not all(parts):
        return "–"
    return " / ".join(f"{statistics.fmean(p):.2f}" for p in zip(*parts, strict=True))


def compare(
    records: list[list[dict]], labels: list[str], row: str, reference: str, seeds: list[int]
) -> str:
    """The comparison table of ``row`` against ``reference`` in each record (two records)."""
    gaps = []
    out = [
        f"| record | {reference} mAP | {row} mAP | gap (95 % t CI) "
        f"| agreement, {reference} | agreement, {row} |",
        "|---|---|---|---|---|---|",
    ]
    for label, runs in zip(labels, records, strict=True):
        ref, own = _by_seed(runs, reference, seeds), _by_seed(runs, row, seeds)
        gap = {s: own[s]["mAP"] - ref[s]["mAP"] for s in seeds}
        gaps.append(gap)
        out.append(
            f"| {label} | {mean_std([ref[s]['mAP'] for s in seeds])} "
            f"| {mean_std([own[s]['mAP'] for s in seeds])} | {_ci(list(gap.values()))} "
            f"| {_agreement(ref)} | {_agreement(own)} |"
        )
    change = [gaps[1][s] - gaps[0][s] for s in seeds]
    out += [
        "",
        f"Change of the gap, {labels[1]} minus {labels[0]} (paired by seed, 95 % t CI): "
        f"{_ci(change)}",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("records", type=Path, nargs=2, help="two --json records")
    parser.add_argument("--labels", nargs=2, help="their names in the table (default: stems)")
    parser.add_argument("--row", required=True)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    args = parser.parse_args(argv)
    records = [json.loads(p.read_text())["runs"] for p in args.records]
    labels = args.labels or [p.stem for p in args.records]
    print(compare(records, labels, args.row, args.reference, args.seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
