"""Label refinement under controlled label noise: CE, constant LS, PPLR and DCLS on noisy truth.

PPLR (AALS and PGLR, from the cross agreement) and DCLS (dynamic label smoothing) claim that
refining the labels makes training robust to *noisy pseudo labels*. In the unsupervised runs of
``python -m benchmarks.proxy.ablation`` the noise comes from DBSCAN and cannot be told apart
from the clustering; here it is a controlled input. Every run trains on the synthetic target's
training split with its *true* identities corrupted once for the run (``cluster.labels:
noisy_ground_truth``, ``reid_train.label_noise``): a fraction ``--noise`` of the images, aimed
at a third each by false merges of look-alikes (one identity takes the label of another of its
family), by false splits by camera (an identity's smallest camera gets a label of its own) and
by outliers (dropped from training, as DBSCAN's unclustered images are); when the look-alike
pairs run out the splits take over, and the table gives the realised mix. Rows:

    CE               configs/synthetic_baseline.yaml, method.global_epsilon=0.0
    constant LS      configs/synthetic_baseline.yaml, method.global_epsilon=0.1
    CE (part model)  configs/synthetic_pplr.yaml without AALS, PGLR or part smoothing
    PPLR             configs/synthetic_pplr.yaml (AALS + PGLR)
    CE (DCLS model)  configs/synthetic_dcls.yaml without local or global smoothing
    DCLS             configs/synthetic_dcls.yaml (full)
    Cluster Contrast configs/synthetic_cluster_contrast.yaml (memory of centroids, no classifier)

Each refinement is compared with plain CE on its own model (constant LS with CE, PPLR with CE
(part model), DCLS with CE (DCLS model)), so that the difference is the refinement's and not the
architecture's; Cluster Contrast with CE (the same backbone, a classifier in place of the
memory).

As in the ablation, every row starts from the supervised source model (``configs/
synthetic_source.yaml``, trained on a source dataset generated with ``--source-seed``; it never
sees a target identity) and is evaluated once, after its last epoch. Seed i is both the run's
``runtime.seed`` and its ``cluster.label_noise_seed``: at one noise level every row of seed i
trains on the same noisy labels, so the differences to CE are paired. Noise 0 is the supervised
upper bound of each recipe.

Each run is a fresh ``python -m reid_train`` process in
``--workdir/t{TARGET}_s{SOURCE}/noise{RATE}/{row}/seed{i}``; finished runs are reused, an
unfinished one is redone, so an interrupted sweep continues where it stopped (a changed
``--extra`` needs another ``--workdir``: finished runs are not compared with it). From the
repository root:

    python -m benchmarks.proxy.label_noise                           # all rows, about 2.6 h
    python -m benchmarks.proxy.label_noise --rows CE PPLR --noise 0 0.4 --no-write
    python -m benchmarks.proxy.label_noise --workdir /tmp/ln_smoke --seeds 1 --noise 0 0.4 \\
        --no-write --plot /tmp/ln_smoke.png \\
        --extra optim.epochs=1 optim.iters=2 data.batch_size=8 \\
        data.synthetic_options.num_train_ids=16 data.synthetic_options.num_test_ids=8  # smoke

``--from-json FILE [FILE ...]`` trains nothing and needs no run folder: the tables (and the
plot) from record files, merged in order (a later run replaces an earlier one of the same row,
noise and seed). ``--part TEXT`` makes a table of its own (its own section and heading), for
rows run apart from the main table with their own CE, as the Cluster Contrast rows were:

    python -m benchmarks.proxy.label_noise --from-json \\
        benchmarks/results/label_noise_cluster_contrast_t0_s100.json --rows CE "Cluster Contrast" \\
        --part "Cluster Contrast" --plot docs/label_noise_cluster_contrast.png \\
        --against benchmarks/results/label_noise_t0_s100.json

(``--against FILE``: how far this table's re-run CE reproduces the main table's CE records.)

``--json OUT`` writes ``{"runs": [{"row", "noise", "seed", "mAP", "rank1", "realised_noise",
"noise_counts": {"rate", "merged", "split", "outliers", ..., "describe"}, "noise_logged",
"pairwise_precision", "pairwise_recall", "compute_s", "commit", "epochs": [...]}, ...]}``
(``realised_noise``: what the run's history recorded; the script checks that it is the
``noisy_labels`` rate of its noise and seed, and ``noise_logged``: that the run's stdout.log
holds the counts line ``describe`` of ``noisy_labels`` now).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT, read_jsonl, shown, write_section
from benchmarks.proxy.rows import (
    BASELINE,
    CLUSTER_CONTRAST,
    DCLS,
    NO_PART_REFINEMENT,
    PPLR,
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

ROWS = [
    Row("CE", BASELINE, ("method.global_epsilon=0.0",)),
    Row("constant LS", BASELINE, ("method.global_epsilon=0.1",)),
    Row("CE (part model)", PPLR, NO_PART_REFINEMENT),
    Row("PPLR", PPLR),
    Row("CE (DCLS model)", DCLS, ("method.local_smoothing=none", "method.global_smoothing=none")),
    Row("DCLS", DCLS),
    Row("Cluster Contrast", CLUSTER_CONTRAST),
]
#: Each refinement is compared with plain CE on its own model, so that the difference is the
#: refinement's and not the architecture's (PPLR: global + part classifiers; DCLS: attention
#: local branches).
REFERENCE = {
    "constant LS": "CE", "PPLR": "CE (part model)", "DCLS": "CE (DCLS model)",
    "Cluster Contrast": "CE",  # the same model without classifiers: memory against classifier
}  # fmt: skip
SECTION = "label-noise"


def last_quality(out: Path) -> dict:
    """The pseudo-label quality of a finished run's last epoch (``quality.label_noise``: the
    realised noise the run trained on)."""
    return read_jsonl(out / "history.jsonl")[-1].get("quality", {})


class NoiseCounts:
    """What ``noisy_labels`` does to the target's training split for a (rate, seed): the same
    function on the same data as the runs' engine, so the counts are those the runs used."""

    def __init__(self, target: Path) -> None:
        from reid_eval.datasets import load_dataset, synthetic_families

        train = load_dataset("synthetic", target).train
        self.pids = [r.pid for r in train]
        self.camids = [r.camid for r in train]
        self.families = synthetic_families(target)
        self.cache: dict[tuple[float, int], dict] = {}

    def __call__(self, rate: float, seed: int) -> dict:
        import numpy as np

        from reid_train.label_noise import noisy_labels

        if (rate, seed) not in self.cache:
            result = noisy_labels(
                np.array(self.pids), np.array(self.camids), rate, seed=seed,
                families=self.families,
            )  # fmt: skip
            self.cache[rate, seed] = {**result.summary(), "describe": result.describe()}
        return self.cache[rate, seed]


