"""Metric losses of the training engine: PPLR's soft triplet (Eq. 3) and camera proxies (Eq. 4).

Pure functions on tensors (any device; half/bfloat16 inputs are computed in float32), with
``nn.Module`` wrappers. The classification losses (AALS, PGLR, DCLS, label smoothing) live in
``reid_refine``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_backbones import l2_normalize

__all__ = [
    "CameraProxyLoss",
    "SoftTripletLoss",
    "camera_proxies",
    "camera_proxy_loss",
    "euclidean_distances",
    "soft_triplet_loss",
]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Fill value for masked logits: exp() of it underflows to 0 next to any real logit, and a row
# with nothing selected stays finite (no NaN gradients).
_MASKED = -1e9


def _float_tensor(x: object, name: str, ndim: int | tuple[int, ...]) -> torch.Tensor:
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in dims:
        raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dims, got {x.dim()}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _int_vector(x: object, name: str, n: int, device: torch.device) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 1 or x.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}], got {tuple(x.shape)}")
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got {x.dtype}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but the features are on {device}")
    return x


def euclidean_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances ``[M, N]``: ``sqrt(max(‖x‖² + ‖y‖² − 2⟨x, y⟩, 1e-12))``.

    The expansion and the clamp (distances never below 1e-6, zero gradient there) are those of
    the official PPLR/MMT ``euclidean_dist``, so a point's distance to itself is ~1e-6.
    """
    xx = x.pow(2).sum(1, keepdim=True)
    yy = y.pow(2).sum(1, keepdim=True)
    dist = torch.addmm(xx + yy.t(), x, y.t(), beta=1.0, alpha=-2.0)
    return dist.clamp(min=1e-12).sqrt()


def soft_triplet_loss(
    features: torch.Tensor, targets: torch.Tensor, margin: float = 0.0
) -> torch.Tensor:
    """Batch-hard softmax ("soft") triplet loss, PPLR Eq. 3.

    For each anchor i, with Euclidean (not squared) distances on the features **as passed**
    (PPLR: un-normalised global features): ``d_ap`` = distance to the hardest positive (largest
    distance among the samples with its label, i itself included) and ``d_an`` = distance to the
    hardest negative (smallest distance to another label). Eq. 3 is the cross-entropy of the
    softmax over ``(d_ap, d_an)`` with all the target mass on ``d_an``::

        loss_i = −log(exp(d_an) / (exp(d_ap) + exp(d_an))) = softplus(d_ap − d_an)

    averaged over the batch. This is the official ``SoftTripletLoss`` (yoonkicho/PPLR,
    ``pplr/loss/triplet.py``; from MMT), which computes ``log_softmax(stack(d_ap, d_an))``.

    ``margin`` follows that code too: it is **not** an additive margin but the target mass put on
    the positive term, ``loss_i = −m·log p_ap − (1 − m)·log p_an`` with ``p = softmax(d_ap,
    d_an)``, i.e. ``m·softplus(d_an − d_ap) + (1 − m)·softplus(d_ap − d_an)``. Both papers use
    ``margin = 0``, which is Eq. 3 exactly.

    Edge cases: an anchor whose only positive is itself (a label seen once in the batch) gets
    ``d_ap`` ≈ 1e-6, its distance to itself, as in the reference (P×K batches with K ≥ 2 avoid
    it). An anchor without negatives (every target equal) has no triplet: ValueError.

    Args:
        features: ``[N, D]`` float features (half/bfloat16 are computed in float32).
        targets: ``[N]`` integer (pseudo) labels on the same device.
        margin: ``m`` in [0, 1] (see above); 0 gives Eq. 3.

    Returns:
        Scalar float32 (or float64) loss; gradients reach ``features``.
    """
    x = _float_tensor(features, "features", 2)
    n = x.shape[0]
    targets = _int_vector(targets, "targets", n, x.device)
    if not 0.0 <= float(margin) <= 1.0:
        raise ValueError(f"margin must be in [0, 1] (the target mass on d_ap), got {margin}")
    same = targets[:, None] == targets[None, :]
    if n == 0 or bool(same.all()):
        raise ValueError(
            "soft_triplet_loss needs at least two different labels in the batch (every anchor "
            f"needs a negative); got {n} samples with labels {sorted(set(targets.tolist()))}"
        )
    dist = euclidean_distances(x, x)
    d_ap = dist.masked_fill(~same, float("-inf")).amax(dim=1)
    d_an = dist.masked_fill(same, float("inf")).amin(dim=1)
    log_p = F.log_softmax(torch.stack((d_ap, d_an), dim=1), dim=1)
    m = float(margin)
    return (-m * log_p[:, 0] - (1.0 - m) * log_p[:, 1]).mean()


