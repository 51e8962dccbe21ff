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
    """Divide each row by its L2 norm, for any finite magnitude; zero rows are an error.

    A plain float32 norm overflows to inf for entries above ~1e19 (every row would become
    zeros, one cluster) and loses precision, then underflows to 0, below ~1e-19 (rows refused
    as zero-norm). So each row is first multiplied by the power of two ``2^-e`` that brings its
    largest ``|entry|`` into ``[0.5, 1)`` (``e`` from :func:`torch.frexp`, clamped to
    ``[-126, 126]`` so that ``2^-e`` is a normal float32): an exact scaling, after which the
    norm can neither overflow nor underflow. Rows of ordinary magnitude give bit-identical
    results to the plain ``x / ‖x‖``, since the norm and the division commute with an exact
    power-of-two scaling (as long as no square leaves the normal float32 range).

    Raises:
        ValueError: some rows are all zero (no direction); the message counts them.
    """
    max_abs = torch.linalg.vector_norm(features, ord=float("inf"), dim=1)
    zero = max_abs == 0
    if bool(zero.any()):
        bad = zero.nonzero().flatten()
        raise ValueError(
            f"{name} has {bad.numel()} rows with zero norm (first rows: {bad[:5].tolist()}); "
            "they cannot be L2-normalised. Remove them or check the feature extractor"
        )
    exponent = torch.frexp(max_abs).exponent.clamp_(-126, 126)
    scale = torch.ldexp(torch.ones_like(max_abs), -exponent)
    scaled = features * scale.unsqueeze(1)
    return scaled.div_(scaled.norm(dim=1).unsqueeze(1))


def check_int(value: object, name: str, minimum: int) -> int:
    """``value`` must be an integer ``>= minimum`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_neighbour_counts(num_samples: int, k1: int, k2: int) -> tuple[int, int]:
    """k1 and k2 as used by the k-reciprocal encoding: ``1 <= k2 <= k1 < num_samples``.

    Raises:
        TypeError: ``k1`` or ``k2`` is not an integer.
        ValueError: ``k1``/``k2`` below 1; fewer than 2 samples (no k1 works); ``N <= k1``
            (the message suggests a ``k1``, and a ``k2`` where needed, that pass this check);
            ``k2 > k1``.
    """
    k1 = check_int(k1, "k1", 1)
    k2 = check_int(k2, "k2", 1)
    if num_samples < 2:
        raise ValueError(
            f"clustering needs at least 2 samples: the k-reciprocal encoding needs 1 <= k1 < N "
            f"(a neighbour other than the sample itself), got N={num_samples}; give more features"
        )
    if num_samples <= k1:
        # Half of N, or the caller's k2 if larger and below N; else k2 has to come down too.
        hint_k1 = max(num_samples // 2, min(k2, num_samples - 1))
        if k2 <= hint_k1:
            advice = f"lower k1 (e.g. k1={hint_k1})"
        else:
            advice = f"lower k1 and k2 (e.g. k1={hint_k1}, k2={hint_k1})"
        raise ValueError(
            f"the k-reciprocal encoding needs more samples than k1: got N={num_samples}, "
            f"k1={k1}, k2={k2}; {advice}, as 1 <= k2 <= k1 < N must hold, or give more features"
        )
    if k2 > k1:
        raise ValueError(
            f"k2 (query-expansion neighbours, {k2}) cannot exceed k1 ({k1}): only the first k1 "
            "neighbours of each sample are searched"
        )
    return k1, k2
