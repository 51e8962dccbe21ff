"""Exact k-nearest-neighbour search by inner product, with three interchangeable backends.

* ``"torch"`` (default): chunked ``query @ database.T`` on the tensors' device (CPU or GPU);
  memory is bounded by one block of similarities. A self-search (``database=None``) of
  features of 1024 dimensions or more computes each block of the symmetric ``x @ x.T`` once,
  for both sides: half the FLOPs (below that the matmul is cheap next to the top-k selection).
* ``"faiss-cpu"``: ``faiss.IndexFlatIP`` (exact, multi-threaded BLAS).
* ``"faiss-gpu"``: ``faiss.GpuIndexFlatIP`` on the current CUDA device.
* ``"auto"``: faiss-gpu when the features are on CUDA and a GPU build of faiss is importable,
  otherwise torch.

faiss is imported lazily, only when a faiss backend is asked for, so the package works without it.
For L2-normalised features the inner-product ranking is the Euclidean ranking used by the
reference code (``2 - 2⟨x, y⟩ = ‖x − y‖²``).

What the torch backend returns, and why it does not depend on the BLAS
-----------------------------------------------------------------------
A matmul's rounding depends on the kernel the BLAS picks (CPU model, AVX2/AVX-512/AMX, matrix
shape, GPU), so two machines can order two nearly equal neighbours differently. The torch backend
therefore defines the answer by one fixed computation: for each row, the k database rows with the
largest ``pair_dot`` value (:mod:`reid_clustering._pairwise`: float32 products summed in a fixed
pairwise tree of IEEE additions; the same bits on every CPU and GPU), ties to the lower index;
the similarities returned are those ``pair_dot`` values. A matmul is only used to *find* them:

1. The matmul blocks give every pair a value ``s`` with a proven error bound
   ``|s − ⟨x, y⟩| <= e_g`` (Higham eq. 3.5, any summation order), and ``pair_dot`` has
   ``|c − ⟨x, y⟩| <= e_c`` (:func:`~reid_clustering._pairwise.dot_error_bound`).
2. With τ the k-th largest ``s`` of a row, k columns have ``c >= τ − e_g − e_c``, so the row's
   k-th largest ``c`` is at least that, and any column among the top k by ``c`` has
   ``s >= τ − 2(e_g + e_c)``. Every pair above that threshold is a *candidate*; the search keeps
   the best ``k + 8`` of each row from the blocks, and recomputes a whole row in the rare case
   that its ``(k + 8)``-th value is still above the threshold.
3. The candidates are re-scored with ``pair_dot`` and the top k taken in (value descending,
   index ascending) order. A search that asks only for the indices (``similarities=False``)
   re-scores only what the matmul cannot order: within a row, sorted by ``s``, two candidates
   whose ``s`` differ by more than ``2(e_g + e_c)`` are in the same order by ``pair_dot``, so
   only runs of candidates closer than that (near-ties) are re-scored and ordered by
   ``pair_dot``, ties to the lower index. The indices are the same as with similarities.

So the result depends only on the features: bit-identical across CPU models, between CPU and
GPU, and for any ``chunk_size``; ``precision`` changes only how fast it is found.

``precision="bf16-candidates"`` (CPU self-search) finds the candidates with a bfloat16 GEMM
instead, certified by its own error bound (:mod:`reid_clustering._knn_bf16`), about 3× faster on
CPUs with native bf16 dot products (AVX512-BF16, AMX). Its candidate set differs from the float32
one, but it contains the same top k, and step 3 is the same function: the result is the same by
construction. ``"auto"`` (the default) takes it for CPU self-searches of >= 1536 rows, D >= 64
and k <= 256 on such CPUs; the environment variable ``REID_KNN_PRECISION`` (``exact`` or
``bf16-candidates``) overrides ``"auto"``, for example to run a test suite on both paths.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Literal, NamedTuple

import numpy as np
import torch

from . import _knn_bf16
from ._pairwise import dot_error_bound, gemm_error_bound, pair_dot, row_norms_upper
from ._validation import as_feature_tensor, check_int

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "PRECISION_ENV",
    "KNNResult",
    "faiss_available",
    "knn_search",
    "rank_by_distance",
]

Backend = Literal["auto", "torch", "faiss-cpu", "faiss-gpu"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "faiss-cpu", "faiss-gpu")
Precision = Literal["auto", "exact", "bf16-candidates"]
PRECISIONS: tuple[str, ...] = ("auto", "exact", "bf16-candidates")
#: Environment variable that overrides ``precision="auto"`` ("exact" or "bf16-candidates").
PRECISION_ENV = "REID_KNN_PRECISION"

# Similarities held at once by the torch backend: chunk rows × database size (16 Mi floats).
_TORCH_BLOCK_ELEMENTS = 1 << 24
# Candidates kept per row beyond k from the float32 blocks (step 2 of the module docstring).
_EXTRA_CANDIDATES = 8


class KNNResult(NamedTuple):
    """Neighbours of each query, most similar first.

    Attributes:
        similarities: float32 ``[num_query, k]`` inner products, descending along each row;
            None when the search was asked for the indices only (``similarities=False``).
        indices: int64 ``[num_query, k]`` database row of each neighbour.
    """

    similarities: torch.Tensor | None
    indices: torch.Tensor


def faiss_available(gpu: bool = False) -> bool:
    """True when faiss is importable (and, with ``gpu=True``, has GPU support and sees a GPU)."""
    try:
        faiss = _import_faiss("faiss-gpu" if gpu else "faiss-cpu")
    except ImportError:
        return False
    return not gpu or _faiss_gpu_ready(faiss)


def knn_search(
    query: np.ndarray | torch.Tensor,
    database: np.ndarray | torch.Tensor | None = None,
    k: int = 20,
    *,
    backend: Backend = "torch",
    chunk_size: int | None = None,
    precision: Precision = "auto",
    similarities: bool = True,
) -> KNNResult:
    """The ``k`` database rows with the largest inner product with each query row.

    Args:
        query: ``[num_query, D]`` float features (numpy or torch). Normalise them first if the
            ranking should be by cosine / Euclidean distance.
        database: ``[num_database, D]`` features, same device as ``query``; ``None`` searches
            ``query`` against itself (each row then finds itself first, barring duplicates).
        k: neighbours per query, ``1 <= k <= num_database``.
        backend: ``"torch"``, ``"faiss-cpu"``, ``"faiss-gpu"`` or ``"auto"`` (module docstring).
        chunk_size: query rows per block for the torch backend (default: as many as keep the
            block under 16 Mi similarities; for a self-search of features of 1024 dimensions or
            more, 4096: each 4096 × 4096 block of ``x @ x.T`` is computed once and serves both
            of its sides; a given ``chunk_size`` always takes that symmetric path). It never
            changes the result.
        precision: how the torch backend's CPU self-search finds the neighbours; the result is
            the same either way (module docstring). ``"exact"``: float32 blocks only.
            ``"bf16-candidates"``: certified bfloat16 candidates. ``"auto"`` (default):
            ``$REID_KNN_PRECISION`` when set, else bf16 candidates where they are faster.
            CUDA tensors, query-vs-database searches and the faiss backends use float32 blocks.
        similarities: False returns the indices only (``similarities`` None): the same
            indices, faster, because only near-ties are re-scored (module docstring, step 3).
            The faiss backends ignore it.

    Returns:
        :class:`KNNResult` with tensors on the query's device (CPU for numpy input).

    Raises:
        ValueError: bad shapes, ``k`` out of range, NaN/inf, norms so large that inner products
            overflow float32, mixed devices, unknown backend or precision.
        ImportError: a faiss backend was asked for and faiss (or its GPU build) is missing.
    """
    if database is not None and _device_of(query) != _device_of(database):
        raise ValueError(
            f"query is on {_device_of(query)} but database is on {_device_of(database)}; "
            "move both to one device"
        )
    q = as_feature_tensor(query, "query")
    db = q if database is None else as_feature_tensor(database, "database")
    if db.shape[1] != q.shape[1]:
        raise ValueError(
            f"query and database feature dimensions differ: {q.shape[1]} vs {db.shape[1]}"
        )
    k = check_int(k, "k", 1)
    if k > db.shape[0]:
        raise ValueError(f"k={k} exceeds the database size {db.shape[0]}")
    precision = _resolve_precision(precision)
    backend = _resolve_backend(backend, q.device)
    if backend == "torch" and chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", 1)
    q, db, scale = _rescaled(q, None if database is None else db)
    if backend != "torch":  # on the rescaled features too: faiss ranks in float32 as well
        result = _knn_faiss(q, db, k, gpu=backend == "faiss-gpu")
        similarities = True
    else:
        result = _knn_torch(q, db, k, chunk_size, precision, database is None, similarities)
    if not similarities:  # the bf16 path ranks with the similarities; the caller wants none
        return KNNResult(None, result.indices)
    if scale != 1.0:
        sims = result.similarities * scale
        if not bool(torch.isfinite(sims).all()):
            sides = "query" if database is None else "query and database"
            raise ValueError(
                f"the inner products of the {sides} features overflow float32 (feature values "
                f"up to {max(float(q.amax()), -float(q.amin())) * scale**0.5:.3g}); "
                "L2-normalise (or rescale) the features first"
            )
        result = KNNResult(sims, result.indices)
    return result


def _knn_torch(
    q: torch.Tensor,
    db: torch.Tensor,
    k: int,
    chunk_size: int | None,
    precision: str,
    self_search: bool,
    similarities: bool,
) -> KNNResult:
    """The torch backend on features already rescaled (module docstring)."""
    bounds = _Bounds.of(q, db)
    result = None
    if self_search and _bf16_wanted(precision, q, k):
        found = _knn_bf16.certified_candidates(q, k, bounds.pair_dot_error(q.shape[1]))
        result = None if found is None else _from_bf16_candidates(q, k, found, bounds)
    if result is None:
        result = _knn_exact(
            q, db, k, chunk_size, bounds, self_search=self_search, values=similarities
        )
    return result


def _rescaled(q: torch.Tensor, db: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Scale features whose norms are far from 1 by powers of two (exact), so that their inner
    products neither overflow nor underflow float32; returns the factor of the similarities.

    Scaling a matrix by 2^e multiplies every inner product by 2^e exactly: the neighbours do not
    change, and features with norms in [2⁻³², 2³²] are not touched at all.
    """
    sides = [q] if db is None else [q, db]
    exponents = []
    for x in sides:
        peak = max(float(x.amax()), -float(x.amin()))  # no |x| temporary of x's size
        e = 0 if peak == 0 else math.frexp(peak)[1]
        exponents.append(0 if -32 <= e <= 32 else e)
    if not any(exponents):
        return q, q if db is None else db, 1.0
    scaled = [x * 2.0**-e if e else x for x, e in zip(sides, exponents, strict=True)]
    factor = 2.0 ** (2 * exponents[0] if db is None else sum(exponents))
    if db is None:
        return scaled[0], scaled[0], factor
    return scaled[0], scaled[1], factor


