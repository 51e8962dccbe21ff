"""Pseudo-label quality against ground-truth identities (for logs; never for the losses)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

__all__ = ["LabelQuality", "pseudo_label_quality"]


@dataclass(frozen=True)
class LabelQuality:
    """Agreement of pseudo labels with the true identities.

    Attributes:
        nmi: normalised mutual information (arithmetic normalisation, scikit-learn's default).
        ari: adjusted Rand index.
        pairwise_precision: of the sample pairs put in one cluster, the fraction that share an
            identity (1.0 when no pair is clustered together).
        pairwise_recall: of the pairs that share an identity, the fraction put in one cluster
            (1.0 when no two samples share an identity).
        pairwise_f1: harmonic mean of the two (0.0 when both are 0).
        num_clusters, num_identities: distinct pseudo labels (outliers excluded) / true labels.
        num_outliers: samples labelled ``-1``.
        outliers: how outliers were treated (``"singleton"`` or ``"exclude"``).
    """

    nmi: float
    ari: float
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f1: float
    num_clusters: int
    num_identities: int
    num_outliers: int
    outliers: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def pseudo_label_quality(
    pseudo_labels: np.ndarray | torch.Tensor,
    true_labels: np.ndarray | torch.Tensor,
    *,
    outliers: Literal["singleton", "exclude"] = "singleton",
) -> LabelQuality:
    """NMI, ARI and pairwise precision/recall/F1 of pseudo labels against true identities.

    Pairwise scores count unordered sample pairs: with ``n_ck`` samples of identity ``k`` in
    cluster ``c``, true positives ``TP = Σ C(n_ck, 2)``, precision ``TP / Σ_c C(n_c, 2)``,
    recall ``TP / Σ_k C(n_k, 2)``.

    Args:
        pseudo_labels: int ``[N]``, ``-1`` for outliers.
        true_labels: int ``[N]`` ground-truth identities.
        outliers: ``"singleton"`` (default) scores every outlier as its own cluster, so
            discarding samples costs recall and NMI; ``"exclude"`` scores the clustered samples
            only (what the training set of the epoch actually contains).

    Raises:
        ValueError: lengths differ, not 1-D integers, or an unknown ``outliers`` mode.
    """
    pred = _as_labels(pseudo_labels, "pseudo_labels")
    true = _as_labels(true_labels, "true_labels")
    if pred.shape != true.shape:
        raise ValueError(
            f"pseudo_labels and true_labels differ in length: {pred.size} vs {true.size}"
        )
    if outliers not in ("singleton", "exclude"):
        raise ValueError(f"outliers must be 'singleton' or 'exclude', got {outliers!r}")
    is_outlier = pred == -1
    num_outliers = int(is_outlier.sum())
    num_clusters = int(np.unique(pred[~is_outlier]).size)
    if outliers == "exclude":
        pred, true = pred[~is_outlier], true[~is_outlier]
    else:
        pred = pred.copy()
        pred[is_outlier] = pred.max(initial=-1) + 1 + np.arange(num_outliers)
    if pred.size == 0:
        nmi = ari = precision = recall = f1 = 0.0
    else:
        nmi = float(normalized_mutual_info_score(true, pred))
        ari = float(adjusted_rand_score(true, pred))
        precision, recall, f1 = _pairwise_scores(pred, true)
    return LabelQuality(
        nmi=nmi,
        ari=ari,
        pairwise_precision=precision,
        pairwise_recall=recall,
        pairwise_f1=f1,
        num_clusters=num_clusters,
        num_identities=int(np.unique(_as_labels(true_labels, "true_labels")).size),
        num_outliers=num_outliers,
        outliers=outliers,
    )


def _pairwise_scores(pred: np.ndarray, true: np.ndarray) -> tuple[float, float, float]:
    table = contingency_matrix(true, pred, sparse=True)
    pairs = lambda counts: float((counts * (counts - 1)).sum() / 2)  # noqa: E731
    together = pairs(table.data.astype(np.float64))
    pred_pairs = pairs(np.asarray(table.sum(axis=0)).ravel().astype(np.float64))
    true_pairs = pairs(np.asarray(table.sum(axis=1)).ravel().astype(np.float64))
    precision = together / pred_pairs if pred_pairs else 1.0
    recall = together / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _as_labels(labels: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(labels, torch.Tensor) and (labels.is_floating_point() or labels.is_complex()):
        raise ValueError(f"{name} must be a 1-D integer array, got dtype {labels.dtype}")
    if isinstance(labels, list | tuple) and len(labels) == 0:
        labels = np.zeros(0, dtype=np.int64)  # np.asarray([]) would be float64
    arr = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer array, got dtype {arr.dtype} {arr.shape}")
    return arr.astype(np.int64)
