from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.cluster import DBSCAN

import reid_clustering.dbscan as dbscan_module
from reid_clustering import (
    NoClustersWarning,
    cluster_statistics,
    compute_jaccard_distance,
    dbscan_pseudo_labels,
    pseudo_label_quality,
)
from reid_clustering._reference import plain_jaccard_distance
from tests.clustering.oracle import assert_knn_separated, clustered_features


def test_recovers_well_separated_planted_clusters() -> None:
    x, truth = clustered_features(25, 12, dim=64, noise=0.2, seed=0)
    labels = dbscan_pseudo_labels(x, eps=0.5)
    assert labels.dtype == np.int64 and labels.shape == truth.shape
    assert pseudo_label_quality(labels, truth).ari == 1.0
    assert cluster_statistics(labels).num_outliers == 0


@pytest.mark.parametrize("eps", [0.3, 0.5, 0.6])
def test_dense_and_sparse_paths_give_identical_labels(eps: float) -> None:
    # Overlapping clusters: outliers, border points and merged clusters all occur.
    x, _ = clustered_features(20, 10, dim=16, noise=0.9, seed=1)
    dense = dbscan_pseudo_labels(x, eps, k1=20, sparse=False)
    sparse = dbscan_pseudo_labels(x, eps, k1=20, sparse=True)
    assert np.array_equal(dense, sparse)
    stats = cluster_statistics(dense)
    assert stats.num_clusters > 1


def test_labels_equal_dbscan_on_the_plain_reference_distance() -> None:
    x, _ = clustered_features(15, 10, dim=16, noise=0.8, seed=2)
    # The reference ranks neighbours by a numpy (BLAS) matmul, ours by pair_dot: equal labels
    # need no near-tie at the ranked-list cuts (k1 = 30, half = 16, k2 = 6) ...
    assert_knn_separated(x, (6, 16, 30))
    reference = plain_jaccard_distance(x, 30, 6)
    # ... and no distance within rounding of eps, so that both put every pair on the same side.
    np.testing.assert_allclose(
        compute_jaccard_distance(x, 30, 6, normalize=False), reference, rtol=0, atol=2e-6
    )
    assert np.abs(reference - 0.5).min() > 1e-5
    expected = DBSCAN(eps=0.5, min_samples=4, metric="precomputed").fit_predict(reference)
    assert np.array_equal(dbscan_pseudo_labels(x, 0.5, normalize=False), expected)


@pytest.mark.parametrize("sparse", [False, True])
def test_bf16_candidate_knn_gives_the_same_distances_and_labels(sparse: bool) -> None:
    # The certified bf16 search returns the exact neighbours, so nothing downstream changes.
    x, _ = clustered_features(40, 12, dim=128, noise=0.7, seed=3)
    exact = dbscan_pseudo_labels(x, 0.5, sparse=sparse, knn_precision="exact")
    fast = dbscan_pseudo_labels(x, 0.5, sparse=sparse, knn_precision="bf16-candidates")
    assert np.array_equal(exact, fast) and cluster_statistics(exact).num_clusters > 1
    d_exact = compute_jaccard_distance(x, 30, knn_precision="exact")
    d_fast = compute_jaccard_distance(x, 30, knn_precision="bf16-candidates")
    assert np.array_equal(d_exact, d_fast)


def test_sparse_path_is_chosen_above_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real = dbscan_module.compute_jaccard_distance

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(kwargs["sparse"])
        return real(*args, **kwargs)

    monkeypatch.setattr(dbscan_module, "compute_jaccard_distance", spy)
    x, _ = clustered_features(6, 8, seed=3)
    dbscan_pseudo_labels(x, 0.5, k1=10)
    monkeypatch.setattr(dbscan_module, "SPARSE_THRESHOLD", 10)
    dbscan_pseudo_labels(x, 0.5, k1=10)
    assert seen == [False, True]


def test_all_outliers_warns_and_returns_minus_one() -> None:
    x, _ = clustered_features(5, 8, seed=4)
    with pytest.warns(NoClustersWarning, match="every sample is an outlier"):
        labels = dbscan_pseudo_labels(x, eps=0.05, min_samples=41, k1=10)  # > N samples
    assert (labels == -1).all()
    stats = cluster_statistics(labels)
    assert (stats.num_clusters, stats.num_outliers, stats.largest) == (0, 40, 0)


def test_no_warning_when_clusters_exist() -> None:
    x, _ = clustered_features(5, 8, noise=0.1, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dbscan_pseudo_labels(x, eps=0.5, k1=10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": 0}, "positive finite"),
        ({"eps": float("nan")}, "positive finite"),
        ({"eps": "big"}, "must be a number"),
        ({"eps": 1.0, "sparse": True}, "sparse radius graph cannot represent"),
        ({"eps": 0.5, "min_samples": 0}, "min_samples must be >= 1"),
        ({"eps": 0.5, "k1": 40}, "more samples than k1"),
        ({"eps": 0.5, "knn_precision": "fp16"}, "unknown kNN precision"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    x, _ = clustered_features(5, 8, seed=6)
    with pytest.raises(ValueError, match=message):
        dbscan_pseudo_labels(x, **kwargs)


def test_dense_eps_of_one_is_allowed() -> None:
    x, _ = clustered_features(3, 8, seed=7)
    labels = dbscan_pseudo_labels(x, eps=1.0, k1=10)
    assert set(labels.tolist()) == {0}  # every pair is within eps: one cluster
    assert compute_jaccard_distance(x, 10).max() <= 1.0


def test_cluster_statistics_histogram() -> None:
    stats = cluster_statistics(np.array([0, 0, 1, 1, 2, 2, 2, -1, 3, 3]))
    assert stats.num_clusters == 4 and stats.num_outliers == 1 and stats.num_samples == 10
    assert stats.size_histogram == {2: 3, 3: 1}
    assert (stats.smallest, stats.largest, stats.mean_size) == (2, 3, 2.25)
    assert stats.summary() == "4 clusters, 1/10 outliers (10.0%), sizes 2-3 (mean 2.2)"
    with pytest.raises(ValueError, match=">= -1"):
        cluster_statistics(np.array([0, -2]))
    with pytest.raises(ValueError, match="1-D integer"):
        cluster_statistics(np.array([0.5]))