def _device_of(x: object) -> torch.device:
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


def rank_by_distance(distances: torch.Tensor, k: int, chunk_size: int = 4096) -> torch.Tensor:
    """The ``k`` smallest entries of each row of a distance matrix, as a ranked list.

    Equivalent to ``np.argsort(distances, kind="stable")[:, :k]`` (ties keep column order), in
    blocks of rows, on the tensor's device.

    Args:
        distances: real ``[N, M]`` tensor (float or integer), without NaN (±inf rank last/first).
        k: columns to keep, ``1 <= k <= M``.
        chunk_size: rows per block, ``>= 1``.

    Returns:
        int64 ``[N, k]`` column indices, nearest first.

    Raises:
        TypeError: ``distances`` is not a real torch tensor, ``k`` or ``chunk_size`` not an integer.
        ValueError: not 2-D, NaN distances (they have no place in a ranking), ``k`` or
            ``chunk_size`` out of range.
    """
    if not isinstance(distances, torch.Tensor):
        raise TypeError(
            f"distances must be a torch.Tensor [N, M], got {type(distances).__name__}; "
            "convert it with torch.as_tensor"
        )
    if distances.dtype == torch.bool or distances.is_complex():
        raise TypeError(f"distances must hold real numbers, got dtype {distances.dtype}")
    if distances.dim() != 2:
        raise ValueError(f"distances must be 2-D, got shape {tuple(distances.shape)}")
    k = check_int(k, "k", 1)
    chunk_size = check_int(chunk_size, "chunk_size", 1)
    if k > distances.shape[1]:
        raise ValueError(f"k={k} exceeds the number of columns {distances.shape[1]}")
    blocks = []
    for start in range(0, distances.shape[0], chunk_size):
        block = distances[start : start + chunk_size]
        if not block.is_floating_point():  # -x would wrap around for unsigned integers
            blocks.append(torch.sort(block, dim=1, stable=True).indices[:, :k])
            continue
        if bool(torch.isnan(block).any()):
            row = start + int(torch.isnan(block).any(dim=1).nonzero()[0])
            raise ValueError(
                f"distances contains NaN (first in row {row}), which has no place in a ranking; "
                "check what computed the distances"
            )
        blocks.append(_topk_stable(-block, k)[1])
    if not blocks:
        return torch.empty(0, k, dtype=torch.int64, device=distances.device)
    return torch.cat(blocks)


