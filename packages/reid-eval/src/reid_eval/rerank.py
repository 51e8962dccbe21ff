"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) on reid-clustering's k-reciprocal encoding.

Two entry points, one implementation (:mod:`reid_clustering.kreciprocal`):

* :func:`re_ranking` ``(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value)``: the classic
  function with the reference's input convention, identical output (float32 tolerance).
* :func:`re_ranking_features` / :func:`iter_re_ranking_features`: features in, the same numbers
  as the reference *pipeline* (PPLR, SpCL, torchreid: squared Euclidean distances fed to
  ``re_ranking``), computed without any ``(Q + G)²`` matrix, in blocks of queries.

The readable definition, one sample at a time, is :func:`reid_eval._reference.plain_re_ranking`;
the tests compare :func:`re_ranking` with it.

.. warning:: Input convention of :func:`re_ranking`.
   The classic function **squares its input distances** before anything else, then divides each
   column by its maximum. The reference pipelines pass it *squared* Euclidean distances
   (``‖x‖² + ‖y‖² − 2⟨x, y⟩``), so the distance it really works with is the 4th power of the
   Euclidean distance; the published re-ranked numbers of PPLR and others come from that. To
   reproduce them, pass squared Euclidean distances, or use :func:`re_ranking_features`, which
   does so for you and cannot be misused.

Steps (with ``M`` = the squared input over all ``N = Q + G`` samples, ``T[i, j] = M[i, j] /
max_r M[r, i]``; ``T`` is row-normalised for symmetric input):

1. Ranked lists: ``T``'s rows sorted ascending (stable; the reference's ``np.argsort`` is not
   stable, so exact ties may be ordered differently).
2. ``R(i)`` from ``k1 + 1`` columns, half sets from ``round(k1/2) + 1`` columns, expansion by
   the strict 2/3 rule (paper Eq. 6).
3. ``V[i, j] = exp(−T[i, j]) / Σ exp(−T[i, ·])`` over the expanded set (Eq. 7).
4. If ``k2 != 1``: ``V[i] ← mean of V over i's first k2 ranked samples`` (Eq. 10).
5. ``J[q, j] = 1 − S/(2 − S)``, ``S = Σ_t min(V[q, t], V[j, t])`` for the query rows (no clipping).
6. ``final = (1 − λ)·J + λ·T``, restricted to query rows × gallery columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from reid_clustering import (
    half_width,
    jaccard_from_encoding,
    k_reciprocal_encoding,
    local_query_expansion,
    rank_by_distance,
)

from ._checks import as_feature_tensor, positive_int

__all__ = ["iter_re_ranking_features", "re_ranking", "re_ranking_features"]


