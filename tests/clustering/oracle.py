"""Shared helpers of the clustering tests: clustered features, an exact kNN and rank-gap checks.

The loop-based reference (the oracle) is ``reid_clustering._reference``, imported by the tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from tests.helpers import assert_rank_gaps, gamma32


def clustered_features(
    num_clusters: int, per_cluster: int, dim: int = 32, noise: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised float32 features around random centres, and their cluster ids."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_clusters, dim))
    labels = np.repeat(np.arange(num_clusters), per_cluster)
    x = centres[labels] + noise * rng.normal(size=(labels.size, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def exact_knn(features: np.ndarray, k: int) -> np.ndarray:
    """``[N, k]`` neighbours by exact inner product, ties (equal values) by index.

    Each inner product of the float32 features is exact up to one final rounding (float32 ×
    float32 products are exact in float64; ``math.fsum`` sums them correctly rounded): no BLAS,
    so identical feature rows tie exactly here as in ``pair_dot``, on every machine. Small N only.
    """
    x = np.asarray(features, dtype=np.float32).astype(np.float64)
    sims = np.array([[math.fsum(p) for p in (row * x).tolist()] for row in x])
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def assert_knn_separated(
    features: np.ndarray | torch.Tensor,
    cuts: Iterable[int],
    *,
    renormalised: bool = False,
    identical_tie: bool = False,
) -> None:
    """Fail unless the inner-product ranking of ``features`` (self-search) is separated at each cut
    by more than two float32 evaluations can disagree (:func:`tests.helpers.assert_rank_gaps`).

    Every float32 inner product of D-vectors (any BLAS kernel, faiss, ``pair_dot``, CPU or GPU)
    is within ``γ_D·‖x‖‖y‖`` of the exact value, so two of them differ by at most ``2γ_D·‖x‖²``.
    ``renormalised``: one side L2-normalises the features in float32 with another computation
    (torch's norm vs numpy's float64, CPU vs GPU): each entry is then within ``γ_{D+5}`` (relative)
    of the exact unit vector (input rounding, squares, sum, square root, division), which moves
    an inner product by up to ``2γ_{D+5}·‖x‖²`` per side. ``identical_tie``: identical feature
    rows may straddle a cut (they tie exactly in any computation, broken by index).
    """
    x = np.asarray(features, dtype=np.float64)
    dim, norm2 = x.shape[1], float((x**2).sum(axis=1).max())
    margin = 2 * gamma32(dim) * norm2
    if renormalised:
        margin += 4 * gamma32(dim + 5) * norm2
    assert_rank_gaps(x @ x.T, cuts, margin, features=x if identical_tie else None)
