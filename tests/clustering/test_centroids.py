"""The steps around an epoch's clustering: camera debiasing and cluster centroids."""

from __future__ import annotations

import pytest
import torch

from reid_clustering import camera_debiased, cluster_centroids


def test_camera_debiased_known_answer() -> None:
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0], [0.6, 0.8]])
    cams = torch.tensor([5, 5, 2, 7])  # camera 7 has one image: it keeps its feature
    # camera 5: mean (0.5, 0.5) -> (0.5, -0.5), (-0.5, 0.5) -> unit; camera 2 likewise alone
    expected = torch.tensor(
        [[0.5**0.5, -(0.5**0.5)], [-(0.5**0.5), 0.5**0.5], [0.6, 0.8], [0.6, 0.8]]
    )
    torch.testing.assert_close(camera_debiased(feats, cams), expected)
    # two identical images of one camera: their mean is themselves, so they are kept as they are
    twins = torch.tensor([[3.0, 4.0], [3.0, 4.0], [1.0, 0.0]])
    torch.testing.assert_close(
        camera_debiased(twins, torch.tensor([1, 1, 2])),
        torch.tensor([[0.6, 0.8], [0.6, 0.8], [1.0, 0.0]]),
    )


def test_cluster_centroids_known_answer() -> None:
    feats = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 10.0], [5.0, -1.0], [0.0, 6.0]])
    labels = torch.tensor([0, 0, -1, 2, 0])  # row 2 is an outlier; cluster 1 has no row
    expected = torch.tensor([[4.0 / 3.0, 4.0], [0.0, 0.0], [5.0, -1.0], [0.0, 0.0]])
    got = cluster_centroids(feats, labels, 4)
    assert got.shape == (4, 2) and got.dtype == feats.dtype and got.device == feats.device
    torch.testing.assert_close(got, expected)


def test_cluster_centroids_of_parts_average_each_part() -> None:
    parts = torch.tensor(
        [
            [[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]],
            [[3.0, 2.0], [2.0, 0.0], [0.0, 0.0]],
            [[9.0, 9.0], [9.0, 9.0], [9.0, 9.0]],
        ]
    )  # [N = 3, P = 3, D = 2]
    labels = torch.tensor([1, 1, -1])
    got = cluster_centroids(parts, labels, 2)
    assert got.shape == (2, 3, 2)
    torch.testing.assert_close(got[0], torch.zeros(3, 2))  # no row: a zero centroid
    torch.testing.assert_close(got[1], torch.tensor([[2.0, 1.0], [1.0, 1.0], [2.0, 2.0]]))
    # Each part on its own gives the same rows as the parts side by side.
    for i in range(parts.shape[1]):
        torch.testing.assert_close(got[:, i], cluster_centroids(parts[:, i], labels, 2))


def test_cluster_centroids_are_the_cluster_means_bit_for_bit() -> None:
    """The arithmetic the engine used: ``index_add_`` of the rows, divided by the clamped
    counts, and for parts the flattened ``[N, P * D]`` rows viewed back."""
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(50, 8, generator=gen)
    parts = torch.randn(50, 3, 8, generator=gen)
    labels = torch.randint(-1, 6, (50,), generator=gen)
    k = 7  # cluster 6 is empty
    clustered = labels >= 0
    idx, lab = clustered.nonzero().flatten(), labels[clustered]
    counts = torch.bincount(lab, minlength=k).clamp(min=1).unsqueeze(1)
    g = torch.zeros(k, 8).index_add_(0, lab, feats[idx]) / counts
    flat = torch.zeros(k, 24).index_add_(0, lab, parts[idx].flatten(1))
    assert torch.equal(cluster_centroids(feats, labels, k), g)
    assert torch.equal(cluster_centroids(parts, labels, k), (flat / counts).view(k, 3, 8))
    for c in range(6):
        if (labels == c).any():
            torch.testing.assert_close(g[c], feats[labels == c].mean(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cluster_centroids_stay_on_the_features_device() -> None:
    feats = torch.randn(20, 4, device="cuda")
    labels = torch.randint(-1, 3, (20,))  # CPU labels, as the engine has them
    got = cluster_centroids(feats, labels, 3)
    assert got.is_cuda
    torch.testing.assert_close(got.cpu(), cluster_centroids(feats.cpu(), labels, 3))
    assert camera_debiased(feats, torch.randint(0, 3, (20,))).is_cuda
