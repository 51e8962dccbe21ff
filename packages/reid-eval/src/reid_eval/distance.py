"""Query–gallery distance matrices, whole or one chunk of query rows at a time.

Both :func:`pairwise_distance` and :func:`iter_distance_chunks` compute the distances of query
rows in fixed blocks of :data:`ROW_BLOCK` rows aligned to multiples of :data:`ROW_BLOCK`, with the
same operations. A matrix product may round differently for a different number of rows (BLAS and
cuBLAS pick kernels by shape), so this alignment is what makes every distance a chunk holds
bit-identical to the same entry of the whole matrix, on any device and for any chunk size.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ._checks import (
    METRICS,
    as_feature_tensor,
    check_finite_rows,
    check_metric,
    check_pair,
    normalize_rows,
)

__all__ = ["METRICS", "ROW_BLOCK", "distance_rows", "iter_distance_chunks", "pairwise_distance"]

ROW_BLOCK = 256
"""Query rows computed by one matrix product; chunk sizes are rounded up to a multiple of it."""


def pairwise_distance(
    query: torch.Tensor | np.ndarray,
    gallery: torch.Tensor | np.ndarray,
    metric: str = "euclidean",
) -> torch.Tensor:
    """Distances between the rows of ``query`` ``[Q, D]`` and ``gallery`` ``[G, D]``: ``[Q, G]``.

    ``"euclidean"``: squared Euclidean distance ``‖q‖² + ‖g‖² − 2⟨q, g⟩`` (clamped at 0), the
    matrix torchreid/fast-reid/PPLR rank with. ``"cosine"``: ``1 − cos(q, g)``. Computed in
    float32 on the tensors' device (numpy arrays: on CPU), :data:`ROW_BLOCK` query rows at a
    time, so that besides the result only two ``[ROW_BLOCK, G]`` temporaries are held.

    Args:
        query (torch.Tensor or numpy.ndarray): real features of shape [Q, D].
        gallery (torch.Tensor or numpy.ndarray): real features of shape [G, D], on the same
            device as ``query``.
        metric (str, optional): ``"euclidean"`` (default) or ``"cosine"``.

    Returns:
        torch.Tensor: float32 distances of shape [Q, G] on the features' device.

    Raises:
        ValueError: on shapes other than [Q, D] and [G, D], different devices, an unknown
            metric, NaN/inf features, or (``"euclidean"``) squared norms that overflow float32
            (the features are too large for float32 distances: scale or L2-normalise them).
            ``"cosine"`` takes features of any finite magnitude.
    """
    q, g = as_feature_tensor(query, "query"), as_feature_tensor(gallery, "gallery")
    check_pair(q, g, "query", "gallery")
    check_metric(metric)
    prepared = _Prepared(q, g, metric)
    out = torch.empty(q.shape[0], g.shape[0], dtype=torch.float32, device=q.device)
    for start in range(0, q.shape[0], ROW_BLOCK):
        stop = min(start + ROW_BLOCK, q.shape[0])
        prepared.block_into(start, stop, out[start:stop])
    return out


def iter_distance_chunks(
    query: torch.Tensor | np.ndarray,
    gallery: torch.Tensor | np.ndarray,
    metric: str = "euclidean",
    chunk_size: int = 1024,
    *,
    reuse_buffer: bool = False,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, distances)`` for consecutive chunks of query rows.

    ``distances`` is ``pairwise_distance(query, gallery, metric)[start:start + len(distances)]``,
    bit for bit, computed without ever holding more than one chunk: a float32 tensor of shape
    [rows, G] on the features' device. A new tensor is yielded each time (the consumer may keep
    or modify it) unless ``reuse_buffer`` is set.

    Args:
        query (torch.Tensor or numpy.ndarray): real features of shape [Q, D].
        gallery (torch.Tensor or numpy.ndarray): real features of shape [G, D], same device.
        metric (str, optional): ``"euclidean"`` (squared) or ``"cosine"``, as
            :func:`pairwise_distance`.
        chunk_size (int, optional): query rows per chunk, rounded up to a multiple of
            :data:`ROW_BLOCK` (the last chunk may be shorter). Default is 1024.
        reuse_buffer (bool, optional): yield views of one buffer that the next chunk
            overwrites (fewer large allocations; use each chunk before asking for the next).
            Default is False.

    Raises:
        ValueError: as :func:`pairwise_distance`, or if ``chunk_size < 1``.
    """
    q, g = as_feature_tensor(query, "query"), as_feature_tensor(gallery, "gallery")
    check_pair(q, g, "query", "gallery")
    check_metric(metric)
    rows = _round_chunk_size(chunk_size)  # validated here, not at the first next()
    return _generate_chunks(_Prepared(q, g, metric), rows, reuse_buffer)