def re_ranking(
    q_g_dist: np.ndarray | torch.Tensor,
    q_q_dist: np.ndarray | torch.Tensor,
    g_g_dist: np.ndarray | torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Classic k-reciprocal re-ranking; **squares its input distances** (module docstring).

    Args:
        q_g_dist: ``[Q, G]`` query-gallery distances.
        q_q_dist: ``[Q, Q]`` query-query distances.
        g_g_dist: ``[G, G]`` gallery-gallery distances.
        k1: k-reciprocal neighbours (``k1 + 1`` ranked columns, self included).
        k2: query-expansion neighbours.
        lambda_value: weight of the original distance in the blend.

    Returns:
        float32 numpy ``[Q, G]`` re-ranked distances (smaller is more similar).

    Raises:
        ValueError: inconsistent shapes, NaN/inf or negative distances, bad ``k1``/``k2``/
            ``lambda_value``, fewer than ``max(k1 + 1, k2)`` query + gallery samples (the
            message gives the largest ``k1``/``k2`` that fit and the gallery size needed).
    """
    q_g, q_q, g_g = (
        _as_distance(d, name)
        for d, name in ((q_g_dist, "q_g_dist"), (q_q_dist, "q_q_dist"), (g_g_dist, "g_g_dist"))
    )
    num_q, num_g = q_g.shape
    if q_q.shape != (num_q, num_q) or g_g.shape != (num_g, num_g):
        raise ValueError(
            f"shapes do not fit: q_g_dist {tuple(q_g.shape)} needs q_q_dist ({num_q}, {num_q}) "
            f"and g_g_dist ({num_g}, {num_g}), got {tuple(q_q.shape)} and {tuple(g_g.shape)}"
        )
    k1, k2, lambda_value = _check_parameters(k1, k2, lambda_value, num_q, num_g)
    q_g, q_q, g_g = (d.to(q_g.device) for d in (q_g, q_q, g_g))
    # The result does not depend on the distances' unit (each column is divided by its maximum):
    # bring them near 1 by an exact power of two where squaring would overflow or underflow.
    scale = _power_of_two_scale(max(float(d.abs().max()) for d in (q_g, q_q, g_g)), 30)
    if scale != 1.0:
        q_g, q_q, g_g = (d * scale for d in (q_g, q_q, g_g))
    squared = torch.cat([torch.cat([q_q, q_g], 1), torch.cat([q_g.t(), g_g], 1)], 0).pow(2)
    column_max = squared.max(dim=0).values
    original = (squared / torch.where(column_max > 0, column_max, 1)).t().contiguous()
    del squared
    ranked = rank_by_distance(original, max(k1 + 1, k2))

    def pair_distance(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return original[rows, cols]

    encoding = _encoding(ranked, pair_distance, k1, k2)
    rows = torch.arange(num_q, device=ranked.device)
    jaccard = jaccard_from_encoding(encoding, rows, dense=True, clip=False)
    final = jaccard[:, num_q:] * (1 - lambda_value) + original[:num_q, num_q:] * lambda_value
    return final.cpu().numpy()


def re_ranking_features(
    query_features: np.ndarray | torch.Tensor,
    gallery_features: np.ndarray | torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    chunk_size: int = 1024,
) -> np.ndarray:
    """Re-ranked ``[Q, G]`` distances from features, as the reference pipelines compute them.

    Equal to ``re_ranking(d(q, g), d(q, q), d(g, g), k1, k2, lambda_value)`` with ``d`` the
    squared Euclidean distance of the features as given (normalise them first if your model
    does not). Memory: ``O((Q + G)·k)`` plus one block of ``chunk_size × (Q + G)`` distances, on
    the features' device, and the returned ``Q × G`` array. Use
    :func:`iter_re_ranking_features` to consume the result block by block instead.
    """
    q, g = _as_features(query_features, gallery_features)
    out = np.empty((q.shape[0], g.shape[0]), dtype=np.float32)
    for start, stop, block in iter_re_ranking_features(
        q, g, k1, k2, lambda_value, chunk_size=chunk_size
    ):
        out[start:stop] = block.cpu().numpy()
    return out


def iter_re_ranking_features(
    query_features: np.ndarray | torch.Tensor,
    gallery_features: np.ndarray | torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    chunk_size: int = 1024,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield ``(start, stop, block)``: re-ranked distances of queries ``start:stop``, ``[c, G]``.

    The numbers of :func:`re_ranking_features`; only one block of queries is held at a time.
    """
    q, g = _as_features(query_features, gallery_features)
    x = torch.cat([q, g])
    n, num_q = x.shape[0], q.shape[0]
    k1, k2, lambda_value = _check_parameters(k1, k2, lambda_value, num_q, g.shape[0])
    chunk_size = positive_int(chunk_size, "chunk_size")
    # Scaling the features scales every squared distance alike, which the normalisation by each
    # sample's maximum removes: an exact power of two keeps their squares inside float32.
    scale = _power_of_two_scale(float(x.abs().max()) if x.numel() else 0.0, 16)
    if scale != 1.0:
        x = x * scale
    width = max(k1 + 1, k2)
    sq_norms = x.pow(2).sum(dim=1)

    def squared_input(rows: torch.Tensor, cols: torch.Tensor | None = None) -> torch.Tensor:
        """``M = d²`` with ``d = ‖x_r‖² + ‖x_c‖² − 2⟨x_r, x_c⟩``: the classic squares its input."""
        other = x if cols is None else x[cols]
        other_norms = sq_norms if cols is None else sq_norms[cols]
        d = sq_norms[rows, None] + other_norms[None, :] - 2 * x[rows] @ other.t()
        return d.pow(2)

    # One pass over all pairs: the ranked lists and each sample's normaliser max_r M[r, i].
    ranked_blocks, normaliser = [], x.new_empty(n)
    for start in range(0, n, chunk_size):
        rows = torch.arange(start, min(n, start + chunk_size), device=x.device)
        block = squared_input(rows)
        normaliser[rows] = block.max(dim=1).values  # = column max, M being symmetric
        ranked_blocks.append(rank_by_distance(block, width))
    ranked = torch.cat(ranked_blocks)
    normaliser = torch.where(normaliser > 0, normaliser, 1)

    def pair_distance(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        diff = sq_norms[rows] + sq_norms[cols] - 2 * (x[rows] * x[cols]).sum(dim=1)
        return diff.pow(2) / normaliser[rows]

    encoding = _encoding(ranked, pair_distance, k1, k2)
    transposed = encoding.transpose()  # shared by every block of queries
    gallery_cols = torch.arange(num_q, n, device=x.device)
    for start in range(0, num_q, chunk_size):
        rows = torch.arange(start, min(num_q, start + chunk_size), device=x.device)
        jaccard = jaccard_from_encoding(
            encoding, rows, dense=True, clip=False, transposed=transposed
        )[:, num_q:]
        original = squared_input(rows, gallery_cols) / normaliser[rows, None]
        yield start, start + rows.numel(), jaccard * (1 - lambda_value) + original * lambda_value


def _encoding(ranked: torch.Tensor, pair_distance, k1: int, k2: int):  # noqa: ANN001, ANN202
    encoding = k_reciprocal_encoding(ranked, pair_distance, width=k1 + 1, half_width=half_width(k1))
    if k2 != 1:
        encoding = local_query_expansion(encoding, ranked[:, :k2])
    return encoding


def _check_parameters(
    k1: int, k2: int, lambda_value: float, num_q: int, num_g: int
) -> tuple[int, int, float]:
    """``k1``/``k2`` positive integers that ``Q + G`` samples can serve, ``lambda_value`` in
    [0, 1]. Every sample, query or gallery, ranks all ``N = Q + G`` samples (itself first):
    ``k1 + 1`` ranked columns and ``k2`` expansion neighbours need ``N >= max(k1 + 1, k2)``."""
    for name, value in (("k1", k1), ("k2", k2)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    n, need = num_q + num_g, max(k1 + 1, k2)
    if n < need:
        lower = [f"k1 to at most {n - 1}"] if k1 + 1 > n else []
        lower += [f"k2 to at most {n}"] if k2 > n else []
        raise ValueError(
            f"re-ranking with k1={k1}, k2={k2} needs at least {need} samples in query and "
            f"gallery together (k1 + 1 = {k1 + 1} ranked neighbours per sample, itself "
            f"included; k2 = {k2} for the query expansion), got {n} ({num_q} query + {num_g} "
            f"gallery); lower {' and '.join(lower)}, or pass at least {need - num_q} gallery "
            "samples"
        )
    try:
        lam = float(lambda_value)
    except (TypeError, ValueError):
        raise ValueError(f"lambda_value must be a number in [0, 1], got {lambda_value!r}") from None
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda_value must lie in [0, 1], got {lambda_value!r}")
    return int(k1), int(k2), lam


def _power_of_two_scale(peak: float, limit: int) -> float:
    """1.0 when ``peak`` lies in ``[2^-limit, 2^limit]`` (or is 0), else the power of two that
    brings it into ``[0.5, 1)``."""
    if peak == 0 or 2.0**-limit <= peak <= 2.0**limit:
        return 1.0
    return 2.0 ** -math.frexp(peak)[1]


def _as_distance(d: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(d)) if not isinstance(d, torch.Tensor) else d.detach()
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D distance matrix, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}): no query or gallery sample")
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold real distances, got dtype {t.dtype}")
    t = t.to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf; check the features it was computed from")
    if bool((t < -1e-4).any()):
        raise ValueError(
            f"{name} has negative entries (min {float(t.min()):.3g}); pass distances, not "
            "similarities"
        )
    return t


def _as_features(
    query: np.ndarray | torch.Tensor, gallery: np.ndarray | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = []
    for value, name in ((query, "query_features"), (gallery, "gallery_features")):
        t = as_feature_tensor(value, name).detach()
        if t.dim() != 2 or t.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty [N, D] array, got {tuple(t.shape)}")
        t = t.to(torch.float32)
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf")
        tensors.append(t)
    q, g = tensors
    if q.shape[1] != g.shape[1]:
        raise ValueError(
            f"query_features and gallery_features dimensions differ: {q.shape[1]} vs "
            f"{g.shape[1]}; extract both with the same model and head"
        )
    if q.device != g.device:
        raise ValueError(
            f"query_features are on {q.device} but gallery_features on {g.device}; move both to "
            "one device"
        )
    return q, g
