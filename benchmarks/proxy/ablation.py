"""Paired-seed ablations of PPLR and DCLS on the synthetic proxy, with 95 % confidence intervals.

The proxy (see docs/benchmarks.md, "The synthetic proxy"): ImageNet weights cannot be used here,
so a ResNet-18 is first trained *supervised* on a labelled source dataset generated with another
seed (``configs/synthetic_source.yaml``; it never sees a target identity), the stand-in for
"ImageNet-pretrained". Every row then trains from that backbone on the target dataset with the
row's ``configs/synthetic_*.yaml`` (one schedule for all) and is evaluated once, after its last
epoch: no model selection on the test set. ``supervised`` trains on the target's true labels with
the same budget (the upper bound); every other row sees no target label.

Seed i of every row is the run's ``runtime.seed``: the same head initialisation and augmentation
stream. The table gives each row's mean ± standard deviation over its seeds and its paired
difference to ``baseline`` (same seeds) with a 95 % t confidence interval.

Each run is a fresh ``python -m reid_train`` process with its own folder under
``--workdir/t{TARGET}_s{SOURCE}/``; finished runs are reused, an unfinished one is redone, so an
interrupted sweep continues where it stopped. Run from the repository root:

    python -m benchmarks.proxy.ablation                        # all rows, default seeds
    python -m benchmarks.proxy.ablation --rows supervised baseline --seeds 1 2 3 \\
        --target-seed 1 --source-seed 101 --json runs/proxy_t1.json      # another seed pair
    python -m benchmarks.proxy.ablation --no-write              # print only
    python -m benchmarks.proxy.ablation --workdir /tmp/ablation_smoke --seeds 1 \\
        --rows supervised baseline --no-write --extra optim.epochs=1 optim.iters=2 \\
        data.batch_size=8 data.synthetic_options.num_train_ids=16 \\
        data.synthetic_options.num_test_ids=8                      # a smoke test, about 1 min

``--extra KEY=VALUE ...`` reaches every run, the source run and the generated datasets; it
changes the regime, so it needs its own ``--workdir`` (a finished run of another schedule stops
the sweep, and a dataset folder of other generator options too).

``--json OUT`` writes ``{"runs": [{"row", "seed", "mAP", "rank1", "epochs": [{"epoch",
"clusters", "true_identities", "pairwise_f1", "pairwise_precision", "nmi"}, ...]}, ...]}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT, write_section
from benchmarks.proxy.rows import (
    ABLATION_ROWS,
    SOURCE_CONFIG,
    Row,
    add_rows_argument,
    chosen_rows,
    slug,
)
from benchmarks.proxy.runs import (
    BUDGET,
    add_extra_argument,
    add_from_json_argument,
    drop_checkpoints,
    epochs_of,
    finished,
    make_data,
    optim_of,
    provenance_lines,
    read_runs,
    reid_train,
    source_model,
    write_runs,
)
from benchmarks.proxy.stats import mean_std, paired_ci

#: The regime's properties (fixed before any method comparison; never retuned after one).
MIN_SUPERVISED_MAP = 60.0
MIN_BASELINE_FRACTION = 0.5
MIN_FINAL_F1 = 0.5
CLUSTER_RATIO = (0.7, 1.3)
ROWS = ABLATION_ROWS


def run_pair(args: argparse.Namespace, rows: list[Row]) -> dict[str, list[dict]]:
    """Train (or reuse) every run of one (target, source) seed pair; their records by row."""
    work = args.workdir / f"t{args.target_seed}_s{args.source_seed}"
    extra = args.extra
    target = make_data(work / "data_target", args.target_seed, source=False, overrides=extra)
    pre = source_model(work, args.source_seed, extra, args.only_finished)
    results: dict[str, list[dict]] = {r.name: [] for r in rows}
    for seed in args.seeds:
        for row in rows:
            if not row.core and seed not in args.seeds[: args.other_seeds]:
                continue
            out = work / slug(row.name) / f"seed{seed}"
            epochs = epochs_of(row.config, extra)
            done = finished(out, epochs, optim_of(row.config, extra))
            if done is None and args.only_finished:
                continue
            if done is None:
                t0 = time.perf_counter()
                reid_train(row.config, out, [
                    *BUDGET, *row.overrides, f"data.data_root={target}",
                    f"data.synthetic_seed={args.target_seed}",
                    f"model.pretrained={pre / 'last'}", f"runtime.seed={seed}", *extra,
                ])  # fmt: skip
                done = finished(out, epochs)
                assert done is not None, f"{out} did not finish"
                if not args.keep_checkpoints:
                    drop_checkpoints(out)
                took = time.perf_counter() - t0
                pair = f"t{args.target_seed}/s{args.source_seed}"
                print(
                    f"{pair} seed {seed} {row.name}: mAP {done['mAP']:.1f} ({took:.0f} s)",
                    flush=True,
                )
            results[row.name].append({"row": row.name, "seed": seed, **done})
    return results


def ablation_table(results: dict[str, list[dict]]) -> str:
    base = {r["seed"]: r["mAP"] for r in results.get("baseline", [])}
    lines = [
        "| row | seeds | mAP % | Rank-1 % | Δ mAP vs baseline (95 % CI) | last-epoch F1 "
        "| clusters |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        if not runs:
            continue
        maps = [r["mAP"] for r in runs]
        paired = [r for r in runs if r["seed"] in base]
        if name == "baseline" or not paired:
            delta = "–"
        else:
            d, lo, hi = paired_ci([r["mAP"] for r in paired], [base[r["seed"]] for r in paired])
            delta = f"{d:+.1f} ({lo:+.1f}, {hi:+.1f})" if len(paired) > 1 else f"{d:+.1f}"
        f1 = [r["epochs"][-1]["pairwise_f1"] for r in runs]
        clusters = [float(r["epochs"][-1]["clusters"]) for r in runs]
        lines.append(
            f"| {name} | {len(runs)} | {mean_std(maps)} | {mean_std([r['rank1'] for r in runs])} "
            f"| {delta} | {mean_std(f1, 2)} | {mean_std(clusters, 0)} |"
        )
    return "\n".join(lines)


def _per_part(values: list[list[float]]) -> str:
    """Mean over runs of per-part values, as ``a / b / c``."""
    return " / ".join(f"{statistics.fmean(part):.2f}" for part in zip(*values, strict=True))


def diagnostics_table(results: dict[str, list[dict]]) -> str:
    """What the refinements saw, for the rows with a part model: the mean cross agreement of
    each part (PPLR's C_i(g, p_n), top part first) in the first and the last epoch, DCLS's
    per-part smoothing weight beta in the last epoch, and the last epoch's mean loss terms.
    Means over the row's finished seeds; empty when no row recorded them."""
    lines = [
        "| row | seeds | cross agreement, first epoch | cross agreement, last epoch "
        "| DCLS beta, last epoch | last-epoch losses |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        first = [r["epochs"][0].get("agreement") or [] for r in runs]
        last = [r["epochs"][-1].get("agreement") or [] for r in runs]
        beta = [r["epochs"][-1].get("beta") or [] for r in runs]
        if not runs or not (all(last) or all(beta)):
            continue
        terms = sorted({k for r in runs for k in r["epochs"][-1].get("losses", {})})
        losses = ", ".join(
            f"{k} {statistics.fmean(r['epochs'][-1]['losses'][k] for r in runs):.2f}"
            for k in terms
            if all(k in r["epochs"][-1].get("losses", {}) for r in runs)
        )
        lines.append(
            f"| {name} | {len(runs)} | {_per_part(first) if all(first) else '–'} "
            f"| {_per_part(last) if all(last) else '–'} | {_per_part(beta) if all(beta) else '–'} "
            f"| {losses} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def regime_properties(results: dict[str, list[dict]]) -> tuple[list[str], bool]:
    """The proxy's required properties for one seed pair: table lines and whether all hold."""
    sup = [r["mAP"] for r in results.get("supervised", [])]
    base = results.get("baseline", [])
    if not sup or not base:
        return ["(needs the supervised and baseline rows)"], False
    sup_map, base_map = statistics.fmean(sup), statistics.fmean(r["mAP"] for r in base)
    first_f1 = [r["epochs"][0]["pairwise_f1"] for r in base]
    last_f1 = [r["epochs"][-1]["pairwise_f1"] for r in base]
    ratios = [r["epochs"][-1]["clusters"] / r["epochs"][-1]["true_identities"] for r in base]
    checks = [
        (
            f"supervised mAP {sup_map:.1f} >= {MIN_SUPERVISED_MAP:.0f}",
            sup_map >= MIN_SUPERVISED_MAP,
        ),
        (
            f"baseline mAP {base_map:.1f} >= {MIN_BASELINE_FRACTION} x supervised "
            f"({MIN_BASELINE_FRACTION * sup_map:.1f})",
            base_map >= MIN_BASELINE_FRACTION * sup_map,
        ),
        (
            f"baseline F1 rises, first → last epoch, every seed: "
            f"{', '.join(f'{a:.2f} → {b:.2f}' for a, b in zip(first_f1, last_f1, strict=True))}",
            all(b > a for a, b in zip(first_f1, last_f1, strict=True)),
        ),
        (
            f"baseline last-epoch F1 >= {MIN_FINAL_F1} every seed (min {min(last_f1):.2f})",
            min(last_f1) >= MIN_FINAL_F1,
        ),
        (
            f"last-epoch clusters / true identities in [{CLUSTER_RATIO[0]}, {CLUSTER_RATIO[1]}] "
            f"every seed: {', '.join(f'{x:.2f}' for x in ratios)}",
            all(CLUSTER_RATIO[0] <= x <= CLUSTER_RATIO[1] for x in ratios),
        ),
    ]
    return [f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in checks], all(
        ok for _, ok in checks
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target-seed", type=int, default=0)
    parser.add_argument("--source-seed", type=int, default=100)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5], help="seeds of the core rows"
    )
    parser.add_argument(
        "--other-seeds", type=int, default=3, help="the other rows run the first N of --seeds"
    )
    add_rows_argument(parser, ROWS)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    parser.add_argument("--no-write", dest="write", action="store_false")
    parser.add_argument(
        "--only-finished",
        action="store_true",
        help="train nothing: report the runs already finished in --workdir (a partial sweep)",
    )
    parser.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep every run's best/ and state/ folders (by default a finished row run keeps "
        "last/ only, about 45 MB)",
    )
    add_from_json_argument(parser, "row and seed")
    add_extra_argument(parser)
    args = parser.parse_args()
    rows = chosen_rows(parser, args.rows, ROWS)

    start = time.perf_counter()
    if args.from_json:
        records = read_runs(args.from_json)
        results = {row.name: sorted((r for r in records if r["row"] == row.name),
                                    key=lambda r: r["seed"]) for row in rows}  # fmt: skip
        results = {name: rs for name, rs in results.items() if rs}
    else:
        results = run_pair(args, rows)
    runs = [r for rs in results.values() for r in rs]
    if args.json:
        write_runs(args.json, runs, merge=bool(args.from_json))
    table = ablation_table(results)
    diagnostics = diagnostics_table(results)
    props, ok = regime_properties(results)
    print(table)
    if diagnostics:
        print(diagnostics)
    print("\n".join(props))
    compute = sum(r["compute_s"] for r in runs)
    median_run = statistics.median(r["compute_s"] for r in runs) if runs else 0.0
    pair = f"target seed {args.target_seed}, source seed {args.source_seed}"
    extra = f" Extra overrides: `{' '.join(args.extra)}`." if args.extra else ""
    wanted = sum(
        1 for seed in args.seeds for row in rows
        if row.core or seed in args.seeds[: args.other_seeds]
    )  # fmt: skip
    partial = (
        f"\n\n**Partial sweep** (`--only-finished`): {len(runs)} of its {wanted} runs, the rows "
        "and seeds finished so far; the sweep goes on and rewrites this section."
        if len(runs) < wanted
        else ""
    )
    took = (time.perf_counter() - start) / 60
    command, invocation, where = provenance_lines("ablation", args.from_json, runs, took)
    body = f"""## Synthetic proxy: paired-seed ablation ({pair})

Every row: ResNet-18 from the supervised source model (`{SOURCE_CONFIG}`, trained on the source
dataset only), then the row's `configs/synthetic_*.yaml` on the target without its labels
(`supervised`: with them, same budget); one evaluation after the last epoch. Δ is the paired
difference to `baseline` over the same seeds, with a 95 % t interval. F1 and clusters: the last
epoch's pseudo labels. Regenerate with `{command}`; the runs took
{compute / 60:.0f} min of compute (wall time of their epochs, including any other load on the
machine and any pause of the sweep; median run {median_run:.0f} s; {invocation}).{extra}{partial}

{where}

{table}

Regime properties for this seed pair ({"all hold" if ok else "NOT all hold"}):

{chr(10).join(props)}
"""
    if diagnostics:
        body += f"""
What the refinements saw (means over each row's seeds; per part, top part first; the losses are
the last epoch's means over its iterations, CE terms against the row's refined targets):

{diagnostics}
"""
    if args.write:
        name = "synthetic-ablation"
        if (args.target_seed, args.source_seed) != (0, 100):
            name += f"-t{args.target_seed}-s{args.source_seed}"
        write_section(name, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
