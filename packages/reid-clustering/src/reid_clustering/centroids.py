"""Per-cluster and per-camera means of features: the steps around the clustering of an epoch.

* :func:`camera_debiased`: each feature minus its camera's mean feature, L2-normalised (what
  the clustering sees with ``cluster.camera_debias``);
* :func:`cluster_centroids`: the mean feature of each cluster (the rows the classifiers are
  initialised from), for global ``[N, D]`` or part ``[N, P, D]`` features.

Both run on the features' device (the training device in ``reid_train``) and allocate nothing
of size ``N × N``.
"""

from __future__ import annotations

import math
import numbers

import torch

__all__ = ["camera_debiased", "cluster_centroids"]


def _check_features(x: object, name: str, dims: tuple[int, ...]) -> torch.Tensor:
    """A finite floating-point tensor with one of ``dims`` dimensions."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() not in dims:
        shapes = " or ".join({2: "[N, D]", 3: "[N, P, D]"}[d] for d in dims)
        raise ValueError(f"{name} must have shape {shapes}, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf; check the model's outputs first")
    return x


def _check_ids(ids: object, name: str, n: int) -> torch.Tensor:
    """A 1-D integer tensor of length ``n``."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer ids, got {type(ids).__name__}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {ids.dtype}")
    if ids.dim() != 1 or ids.shape[0] != n:
        raise ValueError(
            f"{name} must have shape [{n}] (one per feature row), got {tuple(ids.shape)}"
        )
    return ids


def _sum_scale(x: torch.Tensor) -> float:
    """1.0, or the power of two ``2^e > max|x|`` when a sum of ``x``'s rows could overflow: an
    exact scale that keeps the sums finite without losing small rows to underflow otherwise."""
    peak = float(x.detach().abs().max()) if x.numel() else 0.0
    if peak == 0 or peak * max(x.shape[0], 1) * 2 < torch.finfo(x.dtype).max:
        return 1.0
    return math.ldexp(1.0, math.frexp(peak)[1])


def _row_exponents(*rows: torch.Tensor) -> torch.Tensor:
    """Per row, the exponent ``e`` with every ``|entry| < 2^e`` in all of ``rows`` (0 for zeros),
    clamped so that ``2^-e`` is a finite number of the dtype (subnormal rows are scaled up by the
    largest power of two there is, enough for their norm)."""
    peak = torch.stack([r.abs().amax(dim=1) for r in rows]).amax(dim=0)
    limit = math.frexp(torch.finfo(peak.dtype).max)[1] - 1
    return torch.where(peak > 0, torch.frexp(peak).exponent, 0).clamp(-limit, limit)