def run_all(args: argparse.Namespace, rows: list[Row]) -> tuple[list[dict], NoiseCounts]:
    """Train (or reuse) every (noise, seed, row) run; one record per run, and the noise counts
    of the target."""
    work = args.workdir / f"t{args.target_seed}_s{args.source_seed}"
    target = make_data(work / "data_target", args.target_seed, source=False, overrides=args.extra)
    pre = source_model(
        work, args.source_seed, args.extra, args.only_finished, given=args.source_model
    )
    counts = NoiseCounts(target)
    runs = []
    for seed in args.seeds:  # seed-major: an interrupted sweep has every noise level of seed 1
        for rate in args.noise:
            for row in rows:
                out = work / f"noise{rate:g}" / slug(row.name) / f"seed{seed}"
                n_epochs = epochs_of(row.config, args.extra)
                done = finished(out, n_epochs, optim_of(row.config, args.extra))
                if done is None and args.only_finished:
                    continue
                if done is None:
                    t0 = time.perf_counter()
                    reid_train(row.config, out, [
                        *BUDGET, *row.overrides, "cluster.labels=noisy_ground_truth",
                        f"cluster.label_noise={rate:g}", f"cluster.label_noise_seed={seed}",
                        f"data.data_root={target}", f"data.synthetic_seed={args.target_seed}",
                        f"model.pretrained={pre / 'last'}",
                        f"runtime.seed={seed}", *args.extra,
                    ])  # fmt: skip
                    done = finished(out, n_epochs)
                    assert done is not None, f"{out} did not finish"
                    drop_checkpoints(out)
                    print(
                        f"noise {100 * rate:g} % seed {seed} {row.name}: mAP {done['mAP']:.1f} "
                        f"({time.perf_counter() - t0:.0f} s)",
                        flush=True,
                    )
                q = last_quality(out)
                log = out / "stdout.log"
                logged = log.exists() and counts(rate, seed)["describe"] in log.read_text()
                runs.append({
                    "row": row.name, "noise": rate, "seed": seed,
                    "realised_noise": q.get("label_noise"), "noise_counts": counts(rate, seed),
                    "noise_logged": logged,
                    "pairwise_precision": q.get("pairwise_precision"),
                    "pairwise_recall": q.get("pairwise_recall"), **done,
                })  # fmt: skip
    return runs, counts


