"""The official PPLR trainer on the proxy's data, side by side with ours, paired by seed.

The official trainer is ``examples/train_pplr.py`` of yoonkicho/PPLR, from a checkout the user
gives (``--official-repo``; this repository never contains or downloads its code). It runs with
its method code unmodified, on a CPU, through the shims of ``benchmarks.proxy.official_shims``
(``.cuda()`` a no-op, a torch stand-in for faiss's flat L2 index, a ResNet-18 backbone with the
source model's weights, the proxy's pad, interpolation and camera debiasing). Both trainers read
the same config and workdir as ``benchmarks.proxy.ablation``: the target and source
datasets, the supervised source model, the schedule (``optim``), the input size and batch
layout (``data``), the clustering (``cluster.eps``, ``k1``; ``k2`` and ``min_samples`` are fixed
in the official code at the proxy's 6 and 4) and the method settings (``method.agreement_k``,
``beta``, ``aals_epoch``, ``model.num_parts``) come from ``configs/synthetic_pplr.yaml`` with
``--extra``.

Rows, the same settings on both sides:

* ``baseline (part model)``: official β = 1 with ``aals_epoch`` past the last epoch (global CE,
  parts CE with smoothing 0.1); ours ``use_pglr=false use_aals=false part_epsilon=0.1``;
* ``PPLR: AALS only``: official β = 1; ours ``use_pglr=false``;
* ``PPLR: PGLR only``: official ``aals_epoch`` past the last epoch; ours ``use_aals=false``;
* ``PPLR: AALS + PGLR``: the config as it is on both sides.

Seed i is the official ``--seed i`` and our ``runtime.seed=i``; the pairing is by seed (the two
trainers draw different random streams). Each run is one process with its own folder under
``--workdir/t{TARGET}_s{SOURCE}/`` (``official/<row>/seed<i>``, ours ``<row>/seed<i>`` where
the row equals an ablation row, otherwise ``matched/<row>/seed<i>``); finished runs are reused.
From the repository root:

    python -m benchmarks.proxy.official_pplr --official-repo ~/src/PPLR --seeds 1 2 3 \\
        --json benchmarks/results/official_pplr_t0_s100.json
    python -m benchmarks.proxy.official_pplr --official-repo ~/src/PPLR --official-only \\
        --rows "baseline (part model)" "PPLR: AALS only" "PPLR: AALS + PGLR" --seeds 1 \\
        --workdir runs/probe_ipc --target-extra \\
        "data.synthetic_options.images_per_camera=[6, 10]" \\
        --source-model runs/ablation/t0_s100/source_model

``--extra`` reaches every run, the source run and both datasets, as in the ablation;
``--target-extra`` only the target runs and the target dataset (a probe that changes the target
keeps the source model, which ``--source-model`` may then take from another workdir);
``--source-extra`` only the source run and the source dataset (a weaker or stronger start).

``--json OUT`` writes the ablation's schema with a ``trainer`` field (``official`` / ``ours``)
and a ``commit`` field (the git commit of the code that trained the run, noted in its folder
when it trained; null when unknown). It merges into ``OUT`` when that file exists: a run of this
invocation replaces the record of the same (trainer, row, seed), the other records stay, so the
record file accumulates the runs of every session. ``--from-json FILE [FILE ...]`` trains
nothing and needs neither run folders nor ``--official-repo``: the table (and, unless
``--no-write``, the docs section) comes from the records alone (merged in order; records of the
regime search, those with a ``probe``, are left out)::

    python -m benchmarks.proxy.official_pplr --from-json \\
        benchmarks/results/official_pplr_t0_s100.json

For each row it prints both trainers' mAP (mean ± std), ours − official (95 % t interval over
the paired seeds) and whether they agree (within 2 mAP, or the interval holds 0); and for each
trainer PPLR's Table 1 ordering: AALS only − baseline and AALS + PGLR − AALS only, paired.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, commit, machine, read_jsonl, shown, write_section
from benchmarks.proxy.rows import ABLATION_ROWS, PPLR, add_rows_argument, chosen_rows, slug
from benchmarks.proxy.runs import (
    BUDGET,
    drop_checkpoints,
    epochs_of,
    finished,
    make_data,
    optim_of,
    provenance,
    read_runs,
    record_commit,
    reid_train,
    source_model,
    trained_by,
    write_runs,
)
from benchmarks.proxy.stats import mean_std, paired_ci

#: Ours within this many mAP of the official's mean counts as agreeing (or the CI holds 0).
AGREE_MAP = 2.0


@dataclass(frozen=True)
class SideRow:
    name: str
    ours: tuple[str, ...]  # overrides of configs/synthetic_pplr.yaml
    pglr: bool  # official β as configured (else 1)
    aals: bool  # official aals_epoch as configured (else past the last epoch)


SIDE_ROWS = [
    SideRow(
        "baseline (part model)",
        ("method.use_aals=false", "method.use_pglr=false", "method.part_epsilon=0.1"),
        pglr=False,
        aals=False,
    ),  # fmt: skip
    SideRow("PPLR: AALS only", ("method.use_pglr=false",), pglr=False, aals=True),
    SideRow("PPLR: PGLR only", ("method.use_aals=false",), pglr=True, aals=False),
    SideRow("PPLR: AALS + PGLR", (), pglr=True, aals=True),
]


def official_args(cfg, row: SideRow, seed: int, data_dir: Path, logs: Path) -> list[str]:  # noqa: ANN001
    """``train_pplr.py``'s command line for one row: everything from our config ``cfg``."""
    d, o, c, m = cfg.data, cfg.optim, cfg.cluster, cfg.method
    steps = list(o.milestones)
    step = steps[0] if steps else o.epochs
    if steps != list(range(step, o.epochs, step)) or o.gamma != 0.1:
        raise SystemExit(
            f"optim.milestones {steps} (gamma {o.gamma}) is not the official StepLR(step, 0.1): "
            "use milestones k, 2k, ... below the last epoch"
        )
    if o.optimizer != "adam" or (c.k2, c.min_samples) != (6, 4):
        raise SystemExit("the official trainer fixes Adam, k2 = 6 and min_samples = 4")
    return [
        "-d", "market1501", "--data-dir", str(data_dir), "--logs-dir", str(logs),
        "-b", str(d.batch_size), "-n", str(d.num_instances), "-j", "0",
        "--height", str(d.height), "--width", str(d.width), "--seed", str(seed),
        "--print-freq", str(o.iters), "--eval-step", str(o.epochs),
        "--part", str(cfg.model.num_parts), "--k", str(m.agreement_k),
        "--beta", str(m.beta if row.pglr else 1.0),
        "--aals-epoch", str(m.aals_epoch if row.aals else o.epochs),
        "--lr", str(o.lr), "--weight-decay", str(o.weight_decay), "--epochs", str(o.epochs),
        "--iters", str(o.iters), "--step-size", str(step), "--k1", str(c.k1), "--eps", str(c.eps),
    ]  # fmt: skip


