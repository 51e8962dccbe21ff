"""DBSCAN pseudo labels on the k-reciprocal Jaccard distance, as SpCL/PPLR produce them."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import scipy.sparse
import torch
from sklearn.cluster import DBSCAN
from sklearn.neighbors import sort_graph_by_row_values

from ._validation import as_feature_tensor, check_int
from .jaccard import JaccardAndRanking, compute_jaccard_distance, jaccard_and_ranking
from .knn import Backend, Precision

__all__ = [
    "SPARSE_THRESHOLD",
    "ClusterStats",
    "DBSCANResult",
    "NoClustersWarning",
    "cluster_statistics",
    "dbscan_clustering",
    "dbscan_pseudo_labels",
]

SPARSE_THRESHOLD = 2048
"""Above this many samples :func:`dbscan_pseudo_labels` uses the sparse radius graph by default.
It was the faster path from about 2,000-3,000 samples on in an informal timing on 2 CPU cores
(200 to 8,000 samples of 256-d features), and a dense Jaccard matrix needs ``4·N²`` bytes
(17 MB at 2,048, 4.3 GB at MSMT17's 32,621). Both paths give the same labels."""


class NoClustersWarning(UserWarning):
    """DBSCAN labelled every sample an outlier."""


def dbscan_pseudo_labels(
    features: np.ndarray | torch.Tensor,
    eps: float,
    min_samples: int = 4,
    k1: int = 30,
    k2: int = 6,
    *,
    sparse: bool | None = None,
    backend: Backend = "torch",
    normalize: bool = True,
    n_jobs: int | None = None,
    knn_precision: Precision = "auto",
) -> np.ndarray:
    """Pseudo labels: DBSCAN on the k-reciprocal Jaccard distance of the features.

    The clustering step of SpCL/PPLR: ``DBSCAN(eps, min_samples, metric="precomputed")`` on
    :func:`~reid_clustering.compute_jaccard_distance` ``(features, k1, k2)``. PPLR uses
    ``eps=0.5`` (Market-1501 without the camera loss), 0.4 (with it), 0.6 (MSMT17 with cameras),
    0.7 (VeRi-776), ``min_samples=4``, ``k1=30``, ``k2=6``.

    The sparse path hands DBSCAN the radius graph of pairs with ``J <= eps`` instead of the
    ``N × N`` matrix; the neighbourhoods, hence the labels, are the same (DBSCAN's labels do not
    depend on the order of neighbours), in ``O(N·k)`` memory.

    :func:`dbscan_clustering` does the same and also returns the kNN ranking the distance was
    built from (for reuse, e.g. by the cross agreement of PPLR).

    Args:
        features: ``[N, D]`` features (numpy or torch, any device).
        eps: neighbourhood radius on the Jaccard distance, in ``(0, 1)`` for the sparse path.
        min_samples: samples (the point itself included) within ``eps`` of a core point.
        k1, k2: k-reciprocal and query-expansion neighbours.
        sparse: True/False force the path; None (default) → sparse when
            ``N > SPARSE_THRESHOLD`` (:data:`SPARSE_THRESHOLD`).
        backend: kNN backend; ``normalize``: L2-normalise the features first.
        n_jobs: DBSCAN's neighbour-query parallelism (scikit-learn semantics).
        knn_precision: ``precision`` of :func:`~reid_clustering.knn_search` (same labels).

    Returns:
        int64 numpy labels ``[N]``: ``0..C-1`` for the clusters, ``-1`` for outliers. When every
        sample is an outlier, all ``-1`` and a :class:`NoClustersWarning` (never an exception).

    Raises:
        ValueError: invalid ``eps``/``min_samples``, or the feature errors of
            :func:`compute_jaccard_distance` (NaN/inf, zero-norm rows, ``N <= k1``, not 2-D).
    """
    return _dbscan(
        features, eps, min_samples, k1, k2, sparse=sparse, backend=backend,
        normalize=normalize, n_jobs=n_jobs, knn_precision=knn_precision, with_ranking=False,
    )[0]  # fmt: skip


class DBSCANResult(NamedTuple):
    """What :func:`dbscan_clustering` computed.

    Attributes:
        labels: int64 numpy ``[N]``, as returned by :func:`dbscan_pseudo_labels`.
        ranked: int64 torch ``[N, k1]`` on the features' device: the kNN ranking the Jaccard
            distance was built from, i.e. ``knn_search(features, k=k1, backend=backend,
            precision=knn_precision).indices`` of the ``features`` below. Row ``i`` lists the
            ``k1`` rows with the largest inner product with row ``i``, descending, ties to the
            lower index: itself included, usually first (not when a lower-index duplicate ties
            with it, or a near-duplicate beats it by rounding). With the torch
            backend it depends only on ``features`` (see :mod:`reid_clustering.knn`), so its
            first ``m`` columns equal ``knn_search(features, k=m).indices`` for every
            ``m <= k1``.
        features: float32 torch ``[N, D]`` on the input's device: the exact features that were
            ranked, i.e. the input after :func:`dbscan_clustering`'s L2 normalisation when
            ``normalize=True`` (in general *not* bit-identical to features that were
            L2-normalised elsewhere, e.g. by ``torch.nn.functional.normalize``), the input as
            float32 otherwise.
    """

    labels: np.ndarray
    ranked: torch.Tensor
    features: torch.Tensor


def dbscan_clustering(
    features: np.ndarray | torch.Tensor,
    eps: float,
    min_samples: int = 4,
    k1: int = 30,
    k2: int = 6,
    *,
    sparse: bool | None = None,
    backend: Backend = "torch",
    normalize: bool = True,
    n_jobs: int | None = None,
    knn_precision: Precision = "auto",
) -> DBSCANResult:
    """:func:`dbscan_pseudo_labels` that also returns the kNN ranking behind the labels.

    Same arguments, same labels, same warning and errors; the result adds the ``[N, k1]`` ranked
    list of the k-reciprocal encoding and the features it ranked (:class:`DBSCANResult`), so a
    later step that needs neighbours of the same features (PPLR's cross agreement needs the top
    ``k + 1 <= k1``) can take them instead of searching again. Reuse is only valid for those
    very features: the normalised ones in ``result.features``, not the caller's input.
    """
    labels, found = _dbscan(
        features, eps, min_samples, k1, k2, sparse=sparse, backend=backend,
        normalize=normalize, n_jobs=n_jobs, knn_precision=knn_precision, with_ranking=True,
    )  # fmt: skip
    assert found is not None  # with_ranking=True
    return DBSCANResult(labels, found.ranked, found.features)


def _dbscan(
    features: np.ndarray | torch.Tensor,
    eps: float,
    min_samples: int,
    k1: int,
    k2: int,
    *,
    sparse: bool | None,
    backend: Backend,
    normalize: bool,
    n_jobs: int | None,
    knn_precision: Precision,
    with_ranking: bool,
) -> tuple[np.ndarray, JaccardAndRanking | None]:
    """The two public functions above: the labels, and with ``with_ranking`` the distance's
    ranking and features. Warnings point at *their* caller (stacklevel 3)."""
    eps = _check_eps(eps)
    min_samples = check_int(min_samples, "min_samples", 1)
    x = as_feature_tensor(features)
    n = x.shape[0]
    if sparse is None:
        sparse = n > SPARSE_THRESHOLD and eps < 1
    if sparse and eps >= 1:
        raise ValueError(
            f"eps={eps} >= 1 makes every pair a neighbour (the Jaccard distance is at most 1), "
            "which a sparse radius graph cannot represent; use eps < 1 or sparse=False"
        )
    options = {
        "sparse": sparse,
        "max_distance": eps if sparse else None,
        "normalize": normalize,
        "backend": backend,
        "knn_precision": knn_precision,
    }
    found = None
    if with_ranking:
        found = jaccard_and_ranking(x, k1, k2, **options)
        distance = found.distance.to_scipy() if sparse else found.distance
    else:
        distance = compute_jaccard_distance(x, k1, k2, **options)
    if sparse:
        distance = _explicit_diagonal(distance)
        distance = sort_graph_by_row_values(distance, copy=False, warn_when_not_sorted=False)
    elif isinstance(distance, torch.Tensor):
        distance = distance.cpu().numpy()
    with warnings.catch_warnings():
        # DBSCAN stores the diagonal of a sparse graph explicitly; it is already there.
        warnings.simplefilter("ignore", scipy.sparse.SparseEfficiencyWarning)
        labels = DBSCAN(
            eps=eps, min_samples=min_samples, metric="precomputed", n_jobs=n_jobs
        ).fit_predict(distance)
    labels = labels.astype(np.int64)
    if n > 0 and bool((labels == -1).all()):
        warnings.warn(
            f"DBSCAN found no cluster among {n} samples (eps={eps}, min_samples={min_samples}, "
            f"k1={k1}): every sample is an outlier. Raise eps, lower min_samples, or check that "
            "the features are informative (e.g. a diverged or untrained model)",
            NoClustersWarning,
            stacklevel=3,
        )
    return labels, found


def _explicit_diagonal(graph: scipy.sparse.csr_matrix) -> scipy.sparse.csr_matrix:
    """The radius graph with ``J[i, i] = 1`` stored where the diagonal entry is missing.

    A row's diagonal is missing when ``J[i, i] > eps``: its k-reciprocal encoding is empty
    (lower-index duplicates took the sample's place in its own neighbour list), so ``J[i, i]``
    is 1 and the dense path does not count the sample as its own neighbour. scikit-learn's DBSCAN
    stores a missing diagonal of a sparse graph as 0 (a neighbour), which gave such a sample a
    cluster of its own with ``min_samples=1``; with the 1 stored, both paths agree.
    """
    n = graph.shape[0]
    coo = graph.tocoo()
    has_diagonal = np.zeros(n, dtype=bool)
    has_diagonal[coo.row[coo.row == coo.col]] = True
    missing = np.flatnonzero(~has_diagonal)
    if missing.size == 0:
        return graph
    # Through COO: adding sparse matrices would drop the explicit zeros (the close pairs).
    rows = np.concatenate([coo.row, missing])
    cols = np.concatenate([coo.col, missing])
    data = np.concatenate([coo.data, np.ones(missing.size, dtype=coo.data.dtype)])
    return scipy.sparse.coo_matrix((data, (rows, cols)), shape=graph.shape).tocsr()


def _check_eps(eps: float) -> float:
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a number, got {eps!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    return value


@dataclass(frozen=True)
class ClusterStats:
    """Summary of a pseudo-labelling.

    Attributes:
        num_samples: labels given.
        num_clusters: distinct labels other than ``-1``.
        num_outliers: samples labelled ``-1``.
        size_histogram: ``{cluster size: number of clusters of that size}``, sizes ascending.
        largest, smallest: extreme cluster sizes (0 when there is no cluster).
        mean_size: mean cluster size (0.0 when there is no cluster).
    """

    num_samples: int
    num_clusters: int
    num_outliers: int
    size_histogram: dict[int, int] = field(default_factory=dict)
    largest: int = 0
    smallest: int = 0
    mean_size: float = 0.0

    @property
    def outlier_fraction(self) -> float:
        return self.num_outliers / self.num_samples if self.num_samples else 0.0

    def summary(self) -> str:
        """One line for training logs."""
        return (
            f"{self.num_clusters} clusters, {self.num_outliers}/{self.num_samples} outliers "
            f"({100 * self.outlier_fraction:.1f}%), sizes {self.smallest}-{self.largest} "
            f"(mean {self.mean_size:.1f})"
        )


def cluster_statistics(labels: np.ndarray | torch.Tensor) -> ClusterStats:
    """Clusters, outliers and the size histogram of integer ``labels`` (``-1`` = outlier)."""
    if isinstance(labels, torch.Tensor) and (labels.is_floating_point() or labels.is_complex()):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype}")
    if isinstance(labels, list | tuple) and len(labels) == 0:
        labels = np.zeros(0, dtype=np.int64)  # np.asarray([]) would be float64
    arr = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    if arr.size and arr.min() < -1:
        raise ValueError(f"labels must be >= -1 (-1 marks outliers), got {int(arr.min())}")
    clustered = arr[arr >= 0]
    sizes = np.unique(clustered, return_counts=True)[1]
    hist_sizes, hist_counts = np.unique(sizes, return_counts=True)
    return ClusterStats(
        num_samples=int(arr.size),
        num_clusters=int(sizes.size),
        num_outliers=int(arr.size - clustered.size),
        size_histogram={int(s): int(c) for s, c in zip(hist_sizes, hist_counts, strict=True)},
        largest=int(sizes.max()) if sizes.size else 0,
        smallest=int(sizes.min()) if sizes.size else 0,
        mean_size=float(sizes.mean()) if sizes.size else 0.0,
    )
