"""Features, distances, baselines and the reid-eval command on the synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from reid_eval import ImageReadError, ImageRecord, extract_features, pairwise_distance
from reid_eval.baselines import evaluate_baseline
from reid_eval.cli import main
from reid_eval.datasets import load_dataset
from reid_eval.features import IMAGENET_MEAN, IMAGENET_STD, load_image, pixel_features
from tests.helpers import write_images


def test_pairwise_distance_known_values() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    g = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    # squared Euclidean: |q0-g0|^2 = 0, |q0-g1|^2 = 4+16 = 20, |q1-g0|^2 = 1+4 = 5, |q1-g1|^2 = 9+4
    torch.testing.assert_close(pairwise_distance(q, g), torch.tensor([[0.0, 20.0], [5.0, 13.0]]))
    # cosine: 1 - cos; cos(q0,g1) = 3/5, cos(q1,g0) = 0, cos(q1,g1) = 4/5
    torch.testing.assert_close(
        pairwise_distance(q, g, "cosine"), torch.tensor([[0.0, 0.4], [1.0, 0.2]])
    )
    with pytest.raises(ValueError, match="metric must be"):
        pairwise_distance(q, g, "manhattan")
    with pytest.raises(ValueError, match="same D"):
        pairwise_distance(q, torch.zeros(2, 3))


def test_corrupt_and_missing_images_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "0001_c1s1_000001_00.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ImageReadError, match=r"0001_c1s1_000001_00.jpg' is corrupt"):
        load_image(str(bad))
    with pytest.raises(ImageReadError, match="does not exist"):
        pixel_features([ImageRecord(str(tmp_path / "gone.jpg"), 1, 0)])


def test_extract_features_pools_maps_normalises_and_flips(tmp_path: Path) -> None:
    paths = write_images(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    records = [ImageRecord(str(p), 1, 0) for p in paths]
    conv = torch.nn.Conv2d(3, 4, 3)
    feats = extract_features(conv, records, size=(16, 8), batch_size=2)
    assert conv.training  # returned to the mode it was in
    assert feats.shape == (3, 4)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(3))

    # Flip: an image black on the left, white on the right; the "model" reads the left column.
    half = tmp_path / "half.png"
    img = Image.new("RGB", (8, 16), (0, 0, 0))
    img.paste((255, 255, 255), (4, 0, 8, 16))
    img.save(half)

    class LeftColumn(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :, :, 0].mean(dim=2)  # [B, 3]

    rec = [ImageRecord(str(half), 1, 0)]
    raw = extract_features(LeftColumn(), rec, size=(16, 8), normalize=False)
    flipped = extract_features(LeftColumn(), rec, size=(16, 8), normalize=False, flip=True)
    black = (0.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    white = (1.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(raw[0], black)
    torch.testing.assert_close(flipped[0], (black + white) / 2)

    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], 2), float("nan"))

    with pytest.raises(FloatingPointError, match="NaN/inf features"):
        extract_features(Broken(), records, size=(16, 8))


def test_baselines_on_the_synthetic_dataset(synthetic_root: Path) -> None:
    ds = load_dataset("synthetic", synthetic_root)
    pixels = evaluate_baseline(ds, "pixels")
    assert pixels.num_valid_queries == len(ds.query)
    assert 0.0 < pixels.mAP < 0.9
    cnn = evaluate_baseline(ds, "random-resnet18", seed=0)
    again = evaluate_baseline(ds, "random-resnet18", seed=0)
    assert cnn.mAP == pytest.approx(again.mAP, abs=1e-6)  # seeded initialisation
    assert 0.0 < cnn.mAP < 0.9
    with pytest.raises(ValueError, match="unknown baseline"):
        evaluate_baseline(ds, "imagenet-resnet50")


def test_cli_make_synthetic_reuse_and_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "syn"
    args = [
        "make-synthetic",
        str(out),
        "--seed",
        "5",
        "--num-train-ids",
        "4",
        "--num-test-ids",
        "4",
        "--num-cameras",
        "2",
        "--num-distractors",
        "2",
        "--num-junk",
        "1",
    ]
    assert main(args) == 0
    assert "wrote the synthetic dataset (seed 5)" in capsys.readouterr().out
    assert main([*args, "--reuse"]) == 0
    assert "kept as is" in capsys.readouterr().out
    assert main(args) == 2  # exists, neither --reuse nor --overwrite
    assert "overwrite" in capsys.readouterr().err
    assert main([*args[:3], "7", *args[4:], "--reuse", "--overwrite"]) == 0  # other seed
    assert json.loads((out / "synthetic.json").read_text())["seed"] == 7


def test_cli_summary_and_baseline_json(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["summary", "--dataset", "synthetic", "--data-root", str(synthetic_root)]) == 0
    assert "gallery" in capsys.readouterr().out
    out = tmp_path / "m" / "metrics.json"
    code = main(
        [
            "baseline",
            "--dataset",
            "synthetic",
            "--data-root",
            str(synthetic_root),
            "--model",
            "pixels",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "pixels" in printed and "mAP" in printed
    payload = json.loads(out.read_text())
    assert payload["dataset"] == "synthetic"
    assert 0.0 < payload["results"]["pixels"]["mAP"] < 1.0


def test_cli_reports_dataset_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "--dataset", "market1501", "--data-root", str(tmp_path)]) == 2
    assert "expected layout not found" in capsys.readouterr().err
    assert main(["summary", "--dataset", "dukemtmc", "--data-root", str(tmp_path)]) == 2
    assert "withdrawn" in capsys.readouterr().err


def test_evaluate_records_reads_pids_and_cameras() -> None:
    from reid_eval import evaluate_rank, evaluate_records

    query = [ImageRecord("q0", 1, 0), ImageRecord("q1", 2, 1)]
    gallery = [ImageRecord("g0", 1, 1), ImageRecord("g1", 2, 0), ImageRecord("g2", 1, 0)]
    dist = torch.tensor([[0.2, 0.1, 0.0], [0.3, 0.2, 0.1]])
    # q0 (pid 1, cam 0): g2 removed (same pid + camera); ranked g1 (wrong), g0 (match) -> AP 1/2
    # q1 (pid 2, cam 1): ranked g2 (wrong), g1 (match), g0 -> AP 1/2
    result = evaluate_records(dist, query, gallery, max_rank=3)
    assert result.mAP == pytest.approx(0.5)
    assert result == evaluate_rank(dist, [1, 2], [1, 2, 1], [0, 1], [1, 0, 0], max_rank=3)
