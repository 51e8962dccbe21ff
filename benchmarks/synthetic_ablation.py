"""The papers' ablations on the generated synthetic dataset, several seeds, one fixed budget.

Rows: baseline, + constant label smoothing, PPLR (AALS only, PGLR only, both), PPLR + camera
proxies, DCLS (LS'_l only, LS''_l only, LS_g only, full, non-cross guidance) and the DCLS local
branch with soft attention / CBAM / ECA / no attention. Every row trains the same number of
iterations from the same initialisation and is evaluated once, after its last epoch (no
test-set model selection). The table reports mean ± sample standard deviation over the seeds of
mAP and Rank-1, and the NMI of the last epoch's pseudo labels against the true identities.

The recipe (the demo's, see ``configs/synthetic_*.yaml``): ImageNet weights cannot be used
here, so a ResNet-18 is first trained *supervised* on a disjoint labelled source dataset
(``make-synthetic --seed 100``, ``configs/synthetic_source.yaml``) and every row and seed starts
from that backbone on the unlabelled target dataset (``--seed 0``): the closest stand-in for
"ImageNet-pretrained" on this machine. The seeds vary the unsupervised stage (sampling,
augmentation, head initialisation), not the source model.

Each run is a fresh ``python -m reid_train`` process with its own run folder under
``--workdir``; finished runs are reused, so an interrupted sweep continues where it stopped.
Run from the repository root:

    python benchmarks/synthetic_ablation.py                     # 3 seeds, all rows (~1 h, 2 CPUs)
    python benchmarks/synthetic_ablation.py --seeds 0 --rows baseline "PPLR: AALS + PGLR"
    python benchmarks/synthetic_ablation.py --no-write          # print only
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _report import machine, write_section  # noqa: E402

#: What every row adds to its configs/synthetic_*.yaml (which hold the budget: 64x32 images,
#: 6 epochs x 20 iterations, eps 0.4 with camera_debias): one evaluation, after the last epoch.
BUDGET = [
    "runtime.eval_every=0",
    "runtime.save_every=0",
    "runtime.plots=false",
    "runtime.tensorboard=false",
]
SOURCE_CONFIG = "configs/synthetic_source.yaml"
TARGET_SEED = 0
SOURCE_SEED = 100


@dataclass(frozen=True)
class Row:
    name: str
    config: str
    overrides: tuple[str, ...] = field(default=())


DCLS = "configs/synthetic_dcls.yaml"
PPLR = "configs/synthetic_pplr.yaml"
ROWS = [
    Row("baseline", "configs/synthetic_baseline.yaml", ("method.global_epsilon=0.0",)),
    Row(
        "baseline + constant LS", "configs/synthetic_baseline.yaml", ("method.global_epsilon=0.1",)
    ),  # fmt: skip
    Row("PPLR: AALS only", PPLR, ("method.use_pglr=false",)),
    Row("PPLR: PGLR only", PPLR, ("method.use_aals=false",)),
    Row("PPLR: AALS + PGLR", PPLR),
    Row("PPLR + camera", "configs/synthetic_pplr_cam.yaml"),
    Row(
        "DCLS: LS'_l only", DCLS, ("method.local_smoothing=initial", "method.global_smoothing=none")
    ),  # fmt: skip
    Row("DCLS: LS''_l only", DCLS, ("method.local_smoothing=dcls", "method.global_smoothing=none")),
    Row("DCLS: LS_g only", DCLS, ("method.local_smoothing=none", "method.global_smoothing=dcls")),
    Row("DCLS: full (soft attention)", DCLS),
    Row("DCLS: non-cross guidance", DCLS, ("method.guidance=non_cross",)),
    Row("DCLS: CBAM attention", DCLS, ("model.attention=cbam",)),
    Row("DCLS: ECA attention", DCLS, ("model.attention=eca",)),
    Row("DCLS: no attention", DCLS, ("model.attention=none",)),
]


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


def reid_train(config: str, out: Path, overrides: list[str]) -> None:
    """One training run in a fresh process; raises with its output tail when it fails."""
    cmd = [sys.executable, "-m", "reid_train", "--config", config, "--output-dir", str(out)]
    cmd.append("--overwrite")  # an unfinished run of an interrupted sweep is redone
    proc = subprocess.run(
        cmd + overrides, cwd=ROOT, capture_output=True, text=True, check=False
    )  # fmt: skip
    (out / "stdout.log").parent.mkdir(parents=True, exist_ok=True)
    (out / "stdout.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd + overrides)} failed:\n{proc.stderr[-3000:]}")


def finished(out: Path, epochs: int) -> dict | None:
    """The run's final evaluation and last epoch summary, or None if it did not finish."""
    try:
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    except FileNotFoundError:
        return None
    if not metrics or metrics[-1]["epoch"] != epochs - 1 or len(history) < epochs:
        return None
    return {"metrics": metrics[-1], "history": history[-1]}


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def make_data(root: Path, seed: int) -> Path:
    from reid_eval.datasets import make_synthetic_dataset

    path = root / f"data_seed{seed}"
    if not (path / "synthetic.json").exists():
        make_synthetic_dataset(path, seed=seed)
    return path


