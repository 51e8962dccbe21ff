"""``reid_backbones.l2_normalize``: the public, argument-checked face of :mod:`._normalize`.

The arithmetic lives in ``_normalize.py``, which reid-refine keeps a word-for-word private copy
of (it may not import reid-backbones); this package's own models call it directly. The checks
of what a caller passes live here, so that the two copies stay the same code.
"""

from __future__ import annotations

import torch

from ._normalize import l2_normalize as _l2_normalize

__all__ = ["l2_normalize"]


def l2_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``F.normalize(x, dim=dim)`` without its float overflow and underflow.

    Each vector along ``dim`` is first multiplied by the exact power of two that brings its
    largest ``|entry|`` near 1, so vectors of ordinary magnitude give the results of
    ``F.normalize`` (bit for bit on the CPU in float32, float64 and bfloat16 for a contiguous
    ``x``, whose norms both compute the same way; to rounding for other layouts and float16)
    and vectors of any finite magnitude give unit vectors. Zero vectors stay zero
    (float16 included), a vector with a NaN is all NaN, one with an inf has NaN there and 0
    elsewhere. A 0-dimensional ``x`` is one vector of one entry (its sign). The gradients are
    those of ``F.normalize``. Only ops that export to ONNX are used.

    Raises:
        TypeError: ``x`` is not a floating-point (or complex) tensor, or ``dim`` not an integer.
        ValueError: ``dim`` is out of range for ``x``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(
            f"x must be a floating-point tensor, got {x.dtype}; convert it first (x.float())"
        )
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"dim must be an integer, got {dim!r}")
    ndim = max(x.dim(), 1)
    if not -ndim <= dim < ndim:
        raise ValueError(
            f"dim={dim} is out of range for x with {x.dim()} dimension(s) "
            f"(valid: {-ndim} to {ndim - 1})"
        )
    if x.dim() == 0:  # one vector of one entry; _normalize would hand it to F.normalize as is
        return _l2_normalize(x.reshape(1), dim=0).reshape(())
    return _l2_normalize(x, dim=dim)
