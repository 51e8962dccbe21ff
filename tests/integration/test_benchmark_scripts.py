"""benchmarks.speed.knn and benchmarks.speed.epoch_overhead, run at toy sizes.

Each module runs in a subprocess as it would from the command line (``python -m
benchmarks.speed.<module> ... --no-write``, figures to ``--json``); the tests check the report's
shape and that the timings are positive, never a speed ratio (toy sizes on a shared machine say
nothing about the targets).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.common import ROOT
from benchmarks.speed import clustering_scale, epoch_overhead, knn

pytestmark = pytest.mark.slow


def _run(module: str, *args: str, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.speed.{module}", *args, "--no-write",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def _positive(times: list[float]) -> bool:
    return bool(times) and all(t > 0 for t in times)


def test_knn_speed_quiet_and_contended(tmp_path: Path) -> None:
    report = _run(
        "knn", "--sizes", "300:32", "--repeats", "2", "--busy-seconds", "0.3",
        out=tmp_path / "knn.json",
    )  # fmt: skip
    assert report["torch_threads"] >= 1 and report["busy_quiet_rate"] > 0
    assert [r["condition"] for r in report["rows"]] == ["quiet", "contended"]
    for r in report["rows"]:
        assert (r["n"], r["dim"], r["k"], r["precision"]) == (300, 32, 31, "exact")
        assert len(r["knn_search_s"]) == len(r["plain_s"]) == 2
        assert _positive(r["knn_search_s"]) and _positive(r["plain_s"])
        assert r["ratio"] > 0 and isinstance(r["target_met"], bool)
        assert 0 <= r["identical_sets"] <= 1 and r["max_kth_gap"] < 1e-5
    assert report["rows"][0]["busy_rate"] is None
    assert report["rows"][1]["busy_rate"] > 0


def test_knn_speed_jaccard_vs_dense(tmp_path: Path) -> None:
    report = _run(
        "knn", "--jaccard-vs-dense", "--jaccard-size", "300:32", "--repeats", "1",
        out=tmp_path / "jaccard.json",
    )  # fmt: skip
    r = report["jaccard"]
    assert (r["n"], r["dim"], r["k1"], r["k2"]) == (300, 32, 30, 6)
    assert _positive(r["ours_s"]) and _positive(r["dense_numpy_s"]) and r["speedup"] > 0
    assert r["labels_identical"] and r["clusters"] > 0


def test_dense_numpy_jaccard_is_the_reference_definition() -> None:
    from reid_clustering._reference import plain_jaccard_distance

    x, _ = clustering_scale.make_features(200, 32, seed=3)
    dense = knn.dense_numpy_jaccard(x, k1=20, k2=6)
    np.testing.assert_allclose(dense, plain_jaccard_distance(x, 20, 6), rtol=0, atol=1e-5)


def test_epoch_overhead_quick(tmp_path: Path) -> None:
    report = _run("epoch_overhead", "--quick", "--in-process", out=tmp_path / "epoch.json")
    assert report["mode"] == "epoch" and report["device"] in ("cpu", "cuda")
    assert report["config"]["dim"] == 64 and report["config"]["parts"] == 3
    [entry] = report["sizes"]
    assert entry["n"] == 600
    assert set(entry["stages"]) == {"clustering", "agreement", "agreement-plain"}
    for stage in entry["stages"].values():
        assert _positive(stage["seconds"]) and stage["median_s"] > 0
        assert stage["working_gib"] >= 0 and stage["peak_reset"] in (True, False)
    clustering = entry["stages"]["clustering"]
    assert clustering["clusters"] > 0 and clustering["knn_s"] > 0
    assert entry["stages"]["agreement"]["reused_ranking"]
    assert entry["scores_identical"] and entry["rows_differing"] == 0
    assert entry["per_epoch_s"] > 0 and entry["plain_over_engine"] > 0


def test_epoch_overhead_agreement_only(tmp_path: Path) -> None:
    # (in a subprocess per stage, as the real runs do)
    report = _run(
        "epoch_overhead", "--agreement-only", "--quick", "--sizes", "400",
        out=tmp_path / "agreement.json",
    )  # fmt: skip
    assert report["mode"] == "agreement-only"
    [entry] = report["sizes"]
    stage = entry["stages"]["agreement-only"]
    assert entry["n"] == 400 and _positive(stage["seconds"]) and stage["working_gib"] >= 0
    assert isinstance(entry["under_5_min"], bool) and isinstance(entry["under_1_gib"], bool)


def test_epoch_overhead_extraction_stage(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    with torch.random.fork_rng():  # the stage seeds torch
        epoch_overhead.main(
            [
                "--stage", "extraction", "--n", "100", "--device", "cpu",
                "--backbone", "resnet18", "--extract-batch", "1", "--extract-batches", "1",
                "--image-size", "32", "16", "--extract-modes", "fp32", "bf16",
            ]
        )  # fmt: skip
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["stage"] == "extraction" and result["backbone"] == "resnet18"
    for mode in ("fp32", "bf16"):
        figures = result["modes"][mode]
        assert figures["images_per_s"] > 0
        assert figures["extrapolated_s"] == pytest.approx(100 / figures["images_per_s"])
