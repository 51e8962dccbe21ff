"""benchmarks.proxy.official_pplr and its child process benchmarks.proxy.official_shims.

The real official checkout (yoonkicho/PPLR) is not part of the repository: the end-to-end test
runs the module as from the command line (``python -m``) on a stand-in checkout written by
``official_standin.write_standin`` (same entry points, toy method) at toy sizes, and checks what
the script and the shims do: the run folders, the ``--json`` records in the ablation's schema,
the commit of the code that trained each run, the dropped checkpoints, the shims as the
stand-in saw them, the reuse of finished runs, the merge into an existing record file and the
table. The figures mean nothing at this size and are not checked. The fast tests check the
script's arithmetic and mappings on known answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.common import ROOT, commit
from benchmarks.proxy import official_pplr as official
from benchmarks.proxy import official_shims as shims
from benchmarks.proxy.runs import trained_by
from tests.integration.official_standin import write_standin

ROW = "PPLR: AALS + PGLR"
TINY = [
    "optim.epochs=2",
    "optim.iters=2",
    "optim.milestones=[1]",
    "data.batch_size=8",
    "data.synthetic_options.num_train_ids=24",
    "data.synthetic_options.num_test_ids=8",
]
EPOCH_KEYS = {"epoch", "clusters", "true_identities", "pairwise_f1", "agreement", "losses"}


# --- end to end, on the stand-in checkout ---------------------------------------------------


def _side_by_side(repo: Path, work: Path, report: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.proxy.official_pplr", "--official-repo", str(repo),
            "--workdir", str(work), "--seeds", "1", "--no-write", "--json", str(report),
            "--rows", ROW, "--extra", *TINY,
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, str]:
    """One seed of the full row, both trainers: (stand-in, workdir, --json report, stdout)."""
    tmp = tmp_path_factory.mktemp("official")
    repo = write_standin(tmp)
    work, report = tmp / "work", tmp / "out.json"
    done = _side_by_side(repo, work, report)
    return repo, work, json.loads(report.read_text()), done.stdout


@pytest.mark.slow
def test_side_by_side_records_both_trainers(side_by_side: tuple[Path, Path, dict, str]) -> None:
    _, work, report, stdout = side_by_side
    runs = {r["trainer"]: r for r in report["runs"]}
    assert sorted(runs) == ["official", "ours"] and len(report["runs"]) == 2
    for run in runs.values():
        assert run["row"] == ROW and run["seed"] == 1
        assert isinstance(run["mAP"], float) and isinstance(run["rank1"], float)
        assert [e["epoch"] for e in run["epochs"]] == [0, 1]  # one entry per epoch
        for epoch in run["epochs"]:
            assert EPOCH_KEYS <= set(epoch)
            assert epoch["true_identities"] == 24 and len(epoch["agreement"]) == 3
            assert set(epoch["losses"]) == {"global_ce", "part_ce", "triplet"}
    # the official run: its own folder, the ablation's for ours; the checkpoints are dropped
    pair = work / "t0_s100"
    out = pair / "official" / "pplr__aals___pglr" / "seed1"
    # each record names the commit of the code that trained it, noted in its folder
    ours_out = pair / "pplr__aals___pglr" / "seed1"
    assert runs["official"]["commit"] == trained_by(out)
    assert runs["ours"]["commit"] == trained_by(ours_out)
    for noted in (trained_by(out), trained_by(ours_out)):
        assert (noted is None) == (commit() is None)
        assert noted is None or noted.split(" + ")[0] == commit()
    assert {"log.txt", "stdout.log", "scores.npy", "labels.npy", "wall_s.txt"} <= {
        p.name for p in out.iterdir()
    }
    assert not (out / "best.pth").exists() and not (out / "last.pth").exists()
    assert (pair / "pplr__aals___pglr" / "seed1" / "metrics.jsonl").is_file()
    assert (pair / "official_data" / "Market-1501-v15.09.15" / "bounding_box_train").is_dir()
    # the stand-in ran with the official command line the config gives ...
    log = (out / "log.txt").read_text()
    cfg = _cfg(*TINY)
    m = cfg.method
    for flag in ("--epochs 2", "--iters 2", "--step-size 1", "-b 8", "--seed 1"):
        assert flag in log
    assert f"--beta {m.beta} --aals-epoch {m.aals_epoch}" in log
    # ... and through the shims: 512-wide heads, the torch flat index and CPU search, the
    # config's pad and interpolation, .cuda() a no-op
    seen = json.loads((out / "standin.json").read_text())
    assert seen == {
        "head_width": 512, "classifier_in": 512, "part_head_widths": [512] * 3,
        "index_class": "_IndexFlatL2", "search_options": [3], "pad": cfg.data.pad,
        "interpolation": cfg.data.interpolation, "cuda": "cpu",
    }  # fmt: skip
    # the table: one row, one seed, bare values and the paired difference
    [line] = [x for x in stdout.splitlines() if x.startswith(f"| {ROW} | 1 |")]
    assert len(line.strip("|").split("|")) == 6


@pytest.mark.slow
def test_side_by_side_reuses_finished_runs(
    side_by_side: tuple[Path, Path, dict, str], tmp_path: Path
) -> None:
    repo, work, report, _ = side_by_side
    pair = work / "t0_s100"
    logs = [
        pair / "official" / "pplr__aals___pglr" / "seed1" / "log.txt",
        pair / "pplr__aals___pglr" / "seed1" / "metrics.jsonl",
    ]
    before = [p.stat().st_mtime_ns for p in logs]
    again = tmp_path / "again.json"
    done = _side_by_side(repo, work, again)
    assert json.loads(again.read_text()) == report  # nothing was trained again
    assert [p.stat().st_mtime_ns for p in logs] == before
    # --json merges into an existing record file: this invocation's runs replace the records of
    # the same (trainer, row, seed) in place, the others stay
    first, second = report["runs"]
    stale = {**first, "mAP": -1.0}
    other = {"row": ROW, "seed": 9, "trainer": "official", "mAP": 1.0, "compute_s": 1.0}
    again.write_text(json.dumps({"runs": [stale, other]}))
    _side_by_side(repo, work, again)
    assert json.loads(again.read_text())["runs"] == [first, other, second]
    assert "supervised source model" not in done.stdout
    assert any(x.startswith(f"| {ROW} | 1 |") for x in done.stdout.splitlines())


# --- the script's mappings and arithmetic -----------------------------------------------------


def _cfg(*overrides: str):  # noqa: ANN202
    from reid_train.config import load_config

    return load_config(ROOT / "configs" / "synthetic_pplr.yaml", list(overrides))


def _row(name: str):  # noqa: ANN202
    [row] = [r for r in official.SIDE_ROWS if r.name == name]
    return row


def _flags(cfg, name: str) -> dict[str, str]:  # noqa: ANN001
    argv = official.official_args(cfg, _row(name), 7, Path("/data"), Path("/logs"))
    return dict(zip(argv[::2], argv[1::2], strict=True))


def test_official_args_map_the_config() -> None:
    cfg = _cfg(
        "optim.milestones=[4, 8]", "optim.epochs=10", "optim.iters=60", "method.beta=0.5",
        "method.aals_epoch=1", "method.agreement_k=20", "model.num_parts=3", "cluster.k1=30",
        "cluster.eps=0.25", "data.height=96", "data.width=48", "data.batch_size=32",
        "data.num_instances=4",
    )  # fmt: skip
    full = _flags(cfg, "PPLR: AALS + PGLR")
    assert full["--step-size"] == "4" and full["--epochs"] == "10" and full["--seed"] == "7"
    assert (full["--beta"], full["--aals-epoch"]) == ("0.5", "1")  # as configured
    assert (full["--data-dir"], full["--logs-dir"], full["-d"]) == ("/data", "/logs", "market1501")
    assert (full["--k1"], full["--eps"], full["--k"], full["--part"]) == ("30", "0.25", "20", "3")
    assert (full["--height"], full["--width"], full["-b"], full["-n"]) == ("96", "48", "32", "4")
    assert full["--print-freq"] == full["--iters"] == "60" and full["--eval-step"] == "10"
    base = _flags(cfg, "baseline (part model)")  # β = 1, AALS never starts
    assert (base["--beta"], base["--aals-epoch"]) == ("1.0", "10")
    assert _flags(cfg, "PPLR: AALS only")["--beta"] == "1.0"
    assert _flags(cfg, "PPLR: PGLR only")["--aals-epoch"] == "10"
    # no milestone: one step past the last epoch
    assert _flags(_cfg("optim.milestones=[]", "optim.epochs=6"), ROW)["--step-size"] == "6"


@pytest.mark.parametrize(
    "milestones",
    ["[3, 8]", "[4]", "[4, 8, 12]"],  # not k, 2k, ...; StepLR(4) also steps at 8; not < epochs
)
def test_official_args_refuse_a_schedule_steplr_cannot_give(milestones: str) -> None:
    cfg = _cfg(f"optim.milestones={milestones}", "optim.epochs=10")
    with pytest.raises(SystemExit, match="optim.milestones"):
        _flags(cfg, ROW)


def test_loss_line_reads_the_epochs_last_running_means() -> None:
    log = (
        "Epoch: [0][1/2]\tL_GCE 1.000 (1.000)\tL_PCE 2.000 (2.000)\tL_TRI 3.000 (3.000)\n"
        "Epoch: [0][2/2]\tL_GCE 0.500 (0.750)\tL_PCE 1.000 (1.500)\tL_TRI 0.250 (1.625)\n"
        "Epoch: [10][2/2]\tL_GCE 9.000 (9.000)\tL_PCE 9.000 (9.000)\tL_TRI 9.000 (9.000)\n"
        "Epoch: [1][2/2]\tL_GCE 0.100 (0.200)\tL_PCE 0.300 (0.400)\tL_TRI 0.000 (0.500)\n"
    )
    assert official._loss_line(log, 0) == {"global_ce": 0.75, "part_ce": 1.5, "triplet": 1.625}
    assert official._loss_line(log, 1) == {"global_ce": 0.2, "part_ce": 0.4, "triplet": 0.5}
    assert official._loss_line(log, 2) == {}


def _runs(trainer: str, row: str, maps: list[float]) -> list[dict]:
    return [
        {"row": row, "seed": s, "trainer": trainer, "mAP": m, "compute_s": 1.0}
        for s, m in enumerate(maps, start=1)
    ]


def test_side_by_side_table_known_answer() -> None:
    runs = [*_runs("official", ROW, [60.0, 61.0, 62.0]), *_runs("ours", ROW, [61.0, 62.0, 63.0])]
    runs += _runs("official", "PPLR: AALS only", [50.0, 52.0])
    runs += _runs("ours", "PPLR: AALS only", [54.0, 56.2])  # + 4, + 4.2: the interval is > 0
    table = official.side_by_side_table(runs, official.SIDE_ROWS).splitlines()
    assert len(table) == 4  # the head, the rule and the two rows with runs
    aals = "| PPLR: AALS only | 1, 2 | 51.0 ± 1.4 | 55.1 ± 1.6 | +4.1 (+2.8, +5.4) | NO |"
    assert table[2] == aals
    assert table[3] == f"| {ROW} | 1, 2, 3 | 61.0 ± 1.0 | 62.0 ± 1.0 | +1.0 (+1.0, +1.0) | yes |"
    # one trainer only: no difference, no verdict
    alone = official.side_by_side_table(_runs("official", ROW, [60.0]), official.SIDE_ROWS)
    assert alone.splitlines()[2] == f"| {ROW} | 1 | 60.0 | – | – | – |"


def test_ordering_lines_known_answer() -> None:
    base, aals, full = "baseline (part model)", "PPLR: AALS only", "PPLR: AALS + PGLR"
    runs = [
        *_runs("official", base, [50.0, 51.0, 52.0]),
        *_runs("official", aals, [52.0, 53.0, 54.0]),
        *_runs("official", full, [55.0, 56.0, 57.0]),
        *_runs("ours", base, [50.0, 51.0, 52.0]),
        *_runs("ours", aals, [52.0, 50.0, 54.0]),  # + 2, - 1, + 2: the interval holds 0
        *_runs("ours", full, [55.0, 56.0, 57.0]),
    ]
    first, second = official.ordering_lines(runs)
    assert first == (
        "- official: AALS only − part baseline +2.0 (+2.0, +2.0); AALS + PGLR − AALS only "
        "+3.0 (+3.0, +3.0); AALS + PGLR − part baseline +5.0 (+5.0, +5.0): ordering "
        "shown (both intervals above 0)"
    )
    assert second.startswith("- ours: AALS only − part baseline +1.0 (-3.3, +5.3);")
    assert second.endswith("ordering NOT shown")
    # a trainer without the three rows has no line
    assert official.ordering_lines([r for r in runs if r["row"] != base]) == []


def test_ours_folder_shares_the_ablation_rows_with_the_same_settings() -> None:
    work = Path("/w")
    assert official.ours_folder(work, _row("PPLR: AALS only")) == work / "pplr__aals_only"
    assert official.ours_folder(work, _row(ROW)) == work / "pplr__aals___pglr"
    # the ablation's part baseline and PGLR only use part_epsilon 0, the official 0.1
    assert official.ours_folder(work, _row("baseline (part model)")) == (
        work / "matched" / "baseline__part_model"
    )
    assert official.ours_folder(work, _row("PPLR: PGLR only")) == (
        work / "matched" / "pplr__pglr_only"
    )


def test_fake_faiss_flat_index_is_exact_with_ties_to_the_lower_index() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 5)).astype(np.float32)
    base[7] = base[3]  # a tie: the same distance to every query
    query = np.concatenate([base[:4], rng.normal(size=(6, 5)).astype(np.float32)])
    index = shims._IndexFlatL2(5)
    index.add(base[:25])
    index.add(base[25:])
    dist, idx = index.search(query, 8)
    d64 = ((query[:, None].astype(np.float64) - base[None].astype(np.float64)) ** 2).sum(-1)
    want = np.argsort(d64, axis=1, kind="stable")[:, :8]
    assert idx.dtype == np.int64 and dist.dtype == np.float32 and idx.shape == (10, 8)
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(dist, np.take_along_axis(d64, want, 1), rtol=1e-5, atol=1e-5)
    # query 3 is base[3] = base[7]: both at distance 0, 3 first; every row keeps 3 before 7
    assert list(idx[3, :2]) == [3, 7] and dist[3, 0] == dist[3, 1] == pytest.approx(0, abs=1e-5)
    for row in idx:
        hits = list(row)
        if 7 in hits:
            assert 3 in hits and hits.index(3) == hits.index(7) - 1
    index.reset()
    index.add(base[:2])
    assert index.search(base[1:2], 2)[1].tolist() == [[1, 0]]
