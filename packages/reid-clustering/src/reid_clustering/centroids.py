"""Per-cluster and per-camera means of features: the steps around the clustering of an epoch.

* :func:`camera_debiased`: each feature minus its camera's mean feature, L2-normalised (what
  the clustering sees with ``cluster.camera_debias``);
* :func:`cluster_centroids`: the mean feature of each cluster (the rows the classifiers are
  initialised from), for global ``[N, D]`` or part ``[N, P, D]`` features.

Both run on the features' device (the training device in ``reid_train``) and allocate nothing
of size ``N × N``.
"""

from __future__ import annotations

import torch

__all__ = ["camera_debiased", "cluster_centroids"]


def camera_debiased(feats: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
    """Each row minus the mean feature of its camera, L2-normalised (``cluster.camera_debias``).

    Removes what all images of a camera share (background, colour cast) before clustering, so
    that clusters stop following cameras. A camera with a single image keeps that image's
    feature (its own mean would leave a zero vector), and so does a row equal to its camera's
    mean (nothing would be left to cluster on). Computed on the features' device (``camids``
    are moved there).

    Args:
        feats: ``[N, D]`` floating-point features.
        camids: ``[N]`` integer camera ids (any values).

    Returns:
        ``[N, D]`` L2-normalised rows, on ``feats``' device.
    """
    _, inverse = torch.unique(camids.to(feats.device), return_inverse=True)
    sums = torch.zeros(
        int(inverse.max()) + 1, feats.shape[1], dtype=feats.dtype, device=feats.device
    )
    sums.index_add_(0, inverse, feats)
    counts = torch.bincount(inverse).unsqueeze(1)
    means = torch.where(counts > 1, sums / counts, 0.0)
    debiased = feats - means[inverse]
    empty = debiased.norm(dim=1) <= 1e-6 * feats.norm(dim=1)
    debiased[empty] = feats[empty]
    return torch.nn.functional.normalize(debiased, dim=1)


def cluster_centroids(
    features: torch.Tensor, labels: torch.Tensor, num_clusters: int
) -> torch.Tensor:
    """The mean feature of each cluster ``0..num_clusters-1``; outliers (label < 0) are left out.

    The rows of each cluster are summed with ``index_add_`` and divided by the cluster's size;
    a cluster without rows gets a zero centroid (its count is clamped to 1). Not normalised:
    ``ReIDModel.load_centroids`` L2-normalises the rows it writes.

    Args:
        features: ``[N, D]`` global or ``[N, P, D]`` part features (each part averaged on its
            own).
        labels: ``[N]`` integer cluster labels, ``-1`` for outliers; labels ``>= 0`` must be
            ``< num_clusters``. Any device (moved to the features').
        num_clusters: K, the number of centroids.

    Returns:
        ``[K, D]`` or ``[K, P, D]`` centroids with ``features``' dtype, on ``features``' device.
    """
    device = features.device
    clustered = labels >= 0
    idx, lab = clustered.nonzero().flatten().to(device), labels[clustered].to(device)
    counts = torch.bincount(lab, minlength=num_clusters).clamp(min=1).unsqueeze(1)
    rows = features[idx].flatten(1)  # [M, D], or the parts side by side: [M, P * D]
    sums = torch.zeros(num_clusters, rows.shape[1], dtype=features.dtype, device=device)
    sums.index_add_(0, lab, rows)
    return (sums / counts).view(num_clusters, *features.shape[1:])
