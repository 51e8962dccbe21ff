"""Clustering for unsupervised person re-identification.

* :func:`knn_search`: exact inner-product kNN with torch (CPU/GPU, default), faiss-cpu or
  faiss-gpu backends.
* :func:`compute_jaccard_distance`: the k-reciprocal Jaccard distance of SpCL/PPLR, dense (equal
  to the reference) or sparse (``O(N·k)`` memory); built on :mod:`reid_clustering.kreciprocal`,
  the k-reciprocal encoding that ``reid_eval``'s re-ranking shares.
* :func:`dbscan_pseudo_labels` and :func:`cluster_statistics`: DBSCAN pseudo labels and their
  summary; :func:`dbscan_clustering`: the labels with the kNN ranking behind them (for reuse);
  :func:`pseudo_label_quality`: NMI, ARI, pairwise precision/recall/F1.
* :func:`camera_debiased` (each feature minus its camera's mean, before clustering) and
  :func:`cluster_centroids` (the mean feature of each cluster, global or per part).
"""

from .centroids import camera_debiased, cluster_centroids
from .dbscan import (
    SPARSE_THRESHOLD,
    ClusterStats,
    DBSCANResult,
    NoClustersWarning,
    cluster_statistics,
    dbscan_clustering,
    dbscan_pseudo_labels,
)
from .jaccard import compute_jaccard_distance, half_width
from .knn import BACKENDS, PRECISIONS, KNNResult, faiss_available, knn_search, rank_by_distance
from .kreciprocal import (
    RowSparse,
    expanded_reciprocal_pairs,
    jaccard_from_encoding,
    k_reciprocal_encoding,
    k_reciprocal_sets,
    local_query_expansion,
    reciprocal_mask,
)
from .quality import LabelQuality, pseudo_label_quality

__version__ = "0.2.0"

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "SPARSE_THRESHOLD",
    "ClusterStats",
    "DBSCANResult",
    "KNNResult",
    "LabelQuality",
    "NoClustersWarning",
    "RowSparse",
    "__version__",
    "camera_debiased",
    "cluster_centroids",
    "cluster_statistics",
    "compute_jaccard_distance",
    "dbscan_clustering",
    "dbscan_pseudo_labels",
    "expanded_reciprocal_pairs",
    "faiss_available",
    "half_width",
    "jaccard_from_encoding",
    "k_reciprocal_encoding",
    "k_reciprocal_sets",
    "knn_search",
    "local_query_expansion",
    "pseudo_label_quality",
    "rank_by_distance",
    "reciprocal_mask",
]