@torch.no_grad()
def camera_proxies(
    features: torch.Tensor, labels: torch.Tensor, camids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Camera-aware proxies of PPLR (CAP): L2-normalised centroid of every (cluster, camera).

    ``c_(a,b)`` = mean of the features with camera a in cluster b, L2-normalised along the
    last dimension (at any finite magnitude: features scaled by 1e19 or 1e-19 give the same
    proxies). Samples with a negative label (outliers) are ignored. Proxies are ordered by
    label, then camera (the official order). Pass the features the clustering used (the
    reference: the L2-normalised extracted features, global ``[N, D]`` or parts ``[N, P, D]``).

    Args:
        features: ``[N, D]`` or ``[N, P, D]`` float (parts: every part gets its own proxies).
        labels: ``[N]`` integer pseudo labels (−1 = outlier).
        camids: ``[N]`` integer cameras.

    Returns:
        ``(proxies [M, D] or [M, P, D] float32, proxy_labels [M] int64, proxy_cams [M] int64)``,
        detached, on the features' device.
    """
    x = _float_tensor(features, "features", (2, 3)).float()
    n = x.shape[0]
    labels = _int_vector(labels, "labels", n, x.device).long()
    camids = _int_vector(camids, "camids", n, x.device).long()
    keep = labels >= 0
    if not bool(keep.any()):
        raise ValueError("camera_proxies: every sample is an outlier (label < 0); no proxies")
    x, labels, camids = x[keep], labels[keep], camids[keep]
    if bool((camids < 0).any()):
        raise ValueError("camids must be >= 0 (0-based cameras)")
    num_cams = int(camids.max()) + 1
    keys, inverse = torch.unique(labels * num_cams + camids, sorted=True, return_inverse=True)
    sums = torch.zeros((keys.numel(), *x.shape[1:]), dtype=x.dtype, device=x.device)
    sums.index_add_(0, inverse, x)
    counts = torch.bincount(inverse, minlength=keys.numel()).to(x.dtype)
    means = sums / counts.view(-1, *([1] * (x.dim() - 1)))
    return l2_normalize(means, dim=-1), keys // num_cams, keys % num_cams


def camera_proxy_loss(
    features: torch.Tensor,
    pseudo_labels: torch.Tensor,
    camids: torch.Tensor,
    proxies: torch.Tensor,
    proxy_labels: torch.Tensor,
    proxy_cams: torch.Tensor,
    temperature: float = 0.07,
    num_hard_negatives: int = 50,
) -> torch.Tensor:
    """Inter-camera contrastive loss on camera-aware proxies, PPLR Eq. 4 (from CAP, AAAI 2021).

    With ``f_i`` the L2-normalised feature of sample i (normalised here) and ``c_j`` the proxies
    (from :func:`camera_proxies`, treated as constants)::

        L_cam = (1/B) Σ_i −(1/|P_i|) Σ_{j∈P_i} log( exp(c_jᵀf_i/τ) / Σ_{k∈P_i∪Q_i} exp(c_kᵀf_i/τ) )

    * ``P_i`` (positives): the proxies of i's cluster in the **other** cameras;
    * ``Q_i`` (hard negatives): the ``num_hard_negatives`` proxies of other clusters most similar
      to ``f_i`` (all of them when there are fewer). The official code fills its top-50 with
      non-negative proxies when a batch has fewer than 50 negatives; here only true negatives
      are used (identical whenever 50 negatives exist).
    * A sample whose cluster is seen by its own camera only has no positive: it contributes 0
      but still counts in the mean over the batch size B (the official reduction). A batch where
      no sample has a positive gives a loss of 0 (with a graph, so backward works).

    Eq. 5 weighs the term by λ_cam (0.5; 1.0 on MSMT17); the official code adds the same loss
    on each part feature (against per-part proxies), averaged over parts.

    Args:
        features: ``[B, D]`` float (any finite magnitude; L2-normalised here).
        pseudo_labels: ``[B]`` integer cluster of each sample.
        camids: ``[B]`` integer camera of each sample.
        proxies: ``[M, D]`` L2-normalised proxies; proxy_labels, proxy_cams: ``[M]`` integers.
        temperature: τ > 0 (0.07).
        num_hard_negatives: size of ``Q_i`` (50), >= 0.

    Returns:
        Scalar float32 loss; gradients reach ``features`` only.

    Raises:
        ValueError: an empty batch (B = 0), or inconsistent inputs (the message names them).
    """
    x = _float_tensor(features, "features", 2)
    b, d = x.shape
    if b == 0:  # a mean over no sample: refused, not 0 (an empty batch is a caller's bug)
        raise ValueError(
            f"camera_proxy_loss: the batch is empty (features has shape {tuple(x.shape)}, no "
            "sample to average the loss over); pass a batch with at least one sample"
        )
    pseudo_labels = _int_vector(pseudo_labels, "pseudo_labels", b, x.device)
    camids = _int_vector(camids, "camids", b, x.device)
    proxies = _float_tensor(proxies, "proxies", 2)
    if proxies.shape[1] != d:
        raise ValueError(f"proxies must have shape [M, {d}], got {tuple(proxies.shape)}")
    if proxies.device != x.device:
        raise ValueError(f"proxies are on {proxies.device} but the features are on {x.device}")
    m = proxies.shape[0]
    proxy_labels = _int_vector(proxy_labels, "proxy_labels", m, x.device)
    proxy_cams = _int_vector(proxy_cams, "proxy_cams", m, x.device)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if isinstance(num_hard_negatives, bool) or int(num_hard_negatives) != num_hard_negatives:
        raise ValueError(f"num_hard_negatives must be an integer, got {num_hard_negatives!r}")
    if num_hard_negatives < 0:
        raise ValueError(f"num_hard_negatives must be >= 0, got {num_hard_negatives}")

    sims = l2_normalize(x, dim=1) @ proxies.detach().to(x.dtype).t() / temperature  # [B, M]
    same_cluster = pseudo_labels[:, None] == proxy_labels[None, :]
    positive = same_cluster & (camids[:, None] != proxy_cams[None, :])
    has_pos = positive.any(dim=1)
    if not bool(has_pos.any()):
        return sims.sum() * 0.0
    sims, positive, same_cluster = sims[has_pos], positive[has_pos], same_cluster[has_pos]

    selected = positive.clone()
    k = min(int(num_hard_negatives), m)
    if k > 0:
        neg_sims = sims.detach().masked_fill(same_cluster, float("-inf"))
        top_vals, top_idx = neg_sims.topk(k, dim=1)
        hard = torch.zeros_like(selected).scatter_(1, top_idx, torch.isfinite(top_vals))
        selected |= hard  # the top-k true negatives (non-negatives, at -inf, are dropped)
    log_p = F.log_softmax(sims.masked_fill(~selected, _MASKED), dim=1)
    pos = positive.to(log_p.dtype)
    per_sample = -(log_p * pos).sum(dim=1) / pos.sum(dim=1)
    return per_sample.sum() / b


class SoftTripletLoss(nn.Module):
    """Module form of :func:`soft_triplet_loss` (PPLR Eq. 3)."""

    def __init__(self, margin: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= float(margin) <= 1.0:
            raise ValueError(f"margin must be in [0, 1], got {margin}")
        self.margin = float(margin)

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return soft_triplet_loss(features, targets, self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


class CameraProxyLoss(nn.Module):
    """:func:`camera_proxy_loss` with the epoch's proxies held as buffers (they follow
    ``.to(device)``); refresh them each epoch with :meth:`set_proxies`."""

    proxies: torch.Tensor
    proxy_labels: torch.Tensor
    proxy_cams: torch.Tensor

    def __init__(self, temperature: float = 0.07, num_hard_negatives: int = 50) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.num_hard_negatives = int(num_hard_negatives)
        self.register_buffer("proxies", torch.zeros(0, 0), persistent=False)
        self.register_buffer("proxy_labels", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("proxy_cams", torch.zeros(0, dtype=torch.long), persistent=False)

    def set_proxies(
        self, features: torch.Tensor, labels: torch.Tensor, camids: torch.Tensor
    ) -> None:
        """Recompute the proxies (:func:`camera_proxies`) from ``[N, D]`` features."""
        device = self.proxies.device
        proxies, plabels, pcams = camera_proxies(features, labels, camids)
        if proxies.dim() != 2:
            raise ValueError("CameraProxyLoss holds [M, D] proxies: pass one part at a time")
        self.proxies, self.proxy_labels, self.proxy_cams = (
            proxies.to(device),
            plabels.to(device),
            pcams.to(device),
        )

    def forward(
        self, features: torch.Tensor, pseudo_labels: torch.Tensor, camids: torch.Tensor
    ) -> torch.Tensor:
        if self.proxies.numel() == 0:
            raise RuntimeError("CameraProxyLoss has no proxies yet: call set_proxies() first")
        return camera_proxy_loss(
            features,
            pseudo_labels,
            camids,
            self.proxies,
            self.proxy_labels,
            self.proxy_cams,
            self.temperature,
            self.num_hard_negatives,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, num_hard_negatives={self.num_hard_negatives}"
