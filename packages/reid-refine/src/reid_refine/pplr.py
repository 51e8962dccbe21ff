"""PPLR (Cho et al., CVPR 2022): cross agreement (Eq. 6), AALS (Eq. 7-8), PGLR (Eq. 9-10)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch import nn

from reid_refine._checks import (
    check_agreement,
    check_float_tensor,
    check_nonempty_batch,
    check_targets,
    check_unit_interval,
)
from reid_refine.smoothing import one_hot_targets, soft_cross_entropy_unchecked

__all__ = [
    "AALSLoss",
    "KNNFunction",
    "PGLRLoss",
    "aals_loss",
    "aals_targets",
    "cross_agreement",
    "pglr_loss",
    "pglr_targets",
    "ranked_lists",
]

#: Default budget (number of float similarities) for one chunk of the N×N similarity rows.
_CHUNK_ELEMENTS = 1 << 25


def _default_chunk_size(n: int) -> int:
    return max(1, min(n, _CHUNK_ELEMENTS // max(n, 1)))


def _topk_rows(sims: torch.Tensor, m: int) -> torch.Tensor:
    """Indices of the ``m`` largest entries per row, ordered like a *stable* descending sort.

    Ties are broken by the lower column index, so the result is deterministic and equals
    ``torch.sort(sims, descending=True, stable=True).indices[:, :m]`` (the brute-force
    reference), without sorting whole rows.
    """
    vals, idx = torch.topk(sims, m, dim=1, largest=True, sorted=True)
    thr = vals[:, -1:]
    n_ge = (sims >= thr).sum(dim=1)
    tied = torch.nonzero(n_ge > m).flatten()
    if tied.numel() > 0:
        # Rows whose m-th value is shared with columns left out: keep every column above the
        # threshold, then the lowest-index columns equal to it until m are taken.
        s_t, thr_t = sims[tied], thr[tied]
        gt = s_t > thr_t
        need = m - gt.sum(dim=1, keepdim=True)
        eq = s_t == thr_t
        take = gt | (eq & (torch.cumsum(eq, dim=1) <= need))
        idx[tied] = torch.nonzero(take)[:, 1].view(-1, m)
    # topk(sorted=True) does not promise index order inside runs of equal values above the
    # threshold either: re-sort each row's m picks stably by (value desc, index asc).
    picked = torch.gather(sims, 1, idx)
    idx_sorted, perm_idx = torch.sort(idx, dim=1)
    vals_by_idx = torch.gather(picked, 1, perm_idx)
    order = torch.sort(vals_by_idx, dim=1, descending=True, stable=True).indices
    return torch.gather(idx_sorted, 1, order)


@torch.no_grad()
def ranked_lists(
    feats: torch.Tensor, k: int = 20, *, chunk_size: int | None = None, name: str = "feats"
) -> torch.Tensor:
    """Top-k ranked lists by inner product with the first column dropped by position.

    For every row i, all N samples (i included) are ranked by ``<x_i, x_j>`` descending (ties:
    lower index first); the top ``k + 1`` are taken and column 0 is dropped *by position*
    (assumed to be i itself; for L2-normalised, distinct features it is). This is the official
    PPLR ``compute_ranked_list``: search ``k + 1`` neighbours, return ``[:, 1:k+1]``.

    Args:
        feats: ``[N, D]`` float features, used as given (PPLR L2-normalises them beforehand);
            features whose inner products would overflow their dtype (or underflow) are first
            scaled by an exact power of two, which leaves the ranking unchanged.
        k: list length, ``1 <= k < N``.
        chunk_size: rows of the N×N similarity computed at once (memory ``chunk_size × N``);
            default keeps one chunk at ~128 MB of float32.

    Returns:
        ``[N, k]`` int64 indices on the features' device.
    """
    feats = check_float_tensor(feats, name, 2)
    n = feats.shape[0]
    _check_k(k, n)
    if chunk_size is None:
        chunk_size = _default_chunk_size(n)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    feats = _product_safe(feats.detach())
    out = torch.empty((n, k), dtype=torch.long, device=feats.device)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        sims = feats[start:stop] @ feats.T
        out[start:stop] = _topk_rows(sims, k + 1)[:, 1:]
    return out


def _product_safe(x: torch.Tensor) -> torch.Tensor:
    """``x``, or ``x`` times the power of two that brings its largest ``|entry|`` into [0.5, 1)
    when its inner products could overflow (or underflow to lose their precision) in its dtype.

    The scaling is exact and multiplies every inner product by the same positive number, so the
    ranking is that of the exact features; ordinary features (L2-normalised, say) are returned as
    they are and rank bit for bit as before.
    """
    if x.numel() == 0:
        return x
    finfo = torch.finfo(x.dtype)
    peak = float(x.abs().max())
    if peak == 0:
        return x
    e = math.frexp(peak)[1]  # peak < 2^e, so |<x_i, x_j>| < D·4^e
    if x.shape[-1] * 4.0**e < finfo.max / 4 and 4.0 ** (e - 1) >= finfo.tiny / finfo.eps:
        return x
    return x * 2.0**-e


def _jaccard_of_lists(a: torch.Tensor, b: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Row-wise Jaccard similarity of two ``[N, k]`` index lists (each row without repeats)."""
    n, k = a.shape
    inter = torch.empty(n, dtype=torch.float32, device=a.device)
    rows = max(1, chunk_size)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        eq = a[start:stop, :, None] == b[start:stop, None, :]
        inter[start:stop] = eq.sum(dim=(1, 2)).to(torch.float32)
    # Both rows hold k distinct indices, so |A ∪ B| = 2k − |A ∩ B|.
    return inter / (2 * k - inter)


