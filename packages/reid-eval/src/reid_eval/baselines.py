"""Reference points that need no training: raw pixels and randomly initialised CNNs.

They show how hard a dataset is before any learning, and they are what the project's main job
evaluates until a trained checkpoint exists.
"""

from __future__ import annotations

import torch

from .datasets.base import ReIDDataset
from .distance import pairwise_distance
from .features import extract_features, pixel_features
from .metrics import RankResult, evaluate_records

__all__ = ["BASELINES", "baseline_features", "evaluate_baseline"]

#: Baseline name -> description.
BASELINES = {
    "pixels": "raw pixels at 32x16, centred and L2-normalised",
    "random-resnet18": "randomly initialised ResNet-18 (last stride 1), average-pooled",
    "random-resnet50": "randomly initialised ResNet-50 (last stride 1), average-pooled",
}


def baseline_features(
    dataset: ReIDDataset,
    name: str = "random-resnet18",
    *,
    seed: int = 0,
    size: tuple[int, int] = (128, 64),
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Query and gallery features of a baseline (see :data:`BASELINES`)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    if name == "pixels":
        return pixel_features(dataset.query), pixel_features(dataset.gallery)
    from reid_backbones import build_backbone

    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        model = build_backbone(name.removeprefix("random-"), last_stride=1)
    kwargs = dict(size=size, batch_size=batch_size, device=device)
    return (
        extract_features(model, dataset.query, **kwargs),
        extract_features(model, dataset.gallery, **kwargs),
    )


def evaluate_baseline(
    dataset: ReIDDataset,
    name: str = "random-resnet18",
    *,
    seed: int = 0,
    size: tuple[int, int] = (128, 64),
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    max_rank: int = 50,
) -> RankResult:
    """mAP / CMC / mINP of a baseline on ``dataset``'s query and gallery (Euclidean distance)."""
    qf, gf = baseline_features(
        dataset, name, seed=seed, size=size, batch_size=batch_size, device=device
    )
    return evaluate_records(pairwise_distance(qf, gf), dataset.query, dataset.gallery, max_rank)