def official_data(target: Path, work: Path) -> Path:
    """The official Market-1501 class reads ``root/Market-1501-v15.09.15``: a link to the
    target dataset (ours writes that layout)."""
    root = work / "official_data"
    link = root / "Market-1501-v15.09.15"
    if not link.exists():
        root.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target.resolve(), target_is_directory=True)
    return root


def _loss_line(log: str, epoch: int) -> dict[str, float]:
    """The epoch's mean losses: the official trainer's last line of the epoch (running means)."""
    import re

    lines = [ln for ln in log.splitlines() if ln.startswith(f"Epoch: [{epoch}]")]
    if not lines:
        return {}
    found = dict(re.findall(r"L_(GCE|PCE|TRI) [\d.]+ \(([\d.]+)\)", lines[-1]))
    names = {"GCE": "global_ce", "PCE": "part_ce", "TRI": "triplet"}
    return {names[k]: float(v) for k, v in found.items()}


def official_record(logs: Path, epochs: int) -> dict | None:
    """A finished official run's figures in the ablation's schema, or None."""
    try:
        evals = read_jsonl(logs / "evaluations.jsonl")
        clusterings = read_jsonl(logs / "clusterings.jsonl")
    except FileNotFoundError:
        return None
    if len(clusterings) < epochs or not evals or "rank1" not in evals[-1]:
        return None
    scores = np.load(logs / "scores.npy")  # [epochs, N, P], the official cross agreement
    labels = np.load(logs / "labels.npy")
    log = (logs / "log.txt").read_text()
    out = []
    for e, rec in enumerate(clusterings[:epochs]):
        clustered = labels[e] >= 0
        agreement = scores[e][clustered].mean(0).tolist() if clustered.any() else []
        out.append({**rec, "agreement": agreement, "beta": [], "losses": _loss_line(log, e)})
    return {
        "mAP": 100 * evals[-1]["mAP"], "rank1": 100 * evals[-1]["rank1"], "epochs": out,
        "compute_s": float((logs / "wall_s.txt").read_text()),
    }  # fmt: skip


