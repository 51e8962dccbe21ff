"""``reid-eval --checkpoint``: a tiny randomly initialised model evaluated end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from reid_eval.checkpoint_eval import evaluate_checkpoint
from reid_eval.cli import main
from reid_eval.datasets import load_dataset


def test_cli_evaluates_a_checkpoint_end_to_end(
    tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run" / "metrics.json"
    code = main([
        "--checkpoint", str(tiny_checkpoint), "--dataset", "synthetic",
        "--data-root", str(synthetic_root), "--rerank", "--flip", "--batch-size", "16",
        "--output", str(out), "--visualize", "3", "--quiet",
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "checkpoint" in printed and "+ re-ranking" in printed and "mINP" in printed
    payload = json.loads(out.read_text())
    assert payload["architecture"] == "pplr" and payload["backbone"] == "resnet18"
    for key in ("plain", "rerank"):
        result = payload["results"][key]
        assert 0.0 <= result["mAP"] <= 1.0 and result["num_valid_queries"] > 0
    index = tmp_path / "run" / "ranked_lists" / "index.html"
    assert index.is_file() and len(list(index.parent.glob("query_*.png"))) == 3
    assert index.read_text().count("<img") == 3


def test_evaluate_subcommand_name_is_optional(tiny_checkpoint: Path, synthetic_root: Path) -> None:
    dataset = load_dataset("synthetic", synthetic_root)
    direct = evaluate_checkpoint(tiny_checkpoint, dataset, progress=False, batch_size=32)
    assert direct.query_features.shape[0] == len(dataset.query)
    torch.testing.assert_close(direct.query_features.norm(dim=1), torch.ones(len(dataset.query)))
    code = main([
        "evaluate", "--checkpoint", str(tiny_checkpoint), "--dataset", "synthetic",
        "--data-root", str(synthetic_root), "--quiet",
    ])  # fmt: skip
    assert code == 0


def test_not_a_checkpoint_is_a_clear_error(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "model.pth").write_bytes(b"not a checkpoint folder")
    code = main([
        "--checkpoint", str(tmp_path), "--dataset", "synthetic",
        "--data-root", str(synthetic_root), "--quiet",
    ])  # fmt: skip
    assert code == 2
    assert "config.json" in capsys.readouterr().err


def test_wrong_dataset_layout_is_a_clear_error(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main([
        "--checkpoint", str(tiny_checkpoint), "--dataset", "market1501",
        "--data-root", str(tmp_path), "--quiet",
    ])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "reid-eval: error:" in err and str(tmp_path) in err