def _cell(runs: list[dict], key: str = "mAP") -> str:
    """mean ± std over seeds (one seed: its value alone)."""
    return mean_std([r[key] for r in runs]) if runs else "–"


def _pairs(a: list[dict], b: list[dict], key: str) -> dict[int, tuple[float, float]]:
    """seed -> (a, b) values, for the seeds both have."""
    base = {r["seed"]: r[key] for r in b}
    return {r["seed"]: (r[key], base[r["seed"]]) for r in a if r["seed"] in base}


def _delta(a: list[dict], b: list[dict], key: str = "mAP") -> str:
    """Paired (by seed) mean of a − b with its 95 % t interval."""
    pairs = list(_pairs(a, b, key).values())
    if not pairs:
        return "–"
    d, lo, hi = paired_ci([x for x, _ in pairs], [y for _, y in pairs])
    return f"{d:+.1f} ({lo:+.1f}, {hi:+.1f})" if len(pairs) > 1 else f"{d:+.1f}"


def _relative(a: list[dict], b: list[dict], key: str = "mAP") -> str:
    """Paired (by seed) mean of (a − b) / b in %, with its 95 % t interval (undefined when a
    seed's b is 0)."""
    pairs = _pairs(a, b, key).values()
    if any(y == 0 for _, y in pairs):
        return "undefined (a seed has 0 at the lowest noise)"
    rel = [100 * (x - y) / y for x, y in pairs]
    if not rel:
        return "–"
    d, lo, hi = paired_ci(rel, [0.0] * len(rel))
    return f"{d:+.0f} % ({lo:+.0f}, {hi:+.0f})" if len(rel) > 1 else f"{d:+.0f} %"


def _gap_changes(
    a_lo: list[dict], b_lo: list[dict], a_hi: list[dict], b_hi: list[dict], key: str = "mAP"
) -> dict[int, float]:
    """seed -> (a − b at the highest noise) − (a − b at the lowest), for the seeds that have all
    four runs: how much of its gap to CE a refinement closes as the noise rises."""
    lo = {seed: x - y for seed, (x, y) in _pairs(a_lo, b_lo, key).items()}
    hi = {seed: x - y for seed, (x, y) in _pairs(a_hi, b_hi, key).items()}
    return {seed: hi[seed] - lo[seed] for seed in sorted(lo.keys() & hi.keys())}


def _gap_change(
    a_lo: list[dict], b_lo: list[dict], a_hi: list[dict], b_hi: list[dict], key: str = "mAP"
) -> str:
    """Paired (by seed) mean of :func:`_gap_changes` with its 95 % t interval (> 0: the
    refinement is more robust than CE on its model)."""
    change = list(_gap_changes(a_lo, b_lo, a_hi, b_hi, key).values())
    if not change:
        return "–"
    d, low, high = paired_ci(change, [0.0] * len(change))
    return f"{d:+.1f} ({low:+.1f}, {high:+.1f})" if len(change) > 1 else f"{d:+.1f}"


