"""L2 normalisation that holds for any finite magnitude of the input.

The same scaling as ``reid_clustering``'s row normalisation. Public here as
``reid_backbones.l2_normalize`` (reid-train uses it); reid-refine, which may not import
reid-backbones, keeps a private copy of this file.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def l2_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``F.normalize(x, dim=dim)`` without its float overflow and underflow.

    ``F.normalize`` squares the entries: in float32 the norm is inf above ~1e19 (every vector
    becomes zeros) and vanishes below ~1e-19 (the vector is divided by the ``eps`` floor instead
    and is no longer a unit vector). Here each vector is first multiplied by the power of two
    ``2^-e`` that brings its largest ``|entry|`` near 1 (``e = ⌊log2 max|x|⌋``, clamped so that
    ``2^-e`` is a normal number of the dtype). The scaling is exact, so vectors of ordinary
    magnitude give the results of ``F.normalize`` (bit for bit on the CPU in float32, float64
    and bfloat16; float16 to rounding, as small entries may turn subnormal), and vectors of any
    finite magnitude give unit vectors.

    As with ``F.normalize``: zero vectors stay zero (in float16 too, where ``F.normalize``
    gives NaN), a vector with a NaN is all NaN, one with an inf has NaN there and 0 elsewhere.
    The scale is detached (the result does not depend on it), so the gradients are those of
    ``F.normalize``. Only ops that export to ONNX are used.
    """
    if not x.is_floating_point() or x.dim() == 0 or x.shape[dim] == 0:
        return F.normalize(x, dim=dim)
    finfo = torch.finfo(x.dtype)
    # 2^-e must be a normal number: -e in [log2(tiny), floor(log2(max))].
    low, high = 1 - math.frexp(finfo.max)[1], 1 - math.frexp(finfo.tiny)[1]
    max_abs = x.detach().abs().amax(dim=dim, keepdim=True)
    exponent = torch.floor(torch.log2(max_abs)).clamp(low, high)  # zero vectors: -inf -> low
    # The scaled norms are 0 or >= 1, so the floor ``eps`` only keeps zero vectors at zero: the
    # default 1e-12 underflows to 0 in float16, where a zero vector became 0/0 = NaN.
    return F.normalize(x * torch.exp2(-exponent), dim=dim, eps=finfo.tiny)
