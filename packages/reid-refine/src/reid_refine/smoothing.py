"""Soft-target cross-entropy (the one implementation every loss here reuses) and constant LS."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_refine._checks import (
    check_float_tensor,
    check_nonempty_batch,
    check_targets,
    check_unit_interval,
)

__all__ = [
    "LabelSmoothingLoss",
    "SoftCrossEntropyLoss",
    "label_smoothing_loss",
    "one_hot_targets",
    "smoothed_targets",
    "soft_cross_entropy",
]


def soft_cross_entropy(
    logits: torch.Tensor, target_probs: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy against soft targets: ``-Σ_k t_k · log_softmax(logits)_k``.

    Args:
        logits: ``[..., K]`` float, the last dimension holds the classes.
        target_probs: same shape as ``logits``; a distribution per row (not checked to sum to 1,
            so that KL-style targets can be passed too). Gradients flow into it only if it
            requires them; callers in this package pass detached targets.
        reduction: ``"mean"`` (over all leading positions, e.g. the batch), ``"sum"`` or
            ``"none"`` (shape ``[...]``).

    Returns:
        The reduced loss.

    Raises:
        ValueError: on invalid inputs, and for ``reduction="mean"`` on an empty batch (no
            leading positions, e.g. ``[0, K]`` logits), whose mean would be NaN (``"sum"``
            gives 0 and ``"none"`` an empty tensor).
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() < 1:
        raise ValueError("logits must be a torch.Tensor with a class dimension [..., K]")
    logits = check_float_tensor(logits, "logits", logits.dim())
    if not isinstance(target_probs, torch.Tensor) or not target_probs.is_floating_point():
        raise ValueError("target_probs must be a floating-point torch.Tensor")
    if target_probs.shape != logits.shape:
        raise ValueError(
            f"target_probs must have the shape of logits {tuple(logits.shape)}, "
            f"got {tuple(target_probs.shape)}"
        )
    if not bool(torch.isfinite(target_probs).all()):
        raise ValueError("target_probs contains NaN or inf")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if reduction == "mean":
        check_nonempty_batch(logits, "logits", "soft_cross_entropy")
    return soft_cross_entropy_unchecked(logits, target_probs, reduction)


def soft_cross_entropy_unchecked(
    logits: torch.Tensor, target_probs: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """:func:`soft_cross_entropy` without input checks, for callers that validated already."""
    per_row = -(target_probs * F.log_softmax(logits, dim=-1)).sum(dim=-1)
    if reduction == "mean":
        return per_row.mean()
    if reduction == "sum":
        return per_row.sum()
    if reduction == "none":
        return per_row
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def one_hot_targets(targets: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``[N]`` integer labels → ``[N, K]`` one-hot rows of ``dtype`` (labels already checked)."""
    return F.one_hot(targets.long(), num_classes).to(dtype)


def smoothed_targets(
    targets: torch.Tensor, num_classes: int, epsilon: float | torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Label smoothing ``(1 - ε)·y + ε/K`` (DCLS Eq. 3); ``epsilon`` scalar or ``[N, 1]``."""
    y = one_hot_targets(targets, num_classes, dtype)
    return (1.0 - epsilon) * y + epsilon / num_classes


def label_smoothing_loss(
    logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 0.1
) -> torch.Tensor:
    """Constant label smoothing (Szegedy et al.; DCLS Eq. 3 with a constant β; CLS of Table 8).

    target = (1 − ε)·onehot(y) + ε/K; loss = batch mean of −Σ_k target_k·log_softmax(logits)_k.

    Args:
        logits: ``[N, K]`` float.
        targets: ``[N]`` integer labels in ``[0, K)``.
        epsilon: ε in [0, 1] (0 gives plain cross-entropy).

    Returns:
        Scalar loss.

    Raises:
        ValueError: on invalid inputs, or on an empty batch (N = 0; the mean would be NaN).
    """
    logits = check_float_tensor(logits, "logits", 2)
    check_nonempty_batch(logits, "logits", "label_smoothing_loss")
    n, k = logits.shape
    targets = check_targets(targets, n, k)
    eps = check_unit_interval(epsilon, "epsilon")
    return soft_cross_entropy_unchecked(logits, smoothed_targets(targets, k, eps, logits.dtype))


class SoftCrossEntropyLoss(nn.Module):
    """Module form of :func:`soft_cross_entropy` (``[..., K]`` logits and targets → scalar).

    Raises ValueError on an empty batch, like :func:`soft_cross_entropy` with ``"mean"``.
    """

    def forward(self, logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(logits, target_probs)


class LabelSmoothingLoss(nn.Module):
    """Module form of :func:`label_smoothing_loss` (``[N, K]``, ``[N]`` → scalar).

    Raises ValueError on an empty batch (N = 0), like :func:`label_smoothing_loss`.
    """

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        self.epsilon = check_unit_interval(epsilon, "epsilon")

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return label_smoothing_loss(logits, targets, self.epsilon)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}"
