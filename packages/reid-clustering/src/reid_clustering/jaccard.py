"""The k-reciprocal Jaccard distance used by SpCL and PPLR to cluster training features.

The readable definition, one sample at a time with dense matrices, is
:func:`reid_clustering._reference.plain_jaccard_distance`; the vectorised, sparse code here
must give the same distances (the tests compare the two).
"""

from __future__ import annotations

from typing import NamedTuple, overload

import numpy as np
import scipy.sparse
import torch

from ._pairwise import pair_dot
from ._validation import as_feature_tensor, check_int, check_neighbour_counts, l2_normalize_rows
from .knn import Backend, Precision, knn_search
from .kreciprocal import (
    RowSparse,
    jaccard_from_encoding,
    k_reciprocal_encoding,
    local_query_expansion,
)

__all__ = ["compute_jaccard_distance", "half_width"]


def half_width(k1: int) -> int:
    """Ranked-list columns of the "half" reciprocal set: ``round(k1 / 2) + 1``.

    ``round`` is Python's/NumPy's round-half-to-even, as in the reference
    (``int(np.around(k1 / 2))``): k1 = 20 → 11 columns, k1 = 30 → 16, k1 = 5 → 3.

    Raises:
        TypeError: ``k1`` is not an integer. ValueError: ``k1 < 1``.
    """
    return round(check_int(k1, "k1", 1) / 2) + 1


@overload
def compute_jaccard_distance(
    features: np.ndarray, k1: int = ..., k2: int = ..., *, sparse: bool = ..., **kw: object
) -> np.ndarray | scipy.sparse.csr_matrix: ...
@overload
def compute_jaccard_distance(
    features: torch.Tensor, k1: int = ..., k2: int = ..., *, sparse: bool = ..., **kw: object
) -> torch.Tensor | scipy.sparse.csr_matrix: ...
def compute_jaccard_distance(
    features: np.ndarray | torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    *,
    sparse: bool = False,
    max_distance: float | None = None,
    normalize: bool = True,
    backend: Backend = "torch",
    knn_precision: Precision = "auto",
) -> np.ndarray | torch.Tensor | scipy.sparse.csr_matrix:
    """k-reciprocal Jaccard distance between all pairs of ``features`` (SpCL/PPLR convention).

    Numerically the function of this name in the SpCL and PPLR code (float32 tolerance), computed
    without any ``N × N`` intermediate:

    1. kNN by inner product: the first ``k1`` neighbours of each sample, itself included.
    2. ``R(i)`` from those ``k1`` columns; the half sets from ``round(k1/2) + 1`` columns;
       expansion by the strict 2/3 rule (Zhong et al. Eq. 6).
    3. ``V[i, j] = softmax_j(−(2 − 2⟨x_i, x_j⟩))`` over the expanded set (Eq. 7), float32.
    4. If ``k2 != 1``: ``V[i] ← mean of V`` over the first ``k2`` neighbours (Eq. 10).
    5. ``J[i, j] = 1 − S/(2 − S)``, ``S = Σ_t min(V[i,t], V[j,t])``; negatives → 0 (Eq. 11–12).
       There is no blend with the original distance (unlike re-ranking).

    See :mod:`reid_clustering.kreciprocal` for the vectorised implementation.

    Args:
        features: ``[N, D]`` features, numpy or torch (any device), ``N > k1``.
        k1: neighbours of the k-reciprocal sets (PPLR's clustering passes 30; default 20).
        k2: neighbours of the local query expansion, ``1 <= k2 <= k1``.
        sparse: False → dense ``N × N`` float32 (numpy for numpy input, a torch tensor on the
            input's device for torch input). True → a ``scipy.sparse.csr_matrix`` holding only
            the pairs with ``J < 1`` (pairs sharing support in ``V``; the diagonal included, as
            explicit entries even where 0), built in ``O(N·k)`` memory. Missing entries mean 1.
        max_distance: sparse only: keep pairs with ``J <= max_distance`` (a radius graph for
            DBSCAN; saves memory when only close pairs matter).
        normalize: L2-normalise the rows first (the reference expects normalised features;
            leave True unless they already are and bit-exact reproduction matters).
        backend: kNN backend (:func:`reid_clustering.knn_search`).
        knn_precision: ``precision`` of :func:`~reid_clustering.knn_search` (same neighbours
            either way; ``"auto"`` takes the certified bf16-candidate search where it is faster).

    Returns:
        The Jaccard distance matrix, exactly symmetric, with a ~0 diagonal.

    Raises:
        ValueError: features not 2-D, NaN/inf, zero-norm rows (with ``normalize``), ``N <= k1``,
            ``k2 > k1``; ``max_distance`` given for a dense result.
        ImportError: a faiss backend was requested but is not installed.
    """
    is_numpy = isinstance(features, np.ndarray)
    result = jaccard_and_ranking(
        features,
        k1,
        k2,
        sparse=sparse,
        max_distance=max_distance,
        normalize=normalize,
        backend=backend,
        knn_precision=knn_precision,
    )
    if sparse:
        return result.distance.to_scipy()
    return result.distance.cpu().numpy() if is_numpy else result.distance


