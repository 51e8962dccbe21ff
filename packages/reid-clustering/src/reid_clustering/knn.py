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
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import torch

from ._validation import as_feature_tensor, check_int

__all__ = ["BACKENDS", "KNNResult", "faiss_available", "knn_search", "rank_by_distance"]

Backend = Literal["auto", "torch", "faiss-cpu", "faiss-gpu"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "faiss-cpu", "faiss-gpu")

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

    Returns:
        :class:`KNNResult` with tensors on the query's device (CPU for numpy input).

    Raises:
        ValueError: bad shapes, ``k`` out of range, NaN/inf, mixed devices, unknown backend.
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
    backend = _resolve_backend(backend, q.device)
    if backend == "torch":
        if database is None:
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