def _unit_rows(x: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """Rows divided by their L2 norm after the exact scaling ``2^-exponent`` (zero rows stay)."""
    scaled = torch.ldexp(x, -exponent.unsqueeze(1).to(x.dtype))
    norms = scaled.norm(dim=1, keepdim=True)
    return scaled / torch.where(norms > 0, norms, 1)


def camera_debiased(feats: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
    """Each row minus the mean feature of its camera, L2-normalised (``cluster.camera_debias``).

    Removes what all images of a camera share (background, colour cast) before clustering, so
    that clusters stop following cameras. A camera with a single image keeps that image's
    feature (its own mean would leave a zero vector), and so does a row equal to its camera's
    mean (nothing would be left to cluster on). Computed on the features' device (``camids``
    are moved there), in float32 for float16/bfloat16 features, and at any finite magnitude
    (norms are taken after exact power-of-two scalings, so neither overflow nor underflow).

    Args:
        feats: ``[N, D]`` floating-point features, finite.
        camids: ``[N]`` integer camera ids (any values).

    Returns:
        ``[N, D]`` L2-normalised rows (zero rows stay zero), ``feats``' dtype and device.

    Raises:
        TypeError, ValueError: ``feats`` not a finite floating-point ``[N, D]`` tensor,
            ``camids`` not ``[N]`` integers.
    """
    feats = _check_features(feats, "feats", (2,))
    camids = _check_ids(camids, "camids", feats.shape[0])
    if feats.numel() == 0:
        return feats.clone()
    work = feats if feats.dtype in (torch.float32, torch.float64) else feats.float()
    work = work / _sum_scale(work)  # exact: the sums below cannot overflow
    _, inverse = torch.unique(camids.to(feats.device), return_inverse=True)
    sums = torch.zeros(int(inverse.max()) + 1, work.shape[1], dtype=work.dtype, device=work.device)
    sums.index_add_(0, inverse, work)
    counts = torch.bincount(inverse).unsqueeze(1)
    means = torch.where(counts > 1, sums / counts, 0.0)
    debiased = work - means[inverse]
    # ‖debiased‖ <= 1e-6·‖feats‖, with both rows scaled alike (exactly) so no norm overflows.
    exponent = _row_exponents(debiased, work)
    ratio_d = _scaled_norms(debiased, exponent)
    ratio_f = _scaled_norms(work, exponent)
    empty = ratio_d <= 1e-6 * ratio_f
    debiased[empty] = work[empty]
    return _unit_rows(debiased, _row_exponents(debiased)).to(feats.dtype)


def _scaled_norms(x: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    return torch.ldexp(x, -exponent.unsqueeze(1).to(x.dtype)).norm(dim=1)


def cluster_centroids(
    features: torch.Tensor, labels: torch.Tensor, num_clusters: int
) -> torch.Tensor:
    """The mean feature of each cluster ``0..num_clusters-1``; outliers (label < 0) are left out.

    The rows of each cluster are summed with ``index_add_`` and divided by the cluster's size;
    a cluster without rows gets a zero centroid (its count is clamped to 1). Not normalised:
    ``ReIDModel.load_centroids`` L2-normalises the rows it writes. float16/bfloat16 features are
    summed in float32, and features whose sums could overflow are scaled by a power of two first
    (exactly), so every centroid of finite features is finite.

    Args:
        features: ``[N, D]`` global or ``[N, P, D]`` part features (each part averaged on its
            own), floating point and finite.
        labels: ``[N]`` integer cluster labels, ``-1`` for outliers; labels ``>= 0`` must be
            ``< num_clusters``. Any device (moved to the features').
        num_clusters: K >= 0, the number of centroids.

    Returns:
        ``[K, D]`` or ``[K, P, D]`` centroids with ``features``' dtype, on ``features``' device.

    Raises:
        TypeError, ValueError: bad ``features`` or ``labels`` (dtype, shape, NaN/inf),
            ``num_clusters`` not an integer >= 0, or a label >= ``num_clusters``.
    """
    features = _check_features(features, "features", (2, 3))
    labels = _check_ids(labels, "labels", features.shape[0])
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, numbers.Integral):
        raise TypeError(f"num_clusters must be an integer, got {num_clusters!r}")
    num_clusters = int(num_clusters)
    if num_clusters < 0:
        raise ValueError(f"num_clusters must be >= 0, got {num_clusters}")
    if labels.numel() and int(labels.max()) >= num_clusters:
        raise ValueError(
            f"labels must be < num_clusters = {num_clusters} (or -1 for outliers), got label "
            f"{int(labels.max())}"
        )
    device = features.device
    clustered = labels >= 0
    idx, lab = clustered.nonzero().flatten().to(device), labels[clustered].to(device).long()
    counts = torch.bincount(lab, minlength=num_clusters).clamp(min=1).unsqueeze(1)
    work = features if features.dtype in (torch.float32, torch.float64) else features.float()
    rows = work[idx].flatten(1)  # [M, D], or the parts side by side: [M, P * D]
    scale = _sum_scale(rows)
    sums = torch.zeros(num_clusters, rows.shape[1], dtype=work.dtype, device=device)
    sums.index_add_(0, lab, rows / scale)
    means = (sums / counts) * scale
    return means.to(features.dtype).view(num_clusters, *features.shape[1:])