def tables(
    runs: list[dict], rows: list[str], noise: list[float], realised: dict[float, list[dict]]
) -> str:
    """mAP and Rank-1 per row and noise, the paired differences to CE, the drop with noise, and
    the realised noise (``realised``: per rate, the ``noisy_labels`` counts of every seed,
    whether or not its runs have finished)."""
    cell = {
        (r, n): [x for x in runs if x["row"] == r and x["noise"] == n] for r in rows for n in noise
    }
    heads = " | ".join(f"{100 * n:g} %" for n in noise)
    lo, hi = min(noise), max(noise)
    rule = "|---" * (len(noise) + 1) + "|"
    out = [
        "mAP % (mean ± std over seeds; a bare value: one seed so far):",
        "",
        f"| row | {heads} |",
        rule,
    ]
    out += [f"| {r} | " + " | ".join(_cell(cell[r, n]) for n in noise) + " |" for r in rows]
    out += ["", "Rank-1 %:", "", f"| row | {heads} |", rule]
    out += [
        f"| {r} | " + " | ".join(_cell(cell[r, n], "rank1") for n in noise) + " |" for r in rows
    ]
    compared = [r for r in rows if REFERENCE.get(r) in rows]
    if compared:
        out += [
            "",
            "Δ mAP vs plain CE on the same model, at the same noise (paired by seed, 95 % t CI):",
            "",
        ]
        closed = f" gap closed, {100 * lo:g} → {100 * hi:g} % |" if len(noise) > 1 else ""
        out += [f"| row | vs | {heads} |{closed}", "|---" + rule + ("---|" if closed else "")]
        for r in compared:
            ref = REFERENCE[r]
            line = f"| {r} | {ref} | " + " | ".join(_delta(cell[r, n], cell[ref, n]) for n in noise)
            if closed:
                line += " | " + _gap_change(cell[r, lo], cell[ref, lo], cell[r, hi], cell[ref, hi])
            out.append(line + " |")
        if closed:
            out += [
                "",
                f"Gap closed: the row's Δ at {100 * hi:g} % minus its Δ at {100 * lo:g} %, per "
                "seed (> 0: the refinement loses less to the noise than CE on its model; the "
                "direct test of robustness). Per seed:",
                "",
            ]
            for r in compared:
                ref = REFERENCE[r]
                per_seed = _gap_changes(cell[r, lo], cell[ref, lo], cell[r, hi], cell[ref, hi])
                shown = ", ".join(f"seed {seed} {v:+.1f}" for seed, v in per_seed.items())
                out.append(f"* {r}: {shown or '–'}")
    if len(noise) > 1:
        out += [
            "",
            f"mAP change from {100 * lo:g} % to {100 * hi:g} % noise (paired by seed, 95 % t CI;"
            " the smaller the loss, the more robust; relative: as a share of the row's own mAP"
            " at the lowest noise, which discounts a lower start):",
            "",
            "| row | Δ mAP | relative |",
            "|---|---|---|",
        ]
        out += [
            f"| {r} | {_delta(cell[r, hi], cell[r, lo])} | {_relative(cell[r, hi], cell[r, lo])} |"
            for r in rows
        ]
    out += [
        "",
        "Realised noise (fraction of the training images corrupted; the same for every row of a "
        "seed):",
        "",
        "| requested | realised, mean (min–max over seeds) | merged / split / outliers (images) "
        "| look-alike merges / merges (pairs) | identities split |",
        "|---|---|---|---|---|",
    ]
    for n in noise:
        counts = realised[n]
        real = [c["rate"] for c in counts]
        shown = (
            f"{100 * statistics.fmean(real):.1f} % ({100 * min(real):.1f}–{100 * max(real):.1f})"
            if real
            else "–"
        )

        def mean(*keys: str, counts: list[dict] = counts) -> str:
            if not counts:
                return "–"
            return " / ".join(f"{statistics.fmean(c[k] for c in counts):.0f}" for k in keys)

        out.append(
            f"| {100 * n:g} % | {shown} | {mean('merged', 'split', 'outliers')} "
            f"| {mean('lookalike_merges', 'merges')} | {mean('splits')} |"
        )
    return "\n".join(out)


def recorded_counts(
    runs: list[dict], noise: list[float], seeds: list[int]
) -> dict[float, list[dict]]:
    """Per rate, the ``noisy_labels`` counts the records hold for each seed (one record per
    (rate, seed): every row of a seed shares them), for tables built from records."""
    first = {(r["noise"], r["seed"]): r["noise_counts"] for r in reversed(runs)}
    return {n: [first[n, s] for s in seeds if (n, s) in first] for n in noise}


def against_lines(runs: list[dict], other: list[dict], rows: list[str]) -> list[str]:
    """For each row that both ``runs`` and the records ``other`` (another sweep of the same
    noise and seeds, e.g. the main table's) hold: this sweep's mAP minus the other's per noise
    and seed, and their range; how far a re-run of a row reproduces its earlier records."""
    theirs = {(r["row"], r["noise"], r["seed"]): r["mAP"] for r in other}
    lines = []
    for row in rows:
        diffs = {
            (r["noise"], r["seed"]): r["mAP"] - theirs[row, r["noise"], r["seed"]]
            for r in runs
            if r["row"] == row and (row, r["noise"], r["seed"]) in theirs
        }
        if diffs:
            shown = ", ".join(
                f"{100 * n:g} % seed {s} {d:+.2f}" for (n, s), d in sorted(diffs.items())
            )
            lines.append(
                f"* {row}: {min(diffs.values()):+.2f} to {max(diffs.values()):+.2f} mAP over "
                f"{len(diffs)} runs ({shown})"
            )
    return lines