def _topk_stable(block: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise top-k, ordered by (value descending, index ascending).

    ``topk`` alone picks an arbitrary subset of the values tied with the k-th largest; rows
    where such a tie crosses the cut are redone with a stable sort.
    """
    extra = min(k + 1, block.shape[1])  # one more: a tie crosses the cut iff it equals the k-th
    values, indices = block.topk(extra, dim=1, largest=True, sorted=True)
    crossing = (values[:, k - 1] == values[:, k]) if extra > k else None
    values, indices = values[:, :k], indices[:, :k]
    by_index = indices.argsort(dim=1)
    values, indices = values.gather(1, by_index), indices.gather(1, by_index)
    order = values.sort(dim=1, descending=True, stable=True).indices
    values, indices = values.gather(1, order), indices.gather(1, order)
    if crossing is not None and bool(crossing.any()):
        rows = crossing.nonzero().flatten()
        redo = block[rows].sort(dim=1, descending=True, stable=True)
        values[rows], indices[rows] = redo.values[:, :k], redo.indices[:, :k]
    return values, indices


def _resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown kNN backend {backend!r}; choose one of {list(BACKENDS)}")
    if backend == "auto":
        return "faiss-gpu" if device.type == "cuda" and faiss_available(gpu=True) else "torch"
    return backend


def _resolve_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown kNN precision {precision!r}; choose one of {list(PRECISIONS)}")
    if precision != "auto":
        return precision
    forced = os.environ.get(PRECISION_ENV, "").strip()
    if forced in ("", "auto"):
        return "auto"
    if forced not in PRECISIONS:
        raise ValueError(
            f"${PRECISION_ENV}={forced!r} is not a kNN precision; set it to one of "
            f"{list(PRECISIONS)} or unset it"
        )
    return forced


# --- exact search: float32 blocks find candidates, pair_dot ranks them ---------------------------


class _Bounds(NamedTuple):
    """Row-norm bounds of one search, for the candidate thresholds (module docstring)."""

    query_norms: torch.Tensor  # float64 [num_query] upper bounds of ‖q_i‖
    max_database_norm: float

    @classmethod
    def of(cls, q: torch.Tensor, db: torch.Tensor) -> _Bounds:
        nq = row_norms_upper(q)
        ndb = nq if db is q else row_norms_upper(db)
        big = float(nq.max()) * float(ndb.max())
        if big >= 2.0**120:  # near float32's largest value (2¹²⁸): products and sums overflow
            raise ValueError(
                f"feature norms up to {float(nq.max()):.3g} and {float(ndb.max()):.3g}: their "
                "inner products overflow float32; L2-normalise (or rescale) the features first"
            )
        return cls(nq, float(ndb.max()))

    def pair_dot_error(self, dim: int) -> torch.Tensor:
        """Per query row: a bound of |pair_dot − ⟨q_i, y⟩| over all database rows y."""
        rel, absolute = dot_error_bound(dim)
        return (rel * self.query_norms * self.max_database_norm + absolute) * (1 + 2.0**-20)

    def slack(self, dim: int, device: torch.device) -> torch.Tensor:
        """Per query row: 2(e_g + e_c), the candidate window below the k-th matmul value."""
        rel, absolute = gemm_error_bound(dim, reduced=not _fp32_matmul_is_ieee(device))
        gemm = (rel * self.query_norms * self.max_database_norm + absolute) * (1 + 2.0**-20)
        return 2 * (gemm + self.pair_dot_error(dim))


def _knn_exact(
    q: torch.Tensor,
    db: torch.Tensor,
    k: int,
    chunk_size: int | None,
    bounds: _Bounds,
    self_search: bool,
    values: bool = True,
) -> KNNResult:
    """Steps 1-3 of the module docstring with float32 matmul blocks (``values=False``: the
    indices only, re-scoring near-ties only)."""
    m = min(k + _EXTRA_CANDIDATES, db.shape[0])
    if self_search:
        best_v, best_i = _top_m_self(q, m, chunk_size)
    else:
        best_v, best_i = _top_m(q, db, m, chunk_size)
    slack = bounds.slack(q.shape[1], q.device)
    with _selection_threads(q.device):
        threshold = best_v[:, k - 1].double() - slack
        # A row is complete when its m-th value is below the threshold (or it kept every column).
        incomplete = best_v[:, m - 1].double() >= threshold
        if m == db.shape[0]:
            incomplete[:] = False
        keep = (best_v.double() >= threshold[:, None]) & ~incomplete[:, None]
        redo = incomplete.nonzero().flatten()
        if not values and not redo.numel():
            return _rank_by_gaps(q, db, best_v, best_i, keep, slack, k)
        rows, slot = keep.nonzero().unbind(1)
        pairs = [(rows, best_i[rows, slot])]
    if redo.numel():
        pairs.append(_full_row_candidates(q, db, redo, k, slack))
    rows, cols = (torch.cat(parts) for parts in zip(*pairs, strict=True))
    with _selection_threads(q.device):
        result = _rank_candidates(q, db, rows, cols, k)
    return result if values else KNNResult(None, result.indices)


@contextlib.contextmanager
def _selection_threads(device: torch.device) -> Iterator[None]:
    """One intra-op thread for the CPU's selection steps after the matmul blocks.

    They are dozens of small operations on the ``N × (k + 8)`` candidate tables (thresholds,
    sorts, gathers, the re-scoring of a few pairs per row). With several threads, each one ends
    in a barrier; when another process shares the cores, a thread that lost its core holds every
    barrier up for a scheduler time slice, and these steps became 2-5× slower than the matmul
    blocks before them (benchmarks/knn_speed.py, ``contended``). One thread does them at about
    the same speed on a quiet machine. The setting is restored on exit; other devices are not
    touched.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _rank_by_gaps(
    q: torch.Tensor,
    db: torch.Tensor,
    best_v: torch.Tensor,
    best_i: torch.Tensor,
    keep: torch.Tensor,
    slack: torch.Tensor,
    k: int,
) -> KNNResult:
    """Step 3 for the indices only: the order of the candidates by ``pair_dot`` from the matmul
    values ``best_v``, re-scoring only near-ties.

    ``|pair_dot − s| <= e_g + e_c`` for every pair, so where two candidates' ``s`` differ by more
    than ``slack = 2(e_g + e_c)`` their ``pair_dot`` order is the ``s`` order. In each row
    (sorted by ``s``, descending) the candidates fall into runs whose neighbours are at most
    ``slack`` apart; the runs are ordered by ``s``, and inside a run of two or more the
    candidates are re-scored with ``pair_dot`` and ordered by (value descending, index
    ascending). The candidates are those of ``keep`` (every row has at least k); the columns
    outside it are pushed after them.
    """
    n, m = best_v.shape
    s = best_v.double().masked_fill(~keep, -math.inf)
    # Sort each row by (s descending, column ascending): the candidates first.
    by_col = best_i.argsort(dim=1, stable=True)
    s, cols = s.gather(1, by_col), best_i.gather(1, by_col)
    order = s.argsort(dim=1, descending=True, stable=True)
    s, cols = s.gather(1, order), cols.gather(1, order)
    kept = torch.isfinite(s)
    gap_close = (s[:, :-1] - s[:, 1:]) <= slack[:, None]  # neighbours that may swap
    close = gap_close & kept[:, 1:]
    # A run id per slot: a new run starts where the previous gap is wide.
    starts = torch.ones(n, m, dtype=torch.int64, device=s.device)
    starts[:, 1:] = (~close).long()
    run = starts.cumsum(dim=1)
    in_tie = torch.zeros(n, m, dtype=torch.bool, device=s.device)
    in_tie[:, 1:] |= close
    in_tie[:, :-1] |= close
    key = torch.zeros(n, m, dtype=torch.float32, device=s.device)
    rows_t, slots_t = in_tie.nonzero().unbind(1)
    if rows_t.numel():
        key[rows_t, slots_t] = pair_dot(q, db, rows_t, cols[rows_t, slots_t])
    # Final order: run ascending, then pair_dot descending inside a run, then column ascending.
    idx = cols.argsort(dim=1, stable=True)
    idx = idx.gather(1, key.gather(1, idx).argsort(dim=1, descending=True, stable=True))
    idx = idx.gather(1, run.gather(1, idx).argsort(dim=1, stable=True))
    if bool((kept.sum(dim=1) < k).any()):  # the thresholds make this impossible
        raise RuntimeError("kNN: a row has fewer candidates than k (please report this bug)")
    return KNNResult(None, cols.gather(1, idx[:, :k]))


def _full_row_candidates(
    q: torch.Tensor, db: torch.Tensor, rows: torch.Tensor, k: int, slack: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair of the given query rows whose float32 matmul value is within ``slack`` of the
    row's k-th largest: whole rows of ``q[rows] @ db.T``."""
    step = max(1, _TORCH_BLOCK_ELEMENTS // db.shape[0])
    found_r, found_c = [], []
    for start in range(0, rows.numel(), step):
        part = rows[start : start + step]
        block = torch.mm(q[part], db.t())
        kth = block.topk(k, dim=1, sorted=True).values[:, k - 1].double()
        r, c = (block.double() >= (kth - slack[part])[:, None]).nonzero().unbind(1)
        found_r.append(part[r])
        found_c.append(c)
    return torch.cat(found_r), torch.cat(found_c)


def _rank_candidates(
    q: torch.Tensor, db: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, k: int
) -> KNNResult:
    """Step 3: re-score candidate pairs with ``pair_dot``; per row the top k by (value
    descending, index ascending). Every query row must have at least k candidates."""
    vals = pair_dot(q, db, rows, cols)
    order = torch.argsort(cols, stable=True)
    order = order[torch.argsort(vals[order], descending=True, stable=True)]
    order = order[torch.argsort(rows[order], stable=True)]
    counts = torch.bincount(rows, minlength=q.shape[0])
    if bool((counts < k).any()):  # the thresholds make this impossible; never return garbage
        raise RuntimeError("kNN: a row has fewer candidates than k (please report this bug)")
    first = counts.cumsum(0) - counts
    take = order[first[:, None] + torch.arange(k, device=rows.device)]
    return KNNResult(vals[take], cols[take])


def _top_m(q: torch.Tensor, db: torch.Tensor, m: int, chunk_size: int | None) -> tuple:
    """Per query row, the m largest matmul values (any order of ties) and their columns."""
    if chunk_size is None:
        chunk_size = max(1, _TORCH_BLOCK_ELEMENTS // db.shape[0])
    sims, idx = [], []
    db_t = db.t()
    # One similarity buffer for all blocks: a fresh large tensor per block costs page faults.
    buffer = q.new_empty(min(chunk_size, q.shape[0]), db.shape[0])
    for start in range(0, q.shape[0], chunk_size):
        rows = q[start : start + chunk_size]
        block = torch.mm(rows, db_t, out=buffer[: rows.shape[0]])
        values, indices = block.topk(m, dim=1, sorted=True)
        sims.append(values)
        idx.append(indices)
    return torch.cat(sims), torch.cat(idx)


# Self-search: the feature dimension from which each block of x @ x.T serves both of its sides
# (half the FLOPs). Below it the matmul is cheap next to the top-m selection, and the plain
# row-block search is as fast quietly and much faster when another process shares the cores
# (benchmarks/knn_speed.py); the result is the same either way.
_SYMMETRIC_MIN_DIM = 1024
_SELF_BLOCK = 4096
# Candidate lists a row block collects before they are reduced to its running top m.
_PENDING_LISTS = 8


def _top_m_self(x: torch.Tensor, m: int, block_size: int | None) -> tuple:
    """Self-search using each block of ``x @ x.T`` for both of its sides (half the FLOPs).

    Block ``(a, b)``, ``b >= a``, gives candidates to rows ``a`` (its rows) and to rows ``b``
    (its columns). Each row block collects its candidate lists and reduces them with one top-m
    every few lists and once at the end, when its last block is done: few, large operations,
    which keep their speed when another process shares the cores (a merge per block did not).
    Low-dimensional features use the row-block search (:data:`_SYMMETRIC_MIN_DIM`).
    """
    n, dim = x.shape
    if dim < _SYMMETRIC_MIN_DIM and block_size is None:
        return _top_m(x, x, m, None)
    block_size = block_size or _SELF_BLOCK
    starts = range(0, n, block_size)
    pending: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {a: [] for a in starts}
    best_v, best_i = [], []
    buffer = x.new_empty(min(block_size, n) ** 2)
    for a in starts:
        xa = x[a : a + block_size]
        for b in starts:
            if b < a:
                continue
            xb = x[b : b + block_size]
            sims = buffer[: xa.shape[0] * xb.shape[0]].view(xa.shape[0], xb.shape[0])
            torch.mm(xa, xb.t(), out=sims)
            v, i = sims.topk(min(m, xb.shape[0]), dim=1, sorted=False)
            pending[a].append((v, i + b))
            if b != a:
                v, i = sims.t().topk(min(m, xa.shape[0]), dim=1, sorted=False)
                pending[b].append((v, i + a))
                if len(pending[b]) >= _PENDING_LISTS:
                    pending[b] = [_reduce(pending[b], m, sorted_=False)]
        v, i = _reduce(pending.pop(a), m, sorted_=True)  # rows a have seen every column
        best_v.append(v)
        best_i.append(i)
    return torch.cat(best_v), torch.cat(best_i)


def _reduce(
    lists: list[tuple[torch.Tensor, torch.Tensor]], m: int, sorted_: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The m largest of candidate lists ``(values, columns)`` of the same rows (any order of
    ties; descending when ``sorted_``)."""
    values = torch.cat([v for v, _ in lists], dim=1)
    columns = torch.cat([i for _, i in lists], dim=1)
    top = values.topk(min(m, values.shape[1]), dim=1, sorted=sorted_)
    return top.values, columns.gather(1, top.indices)


# --- bf16 candidates (CPU self-search) -----------------------------------------------------------

# Rows of the features at which precision="auto" starts using the bf16 candidates (below it
# the exact search takes well under a second).
_BF16_AUTO_MIN_ROWS = 1536
_BF16_AUTO_MIN_DIM = 64
_BF16_AUTO_MAX_K = 256


def _bf16_wanted(precision: str, x: torch.Tensor, k: int) -> bool:
    """Whether the self-search should find its candidates in bf16 (same result, faster)."""
    if precision == "exact" or x.device.type != "cpu":
        return False
    if precision == "bf16-candidates":
        return True
    n, d = x.shape
    return (
        n >= _BF16_AUTO_MIN_ROWS
        and d >= _BF16_AUTO_MIN_DIM
        and k <= _BF16_AUTO_MAX_K
        and _cpu_has_fast_bf16()
    )


def _from_bf16_candidates(
    x: torch.Tensor, k: int, found: _knn_bf16.Candidates, bounds: _Bounds
) -> KNNResult:
    """Rank the certified candidates (step 3); rows the bf16 pass could not certify cheaply
    (too many candidates) or whose self-check fails take the float32 route, whole rows."""
    n = x.shape[0]
    slack = bounds.slack(x.shape[1], x.device)
    certified = ~found.redo
    keep = certified[found.rows]
    rows, cols = found.rows[keep], found.cols[keep]
    redo = found.redo.nonzero().flatten()
    if redo.numel():
        extra = _full_row_candidates(x, x, redo, k, slack)
        rows, cols = torch.cat([rows, extra[0]]), torch.cat([cols, extra[1]])
    with _selection_threads(x.device):
        result = _rank_candidates(x, x, rows, cols, k)
    # Self-check of the certificate: a certified row's k-th value is >= its lower bound. It
    # cannot fail unless the bf16 GEMM breaks its error model; such rows are redone in float32.
    broken = certified & (result.similarities[:, k - 1].double() < found.kth_lower_bound)
    found.stats.update(rows=n, fallback_rows=int(redo.numel()), failed_checks=int(broken.sum()))
    if bool(broken.any()):
        again = broken.nonzero().flatten()
        r, c = _full_row_candidates(x, x, again, k, slack)
        fixed = _rank_candidates(x[again], x, torch.searchsorted(again, r), c, k)
        result.similarities[again], result.indices[again] = fixed
    return result


def _cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 dot products (AVX512-BF16 or AMX-BF16)."""
    get = getattr(getattr(torch, "cpu", None), "get_capabilities", None)
    if get is None:  # torch too old to say
        return False
    try:
        caps = get()
    except Exception:  # noqa: BLE001 - capability probing must never break the search
        return False
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def _fp32_matmul_is_ieee(device: torch.device) -> bool:
    """False when float32 matmuls may round their inputs to TF32 or bf16 (wider error bound)."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return False
    backends = torch.backends
    mkldnn = getattr(backends, "mkldnn", None)
    levels = (backends, mkldnn, getattr(mkldnn, "matmul", None))
    return all(getattr(level, "fp32_precision", "none") in ("none", "ieee") for level in levels)


def _knn_faiss(q: torch.Tensor, db: torch.Tensor, k: int, gpu: bool) -> KNNResult:
    faiss = _import_faiss("faiss-gpu" if gpu else "faiss-cpu")
    q_np = np.ascontiguousarray(q.cpu().numpy(), dtype=np.float32)
    db_np = q_np if db is q else np.ascontiguousarray(db.cpu().numpy(), dtype=np.float32)
    dim = db_np.shape[1]
    if gpu:
        if not _faiss_gpu_ready(faiss):
            raise ImportError(
                "backend='faiss-gpu' needs a GPU build of faiss and a visible CUDA device; "
                "install 'reid-clustering[faiss-gpu]' on a CUDA machine, or use backend='torch' "
                "(which also runs on the GPU when the features are CUDA tensors)"
            )
        resources = faiss.StandardGpuResources()
        index = faiss.GpuIndexFlatIP(resources, dim)
    else:
        index = faiss.IndexFlatIP(dim)
    index.add(db_np)
    sims, idx = index.search(q_np, k)
    return KNNResult(
        torch.from_numpy(sims).to(q.device), torch.from_numpy(idx.astype(np.int64)).to(q.device)
    )


def _import_faiss(backend: str):  # noqa: ANN202 - returns the faiss module
    try:
        import faiss
    except ImportError as err:
        extra = "faiss-gpu" if backend == "faiss-gpu" else "faiss-cpu"
        raise ImportError(
            f"backend={backend!r} needs faiss, which is not installed: "
            f"pip install 'reid-clustering[{extra}]', or use backend='torch'"
        ) from err
    return faiss


def _faiss_gpu_ready(faiss) -> bool:  # noqa: ANN001
    return hasattr(faiss, "GpuIndexFlatIP") and faiss.get_num_gpus() > 0
