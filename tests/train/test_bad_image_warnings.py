"""BadImageWarning points at reid_train's own code, not at torch's DataLoader (fetch.py)."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import reid_train.data as data_module
from reid_eval.datasets import ImageRecord
from reid_train.config import DataConfig
from reid_train.data import (
    BadImageWarning,
    ImageDataset,
    TrainImageDataset,
    build_extract_loader,
    build_test_transform,
    build_train_loader,
)
from tests.helpers import write_images

DATA = DataConfig(height=32, width=16, batch_size=8, num_instances=4, workers=0, pad=2)
DATA_FILE = Path(data_module.__file__).resolve()
TORCH_DIR = Path(torch.__file__).resolve().parent


def _records(tmp_path: Path, labels: list[int], bad: set[int]) -> list[ImageRecord]:
    names = [f"{i:03d}_{label}.jpg" for i, label in enumerate(labels)]
    paths = write_images(tmp_path, names)
    for i in bad:
        paths[i].write_bytes(b"this is not a JPEG")
    return [
        ImageRecord(str(p), label, i % 3)
        for i, (p, label) in enumerate(zip(paths, labels, strict=True))
    ]


def _bad_image_warnings(run) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    found = [w for w in caught if issubclass(w.category, BadImageWarning)]
    assert found, "no BadImageWarning was emitted"
    return found


def _assert_located_in_reid_train(w: warnings.WarningMessage) -> None:
    where = Path(w.filename).resolve()
    assert where == DATA_FILE, f"warning points at {where}:{w.lineno}, not reid_train/data.py"
    assert TORCH_DIR not in where.parents
    # the line is the one that met the bad image: the dataset's call recording it
    source = inspect.getsource(data_module).splitlines()
    assert "self.bad.add(" in source[w.lineno - 1], source[w.lineno - 1]


def test_extraction_loader_warning_points_at_reid_train(tmp_path: Path) -> None:
    records = _records(tmp_path, [0, 1, 2], bad={1})
    loader = build_extract_loader(records, DATA, max_bad_images=1)
    (w,) = _bad_image_warnings(lambda: next(iter(loader)))
    _assert_located_in_reid_train(w)
    assert records[1].path in str(w.message) and "outlier" in str(w.message)


def test_train_loader_warning_points_at_reid_train(tmp_path: Path) -> None:
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    records = _records(tmp_path, labels, bad={2})
    loader = build_train_loader(records, labels, DATA, iters=1, seed=0)
    found = _bad_image_warnings(lambda: next(iter(loader)))
    for w in found:
        _assert_located_in_reid_train(w)
    assert records[2].path in str(found[0].message)
    assert "pseudo identity 0" in str(found[0].message)


@pytest.mark.parametrize("kind", ["train", "extract"])
def test_plain_dataloader_warning_points_at_reid_train(tmp_path: Path, kind: str) -> None:
    labels = [0, 0, 1, 1]
    records = _records(tmp_path, labels, bad={0})
    transform = build_test_transform(DATA)
    dataset = (
        TrainImageDataset(records, labels, transform, max_bad_images=2)
        if kind == "train"
        else ImageDataset(records, transform, (32, 16), max_bad_images=2)
    )
    loader = DataLoader(dataset, batch_size=4)
    (w,) = _bad_image_warnings(lambda: next(iter(loader)))
    _assert_located_in_reid_train(w)


def test_warning_filters_by_module_and_category_still_apply(tmp_path: Path) -> None:
    records = _records(tmp_path, [0, 1], bad={0})

    def fresh() -> ImageDataset:
        return ImageDataset(records, build_test_transform(DATA), (32, 16), max_bad_images=2)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=BadImageWarning, module=r"reid_train\.data")
        assert fresh()[0]["valid"] is False
    assert not [w for w in caught if issubclass(w.category, BadImageWarning)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", BadImageWarning)
        with pytest.raises(BadImageWarning, match="not an image"):
            fresh()[0]


def test_unreadable_query_image_is_left_out_of_the_training_evaluation(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """A truncated query image is not scored as a query with zero features: it is left out of
    the evaluation, the warnings say so, and metrics.jsonl counts it."""
    import json
    import shutil

    from reid_train.config import load_config
    from reid_train.trainer import Trainer

    data = Path(shutil.copytree(synthetic_root, tmp_path / "data"))
    victim = sorted((data / "query").glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated
    tiny = Path(__file__).resolve().parents[2] / "configs" / "synthetic_tiny.yaml"
    cfg = load_config(tiny, [f"data.data_root={data}", "optim.epochs=1", "runtime.plots=false"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(cfg, tmp_path / "run").fit()
    messages = [str(w.message) for w in caught]
    assert any(victim.name in m and "left out of this evaluation" in m for m in messages)
    assert any("1 query and 0 gallery images are unreadable and left out" in m for m in messages)
    (record,) = [
        json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert record["left_out"] == {"query": 1, "gallery": 0}
