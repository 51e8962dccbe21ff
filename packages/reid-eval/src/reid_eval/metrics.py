"""Ranking metrics for person re-identification: CMC, mAP and mINP.

:func:`evaluate_rank` implements the standard Market-1501 style protocol used by torchreid's,
fast-reid's and PPLR's ``eval_market1501`` evaluators, fully vectorised over chunks of queries.

Read :mod:`reid_eval._reference` first: its ``plain_evaluate_rank`` is the readable definition,
the protocol step by step (ranking, same-pid same-camera removal, junk, CMC, AP, INP, with
citations) with one Python loop iteration per query. The fast code below must give the same
results (the tests compare the two); it is only another way of computing them.

How it is computed without sorting every gallery row by index
--------------------------------------------------------------
Every quantity of the protocol (CMC, AP, INP) depends only on where the gallery entries that share
the query's pid land in the query's ranked list: those entries are either true matches (other
camera) or removed (same camera), and everything else only counts as "ranked before". For each
chunk of queries the evaluator therefore

1. converts the distances to order-preserving integer keys (exact; ``-0.0`` equals ``0.0``) and
   sorts the *values* of each row (an unstable SIMD sort; stability is irrelevant for values);
2. finds, by a vectorised binary search in the sorted rows, the number of gallery entries with a
   strictly smaller distance than each same-pid entry, and the number with an equal distance;
3. resolves equal distances exactly as a stable ``argsort`` does (ties keep gallery order) by
   counting equal entries with a smaller gallery index, or, for rows with many ties, with a stable
   ``argsort`` of those rows only;
4. subtracts the removed (same pid, same camera) entries ranked before each true match to obtain
   its position in the query's valid ranked list.

The result is identical to ranking with ``np.argsort(distmat, axis=1, kind="stable")`` and
evaluating each query in a Python loop (``plain_evaluate_rank``), at a fraction of the cost.

The chunks are combined by ``RankAccumulator``, which keeps only per-query results; the same
accumulator serves :func:`reid_eval.evaluate_features`, whose chunks are computed from features.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._checks import positive_int

__all__ = ["RankResult", "evaluate_rank", "evaluate_records"]

ArrayLike = np.ndarray | torch.Tensor | Sequence[int]
"""A 1-D integer array given as a numpy array, a torch tensor or a list."""

# Rows with at most this many tied same-pid entries resolve ties by counting equal distances with
# a smaller gallery index (cost ~num_gallery per tied entry); rows with more use a stable argsort
# of the row (cost ~num_gallery * log(num_gallery) per row) so that heavily tied inputs stay
# O(num_gallery log num_gallery) per query.
_TIE_COMPARE_LIMIT = 32

_INT64_LOW_BITS = np.int64(0x7FFFFFFFFFFFFFFF)
_INT32_LOW_BITS = np.int32(0x7FFFFFFF)


@dataclass(frozen=True, eq=False)
class RankResult:
    """Result of :func:`evaluate_rank`.

    Attributes:
        cmc (np.ndarray): float64 array of length ``max_rank``; ``cmc[k - 1]`` is the Rank-k
            accuracy in [0, 1] (fraction of valid queries with a true match in the top k).
        mAP (float): mean average precision over the valid queries, in [0, 1].
        mINP (float): mean inverse negative penalty over the valid queries, in [0, 1].
        num_valid_queries (int): number of queries with at least one true match left after
            removing same-pid-same-camera gallery entries.
        num_queries (int): total number of queries (rows of ``distmat``).
        ap (np.ndarray): float64 array of shape [num_valid_queries], the average precision of each
            valid query, in query order.
        inp (np.ndarray): float64 array of shape [num_valid_queries], the INP of each valid query,
            in query order.
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid_queries: int
    num_queries: int
    ap: np.ndarray
    inp: np.ndarray

    def rank(self, k: int) -> float:
        """Return the Rank-``k`` accuracy ``cmc[k - 1]``.

        Args:
            k (int): 1-based rank, ``1 <= k <= len(cmc)``.

        Raises:
            ValueError: if ``k`` is outside ``[1, len(cmc)]``.
        """
        k = operator.index(k)
        if not 1 <= k <= len(self.cmc):
            raise ValueError(
                f"rank k={k} is out of range: the CMC curve has ranks 1..{len(self.cmc)}; "
                f"pass 1 <= k <= {len(self.cmc)} or evaluate with a larger max_rank"
            )
        return float(self.cmc[k - 1])

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable summary.

        Keys: ``mAP``, ``mINP``, ``rank1``/``rank5``/``rank10`` (those ``<= len(cmc)``), ``cmc``
        (list of floats), ``num_valid_queries`` and ``num_queries``.
        """
        out: dict[str, Any] = {"mAP": float(self.mAP), "mINP": float(self.mINP)}
        for k in (1, 5, 10):
            if k <= len(self.cmc):
                out[f"rank{k}"] = float(self.cmc[k - 1])
        out["cmc"] = [float(v) for v in self.cmc]
        out["num_valid_queries"] = int(self.num_valid_queries)
        out["num_queries"] = int(self.num_queries)
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RankResult):
            return NotImplemented
        return (
            self.mAP == other.mAP
            and self.mINP == other.mINP
            and self.num_valid_queries == other.num_valid_queries
            and self.num_queries == other.num_queries
            and np.array_equal(self.cmc, other.cmc)
            and np.array_equal(self.ap, other.ap)
            and np.array_equal(self.inp, other.inp)
        )

    __hash__ = None  # type: ignore[assignment]  # holds numpy arrays

    def __repr__(self) -> str:
        shown = (k for k in (1, 5, 10) if k <= len(self.cmc))
        ranks = ", ".join(f"rank{k}={self.cmc[k - 1]:.4f}" for k in shown)
        return (
            f"RankResult(mAP={self.mAP:.4f}, mINP={self.mINP:.4f}, {ranks}, "
            f"num_valid_queries={self.num_valid_queries}, num_queries={self.num_queries})"
        )


def evaluate_rank(
    distmat: np.ndarray | torch.Tensor,
    query_pids: ArrayLike,
    gallery_pids: ArrayLike,
    query_camids: ArrayLike,
    gallery_camids: ArrayLike,
    max_rank: int = 50,
    *,
    chunk_size: int = 1024,
) -> RankResult:
    """Evaluate a query-gallery distance matrix with the Market-1501 protocol.

    Key: for each query identity, its gallery images from the same camera view are discarded.

    For each query the gallery is ranked by ascending distance with a stable sort (tied distances
    keep gallery order, as ``np.argsort(kind="stable")``). Gallery entries with the same pid *and*
    the same camid as the query are removed; what remains is the query's valid ranked list, in
    which the entries with the query's pid are the true matches. Distractors (pid 0), junk (pid -1)
    and any other pid are ordinary non-matching entries. A query with no true match left is
    skipped (counted as invalid). Over the valid queries:

    - CMC (``first_match_break``): ``cmc[k - 1]`` is the fraction of queries whose first true match
      is within the top ``k`` of the valid ranked list, for ``k = 1 .. max_rank``.
    - AP: mean over the true matches of the precision at each true match's position in the valid
      ranked list; mAP is the mean over queries. Without tied distances a query's AP equals
      ``sklearn.metrics.average_precision_score(matches, -distances)`` on its valid gallery.
    - INP (Ye et al., TPAMI 2021): number of true matches divided by the 1-based position of the
      last true match; mINP is the mean over queries.

    This agrees with torchreid's / fast-reid's / PPLR's ``eval_market1501`` (whose ``argsort``
    resolves tied distances arbitrarily, so they agree whenever there are no ties). Last-bit
    notes: torchreid averages the CMC in float32 (``cmc.astype(np.float32)`` equals it exactly)
    and sums each AP's terms in another order (the APs agree to about 1e-16).

    Args:
        distmat (numpy.ndarray or torch.Tensor): distance matrix of shape
            [num_query, num_gallery]; smaller means more similar. Any real dtype; a torch tensor
            may live on any device and is moved to CPU one chunk at a time. Must be finite.
        query_pids (numpy.ndarray, torch.Tensor or list): 1-D integer array of shape [num_query],
            the person id of each query.
        gallery_pids (numpy.ndarray, torch.Tensor or list): 1-D integer array of shape
            [num_gallery], the person id of each gallery entry.
        query_camids (numpy.ndarray, torch.Tensor or list): 1-D integer array of shape
            [num_query], the camera id of each query.
        gallery_camids (numpy.ndarray, torch.Tensor or list): 1-D integer array of shape
            [num_gallery], the camera id of each gallery entry.
        max_rank (int, optional): length of the CMC curve. Default is 50. If ``num_gallery`` is
            smaller, ``num_gallery`` is used instead and a warning is emitted.
        chunk_size (int, optional): number of queries processed at once; working memory is
            O(chunk_size * num_gallery) besides the inputs. Default is 1024. Does not change the
            result.

    Returns:
        RankResult: CMC curve (float64, length ``max_rank``), mAP, mINP, per-query AP and INP of
        the valid queries, and the numbers of valid and all queries.

    Raises:
        ValueError: if ``distmat`` is not 2-D, is empty or contains NaN/inf; if a pid/camid
            array is not 1-D integer or its length does not match ``distmat``; if ``max_rank`` or
            ``chunk_size`` is smaller than 1; or if no query has a true match in its valid gallery.
    """
    dist = distmat if isinstance(distmat, torch.Tensor) else np.asarray(distmat)
    if dist.ndim != 2:
        raise ValueError(
            f"distmat must be 2-D with shape [num_query, num_gallery], got shape "
            f"{tuple(dist.shape)}; reshape it or compute a query-by-gallery distance matrix"
        )
    num_q, num_g = (int(s) for s in dist.shape)
    if num_q == 0 or num_g == 0:
        raise ValueError(
            f"distmat is empty (shape {(num_q, num_g)}): the query and the gallery set must each "
            "contain at least one sample"
        )
    _check_real_dtype(dist)
    chunk_size = positive_int(chunk_size, "chunk_size")
    accumulator = RankAccumulator(
        query_pids, gallery_pids, query_camids, gallery_camids, num_q, num_g, max_rank
    )
    for start in range(0, num_q, chunk_size):
        accumulator.add(start, _chunk_to_numpy(dist, start, min(start + chunk_size, num_q)))
    return accumulator.result()


def evaluate_records(
    distmat: np.ndarray | torch.Tensor,
    query: Sequence[Any],
    gallery: Sequence[Any],
    max_rank: int = 50,
) -> RankResult:
    """:func:`evaluate_rank` with the pids and camids read from ``query`` / ``gallery`` records.

    Args:
        distmat: ``[len(query), len(gallery)]`` distances.
        query, gallery: records with ``.pid`` and ``.camid`` (e.g. ``ReIDDataset.query``).
        max_rank: length of the CMC curve.
    """
    return evaluate_rank(
        distmat,
        [r.pid for r in query],
        [r.pid for r in gallery],
        [r.camid for r in query],
        [r.camid for r in gallery],
        max_rank=max_rank,
    )


# --------------------------------------------------------------------------------------------
# Per-chunk computation
# --------------------------------------------------------------------------------------------


class RankAccumulator:
    """Evaluates a distance matrix given chunk by chunk of query rows, then combines the chunks.

    The shared core of :func:`evaluate_rank` (chunks of a distance matrix) and
    :func:`reid_eval.evaluate_features` (chunks computed from features). It validates the ids
    once, keeps per-query partial results (first-match position, AP, INP: O(num_query) memory)
    and turns them into a :class:`RankResult` when every row was added. Internal to reid-eval
    (not in ``__all__``, no compatibility promise).

    Args:
        query_pids, gallery_pids, query_camids, gallery_camids: 1-D integer ids, as in
            :func:`evaluate_rank`.
        num_query, num_gallery (int): shape of the (virtual) distance matrix.
        max_rank (int): length of the CMC curve; shrunk to ``num_gallery`` with a warning.
        source (str): what the rows are called in errors (``"distmat"``, ``"query_feats"``).
        gallery_source (str): what the columns are called in errors.
        stacklevel (int): ``stacklevel`` of the max_rank warning (3 = the caller's caller).
    """

    def __init__(
        self,
        query_pids: ArrayLike,
        gallery_pids: ArrayLike,
        query_camids: ArrayLike,
        gallery_camids: ArrayLike,
        num_query: int,
        num_gallery: int,
        max_rank: int,
        *,
        source: str = "distmat",
        gallery_source: str = "distmat",
        stacklevel: int = 3,
    ) -> None:
        row, col = ("row", "column") if gallery_source == source else ("row", "row")
        self.q_pids = _as_int_vector(query_pids, "query_pids", num_query, row, source)
        self.g_pids = _as_int_vector(gallery_pids, "gallery_pids", num_gallery, col, gallery_source)
        self.q_camids = _as_int_vector(query_camids, "query_camids", num_query, row, source)
        self.g_camids = _as_int_vector(
            gallery_camids, "gallery_camids", num_gallery, col, gallery_source
        )
        max_rank = positive_int(max_rank, "max_rank")
        if num_gallery < max_rank:
            warnings.warn(
                f"Number of gallery samples ({num_gallery}) is smaller than max_rank ({max_rank}); "
                f"using max_rank={num_gallery}",
                UserWarning,
                stacklevel=stacklevel,
            )
            max_rank = num_gallery
        self.max_rank = max_rank
        self.num_query, self.num_gallery = num_query, num_gallery
        self.source = source
        self.gallery_index = _GalleryIndex(self.g_pids)
        self.scratch = _Scratch()
        self.first_pos = np.empty(num_query, dtype=np.int64)  # 0-based in the valid list; -1
        self.ap = np.empty(num_query, dtype=np.float64)
        self.inp = np.empty(num_query, dtype=np.float64)
        self.filled = np.zeros(num_query, dtype=bool)

    def add(self, start: int, dist: np.ndarray, *, overwrite: bool = False) -> None:
        """Evaluate query rows ``start : start + len(dist)`` from their distances ``dist``.

        ``dist`` is a real numpy array of shape [rows, num_gallery]. It is not modified unless
        ``overwrite`` is set, which lets a float chunk be turned into sort keys in place.
        """
        stop = start + dist.shape[0]
        if dist.ndim != 2 or dist.shape[1] != self.num_gallery or not 0 <= start <= stop:
            raise ValueError(
                f"chunk of shape {dist.shape} at row {start} does not fit a "
                f"[{self.num_query}, {self.num_gallery}] distance matrix"
            )
        if stop > self.num_query or self.filled[start:stop].any():
            raise ValueError(f"query rows {start}:{stop} are out of range or were already added")
        (
            self.first_pos[start:stop],
            self.ap[start:stop],
            self.inp[start:stop],
        ) = _evaluate_chunk(
            dist,
            start,
            self.q_pids[start:stop],
            self.gallery_index,
            self.q_camids[start:stop],
            self.g_camids,
            self.scratch,
            self.source,
            overwrite,
        )
        self.filled[start:stop] = True

    def result(self) -> RankResult:
        """Combine the chunks into a :class:`RankResult`.

        Raises:
            ValueError: if a query row was never added, or no query is valid.
        """
        if not self.filled.all():
            missing = int(np.flatnonzero(~self.filled)[0])
            raise ValueError(f"query row {missing} was never evaluated; add every row once")
        valid = self.first_pos >= 0
        num_valid = int(valid.sum())
        num_q = self.num_query
        if num_valid == 0:
            raise ValueError(
                f"No valid query: none of the {num_q} queries has a true match (same pid, "
                "different camera) in the gallery. Probably every query shares its camera "
                "with all of its matches, or the query and gallery pids do not overlap; check "
                "query_pids, gallery_pids, query_camids, gallery_camids and the query/gallery "
                "split"
            )
        max_rank = self.max_rank
        first_pos = self.first_pos[valid]
        hits = np.bincount(first_pos[first_pos < max_rank], minlength=max_rank)
        cmc = np.cumsum(hits, dtype=np.int64).astype(np.float64) / num_valid
        ap = self.ap[valid]
        inp = self.inp[valid]
        for arr in (cmc, ap, inp):
            arr.setflags(write=False)
        return RankResult(
            cmc=cmc,
            mAP=float(np.mean(ap)),
            mINP=float(np.mean(inp)),
            num_valid_queries=num_valid,
            num_queries=num_q,
            ap=ap,
            inp=inp,
        )


class _GalleryIndex:
    """Gallery indices grouped by pid, to list each query's same-pid entries without a
    ``[queries, gallery]`` comparison."""

    def __init__(self, g_pids: np.ndarray) -> None:
        self.order = np.argsort(g_pids, kind="stable")  # ascending index within each pid
        self.sorted_pids = g_pids[self.order]

    def same_pid_pairs(self, q_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``np.nonzero(q_pids[:, None] == g_pids[None, :])``: rows, then columns ascending."""
        left = np.searchsorted(self.sorted_pids, q_pids, side="left")
        counts = np.searchsorted(self.sorted_pids, q_pids, side="right") - left
        rows = np.repeat(np.arange(q_pids.size), counts)
        within = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, self.order[left[rows] + within]


class _Scratch:
    """Work arrays reused from chunk to chunk.

    Chunk-sized temporaries (hundreds of MB) would otherwise be mapped fresh, and page-faulted in
    again, for every chunk.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        buf = self._buffers.get(name)
        if buf is None or buf.nbytes < nbytes:
            buf = self._buffers[name] = np.empty(nbytes, dtype=np.uint8)
        return buf[:nbytes].view(dtype).reshape(shape)


def _evaluate_chunk(
    dist: np.ndarray,
    row_offset: int,
    q_pids: np.ndarray,
    gallery_index: _GalleryIndex,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    scratch: _Scratch,
    source: str = "distmat",
    overwrite: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate one chunk of queries (``dist`` may be overwritten if ``overwrite``).

    Returns per-query arrays of shape [num_chunk_queries]: the 0-based position of the first true
    match in the valid ranked list (-1 if the query is invalid), the AP and the INP (NaN if the
    query is invalid).
    """
    num_c, num_g = dist.shape
    keys = _order_keys(dist, row_offset, source, overwrite, scratch)

    # Entries of the gallery with the query's pid: true matches and same-camera entries to remove.
    rows, cols = gallery_index.same_pid_pairs(q_pids)
    first_pos = np.full(num_c, -1, dtype=np.int64)
    ap = np.full(num_c, np.nan)
    inp = np.full(num_c, np.nan)
    if rows.size == 0:
        return first_pos, ap, inp

    # Position of each same-pid entry in the stable ranking of its row over the whole gallery.
    needle = keys[rows, cols]
    sorted_keys = scratch.get("sorted", keys.shape, keys.dtype)
    np.copyto(sorted_keys, keys)
    sorted_keys.sort(axis=1)
    num_less = _rowwise_searchsorted(sorted_keys, rows, needle, side="left")
    num_tied = _rowwise_searchsorted(sorted_keys, rows, needle, side="right") - num_less
    pos = num_less
    tied = np.flatnonzero(num_tied > 1)
    if tied.size:
        pos[tied] = _tied_positions(keys, rows[tied], cols[tied], num_less[tied])

    # Order the same-pid entries of each row by rank; remove those from the query's camera.
    order = np.argsort(rows.astype(np.int64) * num_g + pos)
    rows, cols, pos = rows[order], cols[order], pos[order]
    removed = g_camids[cols] == q_camids[rows]
    removed_before = _exclusive_group_cumsum(removed.astype(np.int64), rows)
    keep = ~removed
    rows = rows[keep]
    valid_pos = pos[keep] - removed_before[keep]  # 0-based position in the valid ranked list
    if rows.size == 0:
        return first_pos, ap, inp

    # rows is sorted; for each true match its 1-based index among its query's true matches.
    num_rel = np.bincount(rows, minlength=num_c)
    match_index = _exclusive_group_cumsum(np.ones_like(rows, dtype=np.int64), rows) + 1
    precision = match_index / (valid_pos + 1.0)
    ap_sum = np.bincount(rows, weights=precision, minlength=num_c)

    is_valid = num_rel > 0
    group_start = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    group_end = np.r_[group_start[1:], rows.size] - 1
    first_pos[is_valid] = valid_pos[group_start]
    ap[is_valid] = ap_sum[is_valid] / num_rel[is_valid]
    inp[is_valid] = num_rel[is_valid] / (valid_pos[group_end] + 1.0)
    return first_pos, ap, inp


def _order_keys(
    dist: np.ndarray,
    row_offset: int,
    source: str = "distmat",
    overwrite: bool = False,
    scratch: _Scratch | None = None,
) -> np.ndarray:
    """Map distances to integers with the same order and the same ties (exact, no rounding).

    Floats are mapped through their IEEE-754 bit patterns (after turning ``-0.0`` into ``0.0``),
    which sorts several times faster than sorting the floats themselves; with ``overwrite``, a
    writable float32/float64 ``dist`` becomes the keys in place (else a scratch array does).
    Raises ValueError naming the first query row with a NaN or inf.
    """
    scratch = scratch or _Scratch()
    kind = dist.dtype.kind
    if kind == "f":
        # NaN and inf propagate to the row maximum or minimum: no chunk-sized temporary.
        finite = np.isfinite(dist.max(axis=1)) & np.isfinite(dist.min(axis=1))
        if not finite.all():
            bad_row = int(np.flatnonzero(~finite)[0]) + row_offset
            if source == "distmat":
                raise ValueError(
                    f"distmat contains NaN or inf (first in query row {bad_row}); distances must "
                    "be finite: check the features for NaN/inf or replace them, e.g. with "
                    "torch.nan_to_num / np.nan_to_num"
                )
            raise ValueError(
                f"the distances computed from the features overflow (NaN or inf, first in query "
                f"row {bad_row}): the features are too large for float32 arithmetic; scale them "
                "down or pass normalize=True"
            )
        wide = dist.dtype.itemsize > 4
        float_type, int_type = (np.float64, np.int64) if wide else (np.float32, np.int32)
        if overwrite and dist.dtype == float_type and dist.flags.writeable:
            floats = dist
        else:
            floats = scratch.get("keys", dist.shape, float_type)
        np.add(dist, 0.0, out=floats, casting="same_kind")  # -0.0 + 0.0 == +0.0
        bits = floats.view(int_type)
        # Negative floats sort in reverse: flip their magnitude bits. A few rows at a time, so
        # that the temporary stays small.
        low_bits, sign_shift = (_INT64_LOW_BITS, 63) if wide else (_INT32_LOW_BITS, 31)
        step = max(1, (1 << 20) // max(1, dist.shape[1]))
        for start in range(0, dist.shape[0], step):
            block = bits[start : start + step]
            flip = scratch.get("flip", block.shape, int_type)
            np.right_shift(block, sign_shift, out=flip)
            flip &= low_bits
            block ^= flip
        return bits
    keys = scratch.get("keys", dist.shape, np.int64)
    if kind == "u" and dist.dtype.itemsize == 8:
        np.bitwise_xor(dist, np.uint64(1 << 63), out=keys.view(np.uint64))
        return keys
    np.copyto(keys, dist, casting="unsafe")  # bool, signed and smaller unsigned integers
    return keys


def _rowwise_searchsorted(
    sorted_rows: np.ndarray, rows: np.ndarray, values: np.ndarray, side: str
) -> np.ndarray:
    """``np.searchsorted(sorted_rows[r], v, side)`` for every pair ``(r, v)``, vectorised."""
    num_cols = sorted_rows.shape[1]
    flat = sorted_rows.ravel()
    base = rows.astype(np.int64) * num_cols
    lo = np.zeros(values.shape, dtype=np.int64)
    hi = np.full(values.shape, num_cols, dtype=np.int64)
    for _ in range(num_cols.bit_length()):
        active = lo < hi
        mid = (lo + hi) >> 1
        probe = flat[base + np.minimum(mid, num_cols - 1)]
        go_right = (probe < values) if side == "left" else (probe <= values)
        go_right &= active
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(active & ~go_right, mid, hi)
    return lo


def _tied_positions(
    keys: np.ndarray, rows: np.ndarray, cols: np.ndarray, num_less: np.ndarray
) -> np.ndarray:
    """Stable-sort positions of the entries ``(rows, cols)``, which all have tied distances.

    The stable position is the number of strictly smaller keys in the row (``num_less``) plus the
    number of equal keys at a smaller gallery index.
    """
    num_c, num_g = keys.shape
    positions = np.empty(rows.size, dtype=np.int64)
    per_row = np.bincount(rows, minlength=num_c)
    by_compare = per_row[rows] <= _TIE_COMPARE_LIMIT
    gallery_index = np.arange(num_g)

    # Few ties in the row: compare against the row prefix, in batches of at most num_c entries
    # so that the temporary stays O(chunk_size * num_gallery).
    idx = np.flatnonzero(by_compare)
    for b in range(0, idx.size, num_c):
        sel = idx[b : b + num_c]
        row_keys = keys[rows[sel]]
        equal = row_keys == keys[rows[sel], cols[sel]][:, None]
        equal &= gallery_index[None, :] < cols[sel][:, None]
        positions[sel] = num_less[sel] + equal.sum(axis=1)

    # Many ties in the row: a stable argsort of those rows gives the positions directly.
    idx = np.flatnonzero(~by_compare)
    if idx.size:
        heavy_rows = np.unique(rows[idx])
        slot = np.empty(num_c, dtype=np.int64)
        slot[heavy_rows] = np.arange(heavy_rows.size)
        order = np.argsort(keys[heavy_rows], axis=1, kind="stable")
        rank_of = np.empty_like(order)
        np.put_along_axis(rank_of, order, np.broadcast_to(gallery_index, order.shape), axis=1)
        positions[idx] = rank_of[slot[rows[idx]], cols[idx]]
    return positions


def _exclusive_group_cumsum(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``values`` before each element within runs of equal sorted ``groups``."""
    if values.size == 0:
        return values.copy()
    inclusive = np.cumsum(values)
    exclusive = inclusive - values
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    run_lengths = np.diff(np.r_[starts, values.size])
    return exclusive - np.repeat(exclusive[starts], run_lengths)


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _check_real_dtype(dist: np.ndarray | torch.Tensor) -> None:
    if isinstance(dist, torch.Tensor):
        ok = not dist.is_complex()
    else:
        ok = dist.dtype.kind in "biuf"
    if not ok:
        raise ValueError(
            f"distmat must hold real numbers (float or integer dtype), got dtype {dist.dtype}; "
            "pass a real-valued distance matrix"
        )


def _chunk_to_numpy(dist: np.ndarray | torch.Tensor, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``dist`` as a CPU numpy array with a real dtype."""
    if isinstance(dist, torch.Tensor):
        chunk = dist[start:stop].detach()
        if chunk.dtype == torch.bfloat16:  # no numpy equivalent; float32 holds it exactly
            chunk = chunk.float()
        return chunk.cpu().numpy()
    chunk = dist[start:stop]
    if chunk.dtype.kind == "f" and chunk.dtype.itemsize > 8:
        chunk = chunk.astype(np.float64)  # long double: evaluate in float64
    return chunk


def _as_int_vector(
    values: ArrayLike, name: str, expected: int, axis: str, source: str = "distmat"
) -> np.ndarray:
    """Convert ``values`` to a 1-D int64 array with one entry per ``axis`` of ``source``."""
    if isinstance(values, torch.Tensor):
        arr = values.detach().cpu().numpy()
    else:
        arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D integer array, got shape {arr.shape}; pass one id per sample, "
            "e.g. flatten it with .reshape(-1)"
        )
    if arr.shape[0] != expected:
        raise ValueError(
            f"{name} has length {arr.shape[0]} but {source} has {expected} {axis}s; "
            f"pass exactly one id per {axis} of {source}"
        )
    if arr.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must hold integers, got dtype {arr.dtype}; convert it, e.g. with "
            ".astype(np.int64) or .long()"
        )
    return arr.astype(np.int64, copy=False)
