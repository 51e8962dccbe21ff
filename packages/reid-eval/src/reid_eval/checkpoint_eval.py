"""Evaluate a saved model (a ``reid_backbones.save_checkpoint`` folder) on a dataset."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from reid_backbones import check_checkpoint, load_checkpoint, read_checkpoint_config

from .datasets.base import ReIDDataset
from .devices import resolve_device
from .distance import pairwise_distance
from .features import IMAGENET_MEAN, IMAGENET_STD, extract_features
from .metrics import RankResult, evaluate_records
from .rerank import re_ranking_features

__all__ = ["CheckpointEvaluation", "check_checkpoint", "evaluate_checkpoint"]


@dataclass
class CheckpointEvaluation:
    """What :func:`evaluate_checkpoint` measured.

    Attributes:
        results: ``{"plain": RankResult}`` plus ``"rerank"`` when re-ranking was asked for.
        query_features, gallery_features: L2-normalised ``[Q, D]`` / ``[G, D]`` CPU tensors.
        distances: ``{"plain": [Q, G], "rerank": [Q, G]}`` numpy distances (for visualisation).
        checkpoint_config: the checkpoint's ``config.json``.
    """

    results: dict[str, RankResult]
    query_features: torch.Tensor
    gallery_features: torch.Tensor
    distances: dict[str, np.ndarray] = field(default_factory=dict)
    checkpoint_config: dict[str, Any] = field(default_factory=dict)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    dataset: ReIDDataset,
    *,
    rerank: bool = False,
    flip: bool = False,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> CheckpointEvaluation:
    """Load ``checkpoint``, extract query/gallery features and compute mAP/CMC/mINP.

    ``checkpoint`` is the folder or the ``model.safetensors`` in it (see
    :func:`check_checkpoint`, run first, as is :func:`reid_eval.resolve_device` on ``device``).
    The model's own input size and normalisation (from ``config.json``) are used. Distances are
    squared Euclidean between L2-normalised global features (the PPLR/SpCL evaluation);
    ``rerank`` adds the k-reciprocal re-ranked result (:func:`reid_eval.re_ranking_features`,
    the reference pipeline's numbers).

    Raises:
        reid_backbones.CheckpointError: not a checkpoint folder, or weights and config disagree.
        ValueError: the dataset has no query or gallery images, or ``device`` is unusable.
    """
    device = resolve_device(device)
    checkpoint = check_checkpoint(checkpoint)
    config = read_checkpoint_config(checkpoint)
    if not dataset.query or not dataset.gallery:
        raise ValueError(
            f"dataset '{dataset.name}' has {len(dataset.query)} query and "
            f"{len(dataset.gallery)} gallery images; both are needed for evaluation"
        )
    model = load_checkpoint(checkpoint, device=device)
    size = tuple(config.get("input_size", (256, 128)))
    mean = tuple(config.get("mean", IMAGENET_MEAN))
    std = tuple(config.get("std", IMAGENET_STD))
    common = dict(
        size=size,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        flip=flip,
        mean=mean,
        std=std,
    )
    qf = extract_features(model, dataset.query, progress="query" if progress else None, **common)
    gf = extract_features(
        model, dataset.gallery, progress="gallery" if progress else None, **common
    )
    distances = {"plain": pairwise_distance(qf, gf, metric="euclidean").cpu().numpy()}
    if rerank:
        distances["rerank"] = re_ranking_features(qf, gf, k1=k1, k2=k2, lambda_value=lambda_value)
    results = {
        key: evaluate_records(dist, dataset.query, dataset.gallery)
        for key, dist in distances.items()
    }
    return CheckpointEvaluation(results, qf, gf, distances, config)
