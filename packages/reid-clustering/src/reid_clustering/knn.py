"""Exact k-nearest-neighbour search by inner product, with three interchangeable backends.

* ``"torch"`` (default): chunked ``query @ database.T`` + ``topk`` on the tensors' device (CPU or
  GPU); memory is bounded by one block of similarities. A self-search (``database=None``)
  computes each block of the symmetric ``x @ x.T`` once, for both sides: half the FLOPs.
* ``"faiss-cpu"``: ``faiss.IndexFlatIP`` (exact, multi-threaded BLAS).
* ``"faiss-gpu"``: ``faiss.GpuIndexFlatIP`` on the current CUDA device.
* ``"auto"``: faiss-gpu when the features are on CUDA and a GPU build of faiss is importable,
  otherwise torch.

faiss is imported lazily, only when a faiss backend is asked for, so the package works without it.
For L2-normalised features the inner-product ranking is the Euclidean ranking used by the
reference code (``2 - 2⟨x, y⟩ = ‖x − y‖²``). All backends return the same neighbours up to ties;
the torch backend orders tied similarities by ascending database index.

Certified bfloat16 candidates (``precision="bf16-candidates"``, torch backend, CPU self-search).
On CPUs with native bf16 dot products a bf16 GEMM is ~4× faster than a float32 one. The search
then returns *exactly* what the float32 path returns (same indices and order, ties included,
bit-identical float32 similarities), in three steps:

1. A blocked bf16 pass computes ``out = bf16(x̂ᵢ·x̂ⱼ)`` (x̂ = x rounded to bf16, products summed in
   float32) and keeps, per row, the pairs that may belong to the row's top k (step 3).
2. Those pairs are re-scored in float32 with the same BLAS kernel as the exact path (rows in
   groups of >= 4 against >= 16 columns, which MKL's sgemm computes element by element like
   the exact path's 2048 × 2048 blocks); the top k of the re-scored pairs is the answer.
3. The certificate. With e the float32 similarity the exact path ranks by, r = x − x̂ and
   γ_D = D·2⁻²⁴/(1 − D·2⁻²⁴), for every pair ``|out − e| <= 2⁻⁸·|out| + ρᵢ`` where
   ``ρᵢ = ‖rᵢ‖·max‖x̂‖ + ‖xᵢ‖·max‖r‖ + γ_D·(‖x̂ᵢ‖·max‖x̂‖ + ‖xᵢ‖·max‖x‖) + η`` (actual row norms,
   no unit-norm assumption; Cauchy–Schwarz on ``xᵀy − x̂ᵀŷ = rₓᵀŷ + xᵀr_y``, and the any-order
   dot-product error bound ``γ_n Σ|xₜyₜ|`` of Higham, *Accuracy and Stability of Numerical
   Algorithms*, 2nd ed., eq. 3.5, for both float32 sums; 2⁻⁸ for the bf16 output rounding; η
   for flushed denormals). Let kth be the k-th largest of the maxima of disjoint column groups
   of ``out`` on row i: k distinct columns reach it, so the row's k-th largest exact similarity
   is >= ``lb = kth − 2⁻⁸|kth| − ρᵢ``. A pair is dropped only when ``out + 2⁻⁸|out| + ρᵢ < lb``,
   i.e. when its exact similarity is *strictly* below the row's k-th one, so it can neither be
   a neighbour nor tie with one (the index tie-break only acts on equal values). Every row is
   thus certified by construction; a row whose certified candidate set grows too large
   (near-duplicates, all-equal similarities) is recomputed as a whole float32 row instead (the
   fallback), as is any row whose exact k-th similarity falls below lb (a self-check that can
   only fire if the bf16 GEMM broke the error model). Two guards send the whole search to the
   plain float32 path: a probe that the re-scoring reproduces the exact path's first block bit
   for bit, and float32 matmuls allowed to run in reduced precision
   (``torch.set_float32_matmul_precision``, oneDNN's ``fp32_precision``).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import torch

from ._validation import as_feature_tensor, check_int

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "KNNResult",
    "faiss_available",
    "knn_search",
    "rank_by_distance",
]

Backend = Literal["auto", "torch", "faiss-cpu", "faiss-gpu"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "faiss-cpu", "faiss-gpu")
Precision = Literal["auto", "exact", "bf16-candidates"]
PRECISIONS: tuple[str, ...] = ("auto", "exact", "bf16-candidates")

# Similarities held at once by the torch backend: chunk rows × database size (16 Mi floats).
_TORCH_BLOCK_ELEMENTS = 1 << 24


class KNNResult(NamedTuple):
    """Neighbours of each query, most similar first.

    Attributes:
        similarities: float32 ``[num_query, k]`` inner products, descending along each row.
        indices: int64 ``[num_query, k]`` database row of each neighbour.
    """

    similarities: torch.Tensor
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
            block under 16 Mi similarities; for a self-search, 2048: each 2048 × 2048 block of
            ``x @ x.T`` is computed once and serves both of its sides).
        precision: how the torch backend's CPU self-search gets its answer; the answer is the
            same either way (indices, order and float32 similarities, bit for bit).
            ``"exact"``: float32 blocks of ``x @ x.T`` only. ``"bf16-candidates"``: bf16
            candidates, certified and re-scored in float32 (module docstring); ~3× faster on
            CPUs with AVX512-BF16 (elsewhere bf16 GEMMs are emulated; not measured).
            ``"auto"`` (default): ``"bf16-candidates"`` for a CPU self-search of >= 1536 rows,
            D >= 64 and k <= 256 on a CPU with AVX512-BF16 or AMX-BF16, else ``"exact"``.
            CUDA tensors, query-vs-database searches and the faiss backends always search
            exactly (on CUDA in float32: leave TF32 off, torch's default).

    Returns:
        :class:`KNNResult` with tensors on the query's device (CPU for numpy input).

    Raises:
        ValueError: bad shapes, ``k`` out of range, NaN/inf, mixed devices, unknown backend or
            precision.
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
    if precision not in PRECISIONS:
        raise ValueError(f"unknown kNN precision {precision!r}; choose one of {list(PRECISIONS)}")
    backend = _resolve_backend(backend, q.device)
    if backend == "torch":
        if database is None:
            if _bf16_wanted(precision, q, k, chunk_size):
                result = _knn_bf16_self(q, k, chunk_size)
                if result is not None:
                    return result
            return _knn_torch_self(q, k, chunk_size)
        return _knn_torch(q, db, k, chunk_size)
    return _knn_faiss(q, db, k, gpu=backend == "faiss-gpu")


def _device_of(x: object) -> torch.device:
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


def rank_by_distance(distances: torch.Tensor, k: int, chunk_size: int = 4096) -> torch.Tensor:
    """The ``k`` smallest entries of each row of a distance matrix, as a ranked list.

    Equivalent to ``np.argsort(distances, kind="stable")[:, :k]`` (ties keep column order), in
    blocks of rows, on the tensor's device.

    Args:
        distances: float ``[N, M]`` tensor.
        k: columns to keep, ``1 <= k <= M``.
        chunk_size: rows per block.

    Returns:
        int64 ``[N, k]`` column indices, nearest first.
    """
    if distances.dim() != 2:
        raise ValueError(f"distances must be 2-D, got shape {tuple(distances.shape)}")
    k = check_int(k, "k", 1)
    if k > distances.shape[1]:
        raise ValueError(f"k={k} exceeds the number of columns {distances.shape[1]}")
    blocks = [
        _topk_stable(-distances[start : start + chunk_size], k)[1]
        for start in range(0, distances.shape[0], chunk_size)
    ]
    return torch.cat(blocks)


def _resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown kNN backend {backend!r}; choose one of {list(BACKENDS)}")
    if backend == "auto":
        return "faiss-gpu" if device.type == "cuda" and faiss_available(gpu=True) else "torch"
    return backend


def _knn_torch(q: torch.Tensor, db: torch.Tensor, k: int, chunk_size: int | None) -> KNNResult:
    if chunk_size is None:
        chunk_size = max(1, _TORCH_BLOCK_ELEMENTS // db.shape[0])
    chunk_size = check_int(chunk_size, "chunk_size", 1)
    sims, idx = [], []
    db_t = db.t()
    # One similarity buffer for all blocks: a fresh large tensor per block costs page faults.
    buffer = q.new_empty(min(chunk_size, q.shape[0]), db.shape[0])
    for start in range(0, q.shape[0], chunk_size):
        rows = q[start : start + chunk_size]
        block = torch.mm(rows, db_t, out=buffer[: rows.shape[0]])
        values, indices = _topk_stable(block, k)
        sims.append(values)
        idx.append(indices)
    return KNNResult(torch.cat(sims), torch.cat(idx))


def _knn_torch_self(x: torch.Tensor, k: int, block_size: int | None) -> KNNResult:
    """Self-search using each block of ``x @ x.T`` for both of its sides (half the FLOPs).

    Block ``(a, b)`` updates the running top-k of rows ``a`` (its rows) and of rows ``b`` (its
    columns). Blocks are reduced with :func:`_topk_stable` and merged in the same total order
    (similarity descending, index ascending), so the result equals a full-row stable top-k.
    """
    n = x.shape[0]
    if block_size is None:
        block_size = 2048
    block_size = check_int(block_size, "chunk_size", 1)
    best_v = x.new_full((n, k), -torch.inf)
    best_i = torch.full((n, k), n, dtype=torch.int64, device=x.device)
    buffer = x.new_empty(min(block_size, n) ** 2)
    starts = range(0, n, block_size)
    for a in starts:
        xa = x[a : a + block_size]
        for b in starts:
            if b < a:
                continue
            xb = x[b : b + block_size]
            sims = buffer[: xa.shape[0] * xb.shape[0]].view(xa.shape[0], xb.shape[0])
            torch.mm(xa, xb.t(), out=sims)
            _merge(best_v, best_i, a, *_topk_stable(sims, min(k, xb.shape[0])), offset=b)
            if b != a:
                _merge(best_v, best_i, b, *_topk_stable(sims.t(), min(k, xa.shape[0])), offset=a)
    return KNNResult(best_v, best_i)


def _merge(
    best_v: torch.Tensor,
    best_i: torch.Tensor,
    start: int,
    values: torch.Tensor,
    indices: torch.Tensor,
    offset: int,
) -> None:
    """Merge a block's top-k into rows ``start:`` of the running top-k, in (-value, index) order."""
    rows = slice(start, start + values.shape[0])
    k = best_v.shape[1]
    cand_v = torch.cat([best_v[rows], values], dim=1)
    cand_i = torch.cat([best_i[rows], indices + offset], dim=1)
    by_index = cand_i.argsort(dim=1)
    cand_v, cand_i = cand_v.gather(1, by_index), cand_i.gather(1, by_index)
    order = cand_v.sort(dim=1, descending=True, stable=True).indices[:, :k]
    best_v[rows] = cand_v.gather(1, order)
    best_i[rows] = cand_i.gather(1, order)


