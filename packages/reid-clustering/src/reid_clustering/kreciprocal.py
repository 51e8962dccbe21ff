"""The k-reciprocal encoding of Zhong et al. (CVPR 2017), vectorised and sparse.

This module is the one implementation shared by :func:`reid_clustering.compute_jaccard_distance`
(SpCL/PPLR clustering) and ``reid_eval``'s re-ranking. It works on a *ranked list* (row ``i``
holds sample indices sorted by increasing distance to ``i``, normally with ``i`` itself first)
and a function giving the distance of any pair, so both callers feed it their own convention:

=============================  ==============================  ==============================
step                           Jaccard distance (SpCL/PPLR)    re-ranking (Zhong et al.)
=============================  ==============================  ==============================
ranked-list columns used       ``k1`` (incl. self)             ``k1 + 1`` (incl. self)
half set columns               ``round(k1/2) + 1``             ``round(k1/2) + 1``
pair distance ``d(i, j)``      ``2 − 2⟨x_i, x_j⟩``             squared, column-normalised input
=============================  ==============================  ==============================

Steps (paper Sec. 3.2–3.4; notation of docs/design.md, "k-reciprocal Jaccard distance"):

1. ``R(i)``: the members ``j`` of the first ``w`` columns of row ``i`` whose own first ``w``
   columns contain ``i`` (:func:`reciprocal_mask`, :func:`k_reciprocal_sets`).
2. Expansion (paper Eq. 6): for each ``j ∈ R(i)``, if ``|R_half(j) ∩ R(i)| > 2/3·|R_half(j)|``
   (strictly), add ``R_half(j)``; take the union (:func:`expanded_reciprocal_pairs`).
3. ``V[i, j] = softmax_j(−d(i, j))`` over the expanded set (paper Eq. 7), zero elsewhere
   (:func:`k_reciprocal_encoding`).
4. Local query expansion (paper Eq. 10): ``V[i] ← mean of V over the first k2 columns of row i``
   (:func:`local_query_expansion`; skipped when ``k2 == 1`` as in the reference).
5. Jaccard distance (paper Eq. 11 with the min/max form of Eq. 12):
   ``J[i, j] = 1 − S / (2 − S)``, ``S = Σ_t min(V[i, t], V[j, t])``, negatives clipped to 0
   (:func:`jaccard_from_encoding`). Only pairs that share support in ``V`` get ``J < 1``.

``V`` has a few dozen non-zeros per row, so everything here runs in ``O(N·k)`` memory plus one
bounded block of ``rows × N`` accumulators; every step is a handful of tensor operations and runs
on the device of its inputs (GPU tensors stay on the GPU).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch

__all__ = [
    "RowSparse",
    "expanded_reciprocal_pairs",
    "jaccard_from_encoding",
    "k_reciprocal_encoding",
    "k_reciprocal_sets",
    "local_query_expansion",
    "reciprocal_mask",
]

PairDistance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``d(rows, cols) -> distances``: float32 distances of the pairs ``(rows[n], cols[n])``."""

# Work budget of one block, in elements of the largest temporary (bounds peak memory).
_BLOCK_ELEMENTS = 1 << 23


def _check_ranked(ranked: object, name: str = "ranked") -> torch.Tensor:
    """``ranked`` must be a 2-D integer tensor of sample indices in ``[0, N)``, N its rows."""
    if not isinstance(ranked, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor [N, W] of sample indices, got {type(ranked).__name__}"
        )
    if ranked.is_floating_point() or ranked.is_complex() or ranked.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer sample indices, got dtype {ranked.dtype}")
    if ranked.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D [N, W] (row i: the samples ranked for sample i), got shape "
            f"{tuple(ranked.shape)}"
        )
    n = ranked.shape[0]
    if ranked.numel() and (int(ranked.min()) < 0 or int(ranked.max()) >= n):
        raise ValueError(
            f"{name} holds indices outside [0, N = {n}) (min {int(ranked.min())}, max "
            f"{int(ranked.max())}): every entry must be a row of the ranked list"
        )
    return ranked.to(torch.int64)


