"""Cluster Contrast (Dai et al., "Cluster Contrast for Unsupervised Person Re-Identification",
ACCV 2022; public code alibaba/cluster-contrast-reid): the baseline most unsupervised re-ID
work starts from today.

The model has no classifier (:attr:`Method.uses_classifiers` is False). Instead:

* **memory**, every epoch (every process, :meth:`ClusterContrast.setup_epoch`): one
  L2-normalised centroid per cluster, ``M = normalize(mean of the extracted features of the
  cluster's images)``, outliers left out (:func:`cluster_memory`);
* **loss** per batch, the ClusterNCE loss: cross-entropy of the batch's L2-normalised post-BNNeck
  features against every centroid, ``-log softmax(f·Mᵀ / τ)[y]`` with the temperature
  ``τ = options.temperature`` (official 0.05; :func:`cluster_nce_loss`);
* **momentum update** after each step (:func:`momentum_update`), from the batch's features
  gathered from every process in rank order, so that every process holds the same memory:
  ``M[y] ← m·M[y] + (1 − m)·f`` then re-normalised, with ``m = options.momentum`` (the official
  command lines use 0.1, its script's default is 0.2), either for every instance in batch order
  (``update: all``, the official ``CM``) or once per cluster of the batch with its hardest
  instance, the one least similar to ``M[y]`` (``update: hard``, the official ``CM_Hard``).

The official code updates the memory in the backward pass, after the loss has used it; updating
after the optimiser step is the same computation (the memory is no parameter and the update
reads the forward features). The memory is rebuilt from the centroids at every epoch start, so
a run resumed at an epoch boundary continues exactly. Differences from the official code: the
global feature is average-pooled (the official default is GeM pooling), and its shared soft
triplet is available (``method.triplet_weight``, 0 in its configs, as in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F

from reid_backbones import l2_normalize
from reid_clustering import cluster_centroids

from ..registry import register
from .base import Method

if TYPE_CHECKING:
    from ..epoch import EpochRecord

__all__ = [
    "ClusterContrast",
    "ClusterContrastOptions",
    "cluster_memory",
    "cluster_nce_loss",
    "momentum_update",
]


@dataclass
class ClusterContrastOptions:
    """The own keys of ``cluster_contrast`` (``method.temperature``, ...).

    Attributes:
        temperature: τ of the ClusterNCE loss (official 0.05), > 0.
        momentum: m of the memory update (official command lines 0.1), in [0, 1).
        update: ``all`` (every instance in batch order; the official ``CM``) or ``hard`` (the
            hardest instance of each cluster in the batch; the official ``CM_Hard``).
    """

    temperature: float = 0.05
    momentum: float = 0.1
    update: Literal["all", "hard"] = "all"

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.update not in ("all", "hard"):
            raise ValueError(f"update must be 'all' or 'hard', got {self.update!r}")


def cluster_memory(features: torch.Tensor, labels: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """The memory of an epoch: ``[K, D]`` L2-normalised means of the features of each cluster
    (labels ``0..K-1``; ``-1`` rows left out), float32, on the features' device."""
    return l2_normalize(cluster_centroids(features.float(), labels, num_clusters), dim=1)


def cluster_nce_loss(
    features: torch.Tensor, targets: torch.Tensor, memory: torch.Tensor, temperature: float
) -> torch.Tensor:
    """ClusterNCE: mean over the batch of ``-log softmax(f·Mᵀ / τ)[y]`` with ``f`` the
    L2-normalised rows of ``features`` ``[B, D]``, ``M`` the memory ``[K, D]`` (a constant: no
    gradient reaches it) and ``y`` the targets ``[B]`` in ``[0, K)``."""
    if features.dim() != 2 or memory.dim() != 2 or features.shape[1] != memory.shape[1]:
        raise ValueError(
            f"features [B, D] and memory [K, D] must share D, got {list(features.shape)} and "
            f"{list(memory.shape)}"
        )
    if features.shape[0] == 0:
        raise ValueError("cluster_nce_loss needs a non-empty batch")
    logits = l2_normalize(features.float(), dim=1) @ memory.detach().t() / temperature
    return F.cross_entropy(logits, targets)


@torch.no_grad()
def momentum_update(
    memory: torch.Tensor,
    features: torch.Tensor,
    targets: torch.Tensor,
    momentum: float,
    update: Literal["all", "hard"] = "all",
) -> torch.Tensor:
    """The memory after one batch, in place (and returned): ``M[y] ← m·M[y] + (1 − m)·f``, then
    ``M[y]`` re-normalised, with ``f`` the L2-normalised batch features.

    ``update="all"``: every instance in batch order (a cluster seen twice is updated twice).
    ``update="hard"``: once per cluster of the batch, with its instance of lowest similarity
    ``f·M[y]`` to the memory before the update (the first of equal ones).
    """
    feats = l2_normalize(features.detach().float(), dim=1)
    if update == "all":
        for f, y in zip(feats, targets.tolist(), strict=True):
            memory[y] = momentum * memory[y] + (1.0 - momentum) * f
            memory[y] /= memory[y].norm()
        return memory
    similarity = (feats * memory[targets]).sum(dim=1)
    for y in torch.unique(targets).tolist():
        rows = (targets == y).nonzero().flatten()
        hard = feats[rows[int(torch.argmin(similarity[rows]))]]
        memory[y] = momentum * memory[y] + (1.0 - momentum) * hard
        memory[y] /= memory[y].norm()
    return memory


@register
class ClusterContrast(Method):
    name = "cluster_contrast"
    arch = "baseline"
    uses_classifiers = False
    loss_terms = ("contrast",)
    Options = ClusterContrastOptions

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.memory: torch.Tensor | None = None

    def setup_epoch(self, record: EpochRecord) -> None:
        """The epoch's memory from the gathered features (every process, identical)."""
        assert record.feats is not None and record.labels is not None
        labels = record.labels.to(record.feats.device)
        self.memory = cluster_memory(record.feats, labels, record.num_clusters).to(record.device)

    def training_step(
        self, out: Any, targets: torch.Tensor, batch: dict[str, torch.Tensor], record: EpochRecord
    ) -> dict[str, torch.Tensor]:
        assert self.memory is not None, "setup_epoch builds the memory"
        loss = cluster_nce_loss(
            out.global_bn_features, targets, self.memory, self.options.temperature
        )
        return {"contrast": loss, **self.triplet(out, targets)}

    def after_step(
        self, out: Any, targets: torch.Tensor, batch: dict[str, torch.Tensor], record: EpochRecord
    ) -> None:
        """The momentum update with every process's batch (gathered in rank order)."""
        assert self.memory is not None and record.gather is not None
        feats = record.gather(out.global_bn_features.detach().float().contiguous())
        momentum_update(
            self.memory, feats, record.gather(targets), self.options.momentum,
            self.options.update,
        )  # fmt: skip