def _topk_stable(block: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise top-k, ordered by (similarity descending, index ascending).

    ``topk`` alone picks an arbitrary subset of the values tied with the k-th largest; rows
    where such a tie crosses the cut (rare with real features) are redone with a stable sort.
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


# --- bf16 candidates, certified and re-scored exactly (CPU self-search) -------------------------
#
# Notation for one pair of rows x = x_i, y = x_j (float32, D features):
#   e      the float32 inner product the exact path returns for the pair (a BLAS sgemm element);
#   x̂, ŷ   x and y rounded to bfloat16 (round to nearest even), r_x = x − x̂ (exact in float32);
#   out    the pair's element of the bfloat16 GEMM x̂ ŷᵀ (float32 accumulation, bf16 output).
# Then |out − e| <= 2⁻⁸·|out| + ρ_i with the per-row
#   ρ_i = ‖r_i‖·max_j‖x̂_j‖ + ‖x_i‖·max_j‖r_j‖ + γ_D·(‖x̂_i‖·max_j‖x̂_j‖ + ‖x_i‖·max_j‖x_j‖) + η,
# γ_D = D·u/(1 − D·u), u = 2⁻²⁴ (see _bf16_error_bound for the derivation).

# Rows of the features at which precision="auto" starts using the bf16 candidates (below it
# the exact search takes well under a second).
_BF16_AUTO_MIN_ROWS = 1536
_BF16_AUTO_MIN_DIM = 64
_BF16_AUTO_MAX_K = 256
# Rows (and columns) per block of the bf16 candidate pass.
_BF16_BLOCK = 2048
# The BLAS (MKL sgemm) computes an element of a GEMM with M >= 4 rows and N >= 16 columns in the
# same order whatever the shape; smaller GEMMs take another kernel (other rounding). The exact
# re-scoring therefore uses groups of 4 rows against at least 16 columns, and reference blocks
# smaller than that (a short last block) are recomputed exactly as the exact path computes them.
_GEMM_MIN_ROWS = 4
_GEMM_MIN_COLS = 16
# Rows re-scored per batch (bounds the gathered candidate features; a multiple of 64).
_RESCORE_ROWS = 256
# Rows per GEMM of the re-scoring, each with its cost per (row, candidate) pair relative to
# gathering one candidate row (measured with D = 2048: small GEMMs are memory-bound).
_RESCORE_GROUPINGS: tuple[tuple[int, float], ...] = ((4, 0.17), (16, 0.07), (64, 0.05))


def _bf16_wanted(precision: str, x: torch.Tensor, k: int, block_size: int | None) -> bool:
    """Whether the self-search should take the bf16-candidate path (same results, faster)."""
    if precision == "exact" or x.device.type != "cpu" or not _fp32_matmul_is_ieee():
        return False
    if block_size is not None and check_int(block_size, "chunk_size", 1) < _GEMM_MIN_COLS:
        return False  # tiny exact blocks use the BLAS's small-matrix kernel: no re-scoring match
    if precision == "bf16-candidates":
        return True
    n, d = x.shape
    return (
        n >= _BF16_AUTO_MIN_ROWS
        and d >= _BF16_AUTO_MIN_DIM
        and k <= _BF16_AUTO_MAX_K
        and _cpu_has_fast_bf16()
    )


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


def _fp32_matmul_is_ieee() -> bool:
    """False when float32 matmuls may run in reduced precision (then the exact path is used)."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    backends = torch.backends
    mkldnn = getattr(backends, "mkldnn", None)
    levels = (backends, mkldnn, getattr(mkldnn, "matmul", None))
    return all(getattr(level, "fp32_precision", "none") in ("none", "ieee") for level in levels)


def _fallback_cap(n: int, k: int) -> int:
    """Certified candidates per row above which the row is recomputed in full instead.

    A whole float32 row is one GEMM row of n columns (no gather); a re-scored candidate costs
    about as much as 16 of those columns (an 8 KiB gather at D = 2048).
    """
    return max(2 * k + 64, n // 16)


def _knn_bf16_self(
    x: torch.Tensor, k: int, block_size: int | None, stats: dict | None = None
) -> KNNResult | None:
    """Exact self-search: bf16 candidates, a certificate, exact float32 re-scoring.

    Returns the result of :func:`_knn_torch_self` (same indices, bit-identical similarities),
    or None when this path cannot promise that (the caller then runs the exact path).
    """
    n = x.shape[0]
    ref_block = 2048 if block_size is None else check_int(block_size, "chunk_size", 1)
    x = x.contiguous()
    xb = x.to(torch.bfloat16)  # round to nearest even
    rho = _bf16_error_bound(x, xb)
    if rho is None:
        return None
    tail_start, strip = _short_last_block(x, ref_block)
    if not _rescoring_matches_blas(x, ref_block, tail_start):
        return None

    rows, cols, vals, kth = _bf16_candidates(xb, k, rho)
    # Keep the pairs that may still belong to the top k: exact <= out + 2⁻⁸|out| + ρ_i must
    # reach the lower bound of the row's k-th exact similarity.
    keep = vals.float() >= _candidate_threshold(kth, rho)[rows]
    rows, cols = rows[keep], cols[keep]
    counts = torch.bincount(rows, minlength=n)
    exact_rows = counts > _fallback_cap(n, k)
    exact_rows[tail_start:] = False  # rows of a short last block come from the strip
    rescored = torch.ones(n, dtype=torch.bool)
    rescored[tail_start:] = False
    rescored &= ~exact_rows
    keep = rescored[rows]
    rows, cols = rows[keep], cols[keep]

    best_v = x.new_empty(n, k)
    best_i = torch.empty(n, k, dtype=torch.int64)
    _rescore_rows(x, rows, cols, k, tail_start, strip, best_v, best_i)
    # Self-check of the bound: a certified row's exact k-th similarity is >= its lower bound.
    # (It cannot fail unless the bf16 GEMM breaks the error model; such rows are redone.)
    broken = rescored & (best_v[:, k - 1].double() < _kth_lower_bound(kth, rho))
    exact_rows |= broken
    full_rows = exact_rows.nonzero().flatten()
    _exact_rows(x, full_rows, k, tail_start, strip, best_v, best_i)
    if strip is not None:
        tail = strip[tail_start:]
        full = torch.cat([strip[:tail_start].t(), tail], dim=1)
        best_v[tail_start:], best_i[tail_start:] = _topk_stable(full, k)
    if stats is not None:
        stats.update(
            rows=n,
            candidates=int(rows.numel()),
            max_candidates=int(counts[rescored].max()) if bool(rescored.any()) else 0,
            fallback_rows=int(full_rows.numel()),
            failed_checks=int(broken.sum()),
            tail_rows=n - tail_start,
        )
    return KNNResult(best_v, best_i)


def _bf16_error_bound(x: torch.Tensor, xb: torch.Tensor) -> torch.Tensor | None:
    """Per-row ρ_i (float64) with |out − e| <= 2⁻⁸·|out| + ρ_i for every column j.

    Derivation (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §2.2 and
    §3.1, eq. 3.5: a dot product of n terms evaluated in floating point in *any* order has
    absolute error <= γ_n Σ|x_t y_t|):

    * e − xᵀy: the exact path's sgemm element, <= γ_D ‖x‖‖y‖ (Cauchy–Schwarz on Σ|x_t y_t|).
    * xᵀy − x̂ᵀŷ = r_xᵀŷ + xᵀr_y exactly, <= ‖r_x‖‖ŷ‖ + ‖x‖‖r_y‖ (Cauchy–Schwarz; ‖r‖ is the
      measured rounding residual, about 2⁻⁹·‖x‖, not the worst case 2⁻⁸·‖x‖).
    * acc − x̂ᵀŷ: bf16 × bf16 products are exact in float32 and are summed in float32 in some
      order, <= γ_D ‖x̂‖‖ŷ‖.
    * out − acc: rounding the float32 accumulator to bf16 (nearest even), <= 2⁻⁸·|out|.
    * η: denormal inputs, products, sums and outputs flushed to zero (the bf16 dot-product
      instructions do), each <= 2⁻¹²⁶ per term: (4D + 1 + 2√D·max‖x̂‖)·2⁻¹²⁶.

    The column factors are bounded by their maxima over all rows, which makes ρ a per-row
    number. Returns None for norms so large that a product could overflow.
    """
    n, d = x.shape
    u = 2.0**-24
    if (d + 2) * u >= 0.5:
        return None
    gamma = d * u / (1 - d * u)
    norms = x.new_empty(3, n)
    for start in range(0, n, 256):  # cache-sized chunks: no full-size float temporaries
        rows = slice(start, start + 256)
        rounded = xb[rows].float()
        torch.linalg.vector_norm(x[rows], dim=1, out=norms[0, rows])
        torch.linalg.vector_norm(rounded, dim=1, out=norms[1, rows])
        torch.linalg.vector_norm(rounded.sub_(x[rows]), dim=1, out=norms[2, rows])
    # float32 norms are within a factor 1 + γ_{D+2} of the true ones (the same bound for the sum
    # of squares, plus the square root); √D·2⁻⁶² covers squares that underflow.
    norms = norms.double() * (1 + (d + 2) * u / (1 - (d + 2) * u)) + d**0.5 * 2.0**-62
    nx, nxb, nr = norms
    if not bool(torch.isfinite(norms).all()) or float(norms[:2].max()) > 2.0**60:
        return None
    eta = (4 * d + 1 + 2 * d**0.5 * float(nxb.max())) * 2.0**-126
    rho = nr * nxb.max() + nx * nr.max() + gamma * (nxb * nxb.max() + nx * nx.max()) + eta
    # ρ is computed in float64: a relative slack far above its rounding error.
    return rho * (1 + 2.0**-20)


def _kth_lower_bound(kth: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """float64 lower bound on each row's k-th largest exact similarity.

    ``kth`` (bf16) is a lower bound on the k-th largest ``out`` of the row: it is the k-th
    largest of maxima of disjoint column groups, so k distinct columns reach it. Each of those
    columns has e >= out − 2⁻⁸|out| − ρ_i >= kth − 2⁻⁸|kth| − ρ_i (the map is increasing).
    """
    g = kth.double()
    return g - g.abs() * 2.0**-8 - rho


def _candidate_threshold(kth: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """float32 τ_i such that out < τ_i proves the pair is not among row i's k nearest.

    With lb the lower bound of :func:`_kth_lower_bound`, a pair with out + 2⁻⁸|out| + ρ_i < lb
    has e < lb <= the k-th largest e of the row: it lies strictly below the k-th neighbour, so
    it can neither be a neighbour nor tie with one. Solving that inequality for out gives τ_i
    (the left side increases with out); τ_i is rounded down, which only keeps more pairs.
    """
    g = kth.double()
    t = _kth_lower_bound(kth, rho) - rho
    tau = torch.where(t >= 0, t / (1 + 2.0**-8), t / (1 - 2.0**-8))
    tau = tau - (g.abs() + rho) * 2.0**-30  # far above the float64 rounding of these lines
    tau32 = tau.float()
    above = tau32.double() > tau
    return torch.where(above, torch.nextafter(tau32, tau32.new_tensor(-torch.inf)), tau32)


def _bf16_candidates(
    xb: torch.Tensor, k: int, rho: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Blocked symmetric bf16 GEMM keeping, per row, every pair that can pass the certificate.

    Each block ``(a, b)`` (diagonal blocks first, each block once for both of its sides)
    updates, per row, the running k largest maxima of disjoint column groups (a cheap lower
    bound on the row's k-th largest ``out``), and keeps the pairs at or above the row's current
    threshold τ (which only rises). Returns rows, cols, bf16 values of the kept pairs, and the
    final per-row bound (the k-th group maximum).
    """
    n = xb.shape[0]
    block = min(_BF16_BLOCK, n)
    # Columns per group. Groups are strided (columns q, q + m, q + 2m, ...: neighbours adjacent
    # in index fall in different groups); >= 4k groups per block keep the bound near the k-th.
    group = max(1, min(16, block // (4 * k)))
    best = xb.new_full((n, k), -torch.inf)
    buffer = xb.new_empty(block * block)
    found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    starts = range(0, n, block)
    pairs = [(a, a) for a in starts] + [(a, b) for a in starts for b in starts if b > a]
    for a, b in pairs:
        xa, xc = xb[a : a + block], xb[b : b + block]
        sims = buffer[: xa.shape[0] * xc.shape[0]].view(xa.shape[0], xc.shape[0])
        torch.mm(xa, xc.t(), out=sims)
        maxima = _group_max(sims, group, 1)
        tau = _raise_bound(best, a, maxima, rho)
        r, c, v = _group_hits(sims, maxima, tau, group)
        found.append((r + a, c + b, v))
        if b != a:  # the same block, seen from its columns' rows
            maxima = _group_max(sims, group, 0)
            tau = _raise_bound(best, b, maxima, rho)
            c, r, v = _group_hits(sims.t(), maxima, tau, group)
            found.append((c + b, r + a, v))
    rows, cols, vals = (torch.cat(parts) for parts in zip(*found, strict=True))
    return rows, cols, vals, best.amin(dim=1)


def _group_max(sims: torch.Tensor, group: int, dim: int) -> torch.Tensor:
    """Maxima of strided groups along ``dim`` ({q, q + m, q + 2m, ...}, m = size // group).

    Returns ``[other, groups]``: per row of ``sims`` (``dim=1``) or per column (``dim=0``).
    Strided groups put neighbours that are adjacent in index into different groups.
    """
    size = sims.shape[dim]
    m = size // group
    if group == 1 or m == 0:
        maxima = sims
    else:
        main = sims.narrow(dim, 0, m * group).unflatten(dim, (group, m)).amax(dim=dim)
        rest = sims.narrow(dim, m * group, size - m * group)
        maxima = torch.cat([main, rest], dim=dim) if rest.shape[dim] else main
    return (maxima if dim == 1 else maxima.t()).contiguous()


def _group_hits(
    sims: torch.Tensor, maxima: torch.Tensor, tau: torch.Tensor, group: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entries ``sims[r, c] >= tau[r]``, looked for only in the groups whose maximum reaches
    ``tau`` (``maxima`` from :func:`_group_max`): rows, columns, values."""
    cols = sims.shape[1]
    m = cols // group
    hit = maxima >= tau[:, None]
    if group == 1 or m == 0 or 8 * group * int(hit.sum()) > sims.numel():
        # Many groups to open (a block holding the rows' neighbours): one dense pass is cheaper.
        rows, cols = (sims >= tau[:, None]).nonzero().unbind(1)
        return rows, cols, sims[rows, cols]
    hit_rows, hit_groups = hit[:, :m].nonzero().unbind(1)
    members = sims.narrow(1, 0, m * group).unflatten(1, (group, m))[hit_rows, :, hit_groups]
    which, step = (members >= tau[hit_rows, None]).nonzero().unbind(1)
    found = [(hit_rows[which], hit_groups[which] + step * m, members[which, step])]
    if m * group < cols:  # the columns after the last whole group are groups of their own
        rest = sims.narrow(1, m * group, cols - m * group)
        rows, extra = (rest >= tau[:, None]).nonzero().unbind(1)
        found.append((rows, extra + m * group, rest[rows, extra]))
    rows, cols, vals = (torch.cat(parts) for parts in zip(*found, strict=True))
    return rows, cols, vals


def _raise_bound(
    best: torch.Tensor, start: int, maxima: torch.Tensor, rho: torch.Tensor
) -> torch.Tensor:
    """Merge a block's group maxima into rows ``start:`` of ``best``; their new thresholds."""
    rows = slice(start, start + maxima.shape[0])
    k = best.shape[1]
    merged = torch.cat([best[rows], maxima], dim=1).topk(k, dim=1, sorted=False).values
    best[rows] = merged
    return _candidate_threshold(merged.amin(dim=1), rho[rows])


def _short_last_block(x: torch.Tensor, block: int) -> tuple[int, torch.Tensor | None]:
    """The exact path's values for a last block too short for the BLAS's large-GEMM kernel.

    Returns ``(start, strip)``: ``strip[i, t] = e(i, start + t)`` computed with the exact
    path's very calls (``x[a:a+block] @ x[start:].T``), or ``(n, None)`` when the last block is
    long enough (or there is none).
    """
    n = x.shape[0]
    rest = n % block
    if rest == 0 or rest >= _GEMM_MIN_COLS:
        return n, None
    start = n - rest
    tail = x[start:]
    strip = x.new_empty(n, rest)
    for a in range(0, start, block):
        torch.mm(x[a : a + block], tail.t(), out=strip[a : a + block])
    torch.mm(tail, tail.t(), out=strip[start:])
    return start, strip


def _rescore_rows(
    x: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    k: int,
    tail_start: int,
    strip: torch.Tensor | None,
    best_v: torch.Tensor,
    best_i: torch.Tensor,
    groupings: tuple[tuple[int, float], ...] = _RESCORE_GROUPINGS,
) -> None:
    """Exact float32 similarities of the candidate pairs (``rows[t]``, ``cols[t]``), and the top
    k of every row that has candidates, written into ``best_v``/``best_i``.

    Rows go in groups of R (at least 4) against the union of their candidates (at least 16
    columns), so every similarity is an element of a GEMM of at least 4 × 16, which the BLAS
    computes exactly like the exact path's blocks. Rows are ordered by a cluster key (the
    smallest candidate of their candidates) so that rows of one cluster share a group and a
    small union whatever the input order, and R is picked per batch by a cost model (gathered
    rows versus multiply-adds).
    """
    n, d = x.shape
    if rows.numel() == 0:
        return
    key = (rows * n + cols).sort().values  # by row, then by column
    rows, cols = key // n, key % n
    counts = torch.bincount(rows, minlength=n)
    starts = counts.cumsum(0) - counts
    todo = (counts > 0).nonzero().flatten()
    # Cluster key: the smallest candidate of any candidate (rows sharing neighbours share it).
    near = torch.arange(n)
    near[todo] = cols[starts[todo]]
    far = near.clone().scatter_reduce_(0, rows, near[cols], "amin")
    todo = todo[near[todo].argsort(stable=True)]
    todo = todo[far[todo].argsort(stable=True)]
    buffer = x.new_empty(0)
    for b0 in range(0, todo.numel(), _RESCORE_ROWS):
        part = todo[b0 : b0 + _RESCORE_ROWS]
        width = int(counts[part].max())
        offsets = torch.arange(width)
        entry = (starts[part, None] + offsets).clamp_(max=rows.numel() - 1)
        cand = torch.where(offsets < counts[part, None], cols[entry], n)
        step, flat, union = _cheapest_grouping(cand, n, groupings)
        groups, size = union.shape
        where = torch.searchsorted(union, flat).clamp_(max=size - 1)
        lhs_rows = torch.cat([part, part[:1].expand(groups * step - part.numel())])
        lhs = x.index_select(0, lhs_rows).view(groups, step, d)
        if buffer.numel() < groups * size * d:
            buffer = x.new_empty(groups * size * d)
        feats = buffer[: groups * size * d].view(groups * size, d)
        torch.index_select(x, 0, union.clamp(max=n - 1).flatten(), out=feats)
        sims = torch.bmm(lhs, feats.view(groups, size, d).transpose(1, 2))
        vals = sims.gather(2, where.view(groups, step, width)).view(-1, width)[: part.numel()]
        vals[cand == n] = -torch.inf
        if strip is not None:
            _use_strip(vals, cand, part, tail_start, strip)
        order = vals.sort(dim=1, descending=True, stable=True).indices[:, :k]
        best_v[part] = vals.gather(1, order)
        best_i[part] = cand.gather(1, order)


def _group_union(cand: torch.Tensor, step: int, n: int) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Candidates of ``step`` consecutive rows side by side, and their sorted union.

    ``cand`` holds column indices, ``n`` marking padding. Returns ``(step, flat, union)``:
    ``flat`` ``[groups, step * width]``, ``union`` ``[groups, size]`` (padded with ``n``; at
    least 16 columns).
    """
    m, width = cand.shape
    pad = -m % step
    if pad:
        cand = torch.cat([cand, cand.new_full((pad, width), n)])
    flat = cand.view(-1, step * width)
    union = flat.sort(dim=1).values
    union[:, 1:][union[:, 1:] == union[:, :-1]] = n
    union = union.sort(dim=1).values
    size = max(int((union < n).sum(dim=1).max()), _GEMM_MIN_COLS)
    if size > union.shape[1]:
        union = torch.cat([union, union.new_full((union.shape[0], size - union.shape[1]), n)], 1)
    return step, flat, union[:, :size].contiguous()


def _cheapest_grouping(
    cand: torch.Tensor, n: int, groupings: tuple[tuple[int, float], ...]
) -> tuple[int, torch.Tensor, torch.Tensor]:
    """The grouping of ``cand``'s rows with the lowest estimated cost (:func:`_group_union`).

    Cost: gathered rows plus multiply-adds, in units of one gathered row. Groupings are tried
    from the largest; a smaller one is skipped when even its cheapest possible union (the
    longest candidate list) could not beat the best so far.
    """
    m, width = cand.shape
    best, best_cost = None, float("inf")
    for step, per_pair in sorted(groupings, reverse=True):
        groups = -(-m // step)
        if groups * max(width, _GEMM_MIN_COLS) * (1 + step * per_pair) >= best_cost:
            continue
        grouping = _group_union(cand, step, n)
        cost = grouping[2].numel() * (1 + step * per_pair)
        if cost < best_cost:
            best, best_cost = grouping, cost
    assert best is not None
    return best


def _use_strip(
    vals: torch.Tensor, cand: torch.Tensor, rows: torch.Tensor, tail_start: int, strip: torch.Tensor
) -> None:
    """Replace similarities with columns in a short last block by the exact path's values."""
    n = strip.shape[0]
    in_tail = (cand >= tail_start) & (cand < n)
    if bool(in_tail.any()):
        r, c = in_tail.nonzero().unbind(1)
        vals[r, c] = strip[rows[r], cand[r, c] - tail_start]


def _exact_rows(
    x: torch.Tensor,
    rows: torch.Tensor,
    k: int,
    tail_start: int,
    strip: torch.Tensor | None,
    best_v: torch.Tensor,
    best_i: torch.Tensor,
) -> None:
    """Top k of whole exact rows (rows whose certified candidate set is too large)."""
    for start in range(0, rows.numel(), _RESCORE_ROWS):
        part = rows[start : start + _RESCORE_ROWS]
        padded = part
        if part.numel() < _GEMM_MIN_ROWS:  # at least 4 rows: the large-GEMM kernel
            padded = torch.cat([part, part[:1].expand(_GEMM_MIN_ROWS - part.numel())])
        full = torch.mm(x[padded], x.t())[: part.numel()]
        if strip is not None:
            full[:, tail_start:] = strip[part]
        best_v[part], best_i[part] = _topk_stable(full, k)


def _rescoring_matches_blas(x: torch.Tensor, ref_block: int, tail_start: int) -> bool:
    """Cheap guard: the re-scoring reproduces the exact path's first block on 64 rows.

    The re-scoring relies on the BLAS computing each GEMM element the same way for any shape of
    at least 4 × 16 (true of MKL's sgemm; the tests check it). This compares every grouping of
    the re-scoring, with unions of 16, 33 and 64 columns, against the exact path's first block
    ``x[:B] @ x[:B].T`` (B × 64 of it: a few ms), and sends the search to the exact path if any
    value differs.
    """
    n = x.shape[0]
    p = min(64, tail_start, ref_block)
    p -= p % _GEMM_MIN_ROWS
    if p < _GEMM_MIN_COLS:
        return True  # nothing is re-scored: every row comes from the short last block
    reference = torch.mm(x[: min(n, ref_block)], x[:p].t())[:p]
    probe = x[:p].contiguous()
    for width in sorted({_GEMM_MIN_COLS, (_GEMM_MIN_COLS + p) // 2, p}):
        rows = torch.arange(p).repeat_interleave(width)
        cols = torch.arange(width).repeat(p)
        best_v = x.new_empty(p, width)
        best_i = torch.empty(p, width, dtype=torch.int64)
        for grouping in _RESCORE_GROUPINGS:
            _rescore_rows(probe, rows, cols, width, p, None, best_v, best_i, (grouping,))
            got = torch.empty_like(best_v).scatter_(1, best_i, best_v)
            if not torch.equal(got, reference[:, :width]):
                return False
    return True


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
