"""Input validation shared by the public functions (errors name the offending argument)."""

from __future__ import annotations

import math

import torch


def check_float_tensor(x: object, name: str, ndim: int) -> torch.Tensor:
    """``x`` must be a finite floating-point tensor with ``ndim`` dimensions."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if not _all_finite(x.detach()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _all_finite(x: torch.Tensor, chunk_elements: int = 1 << 24) -> bool:
    """``torch.isfinite(x).all()`` in chunks of leading rows: never a full-size bool temporary
    (0.6 GiB for 100k × 3 × 2048 part features)."""
    if x.dim() == 0 or x.numel() <= chunk_elements:
        return bool(torch.isfinite(x).all())
    rows = max(1, chunk_elements // max(1, x[0].numel()))
    return all(bool(torch.isfinite(part).all()) for part in x.split(rows))


def check_nonempty_batch(x: torch.Tensor, name: str, func: str) -> None:
    """Refuse an empty batch: ``x`` (``[..., K]``) must hold at least one row to average over.

    The rows are the leading positions ``x.shape[:-1]``; a mean over none of them is NaN.

    Raises:
        ValueError: naming ``func`` and ``name``, when ``x`` has no rows.
    """
    if math.prod(x.shape[:-1]) == 0:
        raise ValueError(
            f"{func}: the batch is empty ({name} has shape {tuple(x.shape)}, no rows to "
            "average the loss over); pass a batch with at least one sample"
        )


def check_targets(targets: object, n: int, num_classes: int, name: str = "targets") -> torch.Tensor:
    """``targets`` must be an integer tensor ``[n]`` with values in ``[0, num_classes)``."""
    if not isinstance(targets, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(targets).__name__}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {targets.dtype}")
    if targets.dim() != 1 or targets.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}], got {tuple(targets.shape)}")
    if n > 0 and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}) (number of classes K = {num_classes}), "
            f"got values in [{int(targets.min())}, {int(targets.max())}]"
        )
    return targets


def check_unit_interval(
    value: float, name: str, *, low_open: bool = False, high_open: bool = False
) -> float:
    """``value`` must be a finite number in [0, 1] (ends optionally open)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    bad = (
        not math.isfinite(v)
        or v < 0.0
        or v > 1.0
        or (low_open and v == 0.0)
        or (high_open and v == 1.0)
    )
    if bad:
        raise ValueError(f"{name} must lie in {lo}0, 1{hi}, got {value!r}")
    return v


def check_agreement(agreement: object, n: int, p: int, name: str = "agreement") -> torch.Tensor:
    """Cross-agreement scores: finite ``[n, p]`` floats in [0, 1]."""
    agreement = check_float_tensor(agreement, name, 2)
    if tuple(agreement.shape) != (n, p):
        raise ValueError(f"{name} must have shape [{n}, {p}], got {tuple(agreement.shape)}")
    a = agreement.detach()
    if a.numel() and (float(a.min()) < 0.0 or float(a.max()) > 1.0):
        raise ValueError(f"{name} must lie in [0, 1] (a Jaccard similarity)")
    return agreement