def run_official(args, cfg, row: SideRow, seed: int, data_dir: Path, pre: Path, out: Path) -> dict:  # noqa: ANN001
    epochs = cfg.optim.epochs
    done = official_record(out, epochs)
    if done is not None or args.only_finished:
        return done if done is None else {**done, "commit": trained_by(out)}
    if out.exists():
        import shutil

        shutil.rmtree(out)  # an unfinished run is redone
    code = commit(dirty=True)
    cmd = [
        sys.executable, "-m", "benchmarks.proxy.official_shims",
        "--official-repo", str(args.official_repo),
        "--source-model", str(pre / "last"), "--backbone", cfg.model.backbone,
        "--pad", str(cfg.data.pad), "--interpolation", cfg.data.interpolation,
        *(["--camera-debias"] if cfg.cluster.camera_debias else []),
        "--", *official_args(cfg, row, seed, data_dir, out),
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stdout.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    (out / "wall_s.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    for name in ("best.pth", "last.pth"):
        (out / name).unlink(missing_ok=True)
    record_commit(out, code)
    done = official_record(out, epochs)
    assert done is not None, f"{out} did not finish"
    return {**done, "commit": trained_by(out)}


def ours_folder(work: Path, row: SideRow) -> Path:
    """An ablation row with exactly these settings shares its runs; otherwise ``matched/``."""
    for r in ABLATION_ROWS:
        if r.config == PPLR and sorted(r.overrides) == sorted(row.ours):
            return work / slug(r.name)
    return work / "matched" / slug(row.name)


def run_ours(args, row: SideRow, seed: int, target: Path, pre: Path, work: Path) -> dict | None:  # noqa: ANN001
    extra = [*args.extra, *args.target_extra]
    out = ours_folder(work, row) / f"seed{seed}"
    epochs = epochs_of(PPLR, extra)
    done = finished(out, epochs, optim_of(PPLR, extra))
    if done is not None or args.only_finished:
        return done
    reid_train(PPLR, out, [
        *BUDGET, *row.ours, f"data.data_root={target}", f"data.synthetic_seed={args.target_seed}",
        f"model.pretrained={pre / 'last'}", f"runtime.seed={seed}", *extra,
    ])  # fmt: skip
    drop_checkpoints(out)
    done = finished(out, epochs)
    assert done is not None, f"{out} did not finish"
    return done


def run_all(args, rows: list[SideRow]) -> list[dict]:  # noqa: ANN001
    from reid_train.config import load_config

    work = args.workdir / f"t{args.target_seed}_s{args.source_seed}"
    target_extra = [*args.extra, *args.target_extra]
    target = make_data(work / "data_target", args.target_seed, source=False, overrides=target_extra)
    source_extra = [*args.extra, *args.source_extra]
    pre = source_model(work, args.source_seed, source_extra, args.only_finished, args.source_model)
    cfg = load_config(ROOT / PPLR, target_extra)
    data_dir = official_data(target, work)
    runs = []
    for seed in args.seeds:
        for row in rows:
            for trainer in ("official", "ours"):
                if (trainer == "ours" and args.official_only) or (
                    trainer == "official" and args.ours_only
                ):
                    continue
                t0 = time.perf_counter()
                if trainer == "official":
                    out = work / "official" / slug(row.name) / f"seed{seed}"
                    done = run_official(args, cfg, row, seed, data_dir, pre, out)
                else:
                    done = run_ours(args, row, seed, target, pre, work)
                if done is None:
                    continue
                print(
                    f"{trainer} seed {seed} {row.name}: mAP {done['mAP']:.1f} "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
                runs.append({"row": row.name, "seed": seed, "trainer": trainer, **done})
    return runs


def _by(runs: list[dict], trainer: str, row: str) -> dict[int, float]:
    return {r["seed"]: r["mAP"] for r in runs if r["trainer"] == trainer and r["row"] == row}


def _ci_text(a: dict[int, float], b: dict[int, float]) -> tuple[str, tuple[float, float, float]]:
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return "–", (float("nan"),) * 3
    d, lo, hi = paired_ci([a[s] for s in seeds], [b[s] for s in seeds])
    text = f"{d:+.1f} ({lo:+.1f}, {hi:+.1f})" if len(seeds) > 1 else f"{d:+.1f}"
    return text, (d, lo, hi)


def side_by_side_table(runs: list[dict], rows: list[SideRow]) -> str:
    lines = [
        "| row | seeds | official mAP % | ours mAP % | ours − official (95 % CI) | agree |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        off, ours = _by(runs, "official", row.name), _by(runs, "ours", row.name)
        if not off and not ours:
            continue
        text, (d, lo, hi) = _ci_text(ours, off)
        paired = sorted(set(off) & set(ours))
        if not paired:
            agree = "–"
        else:
            close = abs(statistics.fmean(ours[s] for s in paired) - statistics.fmean(
                off[s] for s in paired)) <= AGREE_MAP  # fmt: skip
            holds_zero = len(paired) > 1 and lo <= 0.0 <= hi
            agree = "yes" if close or holds_zero else "NO"
        cell = lambda m: mean_std(list(m.values())) if m else "–"  # noqa: E731
        seeds = ", ".join(str(s) for s in sorted(set(off) | set(ours)))
        lines.append(f"| {row.name} | {seeds} | {cell(off)} | {cell(ours)} | {text} | {agree} |")
    return "\n".join(lines)


def ordering_lines(runs: list[dict]) -> list[str]:
    """PPLR's Table 1 ordering per trainer: AALS only > part baseline, AALS + PGLR > AALS only."""
    out = []
    for trainer in ("official", "ours"):
        base = _by(runs, trainer, "baseline (part model)")
        aals = _by(runs, trainer, "PPLR: AALS only")
        full = _by(runs, trainer, "PPLR: AALS + PGLR")
        if not (base and aals and full):
            continue
        t1, (_, lo1, _) = _ci_text(aals, base)
        t2, (_, lo2, _) = _ci_text(full, aals)
        t3, _ = _ci_text(full, base)
        shown = lo1 > 0 and lo2 > 0
        out.append(
            f"- {trainer}: AALS only − part baseline {t1}; AALS + PGLR − AALS only {t2}; "
            f"AALS + PGLR − part baseline {t3}: ordering "
            f"{'shown (both intervals above 0)' if shown else 'NOT shown'}"
        )
    return out


def from_records(paths: list[Path], rows: list[SideRow], seeds: list[int] | None) -> list[dict]:
    """The side-by-side runs of record files (merged in order): the ``rows`` and ``seeds`` asked
    for (every seed with None); records of the regime search (with a ``probe``) are left out."""
    names = {r.name for r in rows}
    return [
        r for r in read_runs(paths)
        if "probe" not in r and r["row"] in names and (seeds is None or r["seed"] in seeds)
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--official-repo", type=Path, help="a checkout of yoonkicho/PPLR (to train)"
    )
    parser.add_argument("--target-seed", type=int, default=0)
    parser.add_argument("--source-seed", type=int, default=100)
    parser.add_argument(
        "--seeds", type=int, nargs="+", help="default 1 2 3 (with --from-json: every seed)"
    )
    add_rows_argument(parser, SIDE_ROWS)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--source-model", type=Path, help="a finished source run to reuse")
    parser.add_argument("--official-only", action="store_true")
    parser.add_argument("--ours-only", action="store_true")
    parser.add_argument("--only-finished", action="store_true", help="train nothing")
    parser.add_argument("--json", type=Path, help="merge every run's figures into this record file")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="train nothing: the table from these record files only (no run folders needed)",
    )
    parser.add_argument("--no-write", dest="write", action="store_false")
    for flag, reaches in (
        ("--extra", "every run, the source run and both datasets"),
        ("--target-extra", "the target runs and the target dataset only"),
        ("--source-extra", "the source run and the source dataset only"),
    ):
        parser.add_argument(flag, nargs="+", default=[], metavar="KEY=VALUE", help=reaches)
    args = parser.parse_args(argv)
    rows = chosen_rows(parser, args.rows, SIDE_ROWS)

    if args.from_json:
        runs = from_records(args.from_json, rows, args.seeds)
        files = " ".join(shown(p) for p in args.from_json)
        command = f"python -m benchmarks.proxy.official_pplr --from-json {files}"
        where = (
            "Built from the records alone (the machine of the runs is not recorded); the code "
            f"that trained them, by commit: {provenance(runs)}."
        )
    else:
        if args.official_repo is None:
            parser.error("--official-repo is needed to train (or --from-json FILE)")
        if not (args.official_repo / "examples" / "train_pplr.py").is_file():
            parser.error(f"{args.official_repo} is not a checkout of yoonkicho/PPLR")
        args.seeds = args.seeds or [1, 2, 3]
        runs = run_all(args, rows)
        if args.json:
            write_runs(args.json, runs)
        flags = [("--extra", args.extra), ("--target-extra", args.target_extra),
                 ("--source-extra", args.source_extra)]  # fmt: skip
        extra = " ".join(f"{f} {' '.join(v)}" for f, v in flags if v)
        command = f"python -m benchmarks.proxy.official_pplr --official-repo PPLR {extra}"
        where = f"Machine: {machine()}."
    table = side_by_side_table(runs, rows)
    order = ordering_lines(runs)
    print(table)
    print("\n".join(order))
    pair = f"target seed {args.target_seed}, source seed {args.source_seed}"
    body = f"""## The official PPLR trainer side by side with ours ({pair})

`{command}`:
the official `examples/train_pplr.py` (method code unmodified, CPU shims of
`benchmarks/proxy/official_shims.py`) and ours, from the same source model, data, schedule and
settings; one evaluation after the last epoch; paired by seed. Runs took
{sum(r["compute_s"] for r in runs) / 60:.0f} min of compute (wall time, other load included).

{where}

{table}

PPLR's Table 1 ordering (paired differences, 95 % t interval):

{chr(10).join(order) or "(needs the three rows)"}
"""
    if args.write:
        write_section(f"official-pplr-t{args.target_seed}-s{args.source_seed}", body)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
