"""The readable definition of the k-reciprocal Jaccard distance, one sample at a time.

:func:`plain_jaccard_distance` is the specification that
:func:`reid_clustering.compute_jaccard_distance` (dense and sparse) must match; the tests compare
the two, and ``benchmarks/clustering_scale.py`` times it as the ``plain`` baseline (through
``benchmarks/plain_jaccard.py``). It follows the steps of docs/design.md ("k-reciprocal Jaccard
distance") with Python loops and dense ``N × N`` float32 matrices, the way the SpCL (Ge et al.,
NeurIPS 2020) and PPLR (Cho et al., CVPR 2022) code computes ``compute_jaccard_distance``
(itself the re-ranking of Zhong et al., CVPR 2017, without the blend with the original
distance), but with a numpy brute-force kNN (:func:`plain_knn`) instead of faiss. It is
deliberately not optimised, needs only numpy, and is not part of the public API.

With ``x`` L2-normalised (``[N, D]``):

1. **Neighbours.** Each row's ``k1`` largest inner products, the sample itself first.
2. **Reciprocal set** R(i): the ``j`` among i's ``k1`` entries whose own ``k1`` entries contain
   ``i`` (:func:`reciprocal_neighbours`).
3. **Expansion.** For each ``j`` in R(i), its half set R_half(j) (``round(k1 / 2) + 1``
   columns, round half to even) joins when more than ⅔ of its members are in R(i).
4. **Encoding.** ``V[i, j]`` = softmax over the expanded set of ``−(2 − 2⟨x_i, x_j⟩)``.
5. **Local query expansion.** Unless ``k2 == 1``, ``V[i]`` becomes the mean of ``V`` over
   i's first ``k2`` entries.
6. **Jaccard.** With ``S = Σ_t min(V[i, t], V[j, t])``: ``J[i, j] = 1 − S / (2 − S)``, negative
   values set to 0.
"""

from __future__ import annotations

import numpy as np

__all__ = ["plain_jaccard_distance", "plain_knn", "reciprocal_neighbours"]


def plain_knn(features: np.ndarray, k: int) -> np.ndarray:
    """``[N, k]`` indices of the ``k`` largest inner products per row, descending; ties by index."""
    n = features.shape[0]
    ranked = np.empty((n, k), dtype=np.int64)
    step = 1024
    for start in range(0, n, step):
        sims = features[start : start + step] @ features.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for r in range(part.shape[0]):
            cand = np.sort(part[r])
            order = np.argsort(-sims[r, cand], kind="stable")
            ranked[start + r] = cand[order]
    return ranked


def reciprocal_neighbours(ranked: np.ndarray, i: int, width: int) -> np.ndarray:
    """Members ``j`` of the first ``width`` columns of row ``i`` that have ``i`` in theirs."""
    forward = ranked[i, :width]
    backward = ranked[forward, :width]
    return forward[np.where(backward == i)[0]]


def plain_jaccard_distance(
    features: np.ndarray, k1: int = 20, k2: int = 6, ranked: np.ndarray | None = None
) -> np.ndarray:
    """Dense ``N × N`` Jaccard distance, one sample at a time (features L2-normalised).

    ``ranked`` (``[N, >= k1]``, the sample itself first) replaces the search of step 1, e.g. to
    use exact neighbours; by default :func:`plain_knn` finds them.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = x.shape[0]
    if ranked is None:
        ranked = plain_knn(x, k1)  # 1. neighbours
    half = int(np.around(k1 / 2)) + 1
    full_sets = [reciprocal_neighbours(ranked, i, k1) for i in range(n)]  # 2. R(i)
    half_sets = [reciprocal_neighbours(ranked, i, half) for i in range(n)]

    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        members = full_sets[i]
        expanded = members
        for j in members:  # 3. expansion
            cand = half_sets[j]
            if len(np.intersect1d(cand, members)) > 2 / 3 * len(cand):
                expanded = np.append(expanded, cand)
        expanded = np.unique(expanded)
        if expanded.size == 0:  # no reciprocal neighbour (a lower-index duplicate took i's
            continue  # place in its own list): V[i] stays 0
        logits = -(2 - 2 * (x[expanded] @ x[i])).astype(np.float32)  # 4. encoding
        weights = np.exp(logits - logits.max())
        v[i, expanded] = weights / weights.sum()

    if k2 != 1:  # 5. local query expansion
        v_qe = np.zeros_like(v)
        for i in range(n):
            v_qe[i] = np.mean(v[ranked[i, :k2]], axis=0)
        v = v_qe

    holders = [np.where(v[:, t] != 0)[0] for t in range(n)]  # 6. Jaccard
    jaccard = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        shared = np.zeros(n, dtype=np.float32)
        for t in np.where(v[i] != 0)[0]:
            rows = holders[t]
            shared[rows] += np.minimum(v[i, t], v[rows, t])
        jaccard[i] = 1 - shared / (2 - shared)
    jaccard[jaccard < 0] = 0
    return jaccard
