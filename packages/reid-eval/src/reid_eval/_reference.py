"""The readable definitions of reid-eval's metrics and re-ranking, one query at a time.

These functions are the specification that the fast code must match; the tests compare the two
on random and hand-made inputs. They are deliberately not optimised (a Python loop per query or
sample, dense matrices) and not part of the public API.

* :func:`plain_evaluate_rank` defines :func:`reid_eval.evaluate_rank` (and so
  :func:`reid_eval.evaluate_features`), whose chunked, vectorised computation is explained in
  :mod:`reid_eval.metrics`.
* :func:`plain_re_ranking` defines :func:`reid_eval.re_ranking`.

The Market-1501 evaluation protocol
-----------------------------------
Market-1501 (Zheng et al., ICCV 2015) evaluates each query against the gallery; the field's
evaluators (torchreid's, fast-reid's and PPLR's ``eval_market1501``) follow it as below.

1. **Ranking.** The gallery is sorted by ascending distance to the query. Tied distances keep
   gallery order (a stable sort); the field's loops use an unstable ``argsort``, which orders
   ties arbitrarily and otherwise agrees.
2. **Removal.** Gallery entries with the query's pid *and* the query's camera are removed: the
   protocol only credits re-identification across cameras. What remains, in ranked order, is the
   query's valid ranked list; its entries with the query's pid are the true matches.
3. **Junk and distractors.** In the original protocol a query's *junk* images, ignored in the
   ranking, are its same-pid same-camera images (step 2) and the gallery's pid -1 images. The
   dataset loaders drop pid -1 images (``reid_eval.datasets``), and an entry with pid -1 left in
   a gallery counts as a non-match, as in the field's loops. Distractors (pid 0) and every other
   pid are ordinary non-matches.
4. **Invalid queries.** A query without a true match in its valid list is skipped; it counts in
   ``num_queries`` but not in ``num_valid_queries`` or any average.
5. **CMC** (first match): for a valid query, ``cmc[k - 1]`` is 1 if its first true match is
   within the top ``k`` of the valid list, else 0; the CMC curve is the mean over valid queries,
   for ``k = 1 .. max_rank``.
6. **AP**: the mean, over the query's true matches, of the precision at each match's position in
   the valid list (number of matches up to and including it / its 1-based position). mAP is the
   mean AP over valid queries.
7. **INP** (Ye et al., TPAMI 2021): the number of true matches divided by the 1-based position of
   the last one, i.e. the precision at the hardest match. mINP is the mean over valid queries.
"""

from __future__ import annotations

import numpy as np

from .metrics import RankResult

__all__ = ["plain_evaluate_rank", "plain_re_ranking", "reciprocal_neighbours"]


def plain_evaluate_rank(
    distmat: np.ndarray,
    query_pids: np.ndarray,
    gallery_pids: np.ndarray,
    query_camids: np.ndarray,
    gallery_camids: np.ndarray,
    max_rank: int = 50,
) -> RankResult:
    """CMC, mAP and mINP of a ``[num_query, num_gallery]`` distance matrix, one query at a time.

    The protocol of this module's docstring, step by step. ``max_rank`` is shrunk to the gallery
    size (``evaluate_rank`` also warns). Inputs are numpy arrays (or array-likes): the distances
    and, for each query and gallery entry, its pid and camera id. The result equals
    ``evaluate_rank``'s up to the summation order of each AP (about 1e-16).

    Raises:
        ValueError: if no query has a true match in its valid ranked list.
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(query_pids), np.asarray(gallery_pids)
    q_camids, g_camids = np.asarray(query_camids), np.asarray(gallery_camids)
    num_query, num_gallery = distmat.shape
    max_rank = min(max_rank, num_gallery)

    all_cmc, all_ap, all_inp = [], [], []
    for q in range(num_query):
        order = np.argsort(distmat[q], kind="stable")  # 1. ties keep gallery order
        same_pid = g_pids[order] == q_pids[q]
        removed = same_pid & (g_camids[order] == q_camids[q])  # 2. same pid, same camera
        matches = same_pid[~removed].astype(np.int64)  # 1 = true match, in valid ranked order
        if not matches.any():
            continue  # 4. invalid query
        matches_so_far = np.cumsum(matches)
        position = np.arange(1, matches.size + 1)  # 1-based position in the valid list

        cmc = (matches_so_far >= 1).astype(np.float64)  # 5. first match within the top k
        if cmc.size < max_rank:  # fewer valid entries than max_rank: the tail stays 1
            cmc = np.concatenate([cmc, np.ones(max_rank - cmc.size)])
        all_cmc.append(cmc[:max_rank])

        precision = matches_so_far / position
        all_ap.append(float((precision * matches).sum() / matches.sum()))  # 6. AP

        last_match = int(np.flatnonzero(matches)[-1])
        all_inp.append(matches.sum() / (last_match + 1.0))  # 7. INP

    if not all_ap:
        raise ValueError(f"No valid query: none of the {num_query} queries has a true match")
    ap, inp = np.asarray(all_ap), np.asarray(all_inp)
    return RankResult(
        cmc=np.asarray(all_cmc).mean(axis=0),
        mAP=float(ap.mean()),
        mINP=float(inp.mean()),
        num_valid_queries=len(all_ap),
        num_queries=num_query,
        ap=ap,
        inp=inp,
    )


def reciprocal_neighbours(ranked: np.ndarray, i: int, width: int) -> np.ndarray:
    """Members ``j`` of the first ``width`` columns of row ``i`` that have ``i`` in theirs.

    The same definition as ``reid_clustering._reference.reciprocal_neighbours`` (repeated here
    so that no package imports another's private module).
    """
    forward = ranked[i, :width]
    backward = ranked[forward, :width]
    return forward[np.where(backward == i)[0]]


def plain_re_ranking(
    q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int = 20, k2: int = 6, lam: float = 0.3
) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017), one sample at a time.

    Defines :func:`reid_eval.re_ranking`, which follows the authors' code: the query-gallery,
    query-query and gallery-gallery distances are joined into one ``(Q + G) × (Q + G)`` matrix,
    **squared** (as the classic code does) and divided by each column's maximum (a column of
    zeros stays zeros; the classic code divides 0 by 0 there). Each sample's
    ranked list includes itself first. Then, per sample ``i``:

    1. the reciprocal set R(i) of its first ``k1 + 1`` entries, expanded by each ``R_half(j)``
       (``round(k1 / 2) + 1`` entries, round half to even) that shares more than ⅔ of its members
       with R(i);
    2. the encoding ``V[i]``: a softmax of the negative distances over the expanded set;
    3. local query expansion: unless ``k2 == 1``, ``V[i]`` is the mean of ``V`` over ``i``'s first
       ``k2`` entries;
    4. the Jaccard distance ``1 − S / (2 − S)`` with ``S = Σ_t min(V[i, t], V[j, t])``,

    and the result, ``[Q, G]`` float32, is ``(1 − lam) · Jaccard + lam · original``.
    """
    num_q = q_g.shape[0]
    full = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float32) ** 2
    column_max = full.max(axis=0)
    original = (full / np.where(column_max > 0, column_max, 1)).T  # an all-zero column stays 0
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
