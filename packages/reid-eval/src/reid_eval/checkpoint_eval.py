"""Evaluate a saved model (a ``reid_backbones.save_checkpoint`` folder) on a dataset."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from reid_backbones import check_checkpoint

from .datasets.base import ReIDDataset
from .devices import resolve_device
from .distance import distance_rows, pairwise_distance
from .evaluator import evaluate_features
from .extractor import FeatureExtractor
from .metrics import RankResult, evaluate_records
from .rerank import re_ranking_features

__all__ = ["CheckpointEvaluation", "check_checkpoint", "evaluate_checkpoint"]


@dataclass
class CheckpointEvaluation:
    """What :func:`evaluate_checkpoint` measured.

    Attributes:
        results: ``{"plain": RankResult}`` plus ``"rerank"`` when re-ranking was asked for.
        query_features, gallery_features: L2-normalised ``[Q, D]`` / ``[G, D]`` CPU tensors.
        distances: ``[Q, G]`` numpy distances: ``"rerank"`` with re-ranking, ``"plain"`` only
            with ``keep_distances`` (:meth:`plain_distance_rows` gives rows of it without the
            whole matrix).
        checkpoint_config: the checkpoint's ``config.json``.
    """

    results: dict[str, RankResult]
    query_features: torch.Tensor
    gallery_features: torch.Tensor
    distances: dict[str, np.ndarray] = field(default_factory=dict)
    checkpoint_config: dict[str, Any] = field(default_factory=dict)

    def plain_distance_rows(self, rows: Any) -> np.ndarray:
        """Rows ``rows`` (query indices) of the plain ``[Q, G]`` distances, bit for bit those
        the evaluation ranked, computed alone (:func:`reid_eval.distance.distance_rows`)."""
        if "plain" in self.distances:
            return self.distances["plain"][np.asarray(rows)]
        return distance_rows(self.query_features, self.gallery_features, rows).numpy()


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    dataset: ReIDDataset,
    *,
    rerank: bool = False,
    flip: bool = False,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    num_workers: int | None = None,
    progress: bool = True,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    chunk_size: int | None = None,
    keep_distances: bool = False,
) -> CheckpointEvaluation:
    """Load ``checkpoint``, extract query/gallery features and compute mAP/CMC/mINP.

    ``checkpoint`` is the folder or the ``model.safetensors`` in it (see
    :func:`check_checkpoint`, run first, as is :func:`reid_eval.resolve_device` on ``device``).
    The images are prepared as the checkpoint's ``config.json`` says: its input size, mean, std
    and resize interpolation (:class:`reid_eval.FeatureExtractor`). Distances are squared
    Euclidean between L2-normalised global features (the PPLR/SpCL evaluation), ranked by the
    chunked :func:`reid_eval.evaluate_features` (on ``device``): memory stays
    ``O(chunk × gallery)`` instead of the whole ``[Q, G]`` matrix (3.8 GB at MSMT17 size), with
    the numbers of the dense computation. ``rerank`` adds the k-reciprocal re-ranked result
    (:func:`reid_eval.re_ranking_features`, the reference pipeline's numbers), which needs the
    dense ``[Q, G]`` matrix.

    Args:
        device: ``"auto"`` (default; CUDA when available), ``"cpu"``, ``"cuda:1"``...
        num_workers: data-loading processes; default
            :func:`reid_eval.features.default_workers` for the device.
        chunk_size: query rows per distance chunk (:func:`reid_eval.evaluate_features`);
            default about 2^26 distances per chunk.
        keep_distances: also keep the dense plain ``[Q, G]`` matrix in ``distances["plain"]``
            (memory ``4·Q·G`` bytes).

    Raises:
        reid_backbones.CheckpointError: not a checkpoint folder, or weights and config disagree.
        ValueError: the dataset has no query or gallery images, or ``device`` is unusable.
    """
    device = resolve_device(device)
    checkpoint = check_checkpoint(checkpoint)
    if not dataset.query or not dataset.gallery:
        raise ValueError(
            f"dataset '{dataset.name}' has {len(dataset.query)} query and "
            f"{len(dataset.gallery)} gallery images; both are needed for evaluation"
        )
    extractor = FeatureExtractor(
        checkpoint, device, batch_size=batch_size, workers=num_workers, flip=flip
    )
    qf = extractor([r.path for r in dataset.query], progress="query" if progress else False)
    gf = extractor([r.path for r in dataset.gallery], progress="gallery" if progress else False)
    results = {"plain": _evaluate_plain(qf, gf, dataset, device, chunk_size)}
    distances: dict[str, np.ndarray] = {}
    if keep_distances:
        distances["plain"] = pairwise_distance(qf, gf).numpy()
    if rerank:
        distances["rerank"] = re_ranking_features(qf, gf, k1=k1, k2=k2, lambda_value=lambda_value)
        results["rerank"] = evaluate_records(distances["rerank"], dataset.query, dataset.gallery)
    return CheckpointEvaluation(results, qf, gf, distances, extractor.config)


def _evaluate_plain(
    qf: torch.Tensor,
    gf: torch.Tensor,
    dataset: ReIDDataset,
    device: torch.device,
    chunk_size: int | None,
) -> RankResult:
    """The plain result, chunk by chunk (distances on ``device``, ranking on the CPU)."""
    query, gallery = dataset.query, dataset.gallery
    return evaluate_features(
        qf.to(device),
        gf.to(device),
        [r.pid for r in query],
        [r.pid for r in gallery],
        [r.camid for r in query],
        [r.camid for r in gallery],
        chunk_size=chunk_size,
    )
