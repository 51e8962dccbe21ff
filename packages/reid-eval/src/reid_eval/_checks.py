"""Input validation shared by the modules of reid-eval (errors name the argument and the fix)."""

from __future__ import annotations

import operator
import warnings

import numpy as np
import torch

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
