"""Training on one's own unlabelled images (reid-eval's ``unlabelled`` layout): DBSCAN pseudo
labels train, the pseudo-label quality is left out (no identities to score against), and the
ground-truth label sources are refused before anything is built."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from reid_eval.datasets import load_dataset
from reid_train.config import ConfigError, load_config
from reid_train.pseudo_labels import PseudoLabeler
from reid_train.trainer import Trainer

TINY = Path(__file__).resolve().parents[2] / "configs" / "synthetic_tiny.yaml"


@pytest.fixture
def unlabelled_root(synthetic_root: Path, tmp_path: Path) -> Path:
    """The synthetic training images without their identities (``train/``, cameras from the
    names), query and gallery as they are: the unlabelled layout."""
    root = tmp_path / "mydata"
    folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    for ours, theirs in folders.items():
        (root / ours).mkdir(parents=True)
        for i, image in enumerate(sorted((synthetic_root / theirs).glob("*.jpg"))):
            name = image.name
            if ours == "train":  # the name loses its identity: '0003_c2s1_...' -> 'c2_00017.jpg'
                name = f"c{name.split('_c')[1][0]}_{i:05d}.jpg"
            shutil.copy(image, root / ours / name)
    return root


def _tiny(root: Path, *overrides: str):  # noqa: ANN202
    return load_config(
        TINY, [f"data.data_root={root}", "data.dataset=unlabelled", "runtime.plots=false",
               "runtime.tensorboard=false", *overrides],
    )  # fmt: skip


@pytest.mark.filterwarnings("ignore:unlabelled folder dataset.*pid -1:UserWarning")  # gallery junk
def test_dbscan_trains_on_an_unlabelled_split(unlabelled_root: Path, tmp_path: Path) -> None:
    dataset = load_dataset("unlabelled", unlabelled_root)
    assert {r.pid for r in dataset.train} == {-1} and dataset.num_train_pids == 0
    assert len({r.camid for r in dataset.train}) == 4
    records = Trainer(_tiny(unlabelled_root, "optim.epochs=1"), tmp_path / "run").fit()
    assert 0.0 <= records[-1]["mAP"] <= 1.0
    (epoch,) = [
        json.loads(line) for line in (tmp_path / "run/history.jsonl").read_text().splitlines()
    ]
    assert epoch["trained"], epoch["note"]
    assert epoch["clusters"] >= 2
    assert epoch["quality"] == {}  # nothing to score the pseudo labels against
    with pytest.raises(ConfigError, match="cluster.labels=ground_truth but the training split"):
        Trainer(_tiny(unlabelled_root, "cluster.labels=ground_truth"), tmp_path / "gt")
    with pytest.raises(ConfigError, match="noisy_ground_truth .* no identity labels"):
        Trainer(_tiny(unlabelled_root, "cluster.labels=noisy_ground_truth"), tmp_path / "noisy")
    assert not (tmp_path / "gt").exists()  # refused before the run folder was made


def _labeler(pids: list[int]) -> PseudoLabeler:
    cfg = load_config(TINY)
    camids = np.zeros(len(pids), dtype=np.int64)
    return PseudoLabeler(cfg, np.array(pids), camids, lambda: None, print, print)


def test_quality_is_empty_without_identities_and_ignores_unlabelled_images() -> None:
    labels = torch.tensor([0, 0, 1, 1, -1, 1])
    assert _labeler([-1] * 6).quality(labels) == {}
    assert _labeler([5, 5, -1, -1, -1, -1]).quality(labels) == {}  # one identity: nothing to score
    mixed = _labeler([3, 3, 4, 4, -1, -1]).quality(labels)  # scored on the first four only
    assert mixed == _labeler([3, 3, 4, 4]).quality(labels[:4])
    assert mixed["true_identities"] == 2 and mixed["ari"] == 1.0
