"""dbscan_clustering: the labels of dbscan_pseudo_labels plus the kNN ranking behind them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid_clustering import (
    DBSCANResult,
    NoClustersWarning,
    dbscan_clustering,
    dbscan_pseudo_labels,
    knn_search,
)
from reid_clustering._validation import l2_normalize_rows
from tests.clustering.oracle import clustered_features


@pytest.mark.parametrize("sparse", [False, True])
def test_labels_equal_dbscan_pseudo_labels(sparse: bool) -> None:
    x, _ = clustered_features(20, 10, dim=16, noise=0.9, seed=1)
    result = dbscan_clustering(x, 0.5, k1=20, sparse=sparse)
    assert isinstance(result, DBSCANResult)
    expected = dbscan_pseudo_labels(x, 0.5, k1=20, sparse=sparse)
    assert result.labels.dtype == np.int64 and np.array_equal(result.labels, expected)
    assert len(np.unique(expected)) > 2  # several clusters (and outliers): a real comparison


def test_ranked_is_the_knn_search_of_the_returned_features() -> None:
    x, _ = clustered_features(10, 8, dim=16, noise=0.8, seed=2)
    result = dbscan_clustering(torch.from_numpy(x), 0.5, k1=20)
    # The features ranked are the input after the clustering's own normalisation.
    assert result.features.dtype == torch.float32
    assert torch.equal(result.features, l2_normalize_rows(torch.from_numpy(x)))
    assert result.ranked.dtype == torch.int64 and result.ranked.shape == (80, 20)
    assert torch.equal(result.ranked, knn_search(result.features, k=20).indices)
    # The torch ranking depends only on the features: a shorter search is a prefix of it.
    for m in (1, 6, 11):
        assert torch.equal(result.ranked[:, :m], knn_search(result.features, k=m).indices)


def test_numpy_input_and_no_normalisation() -> None:
    x, _ = clustered_features(6, 8, dim=8, seed=3)
    scaled = 3 * x  # not unit vectors: normalize=False must rank them as given
    result = dbscan_clustering(scaled, 0.5, k1=10, normalize=False)
    assert isinstance(result.features, torch.Tensor) and result.features.device.type == "cpu"
    assert torch.equal(result.features, torch.from_numpy(scaled))
    assert torch.equal(result.ranked, knn_search(scaled, k=10).indices)
    labels = dbscan_pseudo_labels(scaled, 0.5, k1=10, normalize=False)
    assert np.array_equal(result.labels, labels)


def test_unpacks_like_a_tuple_and_warns_at_the_caller() -> None:
    x, _ = clustered_features(5, 8, seed=4)
    with pytest.warns(NoClustersWarning, match="every sample is an outlier") as caught:
        labels, ranked, features = dbscan_clustering(x, eps=0.05, min_samples=41, k1=10)
    assert caught[0].filename == __file__  # stacklevel: the line above, not reid_clustering
    assert (labels == -1).all() and ranked.shape == (40, 10) and features.shape == (40, 32)


def test_bad_arguments_raise_like_dbscan_pseudo_labels() -> None:
    x, _ = clustered_features(5, 8, seed=6)
    with pytest.raises(ValueError, match="more samples than k1"):
        dbscan_clustering(x, 0.5, k1=40)
    with pytest.raises(ValueError, match="positive finite"):
        dbscan_clustering(x, 0.0)
