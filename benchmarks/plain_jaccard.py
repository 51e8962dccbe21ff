"""A plain, loop-based k-reciprocal Jaccard distance written straight from the algorithm.

This is the yardstick for ``reid_clustering.compute_jaccard_distance``: it follows the steps of
docs/design.md ("k-reciprocal Jaccard distance") one sample at a time with dense ``N × N``
float32 matrices, the way the SpCL/PPLR reference computes them (Python loops, per-column
inverted index), but with a numpy brute-force kNN instead of faiss.
``benchmarks/clustering_scale.py`` times it and the test suite uses it as an independent oracle
(``tests/clustering``). It is deliberately not optimised.
"""

from __future__ import annotations

import numpy as np


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
    """Dense ``N × N`` Jaccard distance, one sample at a time (features L2-normalised)."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = x.shape[0]
    if ranked is None:
        ranked = plain_knn(x, k1)
    half = int(np.around(k1 / 2)) + 1
    full_sets = [reciprocal_neighbours(ranked, i, k1) for i in range(n)]
    half_sets = [reciprocal_neighbours(ranked, i, half) for i in range(n)]

    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        members = full_sets[i]
        expanded = members
        for j in members:
            cand = half_sets[j]
            if len(np.intersect1d(cand, members)) > 2 / 3 * len(cand):
                expanded = np.append(expanded, cand)
        expanded = np.unique(expanded)
        logits = -(2 - 2 * (x[expanded] @ x[i])).astype(np.float32)
        weights = np.exp(logits - logits.max())
        v[i, expanded] = weights / weights.sum()

    if k2 != 1:
        v_qe = np.zeros_like(v)
        for i in range(n):
            v_qe[i] = np.mean(v[ranked[i, :k2]], axis=0)
        v = v_qe

    holders = [np.where(v[:, t] != 0)[0] for t in range(n)]
    jaccard = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        shared = np.zeros(n, dtype=np.float32)
        for t in np.where(v[i] != 0)[0]:
            rows = holders[t]
            shared[rows] += np.minimum(v[i, t], v[rows, t])
        jaccard[i] = 1 - shared / (2 - shared)
    jaccard[jaccard < 0] = 0
    return jaccard


def plain_re_ranking(
    q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int = 20, k2: int = 6, lam: float = 0.3
) -> np.ndarray:
    """Zhong et al.'s re-ranking one sample at a time (squares its input, like the classic)."""
    num_q = q_g.shape[0]
    full = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float32) ** 2
    original = (full / full.max(axis=0)).T
    n = original.shape[0]
    ranked = np.argsort(original, axis=1, kind="stable")
    half = int(np.around(k1 / 2)) + 1
    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        members = reciprocal_neighbours(ranked, i, k1 + 1)
        expanded = members
        for j in members:
            cand = reciprocal_neighbours(ranked, j, half)
            if len(np.intersect1d(cand, members)) > 2 / 3 * len(cand):
                expanded = np.append(expanded, cand)
        expanded = np.unique(expanded)
        weights = np.exp(-original[i, expanded])
        v[i, expanded] = weights / weights.sum()
    if k2 != 1:
        v = np.stack([v[ranked[i, :k2]].mean(axis=0) for i in range(n)])
    jaccard = np.zeros((num_q, n), dtype=np.float32)
    for i in range(num_q):
        shared = np.minimum(v[i][None, :], v).sum(axis=1)
        jaccard[i] = 1 - shared / (2 - shared)
    final = jaccard * (1 - lam) + original[:num_q] * lam
    return final[:, num_q:]