def epochs_of(config: str) -> int:
    from reid_train.config import load_config

    return load_config(ROOT / config).optim.epochs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rows", nargs="+", help="row names (default: all)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--no-write", dest="write", action="store_false")
    args = parser.parse_args()
    rows = ROWS if not args.rows else [r for r in ROWS if r.name in args.rows]
    unknown = set(args.rows or ()) - {r.name for r in ROWS}
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; choose from {[r.name for r in ROWS]}")

    start = time.perf_counter()
    target = make_data(args.workdir, TARGET_SEED)
    source = make_data(args.workdir, SOURCE_SEED)
    pre = args.workdir / "pretrain"
    if finished(pre, epochs_of(SOURCE_CONFIG)) is None:
        print(f"supervised pretraining on {source.name}", flush=True)
        reid_train(SOURCE_CONFIG, pre, [*BUDGET, f"data.data_root={source}"])
    results: dict[str, list[dict]] = {r.name: [] for r in rows}
    for seed in args.seeds:
        for row in rows:
            out = args.workdir / slug(row.name) / f"seed{seed}"
            overrides = [
                *BUDGET, *row.overrides, f"data.data_root={target}",
                f"model.pretrained={pre / 'last'}", f"runtime.seed={seed}",
                "runtime.eval_before_training=true",
            ]  # fmt: skip
            epochs = epochs_of(row.config)
            done = finished(out, epochs)
            if done is None:
                t0 = time.perf_counter()
                reid_train(row.config, out, overrides)
                done = finished(out, epochs)
                assert done is not None, f"{out} did not finish"
                print(f"seed {seed} {row.name}: mAP {100 * done['metrics']['mAP']:.1f} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
            first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
            done["initial_mAP"] = first["mAP"] if first["epoch"] == -1 else float("nan")
            done["initial_rank1"] = first["rank1"] if first["epoch"] == -1 else float("nan")
            results[row.name].append(done)

    def stat(values: list[float], digits: int = 1) -> str:
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{mean:.{digits}f} ± {std:.{digits}f}"

    def quality(d: dict, key: str) -> float:
        return float(d["history"].get("quality", {}).get(key, float("nan")))

    lines = [
        "| row | mAP % | Rank-1 % | pseudo-label NMI | ARI | pairwise precision | clusters |",
        "|---|---|---|---|---|---|---|",
    ]
    every = [d for runs in results.values() for d in runs]
    initial = [100 * d["initial_mAP"] for d in every]
    initial_r1 = [100 * d["initial_rank1"] for d in every]
    true_ids = sorted({int(quality(d, "true_identities")) for d in every})
    for row in rows:
        runs = results[row.name]
        lines.append(
            f"| {row.name} | {stat([100 * d['metrics']['mAP'] for d in runs])} "
            f"| {stat([100 * d['metrics']['rank1'] for d in runs])} "
            f"| {stat([quality(d, 'nmi') for d in runs], 3)} "
            f"| {stat([quality(d, 'ari') for d in runs], 3)} "
            f"| {stat([quality(d, 'pairwise_precision') for d in runs], 3)} "
            f"| {stat([float(d['history']['clusters']) for d in runs])} |"
        )
    table = "\n".join(lines)
    print(table)
    # Compute time of the runs themselves (their epochs' extract/cluster/train/eval times; not
    # process start-up), so that a regeneration from cached runs still says what the sweep costs.
    run_dirs = [pre, *(args.workdir / slug(r.name) / f"seed{s}" for r in rows for s in args.seeds)]
    compute = sum(sum(h["times"].values()) for out in run_dirs for h in _history(out))
    elapsed = time.perf_counter() - start
    body = f"""## Synthetic ablations (PPLR and DCLS components)

Every row: ResNet-18 at 64×32 initialised from one supervised model of a disjoint labelled
source dataset (`{SOURCE_CONFIG}`, source seed {SOURCE_SEED}), then the row's
`configs/synthetic_*.yaml` (6 epochs × 20 iterations, eps 0.4, camera-debiased clustering) on
the default synthetic dataset (seed {TARGET_SEED}) without its labels; evaluated once, after the
last epoch (no model selection on the test set). The seed is the unsupervised run's.
Mean ± standard deviation over seeds {", ".join(map(str, args.seeds))}. The initial model (the
source backbone with fresh heads, evaluated before training) scores {stat(initial)} mAP and
{stat(initial_r1)} Rank-1. NMI, ARI, pairwise precision and clusters are those of the last
epoch's pseudo labels against the {", ".join(map(str, true_ids))} true training identities.
Regenerate with `python benchmarks/synthetic_ablation.py` (finished runs are reused from
`runs/ablation`; the runs' epochs took {compute / 60:.0f} min of compute in all, this
invocation {elapsed / 60:.0f} min).

Machine: {machine()}.

{table}
"""
    if args.write:
        write_section("synthetic-ablation", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