def distance_rows(
    query: torch.Tensor | np.ndarray,
    gallery: torch.Tensor | np.ndarray,
    rows: Sequence[int] | np.ndarray | torch.Tensor,
    metric: str = "euclidean",
) -> torch.Tensor:
    """``pairwise_distance(query, gallery, metric)[rows]``, bit for bit, without the whole matrix.

    Only the :data:`ROW_BLOCK`-row blocks that hold the asked rows are computed (each once), so
    memory is ``len(rows) × G`` plus one block: e.g. the ranked lists of a few queries drawn
    from an MSMT17-size evaluation.

    Args:
        query, gallery: as :func:`pairwise_distance`.
        rows: query row indices (any order, repeats allowed; negative ones count from the end).
        metric: ``"euclidean"`` (squared) or ``"cosine"``.

    Returns:
        torch.Tensor: float32 distances of shape [len(rows), G] on the features' device.

    Raises:
        ValueError: as :func:`pairwise_distance`, or a row index out of range.
    """
    q, g = as_feature_tensor(query, "query"), as_feature_tensor(gallery, "gallery")
    check_pair(q, g, "query", "gallery")
    check_metric(metric)
    index = _row_index(rows)
    num_q = q.shape[0]
    if index.numel() and (int(index.min()) < -num_q or int(index.max()) >= num_q):
        raise ValueError(f"rows must be query indices in [0, {num_q}), got {rows!r}")
    index = index % max(num_q, 1)
    prepared = _Prepared(q, g, metric)
    out = q.new_empty(index.numel(), g.shape[0], dtype=torch.float32)
    scratch = None
    for block in torch.unique(index // ROW_BLOCK).tolist():
        start = block * ROW_BLOCK
        stop = min(start + ROW_BLOCK, num_q)
        if scratch is None:
            scratch = q.new_empty(min(ROW_BLOCK, num_q), g.shape[0], dtype=torch.float32)
        prepared.block_into(start, stop, scratch[: stop - start])
        where = torch.nonzero(index // ROW_BLOCK == block).flatten()
        out[where.to(out.device)] = scratch[(index[where] - start).to(out.device)]
    return out


def _row_index(rows: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """``rows`` as a flat int64 tensor; floats and bools are refused (they are not indices)."""
    if isinstance(rows, torch.Tensor):
        index = rows.detach().cpu()
        kind_ok = not (index.is_floating_point() or index.is_complex() or index.dtype == torch.bool)
    else:
        array = np.asarray(rows)
        kind_ok = array.dtype.kind in "iu" or array.size == 0
        index = torch.from_numpy(array.astype(np.int64)) if kind_ok else None
    if not kind_ok:
        raise ValueError(
            f"rows must be integer query indices, got dtype {getattr(rows, 'dtype', None)} "
            f"({rows!r:.60}); pass row numbers, e.g. np.flatnonzero(mask) for a boolean mask"
        )
    return index.to(torch.long).flatten()


def _generate_chunks(
    prepared: _Prepared, rows: int, reuse_buffer: bool
) -> Iterator[tuple[int, torch.Tensor]]:
    num_q, num_g = prepared.q.shape[0], prepared.g_t.shape[1]
    buffer = None
    for start in range(0, num_q, rows):
        stop = min(start + rows, num_q)
        if reuse_buffer:
            if buffer is None:
                buffer = prepared.q.new_empty(min(rows, num_q), num_g)
            out = buffer[: stop - start]
        else:
            out = prepared.q.new_empty(stop - start, num_g)
        for block in range(start, stop, ROW_BLOCK):
            end = min(block + ROW_BLOCK, stop)
            prepared.block_into(block, end, out[block - start : end - start])
        yield start, out
        del out  # the next chunk is allocated only once this one can be freed


def _round_chunk_size(chunk_size: int) -> int:
    """``chunk_size`` rounded up to a multiple of :data:`ROW_BLOCK`; ValueError if < 1."""
    try:
        chunk_size = operator.index(chunk_size)
    except TypeError:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}") from None
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size}")
    return math.ceil(chunk_size / ROW_BLOCK) * ROW_BLOCK


class _Prepared:
    """Float32 features and their per-row terms, computed once for all query blocks."""

    def __init__(self, query: torch.Tensor, gallery: torch.Tensor, metric: str) -> None:
        q, g = query.detach().float(), gallery.detach().float()
        check_finite_rows(q, "query")
        check_finite_rows(g, "gallery")
        self.metric = metric
        if metric == "cosine":
            q, g = normalize_rows(q), normalize_rows(g)
        else:
            self.q_sq = q.pow(2).sum(1)
            self.g_sq = g.pow(2).sum(1)
            _check_no_overflow(self.q_sq, self.g_sq, q, g)
        self.q, self.g_t = q, g.T
        self._product: torch.Tensor | None = None  # [ROW_BLOCK, G] scratch, allocated once

    def block_into(self, start: int, stop: int, out: torch.Tensor) -> None:
        """Write the distances of query rows ``start:stop`` into ``out`` ``[stop - start, G]``.

        ``start`` must be a multiple of :data:`ROW_BLOCK` and ``stop - start <= ROW_BLOCK``.
        """
        q = self.q[start:stop]
        if self.metric == "euclidean":
            # (‖q‖² + ‖g‖²) − (2q)·gᵀ, then clamped: the operations of the classic one-liner
            # ``q.pow(2).sum(1, keepdim=True) + g.pow(2).sum(1) - 2 * q @ g.T`` in its order.
            if self._product is None:
                self._product = self.q.new_empty(min(ROW_BLOCK, self.q.shape[0]), out.shape[1])
            product = self._product[: stop - start]
            torch.mm(2 * q, self.g_t, out=product)
            torch.add(self.q_sq[start:stop, None], self.g_sq[None], out=out)
            out.sub_(product)
            out.clamp_min_(0)
        else:
            torch.mm(q, self.g_t, out=out)
            out.neg_().add_(1)  # -x + 1 is 1 - x exactly


def _check_no_overflow(q_sq: torch.Tensor, g_sq: torch.Tensor, q: torch.Tensor, g: torch.Tensor):
    """Refuse features whose squared Euclidean distances ``‖q‖² + ‖g‖² − 2⟨q, g⟩`` overflow.

    ``|2⟨q, g⟩| <= ‖q‖² + ‖g‖²``, so a query row is safe exactly when ``‖q‖² + max ‖g‖²`` is
    finite; otherwise the formula gives inf or NaN for that row.
    """
    if q_sq.numel() == 0 or g_sq.numel() == 0:
        return
    bad = ~torch.isfinite(q_sq + g_sq.max())
    if bool(bad.any()):
        where = "query row " + str(int(bad.nonzero()[0]))
        if bool(torch.isfinite(q_sq).all()) and not bool(torch.isfinite(g_sq).all()):
            where = "gallery row " + str(int((~torch.isfinite(g_sq)).nonzero()[0]))
        peak = max(float(q.abs().max()), float(g.abs().max()))
        raise ValueError(
            f"the distances computed from the features overflow float32 (first in {where}; "
            f"query and gallery values up to {peak:.3g}): the features are too large for float32 "
            "squared distances; scale them down or L2-normalise them first (normalize=True in "
            "evaluate_features and ReIDEvaluator)"
        )
