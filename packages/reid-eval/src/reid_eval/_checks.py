"""Input validation shared by the modules of reid-eval (errors name the argument and the fix)."""

from __future__ import annotations

import operator
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from reid_backbones import l2_normalize

METRICS = ("euclidean", "cosine")
"""Names accepted by ``metric`` (re-exported as ``reid_eval.distance.METRICS``)."""


def as_feature_tensor(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """``x`` as a real-valued torch tensor (numpy arrays shared, not copied, where possible)."""
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf" or x.dtype.itemsize > 8:
            raise ValueError(
                f"{name} must hold real numbers (float or integer dtype), got numpy dtype "
                f"{x.dtype}; convert it, e.g. with .astype(np.float32)"
            )
        if not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))
        with warnings.catch_warnings():  # read-only arrays are fine: nothing writes to them
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            t = torch.from_numpy(x)
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor or a numpy.ndarray, got {type(x).__name__}; "
            "convert it, e.g. with torch.as_tensor(...)"
        )
    if t.is_complex():
        raise ValueError(f"{name} must hold real numbers, got dtype {t.dtype}")
    return t


def check_pair(q: torch.Tensor, g: torch.Tensor, q_name: str, g_name: str) -> None:
    """``q`` ``[Q, D]`` and ``g`` ``[G, D]``: 2-D, the same ``D``, on the same device."""
    if q.dim() != 2 or g.dim() != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(
            f"{q_name} and {g_name} must be [Q, D] and [G, D] with the same D, got "
            f"{tuple(q.shape)} and {tuple(g.shape)}"
        )
    if q.device != g.device:
        raise ValueError(
            f"{q_name} is on {q.device} but {g_name} on {g.device}; move both to the same "
            "device, e.g. with .to(device)"
        )


def check_metric(metric: str) -> None:
    """``metric`` must be one of :data:`METRICS`."""
    if metric not in METRICS:
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")


def positive_int(value: int, name: str) -> int:
    """``value`` as an ``int`` >= 1 (anything ``operator.index`` accepts)."""
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value}; pass a positive integer")
    return value


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """``F.normalize(x, dim=1)``, also for rows whose squares overflow or underflow float32.

    Rows of ordinary magnitude go through ``F.normalize`` itself (the same bits as before); when
    some row's largest ``|entry|`` lies outside ``[2⁻⁶⁰, 2⁶⁰]`` (its squared norm would be inf,
    or lose its precision to underflow), ``reid_backbones.l2_normalize`` scales each row by an
    exact power of two first: features of 1e30 then give unit vectors instead of zeros.
    """
    if x.numel() == 0 or not x.is_floating_point():
        return F.normalize(x, dim=1)
    peak = x.detach().abs().amax(dim=1)
    peak = peak[peak > 0]
    if peak.numel() and (float(peak.max()) > 2.0**60 or float(peak.min()) < 2.0**-60):
        return l2_normalize(x, dim=1)
    return F.normalize(x, dim=1)


def check_finite_rows(x: torch.Tensor, name: str) -> None:
    """Raise ValueError naming the first row of ``x`` with NaN or inf (after float32)."""
    suspects = torch.nonzero(~torch.isfinite(x.sum(dim=1))).flatten()
    if suspects.numel() == 0:
        return
    bad = suspects[~torch.isfinite(x[suspects]).all(dim=1)]
    if bad.numel():
        raise ValueError(
            f"{name} contains NaN or inf (first in row {int(bad[0])}, after conversion to "
            "float32); check the features or replace them, e.g. with torch.nan_to_num"
        )