def _check_width(width: object, name: str, columns: int) -> int:
    """``1 <= width <= columns`` (the ranked list's columns)."""
    if isinstance(width, bool) or not isinstance(width, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {width!r}")
    if not 1 <= int(width) <= columns:
        raise ValueError(
            f"{name}={width} must lie in [1, {columns}], the ranked list's number of columns"
        )
    return int(width)


def _check_encoding(encoding: object, name: str = "encoding") -> RowSparse:
    if not isinstance(encoding, RowSparse):
        raise TypeError(f"{name} must be a RowSparse, got {type(encoding).__name__}")
    return encoding


@dataclass(frozen=True)
class RowSparse:
    """A compressed-sparse-row matrix held in torch tensors (so it can live on a GPU).

    Row ``i`` stores the columns ``indices[indptr[i]:indptr[i + 1]]`` (ascending) with
    ``values`` at the same positions. Explicitly stored zeros are kept.
    """

    indptr: torch.Tensor
    indices: torch.Tensor
    values: torch.Tensor
    num_cols: int

    @property
    def num_rows(self) -> int:
        return self.indptr.numel() - 1

    @property
    def nnz(self) -> int:
        return self.indices.numel()

    @property
    def device(self) -> torch.device:
        return self.indices.device

    def row_counts(self) -> torch.Tensor:
        """int64 ``[num_rows]``: stored entries per row."""
        return self.indptr[1:] - self.indptr[:-1]

    def row_ids(self) -> torch.Tensor:
        """int64 ``[nnz]``: the row of every stored entry."""
        rows = torch.arange(self.num_rows, device=self.device)
        return rows.repeat_interleave(self.row_counts())

    def row_ids_between(self, start: int, stop: int) -> torch.Tensor:
        """int64: the row of every stored entry of rows ``start`` to ``stop − 1``, counted from
        ``start`` (0 for row ``start``)."""
        rows = torch.arange(start, stop, device=self.device)
        return rows.repeat_interleave(self.row_counts()[start:stop]) - start

    @classmethod
    def from_sorted_coo(
        cls,
        rows: torch.Tensor,
        cols: torch.Tensor,
        values: torch.Tensor,
        shape: tuple[int, int],
    ) -> RowSparse:
        """Build from entries already sorted by (row, column)."""
        counts = torch.bincount(rows, minlength=shape[0])
        indptr = torch.zeros(shape[0] + 1, dtype=torch.int64, device=rows.device)
        indptr[1:] = counts.cumsum(0)
        return cls(indptr, cols.to(torch.int64), values, shape[1])

    def transpose(self) -> RowSparse:
        """The transposed matrix (equivalently, this matrix in compressed-sparse-column form)."""
        return self.transpose_with_positions()[0]

    def transpose_with_positions(self) -> tuple[RowSparse, torch.Tensor]:
        """The transposed matrix, and where each stored entry of this one went in it.

        Returns:
            ``(t, where)``: ``t`` as :meth:`transpose`; int64 ``where[e]`` is the position in
            ``t.indices``/``t.values`` of this matrix's ``e``-th stored entry.
        """
        rows = self.row_ids()
        order = torch.argsort(self.indices * self.num_rows + rows)
        where = torch.empty_like(order)
        where[order] = torch.arange(order.numel(), device=order.device)
        t = RowSparse.from_sorted_coo(
            self.indices[order], rows[order], self.values[order], (self.num_cols, self.num_rows)
        )
        return t, where

    def to_dense(self) -> torch.Tensor:
        dense = torch.zeros(
            self.num_rows, self.num_cols, dtype=self.values.dtype, device=self.device
        )
        dense[self.row_ids(), self.indices] = self.values
        return dense

    def to_scipy(self) -> scipy.sparse.csr_matrix:
        """A scipy CSR matrix on the CPU (explicit zeros kept, indices sorted)."""
        return scipy.sparse.csr_matrix(
            (
                self.values.cpu().numpy(),
                self.indices.cpu().numpy(),
                self.indptr.cpu().numpy(),
            ),
            shape=(self.num_rows, self.num_cols),
        )


def reciprocal_mask(ranked: torch.Tensor, width: int) -> torch.Tensor:
    """Which of the first ``width`` neighbours of each sample are k-reciprocal neighbours.

    Args:
        ranked: int64 ``[N, W]`` ranked list (``W >= width``), row ``i`` = neighbours of ``i``.
        width: columns used on both sides (the reference's ``k1 + 1`` slice).

    Returns:
        bool ``[N, width]``: ``mask[i, c]`` is True when ``i`` is among the first ``width``
        neighbours of ``ranked[i, c]`` (``c``-th neighbour of ``i``).

    Raises:
        TypeError, ValueError: ``ranked`` not a 2-D integer tensor of indices in ``[0, N)``,
            ``width`` outside ``[1, W]``.
    """
    ranked = _check_ranked(ranked)
    width = _check_width(width, "width", ranked.shape[1])
    return _reciprocal_mask(ranked, width)


def _reciprocal_mask(ranked: torch.Tensor, width: int) -> torch.Tensor:
    """:func:`reciprocal_mask` without the input checks."""
    forward = ranked[:, :width].contiguous()
    n = forward.shape[0]
    out = torch.empty(forward.shape, dtype=torch.bool, device=forward.device)
    step = max(1, _BLOCK_ELEMENTS // (width * width))
    for start in range(0, n, step):
        block = forward[start : start + step]
        backward = forward[block]  # [c, width, width]
        ids = torch.arange(start, start + block.shape[0], device=block.device)
        out[start : start + block.shape[0]] = (backward == ids[:, None, None]).any(dim=2)
    return out


def k_reciprocal_sets(ranked: np.ndarray | torch.Tensor, width: int) -> list[np.ndarray]:
    """``R(i)`` for every sample, in ranked-list order (for inspection and tests).

    Args:
        ranked: int ``[N, W]`` ranked list.
        width: columns used (``k1`` for the Jaccard distance, ``k1 + 1`` for re-ranking).
    """
    if isinstance(ranked, np.ndarray):
        ranked = torch.from_numpy(ranked)
    ranked_t = _check_ranked(ranked)
    width = _check_width(width, "width", ranked_t.shape[1])
    mask = _reciprocal_mask(ranked_t, width).cpu().numpy()
    forward = ranked_t[:, :width].cpu().numpy()
    return [forward[i][mask[i]] for i in range(forward.shape[0])]


def expanded_reciprocal_pairs(
    ranked: torch.Tensor, width: int, half_width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The expanded k-reciprocal set of every sample as (row, column) pairs (paper Eq. 6).

    ``R*(i) = R(i) ∪ {R_half(j) : j ∈ R(i), |R_half(j) ∩ R(i)| > 2/3 · |R_half(j)|}``, where
    ``R`` uses ``width`` columns and ``R_half`` uses ``half_width`` columns of the ranked list.

    Returns:
        ``(rows, cols)`` int64 vectors sorted by row, then column (the reference's
        ``np.unique`` order), one pair per member.

    Raises:
        TypeError, ValueError: as :func:`reciprocal_mask`, for ``width`` and ``half_width``.
    """
    ranked = _check_ranked(ranked)
    width = _check_width(width, "width", ranked.shape[1])
    half_width = _check_width(half_width, "half_width", ranked.shape[1])
    return _expanded_reciprocal_pairs(ranked, width, half_width)


def _expanded_reciprocal_pairs(
    ranked: torch.Tensor, width: int, half_width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`expanded_reciprocal_pairs` without the input checks."""
    n = ranked.shape[0]
    if n == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=ranked.device)
        return empty, empty.clone()
    forward = ranked[:, :width].contiguous()
    full = torch.where(_reciprocal_mask(ranked, width), forward, -1)  # R(i), -1 padded
    half = torch.where(
        _reciprocal_mask(ranked, half_width), ranked[:, :half_width].contiguous(), -1
    )
    half_sizes = (half >= 0).sum(dim=1).to(torch.float64)
    half_padded = torch.where(half >= 0, half, n)  # column n: a dummy that is never a member
    rows_out, cols_out = [], []
    # Membership in R(i) is read from a bit table of [rows, N + 1]: set for the block's rows,
    # looked up for every candidate, then cleared again (only the positions set: O(rows · width)
    # per block, never O(rows · N)).
    step = max(1, min(_BLOCK_ELEMENTS // (width * half_width), _BLOCK_ELEMENTS // (n + 1)))
    table = torch.zeros(min(step, n) * (n + 1), dtype=torch.bool, device=ranked.device)
    for start in range(0, n, step):
        members = full[start : start + step]  # [c, width]
        c = members.shape[0]
        present = members >= 0
        base = torch.arange(c, device=ranked.device)[:, None] * (n + 1)  # each row's table
        marked = base + torch.where(present, members, n)
        table[marked] = True
        table[base[:, 0] + n] = False
        candidates = members.clamp(min=0)
        lookup = table[(base[..., None] + half_padded[candidates]).flatten()].view(c, width, -1)
        overlap = lookup.sum(dim=2).to(torch.float64)  # |R_half(j) ∩ R(i)|
        table[marked] = False
        # The reference compares an int with the float64 product 2/3 * len: keep that rounding.
        accept = present & (overlap > (2.0 / 3.0) * half_sizes[candidates])
        row, col = accept.nonzero(as_tuple=True)
        joined = half[members[row, col]]  # the half sets that join R*(i), -1 padded
        keys = torch.cat([
            (base // (n + 1) * n + members)[present],
            (row[:, None] * n + joined)[joined >= 0],
        ]).unique(sorted=True)  # fmt: skip
        rows_out.append(torch.div(keys, n, rounding_mode="floor") + start)
        cols_out.append(keys % n)
    return torch.cat(rows_out), torch.cat(cols_out)


def k_reciprocal_encoding(
    ranked: torch.Tensor,
    pair_distance: PairDistance,
    *,
    width: int,
    half_width: int,
    num_cols: int | None = None,
) -> RowSparse:
    """The sparse k-reciprocal feature ``V`` (paper Eq. 7): a softmax of ``−d`` over ``R*(i)``.

    Args:
        ranked: int64 ``[N, W]`` ranked list.
        pair_distance: distances of (row, column) pairs, see :data:`PairDistance`.
        width: ranked-list columns for ``R`` (``k1`` for SpCL's Jaccard, ``k1 + 1`` for
            Zhong's re-ranking).
        half_width: columns for ``R_half`` (``round(k1 / 2) + 1`` in both).
        num_cols: number of columns of ``V`` (default ``N``).

    Returns:
        ``V`` as a float32 :class:`RowSparse`; each non-empty row sums to 1.

    Raises:
        TypeError, ValueError: as :func:`expanded_reciprocal_pairs`; ``pair_distance`` not
            callable or returning NaN/inf; ``num_cols < N``.
    """
    ranked = _check_ranked(ranked)
    width = _check_width(width, "width", ranked.shape[1])
    half_width = _check_width(half_width, "half_width", ranked.shape[1])
    if not callable(pair_distance):
        raise TypeError(
            "pair_distance must be a callable d(rows, cols) -> distances, got "
            f"{type(pair_distance).__name__}"
        )
    n = ranked.shape[0]
    if num_cols is not None and (
        isinstance(num_cols, bool) or not isinstance(num_cols, numbers.Integral) or num_cols < n
    ):
        raise ValueError(f"num_cols must be an integer >= N = {n}, got {num_cols!r}")
    rows, cols = _expanded_reciprocal_pairs(ranked, width, half_width)
    neg = -_chunked_pair_distance(pair_distance, rows, cols).to(torch.float32)
    if not bool(torch.isfinite(neg).all()):
        raise ValueError(
            "pair_distance returned NaN or inf (in float32) for some pairs of the expanded "
            "k-reciprocal sets; the distances must be finite"
        )
    row_max = torch.full((n,), -torch.inf, dtype=neg.dtype, device=neg.device)
    row_max.scatter_reduce_(0, rows, neg, reduce="amax", include_self=True)
    weights = torch.exp(neg - row_max[rows])
    totals = torch.zeros(n, dtype=neg.dtype, device=neg.device).index_add_(0, rows, weights)
    values = weights / totals[rows]
    return RowSparse.from_sorted_coo(rows, cols, values, (n, n if num_cols is None else num_cols))


def _chunked_pair_distance(
    pair_distance: PairDistance, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    step = 2048
    parts = [
        pair_distance(rows[s : s + step], cols[s : s + step]) for s in range(0, rows.numel(), step)
    ]
    return torch.cat(parts) if parts else rows.new_zeros(0, dtype=torch.float32)


def local_query_expansion(encoding: RowSparse, neighbours: torch.Tensor) -> RowSparse:
    """Average each row of ``V`` over the given neighbours (paper Eq. 10, local query expansion).

    Args:
        encoding: ``V`` as a :class:`RowSparse`.
        neighbours: int64 ``[N, k2]`` (the first ``k2`` ranked-list columns, self included).

    Returns:
        ``V_qe`` with ``V_qe[i] = mean_{q in neighbours[i]} V[q]`` (sum in neighbour order,
        then divide by ``k2``, as ``np.mean(..., axis=0)`` does).

    Raises:
        TypeError, ValueError: ``encoding`` not a :class:`RowSparse`; ``neighbours`` not an
            integer ``[N, k2]`` tensor (``k2 >= 1``) of rows of ``encoding``.
    """
    encoding = _check_encoding(encoding)
    neighbours = _check_ranked(neighbours, "neighbours")
    n, k2 = neighbours.shape
    if n != encoding.num_rows or k2 < 1:
        raise ValueError(
            f"neighbours must have shape [N = {encoding.num_rows}, k2 >= 1] (one row per row of "
            f"encoding), got {tuple(neighbours.shape)}"
        )
    if n == 0:
        return encoding
    counts = encoding.row_counts()
    device = encoding.device
    rows_out, cols_out, vals_out = [], [], []
    avg_row = max(1, encoding.nnz // max(1, encoding.num_rows))
    step = max(1, _BLOCK_ELEMENTS // (k2 * avg_row * 4))
    for start in range(0, n, step):
        nb = neighbours[start : start + step]
        lengths = counts[nb].flatten()  # entries contributed by each (row, neighbour)
        source, segment = _expand_segments(encoding.indptr[nb].flatten(), lengths)
        local_row = torch.div(segment, k2, rounding_mode="floor")
        keys = local_row * encoding.num_cols + encoding.indices[source]
        unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        sums = torch.zeros(unique.numel(), dtype=encoding.values.dtype, device=device)
        sums.index_add_(0, inverse, encoding.values[source])
        rows_out.append(unique // encoding.num_cols + start)
        cols_out.append(unique % encoding.num_cols)
        vals_out.append(sums / k2)
    return RowSparse.from_sorted_coo(
        torch.cat(rows_out), torch.cat(cols_out), torch.cat(vals_out), (n, encoding.num_cols)
    )


def jaccard_from_encoding(
    encoding: RowSparse,
    rows: torch.Tensor | None = None,
    *,
    dense: bool = True,
    max_distance: float | None = None,
    clip: bool = True,
    transposed: RowSparse | None = None,
) -> torch.Tensor | RowSparse:
    """Jaccard distance between k-reciprocal encodings (paper Eq. 11–12, reference form).

    ``J[i, j] = 1 − S / (2 − S)`` with ``S = Σ_t min(V[i, t], V[j, t])``, clipped at 0; pairs
    sharing no support have ``J = 1``. Computed block by block of rows from the column view of
    ``V``: only the (i, t, j) triples with ``V[i, t] > 0`` and ``V[j, t] > 0`` are visited.

    Args:
        encoding: ``V`` (``N × M``); the distance is between its rows.
        rows: int64 indices of the rows ``i`` to compute (default: all ``N``), e.g. only the
            queries for re-ranking.
        dense: True → a float32 ``[len(rows), N]`` tensor; False → a :class:`RowSparse` with the
            pairs of ``J < 1`` only (``J ≤ max_distance`` if given).
        max_distance: sparse output only: drop pairs with a larger distance (a radius graph).
        clip: clip the tiny negative values that float rounding gives near-identical rows to 0,
            as SpCL/PPLR's Jaccard distance does (Zhong's re-ranking does not clip).
        transposed: ``encoding.transpose()``, when calling this repeatedly for blocks of rows of
            one encoding (it costs a sort of all non-zeros).

    Returns:
        Dense tensor or :class:`RowSparse`, on the encoding's device. Both come from the same
        arithmetic, so their values are identical where both exist.
    """
    encoding = _check_encoding(encoding)
    n = encoding.num_rows
    device = encoding.device
    if rows is not None:
        if (
            not isinstance(rows, torch.Tensor)
            or rows.is_floating_point()
            or rows.dtype == torch.bool
        ):
            raise TypeError(f"rows must be an integer torch.Tensor of row indices, got {rows!r}")
        if rows.dim() != 1 or (rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n)):
            raise ValueError(
                f"rows must be a 1-D tensor of row indices in [0, N = {n}), got shape "
                f"{tuple(rows.shape)}"
            )
        rows = rows.to(device=device, dtype=torch.int64)
    if transposed is not None:
        _check_encoding(transposed, "transposed")
    if rows is None and transposed is None and encoding.num_cols == n:
        return _jaccard_all_pairs(encoding, dense=dense, max_distance=max_distance, clip=clip)
    if rows is None:
        rows = torch.arange(n, device=device)
    columns = encoding.transpose() if transposed is None else transposed  # t -> rows holding t
    # Triples visited per requested row: sum over its entries t of the rows holding t.
    lengths = encoding.row_counts()[rows]
    entries, entry_row = _expand_segments(encoding.indptr[rows], lengths)
    work = torch.zeros(rows.numel(), dtype=torch.int64, device=device).index_add_(
        0, entry_row, columns.row_counts()[encoding.indices[entries]]
    )
    blocks = _row_blocks(work.cpu(), n)
    out_dense = torch.empty(rows.numel(), n, dtype=torch.float32, device=device) if dense else None
    sparse_rows, sparse_cols, sparse_vals = [], [], []
    widest = max((stop - start for start, stop in blocks), default=0)
    accumulator = torch.empty(widest * n, dtype=torch.float32, device=device)
    for start, stop in blocks:
        block_rows = rows[start:stop]
        shared = _shared_support(encoding, columns, block_rows, accumulator)  # S, [c, N]
        r, c = shared.nonzero(as_tuple=True)  # the pairs sharing support: J < 1
        jac = _distance_from_shared(shared[r, c], clip)
        if out_dense is not None:
            block = out_dense[start:stop]
            block.fill_(1.0)
            block[r, c] = jac
            continue
        if max_distance is not None:
            close = jac <= max_distance
            r, c, jac = r[close], c[close], jac[close]
        sparse_rows.append(r + start)
        sparse_cols.append(c)
        sparse_vals.append(jac)
    if out_dense is not None:
        return out_dense
    return _sparse_result(sparse_rows, sparse_cols, sparse_vals, (rows.numel(), n), device)


def _distance_from_shared(shared: torch.Tensor, clip: bool) -> torch.Tensor:
    """``J = 1 − S / (2 − S)`` (paper Eq. 12), optionally clipped at 0."""
    jac = 1 - shared / (2 - shared)
    return jac.clamp_(min=0) if clip else jac


def _sparse_result(
    rows: list[torch.Tensor],
    cols: list[torch.Tensor],
    vals: list[torch.Tensor],
    shape: tuple[int, int],
    device: torch.device,
) -> RowSparse:
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    return RowSparse.from_sorted_coo(
        torch.cat(rows) if rows else empty,
        torch.cat(cols) if cols else empty,
        torch.cat(vals) if vals else torch.zeros(0, device=device),
        shape,
    )


def _jaccard_all_pairs(
    encoding: RowSparse, *, dense: bool, max_distance: float | None, clip: bool
) -> torch.Tensor | RowSparse:
    """:func:`jaccard_from_encoding` for every pair of rows of a square ``V``, visiting each
    unordered pair once.

    ``S[i, j]`` and ``S[j, i]`` add the same terms ``min(V[i, t], V[j, t])`` in the same order
    (``t`` ascending), so they are the same float: only ``j ≥ i`` is accumulated and the result
    is mirrored, bit for bit what the general path computes, in half the work.
    """
    n = encoding.num_rows
    device = encoding.device
    columns, where = encoding.transpose_with_positions()
    # In column t of V the rows j holding t are ascending, and row i itself sits at where[e] for
    # its entry e = (i, t): the rows j >= i are where[e] .. the column's end.
    column_end = columns.indptr[1:][encoding.indices]
    upper = column_end - where  # per entry of V: the rows j >= i sharing its column
    work = torch.zeros(n, dtype=torch.int64, device=device).index_add_(0, encoding.row_ids(), upper)
    blocks = _row_blocks(work.cpu(), n)
    out_dense = torch.ones(n, n, dtype=torch.float32, device=device) if dense else None
    sparse_rows, sparse_cols, sparse_vals = [], [], []
    widest = max((stop - start for start, stop in blocks), default=0)
    accumulator = torch.empty(widest * n, dtype=torch.float32, device=device)
    for start, stop in blocks:
        entry = torch.arange(int(encoding.indptr[start]), int(encoding.indptr[stop]), device=device)
        entry_row = encoding.row_ids_between(start, stop)
        source, pair = _expand_segments(where[entry], upper[entry])
        shared = _accumulate(
            encoding, columns, entry, entry_row, source, pair, accumulator, stop - start
        )
        r, c = shared.nonzero(as_tuple=True)  # pairs j >= i sharing support: J < 1
        jac = _distance_from_shared(shared[r, c], clip)
        r = r + start
        if out_dense is not None:
            out_dense[r, c] = jac
            out_dense[c, r] = jac
            continue
        if max_distance is not None:
            close = jac <= max_distance
            r, c, jac = r[close], c[close], jac[close]
        sparse_rows.append(r)
        sparse_cols.append(c)
        sparse_vals.append(jac)
    if out_dense is not None:
        return out_dense
    if not sparse_rows:
        return _sparse_result([], [], [], (n, n), device)
    r, c, jac = torch.cat(sparse_rows), torch.cat(sparse_cols), torch.cat(sparse_vals)
    off = r != c  # mirror the strict upper triangle; the diagonal once
    rows_all, cols_all = torch.cat([r, c[off]]), torch.cat([c, r[off]])
    order = torch.argsort(rows_all * n + cols_all)
    return RowSparse.from_sorted_coo(
        rows_all[order], cols_all[order], torch.cat([jac, jac[off]])[order], (n, n)
    )


def _row_blocks(work: torch.Tensor, num_cols: int) -> list[tuple[int, int]]:
    """Split rows into consecutive blocks whose triples and accumulators fit the budget."""
    max_rows = max(1, _BLOCK_ELEMENTS // max(num_cols, 1))
    blocks, start, acc = [], 0, 0
    for i, w in enumerate(work.tolist()):
        if i > start and (i - start >= max_rows or acc + w > _BLOCK_ELEMENTS):
            blocks.append((start, i))
            start, acc = i, 0
        acc += w
    if start < work.numel():
        blocks.append((start, work.numel()))
    return blocks


def _shared_support(
    encoding: RowSparse, columns: RowSparse, block_rows: torch.Tensor, accumulator: torch.Tensor
) -> torch.Tensor:
    """``S[b, j] = Σ_t min(V[block_rows[b], t], V[j, t])`` as a dense float32 block."""
    # Every stored entry (i, t) of the block's rows, t ascending within each row ...
    entry, entry_row = _expand_segments(
        encoding.indptr[block_rows], encoding.row_counts()[block_rows]
    )
    t = encoding.indices[entry]
    # ... paired with every row j that also holds column t.
    source, pair = _expand_segments(columns.indptr[t], columns.row_counts()[t])
    return _accumulate(
        encoding, columns, entry, entry_row, source, pair, accumulator, block_rows.numel()
    )


def _accumulate(
    encoding: RowSparse,
    columns: RowSparse,
    entry: torch.Tensor,
    entry_row: torch.Tensor,
    source: torch.Tensor,
    pair: torch.Tensor,
    accumulator: torch.Tensor,
    rows: int,
) -> torch.Tensor:
    """``S[b, j] += min(V[i, t], V[j, t])`` for every visited triple, as a dense float32 block.

    ``entry``/``entry_row``: the block's stored entries ``(i, t)`` of ``V`` and their row in the
    block; ``source``/``pair``: for each triple, the position of ``(j, t)`` in ``columns`` and
    which entry it pairs with; ``rows``: the block's number of rows. Triples are added in entry
    order (``t`` ascending per row).
    """
    n = encoding.num_rows
    mins = torch.minimum(encoding.values[entry][pair], columns.values[source])
    target = entry_row[pair] * n + columns.indices[source]
    shared = accumulator[: rows * n].zero_()  # reused: no page faults per block
    shared.index_add_(0, target, mins)
    return shared.view(rows, n)


def _expand_segments(
    starts: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate the index ranges ``[starts[s], starts[s] + lengths[s])``.

    Returns:
        ``(positions, segment)``: every index of every range, in order, and the range it came
        from (``segment[m] = s``).
    """
    segment = torch.arange(lengths.numel(), device=lengths.device).repeat_interleave(lengths)
    first = lengths.cumsum(0) - lengths  # position of each range's first element in the output
    positions = (
        starts[segment] + torch.arange(segment.numel(), device=lengths.device) - first[segment]
    )
    return positions, segment
