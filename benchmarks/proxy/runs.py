"""Training runs of the proxy and their records (a library module of :mod:`benchmarks.proxy`,
not a command): one ``python -m reid_train`` process per run, the reuse of finished runs, the
proxy's datasets and source model, and the ``--json`` record files.

Each run lives in its own folder; a finished run is reused, an unfinished one is redone, and a
finished run of another schedule (or a dataset folder of other generator options) stops the
sweep rather than being mixed into it. A record file is ``{"runs": [run, ...]}``; a run is keyed
by (probe if present, trainer, row, seed) (:func:`run_key`), and :func:`write_runs` merges new
runs into an existing file, so records accumulate over sessions.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from benchmarks.common import ROOT, commit, machine, read_jsonl, shown
from benchmarks.proxy.rows import BASELINE, SOURCE_CONFIG

#: What every run adds to its config: one evaluation, after the last epoch, and nothing else.
BUDGET = [
    "runtime.eval_every=0",
    "runtime.save_every=0",
    "runtime.plots=false",
    "runtime.tensorboard=false",
]
#: Written into a run folder by the code that trained it: its git commit (:func:`trained_by`).
COMMIT_FILE = "commit.txt"


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def reid_train(config: str, out: Path, overrides: list[str]) -> None:
    """One training run in a fresh process; raises with its output tail when it fails. The run
    folder records the commit of the code that trained it (:func:`trained_by`)."""
    code = commit(dirty=True)
    cmd = [sys.executable, "-m", "reid_train", "--config", config, "--output-dir", str(out)]
    cmd.append("--overwrite")  # an unfinished run of an interrupted sweep is redone
    proc = subprocess.run(cmd + overrides, cwd=ROOT, capture_output=True, text=True, check=False)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stdout.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd + overrides)} failed:\n{proc.stderr[-3000:]}")
    record_commit(out, code)


def record_commit(out: Path, code: str | None) -> None:
    """Note in the run folder ``out`` the commit ``code`` of the code that trained it (nothing
    when it is unknown)."""
    (out / COMMIT_FILE).unlink(missing_ok=True)
    if code:
        (out / COMMIT_FILE).write_text(code + "\n")


def trained_by(out: Path) -> str | None:
    """The commit of the code that trained the run in ``out``; None when it is unknown (a run of
    a version that did not note it)."""
    try:
        return (out / COMMIT_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def finished(out: Path, epochs: int, optim: dict | None = None) -> dict | None:
    """The run's record for --json, or None if it did not finish; its ``commit``: the code that
    trained it (:func:`trained_by`, None when unknown).

    ``optim``: the schedule the run must have used (the config's ``optim`` section); a finished
    run with another one belongs to another regime and stops the sweep rather than being reused.
    """
    if optim is not None and (out / "config.yaml").exists():
        import yaml

        used = (yaml.safe_load((out / "config.yaml").read_text()) or {}).get("optim", {})
        differs = {k: (used.get(k), v) for k, v in optim.items() if used.get(k) != v}
        if differs:
            raise SystemExit(
                f"{out} was trained with another schedule (optim {differs}, as (run, config)): "
                "it belongs to another regime; use a new --workdir (or remove that run)"
            )
    try:
        metrics, history = read_jsonl(out / "metrics.jsonl"), read_jsonl(out / "history.jsonl")
    except FileNotFoundError:
        return None
    last = [m for m in metrics if m["epoch"] == epochs - 1]
    if not last or len(history) < epochs:
        return None
    epochs_out = []
    for h in history:
        q = h.get("quality", {})
        epochs_out.append({
            "epoch": h["epoch"], "clusters": h["clusters"],
            "true_identities": q.get("true_identities"), "pairwise_f1": q.get("pairwise_f1"),
            "pairwise_precision": q.get("pairwise_precision"), "nmi": q.get("nmi"),
            "agreement": h.get("agreement") or [], "beta": h.get("beta") or [],
            "losses": h.get("losses", {}),
        })  # fmt: skip
    compute = sum(sum(h["times"].values()) for h in history)
    return {
        "mAP": 100 * last[-1]["mAP"], "rank1": 100 * last[-1]["rank1"], "epochs": epochs_out,
        "compute_s": compute, "commit": trained_by(out),
    }  # fmt: skip


def epochs_of(config: str, overrides: list[str] | tuple[str, ...] = ()) -> int:
    """``optim.epochs`` of a config (with ``overrides``)."""
    from reid_train.config import load_config

    return load_config(ROOT / config, overrides).optim.epochs


def optim_of(config: str, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """The ``optim`` section of a config (with ``overrides``), as its run's ``config.yaml``
    records it."""
    from dataclasses import asdict

    from reid_train.config import load_config

    optim = load_config(ROOT / config, overrides).optim
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(optim).items()}


def make_data(
    path: Path, seed: int, source: bool, overrides: list[str] | tuple[str, ...] = ()
) -> Path:
    """The target (or source) dataset of the proxy: ``seed`` and the generator options of the
    target configs (the generator's defaults) or of the source config, with ``overrides`` (the
    ``--extra`` ones: ``data.synthetic_options.*`` reach the runs too); an existing folder must
    hold exactly that dataset."""
    from reid_eval.datasets import make_synthetic_dataset, synthetic_mismatch
    from reid_train.config import load_config

    config = load_config(ROOT / (SOURCE_CONFIG if source else BASELINE), overrides)
    wanted = _synthetic_config(config.data.synthetic_options)
    if not (path / "synthetic.json").exists():
        make_synthetic_dataset(path, seed=seed, config=wanted)
    differs = synthetic_mismatch(path, seed, wanted)
    if differs is not None:
        raise SystemExit(
            f"{path} holds another synthetic dataset ({differs}): its runs belong to another "
            "regime; use a new --workdir (or remove that folder)"
        )
    return path


def drop_checkpoints(out: Path) -> None:
    """A finished row run keeps its records and ``last`` checkpoint only (the sweep's disk)."""
    for name in ("best", "state"):
        shutil.rmtree(out / name, ignore_errors=True)


def _synthetic_config(options: dict):  # noqa: ANN202
    from reid_eval.datasets import SyntheticConfig

    return SyntheticConfig(**options)


def source_model(
    work: Path, source_seed: int, extra: list[str], only_finished: bool, given: Path | None = None
) -> Path:
    """The supervised source run of ``work`` (the stand-in for ImageNet weights), trained on
    the source dataset of ``source_seed`` unless finished; or ``given``, a finished source run of
    the same schedule. ``extra``: the ``--extra`` overrides, which reach the source run too."""
    schedule = (epochs_of(SOURCE_CONFIG, extra), optim_of(SOURCE_CONFIG, extra))
    if given is not None:
        if finished(given, *schedule) is None:
            raise SystemExit(f"--source-model {given} is not a finished source run")
        return given
    source = make_data(work / "data_source", source_seed, source=True, overrides=extra)
    pre = work / "source_model"
    if finished(pre, *schedule) is None:
        if only_finished:
            raise SystemExit(f"--only-finished: no finished source model in {pre}")
        print(f"supervised source model on {source} (seed {source_seed})", flush=True)
        reid_train(SOURCE_CONFIG, pre, [
            *BUDGET, f"data.data_root={source}", f"data.synthetic_seed={source_seed}", *extra,
        ])  # fmt: skip
    return pre


def add_extra_argument(parser: argparse.ArgumentParser) -> None:
    """``--extra KEY=VALUE ...``, the option the ablation and the label-noise modules share."""
    parser.add_argument(
        "--extra",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="overrides added to every run, the source run and the generated datasets too "
        "(a smoke test: optim.epochs=1 optim.iters=2 data.batch_size=8 "
        "data.synthetic_options.num_train_ids=16 ...); use another --workdir",
    )


def add_from_json_argument(parser: argparse.ArgumentParser, key: str) -> None:
    """``--from-json FILE ...``, the option the ablation and label-noise modules share; ``key``:
    what makes a run one run there (a later file's run replaces an earlier one with it)."""
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="train nothing: the tables from these record files (merged in order; a later run "
        f"replaces an earlier one of the same {key}), no run folder needed",
    )


def provenance_lines(
    module: str, from_json: list[Path] | None, runs: list[dict], minutes: float
) -> tuple[str, str, str]:
    """For a section of docs/benchmarks.md: the command that regenerates it (``python -m
    benchmarks.proxy.<module>``, with ``--from-json`` when the table came from record files),
    what this invocation did, and where the runs ran (from records: by commit)."""
    command = f"python -m benchmarks.proxy.{module}"
    if not from_json:
        invocation = f"this invocation ran {minutes:.0f} min, reusing every run already finished"
        return command, invocation, f"Machine: {machine()}."
    command += " --from-json " + " ".join(shown(p) for p in from_json)
    where = (
        f"Code that trained the runs, by commit: {provenance(runs)}. Machine: the runs'; "
        f"rendered on {machine()}."
    )
    return command, "this table was built from the records, training nothing", where


# --------------------------------------------------------------------------------------------
# Record files
# --------------------------------------------------------------------------------------------


def run_key(run: dict) -> tuple:
    """What makes a run one run in a record file: (probe if present, trainer, row, noise if
    present, seed)."""
    return run.get("probe"), run.get("trainer"), run["row"], run.get("noise"), run["seed"]


def merge_runs(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` with each run replaced by the run of ``new`` with its key (in place), then the
    runs of ``new`` with a new key (in order)."""
    merged = {run_key(r): r for r in old}
    merged.update((run_key(r), r) for r in new)
    return list(merged.values())


def read_runs(paths: list[Path]) -> list[dict]:
    """The runs of one or more record files, merged in order (a later file's run replaces an
    earlier one with the same key)."""
    runs: list[dict] = []
    for path in paths:
        try:
            records = json.loads(Path(path).read_text())["runs"]
        except FileNotFoundError:
            raise SystemExit(f"{path}: no such record file") from None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise SystemExit(
                f"{path}: not a record file of the evidence modules (JSON with a 'runs' list, "
                f"as --json writes): {type(e).__name__}: {e}"
            ) from None
        runs = merge_runs(runs, records)
    return runs


def provenance(runs: list[dict]) -> str:
    """Which code trained the runs: each commit with its number of runs (``unknown``: records
    without one)."""
    counts = Counter(r.get("commit") or "unknown" for r in runs)
    return ", ".join(f"{c} ({n} run{'s' if n > 1 else ''})" for c, n in counts.items()) or "–"


def write_runs(path: Path, runs: list[dict], *, merge: bool = True) -> list[dict]:
    """Write ``runs`` to the record file ``path``; with ``merge``, into the runs it already
    holds (:func:`merge_runs`). Returns what the file now holds."""
    if merge and path.exists():
        runs = merge_runs(read_runs([path]), runs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    print(f"wrote {path}")
    return runs
