"""Inner products of chosen pairs of rows, the same bits on every machine, and their error bounds.

The kNN search ranks neighbours by these values, and the k-reciprocal encoding weighs them, so
that both depend on the features only, not on which BLAS kernel a CPU or GPU happens to pick.

``pair_dot(a, b, rows, cols)[t] = ⟨a[rows[t]], b[cols[t]]⟩`` evaluated in a fixed order:

1. the D products ``a_d · b_d`` in float32 (one rounding each);
2. a pairwise tree: while w > 1 columns remain, add the last ``⌊w/2⌋`` columns onto the first
   ``⌊w/2⌋`` (an odd middle column waits for the next level), so every sum is one IEEE float32
   addition of two fixed operands.

Each step is an element-wise IEEE-754 multiplication or addition (correctly rounded, no fused
multiply-add, no reduction whose order a library chooses), so the result is the same bit for bit
on any CPU or GPU, for any batch of pairs and any chunking. Its error (Higham, *Accuracy and
Stability of Numerical Algorithms*, 2nd ed., §3.1: a sum whose terms pass through at most L
additions) is at most ``γ_{L+1} Σ_d |a_d b_d| <= γ_{L+1} ‖a‖‖b‖`` with ``L = ⌈log₂ D⌉`` and
``γ_n = n·u/(1 − n·u)``, ``u = 2⁻²⁴``, plus ``D·2⁻¹⁴⁹`` for products that underflow.
"""

from __future__ import annotations

import math

import torch

__all__ = ["dot_error_bound", "gemm_error_bound", "pair_dot", "row_norms_upper"]

_U = 2.0**-24  # float32 unit roundoff
_TINY = 2.0**-149  # smallest float32 subnormal: bound of an underflowed product or sum
# Products held at once: pairs per chunk × D floats (16 MiB of float32).
_CHUNK_ELEMENTS = 1 << 22
# On a CPU, chunks that stay in the L2 cache through the tree's levels (1 MiB): 4× faster than
# 16 MiB chunks at 256-d (the values do not depend on the chunking).
_CPU_CHUNK_ELEMENTS = 1 << 18


def pair_dot(
    a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """float32 ``⟨a[rows[t]], b[cols[t]]⟩`` for each t, bit-identical on every device.

    Args:
        a: float32 ``[N, D]``.
        b: float32 ``[M, D]`` on the same device.
        rows, cols: int64 ``[P]`` row indices into ``a`` and ``b``.

    Returns:
        float32 ``[P]`` on the features' device (module docstring for the order of operations).
    """
    d = a.shape[1]
    out = a.new_empty(rows.numel())
    budget = _CPU_CHUNK_ELEMENTS if a.device.type == "cpu" else _CHUNK_ELEMENTS
    step = max(1, budget // max(d, 1))
    for start in range(0, rows.numel(), step):
        r, c = rows[start : start + step], cols[start : start + step]
        terms = a.index_select(0, r).mul_(b.index_select(0, c))
        out[start : start + r.numel()] = _tree_sum(terms)
    return out


def _tree_sum(terms: torch.Tensor) -> torch.Tensor:
    """Row sums of ``[P, W]`` in the fixed pairwise order of the module docstring.

    Each level writes a new contiguous tensor: in-place adds on strided halves are several
    times slower.
    """
    width = terms.shape[1]
    while width > 1:
        half = width // 2
        summed = terms[:, :half] + terms[:, width - half : width]
        if width % 2:  # the odd middle column waits for the next level
            summed = torch.cat([summed, terms[:, half : half + 1]], dim=1)
        terms, width = summed, width - half
    return terms[:, 0]


def row_norms_upper(x: torch.Tensor) -> torch.Tensor:
    """float64 upper bounds of the Euclidean norms of the rows of ``x`` (on ``x``'s device).

    The squares of float32 numbers are exact in float64 and their sum's relative error is far
    below the ``1 + 2⁻⁴⁰`` slack added here.
    """
    norms = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    step = max(1, _CHUNK_ELEMENTS // max(x.shape[1], 1))
    for start in range(0, x.shape[0], step):
        rows = x[start : start + step].double()
        torch.linalg.vector_norm(rows, dim=1, out=norms[start : start + step])
    return norms * (1 + 2.0**-40)


def dot_error_bound(dim: int) -> tuple[float, float]:
    """``(relative, absolute)``: ``|pair_dot − ⟨a, b⟩| <= relative·‖a‖‖b‖ + absolute``."""
    depth = math.ceil(math.log2(dim)) if dim > 1 else 0
    return _gamma(depth + 1), 2 * dim * _TINY


def gemm_error_bound(dim: int, reduced: bool = False) -> tuple[float, float]:
    """``(relative, absolute)`` error bound of any float32 matmul element (any summation order).

    Higham eq. 3.5: ``γ_D Σ|a_d b_d|``. ``reduced``: the matmul may round its inputs to TF32 or
    bfloat16 first (``torch.set_float32_matmul_precision`` below "highest", TF32 on CUDA),
    which adds ``(2·2⁻⁸ + 2⁻¹⁶)‖a‖‖b‖``.
    """
    relative = _gamma(dim) + (2 * 2.0**-8 + 2.0**-16 if reduced else 0.0)
    # Inputs, products and sums that a BLAS flushes to zero: <= 2⁻¹²⁶ each.
    return relative, 4 * dim * 2.0**-126


def _gamma(n: int) -> float:
    if n * _U >= 0.5:
        raise ValueError(f"feature dimension {n} too large for a float32 error bound")
    return n * _U / (1 - n * _U)