#: ``knn(features, m) -> ranked`` for :func:`cross_agreement` (its docstring has the contract).
KNNFunction = Callable[[torch.Tensor, int], torch.Tensor]


@torch.no_grad()
def cross_agreement(
    global_feats: torch.Tensor,
    part_feats: torch.Tensor,
    k: int = 20,
    *,
    chunk_size: int | None = None,
    knn: KNNFunction | None = None,
    global_ranked: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross agreement score of PPLR, Eq. 6: ``C_i(g, p) = |R_i(g,k) ∩ R_i(p,k)| / |∪|``.

    ``R_i(·, k)`` is the top-k ranked list of sample i in one feature space, by inner product
    of the features *as given* (the official code L2-normalises them first; do the same for
    the reference numbers), with the top-(k+1) searched and the first column dropped by
    position (see :func:`ranked_lists`). Ties in similarity go to the lower index. Works in
    chunks of rows, never materialising N×N, on the tensors' device; no gradients.

    By default the searches are :func:`ranked_lists` (chunked float32 matmuls; pure torch).
    ``knn`` replaces them with the caller's search, for example one that ranks exactly like the
    clustering did, and ``global_ranked`` replaces the global search with a ranked list already
    at hand (e.g. the clustering's own).

    **Contract of** ``knn``: it is called as ``knn(x, m)`` with ``m = k + 1`` and ``x`` a
    detached ``[N, D]`` tensor of the caller's dtype on the features' device: first
    ``global_feats`` (unless ``global_ranked`` is given), then ``part_feats[:, p, :]`` for
    each part p in order. A part is passed as that view, not copied (a copy would be
    ``N × D_p`` floats, 0.8 GB at 100k × 2048): ``x`` may be non-contiguous, and a search that
    needs contiguous memory (faiss, for example) calls ``x.contiguous()`` itself. It must
    return an int64 tensor ``[N, m]`` on the same device whose
    row i holds the ``m`` row indices j with the largest inner products ``⟨x_i, x_j⟩`` over
    all N rows (a self-search: i is a candidate), in descending order of that inner product,
    ties to the lower index, no index twice. Column 0 is dropped **by position**: it is
    expected to be i itself, which it is for distinct L2-normalised features; when a
    lower-index duplicate of i takes column 0, that duplicate is dropped and i stays in its own
    list (as in :func:`ranked_lists` and the official code). The output's type, dtype, shape,
    device, index range and repeats are checked; its order is not (the caller's search defines
    the ranking). For example ``lambda x, m: reid_clustering.knn_search(x, k=m).indices``, whose
    ranking (float32 ``pair_dot`` values) is the same bits on every machine and is the one
    ``reid_clustering``'s clustering uses; reid-refine itself depends on torch only.

    Args:
        global_feats: ``[N, D]`` float.
        part_feats: ``[N, P, D_p]`` float (parts before channels).
        k: neighbours per list (paper: 20); ``1 <= k < N``.
        chunk_size: rows per similarity chunk of the default search (memory
            ``chunk_size × N`` floats); unused by the searches that ``knn`` does.
        knn: the search to use instead of :func:`ranked_lists` (contract above); None (the
            default) keeps the pure-torch search.
        global_ranked: int64 ``[N, >= k + 1]`` on the features' device: a ranking of
            ``global_feats`` under the same convention as ``knn``'s output (column 0 the row
            itself, normally), of which columns ``1..k`` are used; ``global_feats`` are then not
            searched. It is trusted to rank ``global_feats`` (only its form is checked); for
            consistent scores it should come from the same search as the parts' lists.

    Returns:
        ``[N, P]`` float32 scores in [0, 1] on the features' device.

    Raises:
        ValueError: bad features (not float, wrong dimensions, NaN/inf, N or device mismatch),
            ``k`` out of range, ``knn`` not callable, or a ranked list (``knn``'s output or
            ``global_ranked``) that is not an int64 tensor of the required shape on the
            features' device with distinct indices in ``[0, N)`` in each row.
    """
    global_feats = check_float_tensor(global_feats, "global_feats", 2)
    part_feats = check_float_tensor(part_feats, "part_feats", 3)
    n = global_feats.shape[0]
    if part_feats.shape[0] != n:
        raise ValueError(
            f"part_feats must have N = {n} rows like global_feats, got {tuple(part_feats.shape)}"
        )
    if part_feats.device != global_feats.device:
        raise ValueError("part_feats must be on the device of global_feats")
    _check_k(k, n)
    if knn is not None and not callable(knn):
        raise ValueError(
            "knn must be a callable knn(features [N, D], m) -> int64 [N, m] ranked indices, "
            f"got {type(knn).__name__}"
        )
    device = global_feats.device
    if global_ranked is not None:
        _check_ranked(global_ranked, "global_ranked", n, k + 1, device, exact=False)
        rl_g = global_ranked[:, 1 : k + 1]
    elif knn is None:
        rl_g = ranked_lists(global_feats, k, chunk_size=chunk_size, name="global_feats")
    else:
        rl_g = _knn_ranked_lists(knn, global_feats, k, "global_feats")
    pair_rows = max(1, (1 << 22) // (k * k))
    scores = []
    for p in range(part_feats.shape[1]):
        if knn is None:
            rl_p = ranked_lists(part_feats[:, p, :], k, chunk_size=chunk_size, name="part_feats")
        else:
            rl_p = _knn_ranked_lists(knn, part_feats[:, p, :], k, f"part_feats[:, {p}, :]")
        scores.append(_jaccard_of_lists(rl_g, rl_p, pair_rows))
    if not scores:
        return torch.empty((n, 0), dtype=torch.float32, device=device)
    return torch.stack(scores, dim=1)


def _check_k(k: object, n: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k >= n:
        raise ValueError(f"k must be an integer with 1 <= k < N = {n}, got {k!r}")


def _knn_ranked_lists(knn: KNNFunction, feats: torch.Tensor, k: int, name: str) -> torch.Tensor:
    """``knn(feats, k + 1)`` checked, with its first column dropped by position → ``[N, k]``."""
    ranked = knn(feats.detach(), k + 1)
    what = f"knn({name}, m={k + 1}) returned a ranked list that"
    _check_ranked(ranked, what, feats.shape[0], k + 1, feats.device, exact=True)
    return ranked[:, 1:]


def _check_ranked(
    ranked: object, name: str, n: int, m: int, device: torch.device, *, exact: bool
) -> None:
    """A ranked list: int64 ``[n, m]`` (``[n, >= m]`` unless ``exact``) on ``device``, whose
    first ``m`` columns hold distinct indices in ``[0, n)`` in every row."""
    if not isinstance(ranked, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(ranked).__name__}")
    if ranked.dtype != torch.int64:
        raise ValueError(f"{name} must have dtype torch.int64 (row indices), got {ranked.dtype}")
    if ranked.dim() != 2 or ranked.shape[0] != n:
        cols = m if exact else f">= {m}"
        raise ValueError(f"{name} must have shape [N = {n}, {cols}], got {tuple(ranked.shape)}")
    if exact and ranked.shape[1] != m:
        raise ValueError(
            f"{name} must have exactly m = {m} columns (shape [{n}, {m}]), "
            f"got {tuple(ranked.shape)}"
        )
    if ranked.shape[1] < m:
        raise ValueError(
            f"{name} has too few columns: {ranked.shape[1]} < k + 1 = {m} (column 0, the "
            "sample itself, is dropped and k neighbours must remain)"
        )
    if ranked.device != device:
        raise ValueError(f"{name} is on {ranked.device}, but the features are on {device}")
    head = ranked[:, :m]
    if head.numel() == 0:
        return
    low, high = int(head.min()), int(head.max())
    if low < 0 or high >= n:
        raise ValueError(f"{name} holds indices outside [0, N = {n}): min {low}, max {high}")
    ordered = torch.sort(head, dim=1).values
    repeats = (ordered[:, 1:] == ordered[:, :-1]).any(dim=1).nonzero().flatten()
    if repeats.numel():
        raise ValueError(
            f"{name} repeats an index within a row (first rows: {repeats[:5].tolist()}); each "
            f"row must list {m} distinct samples"
        )


def _check_part_inputs(
    part_logits: torch.Tensor, targets: torch.Tensor, agreement: torch.Tensor
) -> tuple[int, int, int]:
    part_logits = check_float_tensor(part_logits, "part_logits", 3)
    n, p, k = part_logits.shape
    if p < 1 or k < 1:
        raise ValueError(f"part_logits must have P >= 1 and K >= 1, got {tuple(part_logits.shape)}")
    check_targets(targets, n, k)
    check_agreement(agreement, n, p)
    return n, p, k


def aals_targets(
    targets: torch.Tensor, agreement: torch.Tensor, num_classes: int, dtype: torch.dtype
) -> torch.Tensor:
    """AALS refined part labels, PPLR Eq. 7: ``ỹ^p = C_p·y + (1 − C_p)·u`` → ``[N, P, K]``.

    Args:
        targets: ``[N]`` integer pseudo-labels in ``[0, num_classes)``.
        agreement: ``[N, P]`` cross-agreement scores in [0, 1].
        num_classes: K >= 1.
        dtype: floating-point dtype of the result.

    Raises:
        ValueError: on invalid inputs (each message names the argument).
    """
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, numbers.Integral)
        or num_classes < 1
    ):
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    agreement = check_float_tensor(agreement, "agreement", 2)
    n, p = agreement.shape
    check_targets(targets, n, int(num_classes))
    check_agreement(agreement, n, p)
    return _aals_targets(targets, agreement, int(num_classes), dtype)


def _aals_targets(
    targets: torch.Tensor, agreement: torch.Tensor, num_classes: int, dtype: torch.dtype
) -> torch.Tensor:
    """:func:`aals_targets` without input checks, for callers that validated already."""
    y = one_hot_targets(targets, num_classes, dtype)[:, None, :]
    c = agreement.detach().to(dtype)[:, :, None]
    return c * y + (1.0 - c) / num_classes


def aals_loss(
    part_logits: torch.Tensor, targets: torch.Tensor, agreement: torch.Tensor
) -> torch.Tensor:
    """Agreement-aware label smoothing, PPLR Eq. 7-8 (official-code reduction).

    For each part p: batch mean of ``C_ip·H(y_i, q_i^p) + (1 − C_ip)·KL(u ‖ q_i^p)`` with u
    uniform over the K clusters; then the mean over parts. Implemented as the soft
    cross-entropy against the Eq. 7 target minus the constant ``(1 − C)·log K`` (since
    ``KL(u‖q) = H(u, q) − log K``), which is the same number; each sample's term is clamped at 0,
    where rounding could take the subtraction to −1e-16.

    Args:
        part_logits: ``[N, P, K]`` float.
        targets: ``[N]`` integer pseudo-labels in ``[0, K)``.
        agreement: ``[N, P]`` cross-agreement scores in [0, 1] (treated as constants).

    Returns:
        Scalar loss (gradients reach ``part_logits`` only).

    Raises:
        ValueError: on invalid inputs, or on an empty batch (N = 0; the mean would be NaN).
    """
    n, p, k = _check_part_inputs(part_logits, targets, agreement)
    check_nonempty_batch(part_logits, "part_logits", "aals_loss")
    target = _aals_targets(targets, agreement, k, part_logits.dtype)
    per_sample = soft_cross_entropy_unchecked(part_logits, target, "none")  # [N, P]
    entropy_u = (1.0 - agreement.detach().to(part_logits.dtype)) * math.log(k)
    # Each term is >= 0 (a cross-entropy plus a KL divergence); the subtraction rounds it to
    # -1e-16 where it is exactly 0 (uniform logits, C = 0): clamp those at 0.
    return (per_sample - entropy_u).clamp_min(0).mean()


@torch.no_grad()
def pglr_targets(
    part_logits: torch.Tensor, targets: torch.Tensor, agreement: torch.Tensor, beta: float = 0.5
) -> torch.Tensor:
    """PGLR refined global label, PPLR Eq. 9 → ``[N, K]`` (detached).

    ``w_i = softmax_p(C_i)``; ensemble ``Σ_p w_ip·softmax(part_logits_ip)``;
    target ``β·y + (1 − β)·ensemble``.
    """
    _, _, k = _check_part_inputs(part_logits, targets, agreement)
    b = check_unit_interval(beta, "beta", low_open=True)
    w = torch.softmax(agreement.to(part_logits.dtype), dim=1)[:, :, None]
    ensemble = (w * torch.softmax(part_logits, dim=-1)).sum(dim=1)
    return b * one_hot_targets(targets, k, part_logits.dtype) + (1.0 - b) * ensemble


def pglr_loss(
    global_logits: torch.Tensor,
    part_logits: torch.Tensor,
    targets: torch.Tensor,
    agreement: torch.Tensor,
    beta: float = 0.5,
) -> torch.Tensor:
    """Part-guided label refinement, PPLR Eq. 9-10.

    The part ensemble is **detached** (a target): gradients reach ``global_logits`` only.

    Args:
        global_logits: ``[N, K]`` float.
        part_logits: ``[N, P, K]`` float.
        targets: ``[N]`` integer pseudo-labels in ``[0, K)``.
        agreement: ``[N, P]`` cross-agreement scores in [0, 1].
        beta: weight of the one-hot label, in (0, 1] (paper: 0.5; 1 gives plain CE).

    Returns:
        Scalar: batch mean of ``−Σ_k ỹ_k·log_softmax(global_logits)_k``.

    Raises:
        ValueError: on invalid inputs, or on an empty batch (N = 0; the mean would be NaN).
    """
    global_logits = check_float_tensor(global_logits, "global_logits", 2)
    check_nonempty_batch(global_logits, "global_logits", "pglr_loss")
    if not isinstance(part_logits, torch.Tensor) or part_logits.dim() != 3:
        check_float_tensor(part_logits, "part_logits", 3)
    if global_logits.shape != (part_logits.shape[0], part_logits.shape[2]):
        raise ValueError(
            f"global_logits must have shape [N, K] = [{part_logits.shape[0]}, "
            f"{part_logits.shape[2]}] to match part_logits, got {tuple(global_logits.shape)}"
        )
    target = pglr_targets(part_logits, targets, agreement, beta)
    return soft_cross_entropy_unchecked(global_logits, target)


class AALSLoss(nn.Module):
    """Module form of :func:`aals_loss` (PPLR Eq. 8): ``[N, P, K]``, ``[N]``, ``[N, P]``.

    Raises ValueError on an empty batch (N = 0), like :func:`aals_loss`.
    """

    def forward(
        self, part_logits: torch.Tensor, targets: torch.Tensor, agreement: torch.Tensor
    ) -> torch.Tensor:
        return aals_loss(part_logits, targets, agreement)


class PGLRLoss(nn.Module):
    """Module form of :func:`pglr_loss` (PPLR Eq. 9-10) with a fixed ``beta``.

    Raises ValueError on an empty batch (N = 0), like :func:`pglr_loss`.
    """

    def __init__(self, beta: float = 0.5) -> None:
        super().__init__()
        self.beta = check_unit_interval(beta, "beta", low_open=True)

    def forward(
        self,
        global_logits: torch.Tensor,
        part_logits: torch.Tensor,
        targets: torch.Tensor,
        agreement: torch.Tensor,
    ) -> torch.Tensor:
        return pglr_loss(global_logits, part_logits, targets, agreement, self.beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"
