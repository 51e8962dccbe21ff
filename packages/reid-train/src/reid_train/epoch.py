"""One epoch of training, as one record: what the epoch was given, what its method prepared and
what it did. The trainer fills it step by step (extraction, pseudo labels, the method's
preparation, training) and writes its :meth:`EpochRecord.history_line` to ``history.jsonl``.

The features are held only until the classifiers and the method's per-epoch state are set up
(:meth:`EpochRecord.release_features`); the batches never read them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from reid_clustering import cluster_statistics

if TYPE_CHECKING:
    from reid_clustering import DBSCANResult

__all__ = ["EpochRecord"]


@dataclass
class EpochRecord:
    """One epoch.

    Given (on every process unless said):
        epoch: 0-based index.
        device: the training device (``Accelerator.device``).
        gather: concatenates a tensor of every process in rank order (``Accelerator.gather``;
            the tensor itself with one process), for state every process must update alike.
        feats: ``[N, D]`` extracted global features (L2-normalised, post-BNNeck) of every
            training image, dataset order, on the training device; None once released.
        parts: ``[N, P, D]`` part features likewise, or None (the method needs none, or the
            model has none).
        valid: ``[N]`` bool, the readable images.
        camids: ``[N]`` int64 camera ids of the training images (CPU).
        labels: ``[N]`` int64 CPU pseudo labels (-1 = outlier or unreadable).
        clustering: the clustering's result (main process; None when the labels did not come
            from DBSCAN). Released with the features.
        num_clusters: K, the pseudo identities the epoch trains on (labels 0..K-1).
        tensors: the method's per-image tensors (``[N, ...]``), returned by
            ``Method.on_epoch_start`` on the main process and broadcast to every process, then
            moved to the training device; a batch indexes them by ``batch["index"]``.

    Done (the ``history.jsonl`` line; main process):
        clusters, outliers, trained, losses (mean of each term over the iterations), times
        (seconds per phase), quality (pseudo labels against the true identities, when known),
        figures (the method's per-epoch figures, e.g. PPLR's mean cross agreement per part;
        named by ``Method.figures()``), lr, note (why an epoch was skipped), batch_digests
        (one checksum of the sampled indices per process).
    """

    epoch: int
    device: torch.device | None = None
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None
    feats: torch.Tensor | None = None
    parts: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    camids: np.ndarray | None = None
    labels: torch.Tensor | None = None
    clustering: DBSCANResult | None = None
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    num_clusters: int = 0
    clusters: int = 0
    outliers: int = 0
    trained: bool = False
    losses: dict[str, float] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    quality: dict[str, float] = field(default_factory=dict)
    figures: dict[str, list[float]] = field(default_factory=dict)
    lr: float = 0.0
    note: str = ""
    batch_digests: list[int] = field(default_factory=list)

    @property
    def keep(self) -> torch.Tensor:
        """Indices of the readable images (the rows the clustering saw, in order)."""
        assert self.valid is not None
        return self.valid.nonzero().flatten()

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """``times[phase]``: the wall time of the ``with`` block."""
        start = time.perf_counter()
        yield
        self.times[phase] = time.perf_counter() - start

    def set_labels(self, labels: torch.Tensor) -> None:
        """The epoch's pseudo labels ``[N]`` (-1: outlier) and their counts: ``clusters`` and
        ``outliers`` (:func:`reid_clustering.cluster_statistics`), and K = max + 1."""
        stats = cluster_statistics(labels)
        self.labels, self.clusters, self.outliers = labels, stats.num_clusters, stats.num_outliers
        self.num_clusters = int(labels.max()) + 1 if labels.numel() else 0

    def skip_reason(self, identities_per_batch: int) -> str:
        """Why the epoch cannot train on its labels ("" when it can): no cluster, or fewer
        clusters than the P identities of a batch."""
        k = self.num_clusters
        if k == 0:
            return "every sample is an outlier: epoch skipped"
        if k < identities_per_batch:
            return f"{k} clusters < {identities_per_batch} identities per batch: epoch skipped"
        return ""

    def release_features(self) -> None:
        """Drop the features and the clustering (the batches never read them)."""
        self.feats = self.parts = self.clustering = None

    def history_line(self) -> dict[str, Any]:
        """The epoch's line of ``history.jsonl``: the method's figures sit at top level, after
        the pseudo-label quality, under their own names."""
        return {
            "epoch": self.epoch, "clusters": self.clusters, "outliers": self.outliers,
            "trained": self.trained, "losses": self.losses, "times": self.times,
            "quality": self.quality, **self.figures, "lr": self.lr, "note": self.note,
            "batch_digests": self.batch_digests,
        }  # fmt: skip
