"""benchmarks.proxy.ablation and benchmarks.proxy.label_noise end to end, at toy sizes.

The real sweeps take hours; here each module runs as from the command line (``python -m``) on
tiny generated datasets (``--extra``: 16 training identities, one epoch of two iterations), so
that what the arithmetic tests cannot see is checked: the run folders (and the commit each
notes), the reuse of finished runs, the guard
against a finished run of another schedule, the ``--json`` records the issue fixed, the noise
bookkeeping and the plot. The figures themselves mean nothing at this size and are not checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import ROOT, commit
from benchmarks.proxy.runs import trained_by

TINY = [
    "optim.epochs=1",
    "optim.iters=2",
    "data.batch_size=8",  # 2 identities x 4: the few clusters of one epoch suffice
    "data.synthetic_options.num_train_ids=16",
    "data.synthetic_options.num_test_ids=8",
    "data.synthetic_options.num_distractors=10",
    "data.synthetic_options.num_junk=4",
]
EPOCH_KEYS = {"epoch", "clusters", "true_identities", "pairwise_f1", "pairwise_precision", "nmi"}

pytestmark = pytest.mark.slow


def _script(name: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.proxy.{name}", *args, "--no-write"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if ok:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def ablation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """One seed of ``supervised`` and ``baseline``: (workdir, --json report, stdout)."""
    work = tmp_path_factory.mktemp("ablation")
    report = work / "ablation.json"
    done = _script(
        "ablation", "--workdir", str(work), "--seeds", "1",
        "--rows", "supervised", "baseline", "--json", str(report), "--extra", *TINY,
    )  # fmt: skip
    return work, json.loads(report.read_text()), done.stdout


def test_ablation_json_has_the_issue_fields(ablation: tuple[Path, dict, str]) -> None:
    work, report, stdout = ablation
    runs = {r["row"]: r for r in report["runs"]}
    assert set(runs) == {"supervised", "baseline"}
    for run in runs.values():
        assert run["seed"] == 1 and 0 <= run["mAP"] <= 100 and 0 <= run["rank1"] <= 100
        [epoch] = run["epochs"]  # one entry per trained epoch
        assert EPOCH_KEYS <= set(epoch) and epoch["epoch"] == 0
        assert (work / "t0_s100" / run["row"] / "seed1" / "last").is_dir()
        assert not (work / "t0_s100" / run["row"] / "seed1" / "state").exists()  # dropped
        # the folder notes the commit of the code that trained it (when git knows it)
        noted = trained_by(work / "t0_s100" / run["row"] / "seed1")
        assert (noted is None) == (commit() is None)
        assert noted is None or noted.split(" + ")[0] == commit()
    # the supervised row trains on the true identities: perfect pseudo labels
    [epoch] = runs["supervised"]["epochs"]
    assert epoch["pairwise_f1"] == 1.0 and epoch["clusters"] == epoch["true_identities"] == 16
    # the regime's five properties are printed, pass or fail
    assert sum(line.startswith(("- PASS", "- FAIL")) for line in stdout.splitlines()) == 5


def test_ablation_reuses_finished_runs_and_refuses_another_schedule(
    ablation: tuple[Path, dict, str], tmp_path: Path
) -> None:
    work, report, _ = ablation
    again = tmp_path / "again.json"
    done = _script(
        "ablation", "--workdir", str(work), "--seeds", "1",
        "--rows", "supervised", "baseline", "--json", str(again), "--extra", *TINY,
    )  # fmt: skip
    assert "supervised source model" not in done.stdout
    assert not any(f"seed 1 {row}: mAP" in done.stdout for row in ("supervised", "baseline"))
    assert json.loads(again.read_text()) == report  # nothing was trained again
    other = [x if x != "optim.iters=2" else "optim.iters=3" for x in TINY]
    refused = _script(
        "ablation", "--workdir", str(work), "--seeds", "1", "--rows", "baseline",
        "--extra", *other, ok=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "another schedule" in refused.stderr and "new --workdir" in refused.stderr


def test_label_noise_end_to_end(ablation: tuple[Path, dict, str], tmp_path: Path) -> None:
    work, _, _ = ablation
    report, png = tmp_path / "noise.json", tmp_path / "noise.png"
    done = _script(
        "label_noise", "--workdir", str(tmp_path / "runs"), "--seeds", "1",
        "--noise", "0", "0.4", "--rows", "CE (part model)", "PPLR",
        "--source-model", str(work / "t0_s100" / "source_model"),
        "--json", str(report), "--plot", str(png), "--extra", *TINY,
    )  # fmt: skip
    runs = json.loads(report.read_text())["runs"]
    assert sorted((r["row"], r["noise"]) for r in runs) == [
        ("CE (part model)", 0.0), ("CE (part model)", 0.4), ("PPLR", 0.0), ("PPLR", 0.4)
    ]  # fmt: skip
    for r in runs:
        # every run trained on the noisy labels noisy_labels gives for its (rate, seed), and
        # the rows of a seed share them
        assert r["realised_noise"] == pytest.approx(r["noise_counts"]["rate"], abs=1e-9)
        assert r["noise_logged"] and len(r["epochs"]) == 1
    noisy = [r for r in runs if r["noise"] == 0.4]
    assert noisy[0]["noise_counts"] == noisy[1]["noise_counts"]
    counts = noisy[0]["noise_counts"]
    assert abs(counts["rate"] - 0.4) < 0.02 and counts["split"] + counts["outliers"] > 0
    assert all(r["realised_noise"] == 0 for r in runs if r["noise"] == 0.0)
    assert png.stat().st_size > 1000
    # PPLR against CE on its own model, paired by seed, at 0 and 40 % and the gap closed
    # between them (one seed: bare values, no interval)
    head = "| PPLR | CE (part model) |"
    [line] = [x for x in done.stdout.splitlines() if x.startswith(head)]
    cells = [float(c) for c in line.removeprefix(head).strip(" |").split("|")]
    assert len(cells) == 3 and cells[2] == pytest.approx(cells[1] - cells[0], abs=0.11)
