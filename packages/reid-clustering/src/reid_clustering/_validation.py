"""Input validation shared by the public functions (errors name the argument and the fix)."""

from __future__ import annotations

import numbers

import numpy as np
import torch


def as_feature_tensor(features: object, name: str = "features") -> torch.Tensor:
    """Return ``features`` as a float32 ``[N, D]`` torch tensor on its own device.

    numpy arrays are wrapped (no copy when already float32 and contiguous); torch tensors keep
    their device and are detached. float16/bfloat16/float64 inputs are converted to float32, the
    precision of the reference implementation.

    Raises:
        TypeError: ``features`` is neither a numpy array nor a torch tensor, or is not real.
        ValueError: not 2-D, empty, or holding NaN/inf (the message counts the bad rows).
    """
    if isinstance(features, np.ndarray):
        if not (
            np.issubdtype(features.dtype, np.floating) or np.issubdtype(features.dtype, np.integer)
        ):
            raise TypeError(f"{name} must hold real numbers, got numpy dtype {features.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    elif isinstance(features, torch.Tensor):
        if features.is_complex() or features.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got torch dtype {features.dtype}")
        tensor = features.detach().to(torch.float32)
    else:
        raise TypeError(
            f"{name} must be a numpy array or a torch tensor of shape [N, D], "
            f"got {type(features).__name__}"
        )
    if tensor.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D [num_samples, feature_dim], got shape {tuple(tensor.shape)}; "
            "flatten or pool the features first"
        )
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)})")
    # NaN/inf in a row make its sum non-finite: one cheap pass, the full check only then.
    if bool(torch.isfinite(tensor.sum(dim=1)).all()):
        return tensor
    finite = torch.isfinite(tensor).all(dim=1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()
        raise ValueError(
            f"{name} has NaN or inf in {bad.numel()} of {tensor.shape[0]} rows "
            f"(first rows: {bad[:5].tolist()}); check the model's outputs (a diverged training "
            "step or fp16 overflow) before clustering"
        )
    return tensor


def l2_normalize_rows(features: torch.Tensor, name: str = "features") -> torch.Tensor:
    """Divide each row by its L2 norm; zero-norm rows are an error (they have no direction)."""
    norms = features.norm(dim=1)
    zero = norms == 0
    if bool(zero.any()):
        bad = zero.nonzero().flatten()
        raise ValueError(
            f"{name} has {bad.numel()} rows with zero norm (first rows: {bad[:5].tolist()}); "
            "they cannot be L2-normalised. Remove them or check the feature extractor"
        )
    return features / norms.unsqueeze(1)


def check_int(value: object, name: str, minimum: int) -> int:
    """``value`` must be an integer ``>= minimum`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_neighbour_counts(num_samples: int, k1: int, k2: int) -> tuple[int, int]:
    """k1 and k2 as used by the k-reciprocal encoding: ``1 <= k2 <= k1 < num_samples``."""
    k1 = check_int(k1, "k1", 1)
    k2 = check_int(k2, "k2", 1)
    if num_samples <= k1:
        raise ValueError(
            f"the k-reciprocal encoding needs more samples than k1: got N={num_samples}, "
            f"k1={k1}; lower k1 (e.g. k1={max(1, num_samples // 2)}) or give more features"
        )
    if k2 > k1:
        raise ValueError(
            f"k2 (query-expansion neighbours, {k2}) cannot exceed k1 ({k1}): only the first k1 "
            "neighbours of each sample are searched"
        )
    return k1, k2
