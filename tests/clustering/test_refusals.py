"""Clustering at any feature magnitude, and advice for too few samples that actually works."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from reid_clustering import cluster_statistics, compute_jaccard_distance, dbscan_pseudo_labels
from reid_clustering._validation import l2_normalize_rows
from tests.clustering.oracle import clustered_features


def _nine_clusters() -> np.ndarray:
    """90 features in 9 clusters, of norm 8 (un-normalised, like a backbone's outputs)."""
    x, _ = clustered_features(9, 10, dim=32, noise=0.3, seed=0)
    return x * np.float32(8.0)


@pytest.mark.parametrize("scale", [1e19, 1e30, 3e-20, 1e-30, 1e-40])
@pytest.mark.parametrize("sparse", [False, True])
def test_labels_do_not_depend_on_the_feature_magnitude(scale: float, sparse: bool) -> None:
    # A float32 norm of rows with entries ~1e19 overflows to inf (and ~1e-20 underflows to 0):
    # the features used to collapse into one cluster, or were refused as zero-norm rows.
    x = _nine_clusters()
    expected = dbscan_pseudo_labels(x, 0.5, k1=10, sparse=sparse)
    assert cluster_statistics(expected).num_clusters == 9
    scaled = (x.astype(np.float64) * scale).astype(np.float32)
    assert np.isfinite(scaled).all() and (np.abs(scaled).max(axis=1) > 0).all()
    labels = dbscan_pseudo_labels(scaled, 0.5, k1=10, sparse=sparse)
    assert np.array_equal(labels, expected)


@pytest.mark.parametrize("scale", [2.0**64, 2.0**-70, 1e19, 1e-30])
def test_jaccard_distance_does_not_depend_on_the_feature_magnitude(scale: float) -> None:
    x = _nine_clusters()
    scaled = torch.from_numpy(x).double().mul(scale).float()
    expected = compute_jaccard_distance(torch.from_numpy(x), 10, 6)
    result = compute_jaccard_distance(scaled, 10, 6)
    if np.log2(scale).is_integer():
        assert torch.equal(result, expected)  # a power-of-two scale is exact
    else:
        torch.testing.assert_close(result, expected, rtol=0, atol=1e-5)


def test_normalisation_of_normal_scale_rows_is_bit_identical_to_the_plain_division() -> None:
    g = torch.Generator().manual_seed(0)
    for dim in (1, 3, 64, 2048):
        x = torch.randn(40, dim, generator=g) * 10.0 ** torch.randint(-12, 13, (40, 1), generator=g)
        assert torch.equal(l2_normalize_rows(x), x / x.norm(dim=1).unsqueeze(1))


@pytest.mark.parametrize("value", [3.4e38, 1e19, 1.0, 1e-30, 1e-45])
def test_normalised_rows_have_unit_norm_at_the_float32_extremes(value: float) -> None:
    x = torch.tensor([[value, value, value, value], [value, 0.0, 0.0, 0.0]])
    y = l2_normalize_rows(x)
    assert bool(torch.isfinite(y).all())
    torch.testing.assert_close(y.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(y[0], torch.full((4,), 0.5))


def test_all_zero_rows_are_still_refused() -> None:
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="1 rows with zero norm"):
        l2_normalize_rows(x)


def _follow_advice(message: str, k2: int) -> tuple[int, int]:
    match = re.search(r"\(e\.g\. k1=(\d+)(?:, k2=(\d+))?\)", message)
    assert match, message
    return int(match.group(1)), int(match.group(2) or k2)


def test_a_single_sample_is_refused_without_a_k1_to_try() -> None:
    x = np.ones((1, 8), dtype=np.float32)
    for call in (
        lambda: compute_jaccard_distance(x, 30, 6),
        lambda: compute_jaccard_distance(x, 1, 1),
        lambda: dbscan_pseudo_labels(x, 0.5),
    ):
        with pytest.raises(ValueError, match="clustering needs at least 2 samples") as info:
            call()
        assert "k1=" not in str(info.value).split("got N=1")[1]


@pytest.mark.parametrize(
    ("n", "k1", "k2"),
    [(2, 30, 6), (2, 2, 1), (3, 3, 3), (5, 20, 6), (12, 30, 6), (40, 40, 6), (6, 6, 6)],
)
def test_the_suggested_k1_and_k2_pass(n: int, k1: int, k2: int) -> None:
    x = np.random.default_rng(n).normal(size=(n, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=rf"more samples than k1: got N={n}, k1={k1}") as info:
        dbscan_pseudo_labels(x, 0.5, min_samples=1, k1=k1, k2=k2)
    new_k1, new_k2 = _follow_advice(str(info.value), k2)
    assert 1 <= new_k2 <= new_k1 < n
    if new_k2 == k2:
        assert "k2=" not in str(info.value).split("e.g.")[1]  # k2 kept when it still fits
    d = compute_jaccard_distance(x, new_k1, new_k2)
    assert d.shape == (n, n)
    labels = dbscan_pseudo_labels(x, 0.5, min_samples=1, k1=new_k1, k2=new_k2)
    assert labels.shape == (n,)


def test_the_suggestion_keeps_half_of_n_for_a_normal_case() -> None:
    x, _ = clustered_features(4, 10, dim=16, seed=1)  # N = 40 <= k1 = 40
    with pytest.raises(ValueError, match=r"lower k1 \(e\.g\. k1=20\)"):
        compute_jaccard_distance(x, 40, 6)
    assert compute_jaccard_distance(x, 20, 6).shape == (40, 40)