def check_shared_noise(runs: list[dict]) -> list[str]:
    """Every run of a (noise, seed) trained on the noisy labels ``noisy_labels`` gives for it
    (so the rows of a seed share them)."""
    problems = []
    for r in runs:
        value, expected = r["realised_noise"], r["noise_counts"]["rate"]
        where = f"{r['row']} noise {r['noise']:g} seed {r['seed']}"
        if value is None:
            problems.append(f"{where}: its history records no label_noise")
        elif not math.isclose(value, expected, abs_tol=1e-9):
            problems.append(f"{where}: realised noise {value:.4f}, expected {expected:.4f}")
        elif not r.get("noise_logged", True):
            problems.append(
                f"{where}: its stdout.log lacks the counts noisy_labels gives now "
                f"({r['noise_counts'].get('describe')}): a run of an older label_noise; "
                "use a new --workdir"
            )
    return problems


def plot(runs: list[dict], rows: list[str], noise: list[float], path: Path) -> bool:
    """mAP against the requested noise, one line per row, error bars = std over seeds."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print(
            f"no plot: matplotlib is not installed (pip install matplotlib), {path} not written",
            file=sys.stderr,
        )
        return False
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, row in enumerate(rows):
        xs, ys, errs = [], [], []
        for n in noise:
            maps = [r["mAP"] for r in runs if r["row"] == row and r["noise"] == n]
            if maps:
                xs.append(100 * n + (i - (len(rows) - 1) / 2) * 0.4)  # dodge the error bars
                ys.append(statistics.fmean(maps))
                errs.append(statistics.stdev(maps) if len(maps) > 1 else 0.0)
        if xs:
            ax.errorbar(
                xs, ys, yerr=errs, marker="os^Dvx"[i % 6], capsize=3, label=row,
                linestyle="--" if row.startswith("CE") else "-",
            )  # fmt: skip
    ax.set_xticks([100 * n for n in noise])
    ax.set_xlabel("label noise (% of training images corrupted)")
    ax.set_ylabel("mAP % (mean ± std over seeds)")
    ax.set_title("Synthetic target: mAP under controlled label noise")
    ax.grid(alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")
    return True


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"a noise rate must be in [0, 1), got {text}")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target-seed", type=int, default=0)
    parser.add_argument("--source-seed", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--noise", type=_rate, nargs="+", default=[0.0, 0.2, 0.4], help="label noise rates"
    )
    add_rows_argument(parser, ROWS)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "label_noise")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    parser.add_argument("--no-write", dest="write", action="store_false")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "label_noise.png")
    parser.add_argument("--no-plot", dest="draw", action="store_false")
    parser.add_argument(
        "--source-model",
        type=Path,
        help="a finished source run to start from (e.g. runs/ablation/t0_s100/source_model) "
        "instead of training one in --workdir",
    )
    parser.add_argument(
        "--only-finished",
        action="store_true",
        help="train nothing: tabulate the runs finished so far (a partial table while the "
        "sweep goes on)",
    )
    add_from_json_argument(parser, "row, noise and seed")
    parser.add_argument(
        "--part",
        metavar="TEXT",
        help="a table of its own (its own section of docs/benchmarks.md, named after TEXT, and "
        "TEXT in its heading): for rows run apart from the main table, e.g. a later row with "
        "its own CE re-run",
    )
    parser.add_argument(
        "--against",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="record files of another sweep of the same noise and seeds: for each row both "
        "hold, the mAP differences (this − that) per run, printed and in the section",
    )
    add_extra_argument(parser)
    args = parser.parse_args()
    rows = [r.name for r in chosen_rows(parser, args.rows, ROWS)]
    noise = sorted(set(args.noise))
    args.noise = noise

    start = time.perf_counter()
    if args.from_json:
        runs = [
            r for r in read_runs(args.from_json)
            if r["row"] in rows and r["noise"] in noise and r["seed"] in args.seeds
        ]  # fmt: skip
        realised = recorded_counts(runs, noise, args.seeds)
    else:
        runs, counts = run_all(args, [r for r in ROWS if r.name in rows])
        realised = {n: [counts(n, s) for s in args.seeds] for n in noise}
    problems = check_shared_noise(runs)
    for p in problems:
        print(f"ERROR: {p}", file=sys.stderr)
    if problems:  # never a table of runs that did not train on the labels it claims
        args.write = args.draw = False
        print(
            "docs/ not written: the runs above did not train on their noisy labels", file=sys.stderr
        )
    if args.json:
        write_runs(args.json, runs, merge=bool(args.from_json))
    table = tables(runs, rows, noise, realised)
    if args.against:
        differences = against_lines(runs, read_runs(args.against), rows)
        files = " ".join(shown(p) for p in args.against)
        table += (
            f"\n\nmAP of these runs minus the records of `{files}` (the same noise and seed):"
            "\n\n" + ("\n".join(differences) or "no row in both")
        )
    print(table)
    drawn = plot(runs, rows, noise, args.plot) if args.draw else False
    figure = ""
    docs = ROOT / "docs"
    if drawn and args.plot.resolve().parent == docs:
        figure = f"\n![mAP against label noise]({args.plot.name})\n"
    compute = sum(r["compute_s"] for r in runs)
    median_run = statistics.median(r["compute_s"] for r in runs) if runs else 0.0
    pair = f"target seed {args.target_seed}, source seed {args.source_seed}"
    extra = f" Extra overrides: `{' '.join(args.extra)}`." if args.extra else ""
    wanted = len(args.seeds) * len(noise) * len(rows)
    partial = (
        f"\n\n**Partial sweep**: {len(runs)} of its {wanted} runs, the seeds finished so far; "
        "the sweep goes on and rewrites this section."
        if len(runs) < wanted
        else ""
    )
    took = (time.perf_counter() - start) / 60
    command, invocation, where = provenance_lines("label_noise", args.from_json, runs, took)
    if args.part:
        chosen = " ".join(f'"{r}"' if " " in r else r for r in rows)
        command += f' --rows {chosen} --part "{args.part}" --plot {shown(args.plot)}'
    if args.against:
        command += " --against " + " ".join(shown(p) for p in args.against)
    part = f": {args.part}" if args.part else ""
    only = f" This table: {', '.join(rows)}." if len(rows) < len(ROWS) else ""
    body = f"""## Label refinement under controlled label noise ({pair}){part}

