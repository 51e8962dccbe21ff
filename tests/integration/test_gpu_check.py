"""benchmarks.gpu_check, the prepared GPU check, rehearsed on the CPU at tiny sizes."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest

from benchmarks.common import write_section
from benchmarks.gpu_check import __main__ as cli
from benchmarks.gpu_check.context import Sizes
from benchmarks.gpu_check.report import render_report
from benchmarks.gpu_check.runner import run_check
from benchmarks.gpu_check.scan import cuda_only_tests
from benchmarks.gpu_check.steps import STEPS

TINY = Sizes(
    cluster_sizes=(300,),
    cluster_dim=64,
    eval_query=100,
    eval_gallery=500,
    eval_ids=20,
    eval_cameras=4,
    eval_dim=64,
    eval_check_queries=0,
    train_backbone="resnet18",
    train_size=(64, 32),
    train_batch=4,
    train_classes=10,
    train_warmup=1,
    train_iters=1,
)
CHEAP = ["pseudo-labels", "evaluation", "train-throughput"]


def test_finds_the_cuda_only_tests() -> None:
    found = cuda_only_tests()
    known = {
        "tests/clustering/test_jaccard.py::test_cuda_input_stays_on_the_gpu",
        "tests/clustering/test_knn.py::test_torch_backend_stays_on_the_gpu",
        "tests/clustering/test_knn.py::test_gpu_search_gives_the_cpu_bits",
        "tests/eval/test_metrics.py::test_cuda_tensor_input_matches_numpy",
    }
    assert known <= set(found)
    assert len(found) == len(set(found))
    # Only CUDA skips are picked up (test_knn.py also has faiss skips).
    assert not any("faiss" in node for node in found)


def test_cheap_steps_pass_on_the_cpu(tmp_path: Path) -> None:
    # The budget counts from now, not from the module's import (the CLI's start): a long test
    # session before this test must not use it up.
    results = run_check(
        CHEAP, device="cpu", sizes=TINY, budget=120, in_process=True, workdir=tmp_path,
        start=time.time(),
    )  # fmt: skip
    assert [r.name for r in results] == CHEAP
    for r in results:
        assert r.status == "PASS", (r.summary, r.notes)
    labels = results[0].figures
    assert labels["N=300 labels identical"] and labels["N=300 kNN similarities identical"]
    assert results[1].figures["valid queries"] > 0
    assert results[2].figures["fp32 images/s"] > 0

    body = render_report(
        results, device="cpu", machine_line="test machine", env={"torch": "x"}, total_s=1.0,
        budget=120, commit="abc", when="today",
    )  # fmt: skip
    assert "| pseudo-labels | PASS |" in body and "rehearsal" in body
    doc = tmp_path / "benchmarks.md"
    write_section("gpu-check-cpu", body, path=doc)
    assert "<!-- BEGIN gpu-check-cpu -->" in doc.read_text()


def test_a_failing_step_does_not_stop_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ctx, res) -> None:  # noqa: ANN001
        res.figures["before the error"] = 1
        raise RuntimeError("boom")

    monkeypatch.setitem(STEPS, "pseudo-labels", broken)
    results = run_check(
        ["pseudo-labels", "evaluation"], device="cpu", sizes=TINY, budget=120,
        in_process=True, workdir=tmp_path, start=time.time(),
    )  # fmt: skip
    assert [r.status for r in results] == ["FAIL", "PASS"]
    assert "RuntimeError: boom" in results[0].summary
    assert results[0].figures == {"before the error": 1}


def test_budget_spent_skips_the_remaining_steps(tmp_path: Path) -> None:
    results = run_check(
        CHEAP, device="cpu", sizes=TINY, budget=0, in_process=True, workdir=tmp_path, start=0.0
    )
    assert [r.status for r in results] == ["SKIP"] * len(CHEAP)


def test_step_names_accept_numbers_and_commas() -> None:
    assert cli._step_names(["1,3", "accelerate-run"]) == [
        "cuda-tests", "evaluation", "accelerate-run",
    ]  # fmt: skip
    with pytest.raises(SystemExit, match="unknown step"):
        cli._step_names(["9"])


def test_a_step_in_its_own_process(tmp_path: Path) -> None:
    # The command's own path: `python -m benchmarks.gpu_check --child ...`, the working tree's
    # packages on PYTHONPATH; its result comes back through the result file.
    results = run_check(
        ["pseudo-labels"], device="cpu", sizes=TINY, budget=120, workdir=tmp_path,
        args=argparse.Namespace(cluster_sizes=[300]), start=time.time(),
    )  # fmt: skip
    [r] = results
    assert r.status == "PASS", (r.summary, r.notes)
    assert r.figures["N=300 labels identical"] and r.seconds > 0