class JaccardAndRanking(NamedTuple):
    """What :func:`jaccard_and_ranking` computed (all torch, on the features' device)."""

    distance: torch.Tensor | RowSparse  # dense float32 [N, N], or the sparse rows
    ranked: torch.Tensor  # int64 [N, k1]: knn_search(features, k=k1).indices
    features: torch.Tensor  # float32 [N, D]: the features ranked (after normalisation)


def jaccard_and_ranking(
    features: np.ndarray | torch.Tensor,
    k1: int,
    k2: int,
    *,
    sparse: bool,
    max_distance: float | None,
    normalize: bool,
    backend: Backend,
    knn_precision: Precision,
) -> JaccardAndRanking:
    """:func:`compute_jaccard_distance` before the conversion of its result, with the kNN
    ranking it was built from and the exact features that ranking ranked.

    Shared with :mod:`reid_clustering.dbscan`; internal to reid-clustering (not in ``__all__``).
    """
    x = as_feature_tensor(features)
    k1, k2 = check_neighbour_counts(x.shape[0], k1, k2)
    if max_distance is not None and not sparse:
        raise ValueError("max_distance only applies to sparse=True results")
    if normalize:
        x = l2_normalize_rows(x)
    else:
        _check_products_fit(x)
    with torch.no_grad():
        ranked = knn_search(
            x, k=k1, backend=backend, precision=knn_precision, similarities=False
        ).indices
        encoding = k_reciprocal_encoding(
            ranked, _unit_sphere_distance(x), width=k1, half_width=half_width(k1)
        )
        if k2 != 1:
            encoding = local_query_expansion(encoding, ranked[:, :k2])
        distance = jaccard_from_encoding(encoding, dense=not sparse, max_distance=max_distance)
    return JaccardAndRanking(distance, ranked, x)


def _check_products_fit(x: torch.Tensor) -> None:
    """With ``normalize=False`` the encoding weighs ``2 − 2⟨x_i, x_j⟩`` in float32: refuse
    features whose inner products overflow it (the kNN alone would rescale them)."""
    peak = float(torch.linalg.vector_norm(x.double(), dim=1).max())
    if peak * peak >= 2.0**126:
        raise ValueError(
            f"features have norms up to {peak:.3g}: with normalize=False their inner products "
            "overflow float32; pass normalize=True (the reference expects unit rows) or scale "
            "them down"
        )


def _unit_sphere_distance(x: torch.Tensor):  # noqa: ANN202 - a PairDistance
    """``d(i, j) = 2 − 2⟨x_i, x_j⟩`` (squared Euclidean distance of unit vectors), with the
    inner product of :func:`~reid_clustering._pairwise.pair_dot`: the same bits on every
    machine, like the kNN ranking it weighs."""

    def distance(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return 2 - 2 * pair_dot(x, x, rows, cols)

    return distance