The claim under test: label refinement (PPLR's AALS + PGLR, DCLS's dynamic smoothing) makes
training robust to noisy labels. Each row trains from the supervised source model on the
target's *true* identities with a fraction of the training images corrupted, once per run, the
way clustering corrupts them (`cluster.labels: noisy_ground_truth`, `reid_train.label_noise`),
aimed at a third each: false merges of look-alikes (same family; never random pairs), false
splits of an identity's smallest camera, outliers (dropped); when the look-alike pairs run out,
the splits take over (the last table gives the realised mix). Seed i is the run seed and the
noise seed, so the rows of a seed share their noisy labels and the differences are paired (95 %
t interval). Rows: CE and constant LS (ε 0.1) on `{BASELINE}`; PPLR (AALS + PGLR) and CE (part
model: no AALS, PGLR or part smoothing) on `{PPLR}`; DCLS (full) and CE (DCLS model: no local
or global smoothing) on `{DCLS}`; Cluster Contrast on `{CLUSTER_CONTRAST}`. Each refinement
is compared with plain CE on its own model (Cluster Contrast with CE: the same backbone, a
classifier in place of the memory); one evaluation after the last epoch.{only} Seeds
{", ".join(map(str, args.seeds))}.{extra} Regenerate with `{command}`; the runs took
{compute / 60:.0f} min of compute (wall time of their epochs, including any other load on the
machine; median run {median_run:.0f} s; {invocation}).
{where}{partial}
{figure}
{table}
"""
    if args.write:
        name = SECTION + (f"-{slug(args.part)}" if args.part else "")
        if (args.target_seed, args.source_seed) != (0, 100):
            name += f"-t{args.target_seed}-s{args.source_seed}"
        write_section(name, body)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
