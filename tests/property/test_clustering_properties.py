"""Property tests of reid-clustering: every public function and class on generated inputs.

Each call either refuses its input with a ValueError/TypeError naming an argument, or returns a
result that satisfies the function's invariants and equals its definition: the ``pair_dot``
ranking of :mod:`reid_clustering.knn`, the loops of :mod:`reid_clustering._reference` (the
readable k-reciprocal Jaccard distance), scikit-learn's DBSCAN, and plain counting.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter

import numpy as np
import pytest
import scipy.sparse
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from reid_clustering import (
    BACKENDS,
    PRECISIONS,
    SPARSE_THRESHOLD,
    ClusterStats,
    DBSCANResult,
    KNNResult,
    LabelQuality,
    NoClustersWarning,
    RowSparse,
    camera_debiased,
    cluster_centroids,
    cluster_statistics,
    compute_jaccard_distance,
    dbscan_clustering,
    dbscan_pseudo_labels,
    expanded_reciprocal_pairs,
    faiss_available,
    half_width,
    jaccard_from_encoding,
    k_reciprocal_encoding,
    k_reciprocal_sets,
    knn_search,
    local_query_expansion,
    pseudo_label_quality,
    rank_by_distance,
    reciprocal_mask,
)
from reid_clustering import knn as knn_module
from reid_clustering._pairwise import pair_dot
from reid_clustering._reference import plain_jaccard_distance, reciprocal_neighbours
from reid_clustering._validation import l2_normalize_rows
from tests.property.support import (
    ALL_DTYPES,
    ORDINARY_KINDS,
    attempt,
    covers,
    finite,
    mostly,
    must_accept,
    must_refuse,
    refused,
    separated,
    sides,
    tensors,
)

# --- features: numpy or torch, any dtype ----------------------------------------------------------


@st.composite
def features(draw: st.DrawFn, shape: tuple[int, ...], kinds=None) -> np.ndarray | torch.Tensor:
    """A feature matrix as a torch tensor or (when numpy has the dtype) a numpy array."""
    t = draw(tensors(shape, dtypes=ALL_DTYPES, **({"kinds": kinds} if kinds else {})))
    if t.device.type == "cpu" and t.dtype != torch.bfloat16 and draw(mostly((False,), (True,))):
        return t.numpy()
    return t


def _as32(x: np.ndarray | torch.Tensor) -> torch.Tensor | None:
    """The float32 tensor the package works on, or None when it must refuse ``x``."""
    if isinstance(x, np.ndarray):
        if x.dtype == bool:
            return None
        t = torch.from_numpy(np.asarray(x, dtype=np.float32))
    else:
        if x.dtype == torch.bool:
            return None
        t = x.detach().to(torch.float32)
    if t.dim() != 2 or 0 in t.shape or not finite(t):
        return None
    return t


def _moderate(t: torch.Tensor) -> bool:
    """Values whose inner products neither overflow nor underflow float32."""
    peak = float(t.abs().max()) if t.numel() else 0.0
    return peak <= 1e15 and bool((t.abs().amax(dim=1) >= 1e-15).all())


# --- kNN ------------------------------------------------------------------------------------------


def _knn_definition(q: torch.Tensor, db: torch.Tensor | None, k: int):
    """The torch backend's answer by its definition: all pairs scored with ``pair_dot`` (on the
    features rescaled by a power of two, as the search does), a stable descending sort."""
    qs, dbs, scale = knn_module._rescaled(q, db)
    nq, nd = qs.shape[0], dbs.shape[0]
    rows = torch.arange(nq).repeat_interleave(nd)
    cols = torch.arange(nd).repeat(nq)
    values = pair_dot(qs, dbs, rows, cols).view(nq, nd)
    order = torch.sort(values, dim=1, descending=True, stable=True)
    return order.values[:, :k] * scale, order.indices[:, :k], values


@st.composite
def knn_inputs(draw: st.DrawFn):
    """``(query [Q, D], database [M, D'] or None, k)``; D' = D and 1 <= k <= M mostly."""
    nq, nd, d = draw(sides(6)), draw(sides(6)), draw(sides(4))
    query = draw(features((nq, d)))
    database = None
    if draw(st.booleans()):
        database = draw(features((nd, draw(mostly((d,), (d + 1,))))))
    n_db = nq if database is None else nd
    k = draw(
        mostly([st.integers(1, max(1, n_db))], [st.sampled_from((0, n_db + 1, True))]).flatmap(
            lambda s: s
        )
    )
    return query, database, k


@given(
    inputs=knn_inputs(),
    backend=mostly(("torch",), ("faiss-cpu", "auto", "bogus")),
    precision=mostly(("auto", "exact", "bf16-candidates"), ("fastest",)),
    similarities=st.booleans(),
    chunk_size=mostly((None, 1, 3), (0,)),
)
@example(  # faiss ranked 1e29 features unscaled: their inner products were inf
    inputs=(torch.tensor([[1.2573e29], [-1.3210e29], [6.4042e29]]), None, 2),
    backend="faiss-cpu",
    precision="auto",
    similarities=True,
    chunk_size=None,
)
@covers("knn_search", "KNNResult", "faiss_available")
def test_knn_search(inputs, backend, precision, similarities, chunk_size) -> None:
    """knn_search: [Q, k] int64 indices in range, distinct per row, and float32 similarities
    descending; with the torch backend, bit for bit the definition (the k largest pair_dot
    values, ties to the lower index) for every precision and chunk_size; permuting the query
    rows permutes the result (a self-search: the same similarities per row). faiss_available()
    is a bool, True when the faiss-cpu backend ran."""
    query, database, k = inputs
    self_search = database is None
    result = attempt(
        knn_search,
        query,
        database,
        k,
        backend=backend,
        precision=precision,
        similarities=similarities,
        chunk_size=chunk_size,
    )
    assert isinstance(faiss_available(), bool) and isinstance(faiss_available(gpu=True), bool)
    q = _as32(query)
    db = q if self_search else _as32(database)
    valid = (
        q is not None
        and db is not None
        and q.shape[1] == db.shape[1]
        and not isinstance(k, bool)
        and 1 <= k <= db.shape[0]
        and backend in BACKENDS
        and precision in PRECISIONS
        and (chunk_size is None or chunk_size >= 1 or backend == "faiss-cpu")
        and (backend != "faiss-cpu" or faiss_available())
    )
    if not valid:
        must_refuse(result, "bad features, k, backend, precision or chunk_size")
        return
    if _moderate(q) and _moderate(db):
        must_accept(result)
    if refused(result):
        return
    assert isinstance(result, KNNResult)
    assert result.indices.dtype == torch.int64 and result.indices.shape == (q.shape[0], k)
    assert bool((result.indices >= 0).all() and (result.indices < db.shape[0]).all())
    assert all(len(set(row)) == k for row in result.indices.tolist())
    if similarities or backend == "faiss-cpu":
        sims = result.similarities
        assert sims.dtype == torch.float32 and sims.shape == (q.shape[0], k) and finite(sims)
        assert bool((sims[:, :-1] >= sims[:, 1:]).all())
    else:
        assert result.similarities is None
    if backend == "faiss-cpu":
        assert faiss_available()
        return
    want_sims, want_idx, values = _knn_definition(q, None if self_search else db, k)
    assert torch.equal(result.indices, want_idx)
    if similarities:
        assert torch.equal(result.similarities, want_sims)
    perm = torch.randperm(q.shape[0], generator=torch.Generator().manual_seed(q.shape[0] * 31 + k))
    permuted = knn_search(
        q[perm], None if self_search else db, k, precision=precision, similarities=similarities
    )
    if not self_search:
        assert torch.equal(permuted.indices, want_idx[perm])
        return
    # A self-search ranks pair_dot values, which depend on the pair only: each row keeps its
    # values; its indices follow the permutation where no tie is broken by index.
    if similarities:
        assert torch.equal(permuted.similarities, result.similarities[perm])
    inverse = torch.argsort(perm)
    no_ties = [len(set(row.tolist())) == row.numel() for row in values]
    for i in range(q.shape[0]):
        if no_ties[int(perm[i])]:
            assert torch.equal(perm[permuted.indices[i]], result.indices[perm[i]])
    assert inverse.numel() == q.shape[0]


@st.composite
def distance_inputs(draw: st.DrawFn):
    """``(distances, k)``: a 2-D tensor of any dtype (sometimes 3-D), 1 <= k <= M mostly."""
    shape = draw(mostly([st.tuples(sides(6), sides(6))], [st.tuples(sides(3), sides(3), sides(2))]))
    distances = draw(tensors(draw(shape), dtypes=ALL_DTYPES))
    m = distances.shape[1]
    k = draw(
        mostly([st.integers(1, max(1, m))], [st.sampled_from((0, m + 1))]).flatmap(lambda s: s)
    )
    return distances, k


@given(
    inputs=distance_inputs(),
    chunk_size=mostly((4096, 1, 2), (0, -1)),
    as_numpy=mostly((False,), (True,)),
)
@example(inputs=(torch.tensor([[1.0, math.nan, 0.0]]), 2), chunk_size=4096, as_numpy=False)
@example(inputs=(torch.tensor([[3, 200, 1]], dtype=torch.uint8), 2), chunk_size=1, as_numpy=False)
@example(inputs=(torch.tensor([[True, False]]), 1), chunk_size=1, as_numpy=False)
@example(inputs=(torch.tensor([[1.0, 0.0]]), 1), chunk_size=1, as_numpy=True)
@example(inputs=(torch.tensor([[1.0, 0.0]]), 1), chunk_size=0, as_numpy=False)
@covers("rank_by_distance")
def test_rank_by_distance(inputs, chunk_size, as_numpy) -> None:
    """rank_by_distance: [N, k] int64, equal to np.argsort(distances, kind='stable')[:, :k] for
    every dtype (unsigned integers included) and chunk_size; NaN distances, bool and non-tensor
    input and chunk_size < 1 are refused naming the argument."""
    distances, k = inputs
    m = distances.shape[1]
    arg = distances.numpy() if as_numpy and distances.dtype != torch.bfloat16 else distances
    ranked = attempt(rank_by_distance, arg, k, chunk_size)
    valid = (
        isinstance(arg, torch.Tensor)
        and distances.dim() == 2
        and distances.dtype != torch.bool
        and 1 <= k <= m
        and chunk_size >= 1
        and not bool(torch.isnan(distances.double()).any())
    )
    if not valid:
        must_refuse(ranked, "not a 2-D real tensor, NaN, or bad k/chunk_size")
        return
    must_accept(ranked)
    expected = np.argsort(distances.double().cpu().numpy(), axis=1, kind="stable")[:, :k]
    assert ranked.dtype == torch.int64 and np.array_equal(ranked.cpu().numpy(), expected)


@given(
    k1=mostly([st.integers(1, 10**6)], [st.sampled_from((0, -3, 2.5, True, "4", None))]).flatmap(
        lambda s: s
    )
)
@example(k1=0)  # gave 1, a width for no neighbours
@example(k1="4")  # str / int: a TypeError that named no argument
@covers("half_width")
def test_half_width(k1) -> None:
    """half_width: round(k1 / 2) + 1 with NumPy's round half to even, in [1, k1] for k1 >= 2;
    anything but a positive integer is refused naming k1."""
    width = attempt(half_width, k1)
    if isinstance(k1, bool) or not isinstance(k1, int) or k1 < 1:
        must_refuse(width, "k1 not a positive integer")
        return
    must_accept(width)
    assert width == int(np.around(k1 / 2)) + 1 and 1 <= width <= max(k1, 1) + 1


# --- the k-reciprocal encoding --------------------------------------------------------------------


@st.composite
def ranked_inputs(draw: st.DrawFn):
    """A ranked list ``[N, W]`` (each row distinct sample ids, itself first unless shuffled),
    a width and a half width; sometimes broken (ids out of range, floats, widths out of range)."""
    n = draw(sides(8))
    w = draw(st.integers(1, max(1, n)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows = []
    for i in range(n):
        others = rng.permutation(np.delete(np.arange(n), i))
        row = (
            np.concatenate([[i], others]) if draw(mostly((True,), (False,))) else rng.permutation(n)
        )
        rows.append(row[:w])
    ranked = np.asarray(rows, dtype=np.int64).reshape(n, w)
    defect = draw(mostly(("none",), ("out_of_range", "negative", "float", "one_dim")))
    if defect in ("out_of_range", "negative") and not ranked.size:
        defect = "none"  # nothing to break in an empty list
    if defect == "out_of_range" and ranked.size:
        ranked.flat[0] = n
    elif defect == "negative" and ranked.size:
        ranked.flat[-1] = -1
    width = draw(
        mostly([st.integers(1, max(1, w))], [st.sampled_from((0, w + 1))]).flatmap(lambda s: s)
    )
    half = draw(
        mostly([st.integers(1, max(1, w))], [st.sampled_from((0, w + 1))]).flatmap(lambda s: s)
    )
    t = torch.from_numpy(ranked)
    if defect == "float":
        t = t.float()
    elif defect == "one_dim":
        t = t.flatten()
    width_ok = defect == "none" and 1 <= width <= w
    return t, width, half, (width_ok, width_ok and 1 <= half <= w), rng


def _expanded_reference(ranked: np.ndarray, width: int, half: int) -> set[tuple[int, int]]:
    """Steps 2-3 of reid_clustering._reference: R(i) expanded by the half sets (Eq. 6)."""
    n = ranked.shape[0]
    full = [reciprocal_neighbours(ranked, i, width) for i in range(n)]
    halves = [reciprocal_neighbours(ranked, i, half) for i in range(n)]
    pairs = set()
    for i in range(n):
        members = full[i]
        expanded = members
        for j in members:
            cand = halves[j]
            if len(np.intersect1d(cand, members)) > 2 / 3 * len(cand):
                expanded = np.append(expanded, cand)
        pairs |= {(i, int(j)) for j in np.unique(expanded)}
    return pairs


@given(
    inputs=ranked_inputs(),
    distance_kind=mostly(("uniform", "ties", "huge", "negative"), ("nan", "inf")),
    k2=st.integers(1, 3),
    rows_kind=mostly(("all", "subset"), ()),
    dense=st.booleans(),
    clip=st.booleans(),
    max_distance=mostly((None, 0.5, 0.9), ()),
)
@example(  # width 0: a ZeroDivisionError
    inputs=(torch.tensor([[0, 1], [1, 0]]), 0, 1, (False, False), np.random.default_rng(0)),
    distance_kind="uniform", k2=1, rows_kind="all", dense=True, clip=True, max_distance=None,
)  # fmt: skip
@example(  # an index out of range: torch's IndexError
    inputs=(torch.tensor([[0, 2], [1, 0]]), 2, 1, (False, False), np.random.default_rng(0)),
    distance_kind="uniform", k2=1, rows_kind="all", dense=True, clip=True, max_distance=None,
)  # fmt: skip
@example(  # NaN distances: a NaN encoding
    inputs=(torch.tensor([[0, 1], [1, 0]]), 2, 1, (True, True), np.random.default_rng(0)),
    distance_kind="nan", k2=1, rows_kind="all", dense=True, clip=True, max_distance=None,
)  # fmt: skip
@example(  # no samples: torch.cat of nothing
    inputs=(torch.zeros(0, 1, dtype=torch.long), 1, 1, (True, True), np.random.default_rng(0)),
    distance_kind="uniform", k2=1, rows_kind="all", dense=False, clip=False, max_distance=None,
)  # fmt: skip
@covers(
    "reciprocal_mask",
    "k_reciprocal_sets",
    "expanded_reciprocal_pairs",
    "k_reciprocal_encoding",
    "local_query_expansion",
    "jaccard_from_encoding",
)
def test_k_reciprocal_steps(inputs, distance_kind, k2, rows_kind, dense, clip, max_distance):
    """The k-reciprocal steps on ranked lists: reciprocal_mask and k_reciprocal_sets equal the
    reference's R(i); expanded_reciprocal_pairs equals the reference's expansion (Eq. 6), sorted,
    and relabels with a permutation of the samples; k_reciprocal_encoding rows are softmaxes of
    −d over those pairs (sum 1, in [0, 1], float64 reference); local_query_expansion is the mean
    of V over the neighbours; jaccard_from_encoding is 1 − S/(2 − S) of the dense V (clipped at 0
    when asked), 1 where no support is shared, the same dense and sparse. Broken ranked lists,
    widths and distances are refused naming the argument."""
    ranked, width, half, (width_ok, ok), rng = inputs
    mask = attempt(reciprocal_mask, ranked, width)
    sets = attempt(k_reciprocal_sets, ranked, width)
    pairs = attempt(expanded_reciprocal_pairs, ranked, width, half)
    for out in (mask, sets, pairs) if not width_ok else (pairs,) if not ok else ():
        must_refuse(out, "a broken ranked list, width or half_width")
    if not ok:
        return
    for out in (mask, sets, pairs):
        must_accept(out)
    r = ranked.numpy()
    n = r.shape[0]
    expected_sets = [reciprocal_neighbours(r, i, width) for i in range(n)]
    assert mask.dtype == torch.bool and mask.shape == (n, width)
    for i in range(n):
        assert np.array_equal(r[i, :width][mask[i].numpy()], expected_sets[i])
        assert np.array_equal(sets[i], expected_sets[i])
    rows, cols = pairs
    got = list(zip(rows.tolist(), cols.tolist(), strict=True))
    assert got == sorted(set(got)) and set(got) == _expanded_reference(r, width, half)
    perm = rng.permutation(n)
    relabelled = np.empty_like(r)
    relabelled[perm] = perm[r]
    p_rows, p_cols = expanded_reciprocal_pairs(torch.from_numpy(relabelled), width, half)
    assert set(zip(p_rows.tolist(), p_cols.tolist(), strict=True)) == {
        (int(perm[i]), int(perm[j])) for i, j in got
    }

    dist = rng.uniform(0, 4, size=(n, n))
    if distance_kind == "ties":
        dist = np.round(dist)
    elif distance_kind == "huge":
        dist = dist * 1e30
    elif distance_kind == "nan" and rows.numel():
        dist[rows[0], cols[0]] = math.nan
    elif distance_kind == "negative" and rows.numel():
        dist[rows[0], cols[0]] = -1e-7  # 2 − 2⟨x, x⟩ of a unit vector may round below 0
    elif distance_kind == "inf" and rows.numel():
        dist[rows[0], cols[0]] = math.inf
    dist_t = torch.from_numpy(dist).float()

    def pair_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return dist_t[a, b]

    encoding = attempt(k_reciprocal_encoding, ranked, pair_distance, width=width, half_width=half)
    if distance_kind in ("nan", "inf") and rows.numel():
        must_refuse(encoding, "NaN or inf distances")
        return
    must_accept(encoding)
    assert isinstance(encoding, RowSparse) and encoding.num_rows == n and encoding.num_cols == n
    v = encoding.to_dense().double().numpy()
    assert finite(v) and (v >= 0).all() and (v <= 1).all()
    sums = v.sum(axis=1)
    assert np.allclose(sums[sums > 0], 1.0, atol=1e-5)
    expected_v = np.zeros((n, n))
    d32 = dist_t.double().numpy()
    for i in range(n):
        members = cols[rows == i].numpy()
        if members.size:
            logits = -d32[i, members]
            w = np.exp(logits - logits.max())
            expected_v[i, members] = w / w.sum()
    np.testing.assert_allclose(v, expected_v, rtol=1e-5, atol=1e-6)

    k2 = min(k2, ranked.shape[1])
    expanded = attempt(local_query_expansion, encoding, ranked[:, :k2])
    must_accept(expanded)
    v_qe = expanded.to_dense().double().numpy()
    np.testing.assert_allclose(v_qe, v[r[:, :k2]].mean(axis=1), rtol=1e-5, atol=1e-6)

    which = None if rows_kind == "all" else torch.from_numpy(rng.permutation(n)[: max(1, n // 2)])
    jac = attempt(
        jaccard_from_encoding,
        expanded,
        which,
        dense=dense,
        max_distance=None if dense else max_distance,
        clip=clip,
    )
    must_accept(jac)
    picked = np.arange(n) if which is None else which.numpy()
    shared = np.minimum(v_qe[picked][:, None, :], v_qe[None, :, :]).sum(-1)
    expected_j = 1 - shared / (2 - shared)
    if clip:
        expected_j = np.maximum(expected_j, 0)
    got_j = jac.numpy() if dense else _sparse_to_dense(jac, fill=1.0)
    if not dense and max_distance is not None:
        expected_j = np.where(expected_j <= max_distance + 1e-6, expected_j, 1.0)
        got_j = np.where(got_j <= max_distance + 1e-6, got_j, 1.0)
    assert got_j.shape == (picked.size, n) and finite(got_j)
    np.testing.assert_allclose(got_j, expected_j, rtol=0, atol=2e-6)


def _sparse_to_dense(m: RowSparse, fill: float) -> np.ndarray:
    out = np.full((m.num_rows, m.num_cols), fill, dtype=np.float64)
    out[m.row_ids().numpy(), m.indices.numpy()] = m.values.double().numpy()
    return out


@given(shape=st.tuples(sides(5), sides(5)), seed=st.integers(0, 2**32 - 1))
@covers("RowSparse")
def test_row_sparse(shape, seed) -> None:
    """RowSparse.from_sorted_coo: to_dense equals the entries given (explicit zeros kept),
    to_scipy().toarray() equals to_dense(), transpose() is the transposed matrix and twice the
    original, transpose_with_positions says where each entry went."""
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=shape) * (rng.uniform(size=shape) < 0.4)
    present = rng.uniform(size=shape) < 0.5
    rows, cols = np.nonzero(present)
    values = torch.from_numpy(dense[rows, cols]).float()
    m = RowSparse.from_sorted_coo(torch.from_numpy(rows), torch.from_numpy(cols), values, shape)
    expected = np.zeros(shape, dtype=np.float32)
    expected[rows, cols] = values.numpy()
    assert m.num_rows == shape[0] and m.num_cols == shape[1] and m.nnz == rows.size
    assert np.array_equal(m.to_dense().numpy(), expected)
    assert np.array_equal(m.to_scipy().toarray(), expected) and m.to_scipy().nnz == rows.size
    t, where = m.transpose_with_positions()
    assert np.array_equal(t.to_dense().numpy(), expected.T)
    assert torch.equal(t.values[where], m.values)
    back = t.transpose()
    assert torch.equal(back.indptr, m.indptr) and torch.equal(back.indices, m.indices)
    assert torch.equal(m.row_counts(), torch.from_numpy(present.sum(1)))


# --- the Jaccard distance and DBSCAN --------------------------------------------------------------


@st.composite
def jaccard_inputs(draw: st.DrawFn, high: int, kinds=None):
    """``(features [N, D], k1, k2)`` with ``2 <= N <= high``; k1/k2 sometimes out of range."""
    n, d = draw(sides(high, low=2)), draw(sides(4))
    x = draw(features((n, d), kinds=kinds))
    k1 = draw(
        mostly(
            [st.integers(1, max(1, min(n - 1, 6)))], [st.sampled_from((0, n, True, 2.0))]
        ).flatmap(lambda s: s)
    )
    k1_int = k1 if isinstance(k1, int) and not isinstance(k1, bool) and k1 >= 1 else 1
    k2 = draw(
        mostly([st.integers(1, k1_int)], [st.sampled_from((0, k1_int + 1))]).flatmap(lambda s: s)
    )
    return x, k1, k2


def _k_valid(k1: object, k2: object, n: int) -> bool:
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (k1, k2))
    return ints and 1 <= k2 <= k1 < n  # type: ignore[operator]


@given(
    inputs=jaccard_inputs(10),
    sparse=st.booleans(),
    max_distance=mostly((None, 0.6), ()),
    normalize=mostly((True,), (False,)),
    knn_precision=mostly(("auto", "exact"), ()),
)
@example(  # normalize=False, 1e29: the inner products overflowed, the distances were NaN
    inputs=(torch.tensor([[1.2573e29], [-1.3210e29]]), 1, 1),
    sparse=False,
    max_distance=None,
    normalize=False,
    knn_precision="auto",
)
@example(  # the reference loops crashed on a sample without reciprocal neighbours (V[2] = 0)
    inputs=(torch.tensor([[0.1257], [-0.1321], [0.6404]]), 1, 1),
    sparse=False,
    max_distance=None,
    normalize=True,
    knn_precision="exact",
)
@covers("compute_jaccard_distance")
def test_compute_jaccard_distance(inputs, sparse, max_distance, normalize, knn_precision):
    """compute_jaccard_distance: [N, N] float32 (numpy for numpy input), finite, in [0, 1],
    exactly symmetric; equal to the reference loops (reid_clustering._reference) on the same
    neighbours; the sparse result holds the same values (missing = 1); permuting the samples
    permutes the matrix when the similarities have no ties."""
    x, k1, k2 = inputs
    n = x.shape[0]
    kwargs = {"sparse": sparse, "normalize": normalize, "knn_precision": knn_precision}
    if sparse:
        kwargs["max_distance"] = max_distance
    result = attempt(compute_jaccard_distance, x, k1, k2, **kwargs)
    t = _as32(x)
    valid = t is not None and _k_valid(k1, k2, n)
    if valid and normalize:
        valid = bool((t.abs().amax(dim=1) > 0).all())
    if not valid:
        must_refuse(result, "bad features, zero rows or bad k1/k2")
        return
    unit = l2_normalize_rows(t) if normalize else t
    if normalize or _moderate(t):
        must_accept(result)
    if refused(result):
        return
    if sparse:
        assert isinstance(result, scipy.sparse.csr_matrix) and result.shape == (n, n)
        coo = result.tocoo()
        jac = np.ones((n, n), dtype=np.float64)
        jac[coo.row, coo.col] = coo.data
        if max_distance is not None:
            assert (coo.data <= max_distance).all()
    else:
        assert isinstance(result, np.ndarray if isinstance(x, np.ndarray) else torch.Tensor)
        jac = np.asarray(result.cpu() if isinstance(result, torch.Tensor) else result, np.float64)
        assert result.dtype in (np.float32, torch.float32) and jac.shape == (n, n)
        assert np.array_equal(jac, jac.T)
    assert finite(jac) and (jac >= 0).all() and (jac <= 1).all()
    if not normalize:
        return
    ranked = knn_search(unit, k=k1, precision="exact").indices.numpy()
    expected = plain_jaccard_distance(unit.numpy(), k1, k2, ranked=ranked).astype(np.float64)
    if sparse and max_distance is not None:
        expected = np.where(expected <= max_distance, expected, 1.0)
        jac = np.where(np.isclose(expected, 1.0, atol=2e-5), 1.0, jac)
    np.testing.assert_allclose(jac, expected, rtol=0, atol=2e-5)
    if not sparse:
        sims = (unit.double() @ unit.double().T).numpy()
        if separated(sims, 1e-4):
            perm = np.random.default_rng(n).permutation(n)
            again = compute_jaccard_distance(unit[perm], k1, k2, knn_precision=knn_precision)
            np.testing.assert_allclose(again.numpy(), jac[np.ix_(perm, perm)], rtol=0, atol=1e-6)


@given(
    inputs=jaccard_inputs(12, kinds=ORDINARY_KINDS + ("huge", "tiny")),
    eps=mostly((0.3, 0.5, 0.7, 0.9, 1.0), (0.0, -1.0, math.nan, "x")),
    min_samples=mostly((1, 2, 3, 4), (0, True)),
    sparse=mostly((None, True, False), ()),
    normalize=mostly((True,), (False,)),
)
@example(  # sample 2's own list holds only its lower-index duplicate 0, so J[2, 2] = 1: the
    # sparse path made it its own neighbour (a cluster with min_samples=1), the dense one not
    inputs=(torch.tensor([[0.1257], [-0.1321], [0.6404]]), 1, 1),
    eps=0.3,
    min_samples=1,
    sparse=True,
    normalize=True,
)
@covers("dbscan_pseudo_labels", "dbscan_clustering", "DBSCANResult", "NoClustersWarning")
def test_dbscan(inputs, eps, min_samples, sparse, normalize) -> None:
    """dbscan_pseudo_labels: int64 [N] labels, -1 for outliers and 0..C-1 all used; equal to
    scikit-learn's DBSCAN on compute_jaccard_distance; the same on the sparse and the dense
    path; NoClustersWarning exactly when all are outliers. dbscan_clustering: the same labels,
    the ranking knn_search gives its features, and those features (unit rows with normalize)."""
    x, k1, k2 = inputs
    n, d = x.shape
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = attempt(
            dbscan_pseudo_labels, x, eps, min_samples, k1, k2, sparse=sparse, normalize=normalize
        )
    t = _as32(x)
    eps_ok = isinstance(eps, float) and math.isfinite(eps) and eps > 0
    valid = (
        t is not None
        and _k_valid(k1, k2, n)
        and eps_ok
        and not isinstance(min_samples, bool)
        and min_samples >= 1
        and not (sparse and eps >= 1)
        and (not normalize or bool((t.abs().amax(dim=1) > 0).all()))
    )
    if not valid:
        must_refuse(labels, "bad features, eps, min_samples, k1 or k2")
        return
    if normalize or _moderate(t):
        must_accept(labels)
    if refused(labels):
        return
    assert isinstance(labels, np.ndarray) and labels.dtype == np.int64 and labels.shape == (n,)
    clusters = sorted(set(labels.tolist()) - {-1})
    assert clusters == list(range(len(clusters))) and labels.min() >= -1
    warned = any(issubclass(w.category, NoClustersWarning) for w in caught)
    assert warned == (not clusters)
    distance = compute_jaccard_distance(t, k1, k2, normalize=normalize).numpy()
    expected = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(distance)
    assert np.array_equal(labels, expected)
    if eps < 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoClustersWarning)
            other = dbscan_pseudo_labels(
                x, eps, min_samples, k1, k2, sparse=not (sparse or n > SPARSE_THRESHOLD),
                normalize=normalize,
            )  # fmt: skip
        assert np.array_equal(other, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoClustersWarning)
        found = dbscan_clustering(x, eps, min_samples, k1, k2, sparse=sparse, normalize=normalize)
    assert isinstance(found, DBSCANResult) and np.array_equal(found.labels, labels)
    assert found.features.dtype == torch.float32 and found.features.shape == (n, d)
    assert torch.equal(found.ranked, knn_search(found.features, k=k1).indices)
    if normalize:
        norms = found.features.double().norm(dim=1)
        torch.testing.assert_close(norms, torch.ones(n, dtype=torch.float64), rtol=0, atol=1e-6)


# --- summaries: cluster statistics and label quality ----------------------------------------------

LABEL_FORMS = ("numpy", "int32", "torch", "list", "uint8", "bfloat16", "float", "bool", "2d")


def _label_form(values: np.ndarray, form: str):
    if form == "numpy":
        return values
    if form == "int32":
        return values.astype(np.int32)
    if form == "torch":
        return torch.from_numpy(values)
    if form == "list":
        return values.tolist()
    if form == "uint8":
        return np.abs(values).astype(np.uint8)
    if form == "bfloat16":
        return torch.from_numpy(values).to(torch.bfloat16)
    if form == "float":
        return values.astype(np.float64)
    if form == "bool":
        return values > 0
    return values.reshape(1, -1)


def _plain_labels(form: str, values: np.ndarray) -> np.ndarray | None:
    if form in ("bfloat16", "float", "bool", "2d"):
        return None
    return np.abs(values) if form == "uint8" else values


@given(
    values=st.lists(st.integers(-2, 5), max_size=12).map(np.asarray),
    form=mostly(LABEL_FORMS[:5], LABEL_FORMS[5:]),
)
@example(values=np.asarray([]), form="list")  # [] reads as float64: it was refused
@example(values=np.asarray([0, -1, 1]), form="bfloat16")  # was torch's TypeError from .numpy()
@covers("cluster_statistics", "ClusterStats")
def test_cluster_statistics(values, form) -> None:
    """cluster_statistics: counts equal a Counter of the labels (clusters, outliers, size
    histogram, largest/smallest/mean size); labels < -1, non-integer or 2-D labels are refused
    naming labels; ClusterStats.summary() is one line."""
    values = values.astype(np.int64)
    stats = attempt(cluster_statistics, _label_form(values, form))
    plain = _plain_labels(form, values)
    if plain is None or (plain.size and plain.min() < -1):
        must_refuse(stats, "labels not 1-D integers >= -1")
        return
    must_accept(stats)
    assert isinstance(stats, ClusterStats)
    sizes = Counter(v for v in plain.tolist() if v >= 0)
    assert stats.num_samples == plain.size and stats.num_clusters == len(sizes)
    assert stats.num_outliers == int((plain == -1).sum())
    assert stats.size_histogram == dict(sorted(Counter(sizes.values()).items()))
    assert stats.largest == max(sizes.values(), default=0)
    assert stats.smallest == min(sizes.values(), default=0)
    assert stats.mean_size == pytest.approx(np.mean(list(sizes.values())) if sizes else 0.0)
    assert 0 <= stats.outlier_fraction <= 1 and "\n" not in stats.summary()


def _pairwise(pred: np.ndarray, true: np.ndarray) -> tuple[float, float, float]:
    """Pairwise precision, recall and F1 by counting every pair of samples."""
    together = same_pred = same_true = 0
    for i in range(pred.size):
        for j in range(i + 1, pred.size):
            p, t = pred[i] == pred[j], true[i] == true[j]
            together += p and t
            same_pred += p
            same_true += t
    precision = together / same_pred if same_pred else 1.0
    recall = together / same_true if same_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@given(
    pairs=st.lists(st.tuples(st.integers(-1, 4), st.integers(0, 4)), max_size=12),
    pred_form=mostly(LABEL_FORMS[:3], ("bfloat16", "float", "2d")),
    true_form=mostly(LABEL_FORMS[:3], ("bool",)),
    outliers=mostly(("singleton", "exclude"), ("drop",)),
    extra=mostly((0,), (1,)),
    seed=st.integers(0, 2**16),
)
@example(pairs=[(0, 0), (1, 1)], pred_form="bfloat16", true_form="numpy", outliers="exclude",
         extra=0, seed=0)  # fmt: skip  # was torch's TypeError from .numpy()
@covers("pseudo_label_quality", "LabelQuality")
def test_pseudo_label_quality(pairs, pred_form, true_form, outliers, extra, seed) -> None:
    """pseudo_label_quality: NMI, pairwise precision/recall/F1 in [0, 1], ARI in [-1, 1]; the
    pairwise scores equal counting every pair (outliers as singletons or left out); NMI and ARI
    are scikit-learn's on those labels; the same for the samples permuted and for the clusters
    renamed; mismatched lengths and non-integer labels are refused."""
    pred = np.asarray([p for p, _ in pairs], dtype=np.int64)
    true = np.asarray([t for _, t in pairs] + [0] * extra, dtype=np.int64)
    quality = attempt(
        pseudo_label_quality,
        _label_form(pred, pred_form),
        _label_form(true, true_form),
        outliers=outliers,
    )
    if (
        _plain_labels(pred_form, pred) is None
        or _plain_labels(true_form, true) is None
        or extra
        or outliers == "drop"
    ):
        must_refuse(quality, "bad labels, lengths or outliers mode")
        return
    must_accept(quality)
    assert isinstance(quality, LabelQuality) and quality.as_dict()["outliers"] == outliers
    for value in (quality.nmi, quality.pairwise_precision, quality.pairwise_recall):
        assert 0 <= value <= 1
    assert 0 <= quality.pairwise_f1 <= 1 and -1 <= quality.ari <= 1
    keep = pred != -1
    assert quality.num_outliers == int((~keep).sum())
    assert quality.num_clusters == len(set(pred[keep].tolist()))
    assert quality.num_identities == len(set(true.tolist()))
    if outliers == "exclude":
        p, t = pred[keep], true[keep]
    else:
        p = pred.copy()
        p[~keep] = pred.max(initial=-1) + 1 + np.arange(int((~keep).sum()))
        t = true
    if p.size:
        expected = _pairwise(p, t)
        got = (quality.pairwise_precision, quality.pairwise_recall, quality.pairwise_f1)
        assert got == pytest.approx(expected, abs=1e-12)
        assert quality.nmi == pytest.approx(normalized_mutual_info_score(t, p), abs=1e-12)
        assert quality.ari == pytest.approx(adjusted_rand_score(t, p), abs=1e-12)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(pred.size)
    renamed = np.where(pred >= 0, rng.permutation(5)[np.maximum(pred, 0)], -1)
    for a, b in ((pred[perm], true[perm]), (renamed, true)):
        other = pseudo_label_quality(a, b, outliers=outliers)
        assert other.as_dict() == pytest.approx(quality.as_dict(), abs=1e-12)


# --- per-camera and per-cluster means -------------------------------------------------------------


@given(
    x=tensors(st.tuples(sides(8), sides(4)), dtypes=ALL_DTYPES),
    cameras=sides(3),
    camid_form=mostly(("int64", "int32", "shifted"), ("short", "float", "2d")),
    seed=st.integers(0, 2**16),
)
@example(  # 1e30: the norms overflowed and every row became zeros
    x=torch.tensor([[1e30, 2e30], [3e30, -1e30], [2e30, 2e30]]), cameras=1, camid_form="int64",
    seed=0,
)  # fmt: skip
@example(  # one camera id short: torch's IndexError
    x=torch.eye(3), cameras=2, camid_form="short", seed=0
)
@example(x=torch.zeros(0, 2), cameras=1, camid_form="int64", seed=0)  # max() of nothing
@example(  # subnormal rows: F.normalize's squares underflowed, the rows were far from unit norm
    x=torch.tensor([[1e-40, 2e-40], [3e-40, 0.0], [5e-41, 1e-40]]), cameras=2,
    camid_form="int64", seed=0,
)  # fmt: skip
@covers("camera_debiased")
def test_camera_debiased(x, cameras, camid_form, seed) -> None:
    """camera_debiased: [N, D] rows of unit norm (zero rows where the feature is zero), finite;
    equal in float64 to each row minus its camera's mean (single-image cameras and rows equal to
    their mean kept), L2-normalised; permuting the samples permutes the rows."""
    n, d = x.shape
    rng = np.random.default_rng(seed)
    cam = rng.integers(0, max(cameras, 1), size=n)
    camids = {
        "int64": torch.from_numpy(cam),
        "int32": torch.from_numpy(cam).int(),
        "shifted": torch.from_numpy(cam * 7 - 3),
        "short": torch.from_numpy(cam[:-1] if n else np.zeros(1, dtype=np.int64)),
        "float": torch.from_numpy(cam).double(),
        "2d": torch.from_numpy(cam).view(1, -1),
    }[camid_form].to(x.device)
    out = attempt(camera_debiased, x, camids)
    valid = (
        x.is_floating_point()
        and x.dim() == 2
        and finite(x)
        and camid_form in ("int64", "int32", "shifted")
        and not (camid_form == "short" and n == 0)
    )
    if not valid:
        must_refuse(out, "bad feats or camids")
        return
    must_accept(out)
    assert out.shape == (n, d) and out.dtype == x.dtype and finite(out)
    if out.numel() == 0:
        return
    x64 = x.double().cpu()
    scale = x64.abs().amax(dim=1, keepdim=True).clamp_min(1e-300)
    xs = x64 / scale  # each row at unit peak: exact normalisation in float64
    norms = out.double().norm(dim=1)
    zero = norms == 0  # only where the row fell back to a zero feature
    tol = 64 * torch.finfo(x.dtype).eps
    assert bool((x64[zero] == 0).all())
    torch.testing.assert_close(norms[~zero], torch.ones_like(norms[~zero]), rtol=0, atol=tol)
    if x.dtype in (torch.float16, torch.bfloat16) or not _moderate_rows(x64):
        return
    expected = xs.clone()
    for c in np.unique(cam):
        members = torch.from_numpy(np.flatnonzero(cam == c))
        if members.numel() > 1:
            expected[members] = x64[members] - x64[members].mean(dim=0)
    empty = expected.norm(dim=1) <= 1e-6 * x64.norm(dim=1)
    expected[empty] = x64[empty]
    expected = torch.nn.functional.normalize(expected, dim=1)
    borderline = (expected.norm(dim=1) - 1e-6 * x64.norm(dim=1)).abs() < 1e-4
    ok = ~borderline
    torch.testing.assert_close(out.double()[ok], expected[ok], rtol=0, atol=1e-4)
    perm = torch.from_numpy(rng.permutation(n))
    torch.testing.assert_close(
        camera_debiased(x[perm], camids[perm]).double(), out.double()[perm], rtol=0, atol=1e-4
    )


def _moderate_rows(x64: torch.Tensor) -> bool:
    peak = x64.abs().amax(dim=1)
    return (
        bool(((peak == 0) | ((peak > 1e-10) & (peak < 1e10))).all())
        and float(peak.max() / peak[peak > 0].min() if bool((peak > 0).any()) else 1.0) < 1e6
    )


@given(
    x=tensors(
        mostly(
            [st.tuples(sides(8), sides(3)), st.tuples(sides(8), sides(3), sides(3))],
            [st.tuples(sides(8))],
        ).flatmap(lambda s: s),
        dtypes=ALL_DTYPES,
    ),
    num_clusters=mostly((0, 1, 2, 3), (-1, 2.0, True)),
    bad_label=mostly((False,), (True,)),
    label_form=mostly(("int64", "int32"), ("float", "short")),
    seed=st.integers(0, 2**16),
)
@example(  # a label >= num_clusters: torch's RuntimeError from index_add_
    x=torch.eye(2), num_clusters=1, bad_label=True, label_form="int64", seed=0
)
@example(  # float16 sums of 6e4 overflowed: the centroid was inf
    x=torch.full((3, 1), 6e4, dtype=torch.float16), num_clusters=1, bad_label=False,
    label_form="int64", seed=0,
)  # fmt: skip
@covers("cluster_centroids")
def test_cluster_centroids(x, num_clusters, bad_label, label_form, seed):
    """cluster_centroids: [K, D] or [K, P, D] with the features' dtype, finite; each row the
    float64 mean of its cluster's rows (zero for an empty cluster, outliers left out); the same
    for the samples permuted; labels >= num_clusters, bad labels and NaN features refused."""
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    k = num_clusters if isinstance(num_clusters, int) and not isinstance(num_clusters, bool) else 1
    labels = rng.integers(-1, max(k, 0), size=n) if k > 0 else np.full(n, -1)
    if bad_label and n:
        labels[0] = max(k, 0)
    lab = torch.from_numpy(labels)
    lab = {"int64": lab, "int32": lab.int(), "float": lab.double(), "short": lab[:-1]}[label_form]
    out = attempt(cluster_centroids, x, lab.to(x.device), num_clusters)
    valid = (
        x.is_floating_point()
        and x.dim() in (2, 3)
        and finite(x)
        and (label_form in ("int64", "int32") or (label_form == "short" and n == 0))
        and isinstance(num_clusters, int)
        and not isinstance(num_clusters, bool)
        and num_clusters >= 0
        and not (bad_label and n)
    )
    if not valid:
        must_refuse(out, "bad features, labels or num_clusters")
        return
    must_accept(out)
    assert out.shape == (k, *x.shape[1:]) and out.dtype == x.dtype
    x64 = x.double().cpu()
    expected = torch.zeros((k, *x.shape[1:]), dtype=torch.float64)
    for c in range(k):
        members = torch.from_numpy(np.flatnonzero(labels == c))
        if members.numel():
            expected[c] = x64[members].mean(dim=0)
    rel = 16 * n * torch.finfo(x.dtype).eps
    tol = rel * (float(x64.abs().max()) if x64.numel() else 1.0)
    assert finite(out)
    torch.testing.assert_close(out.double().cpu(), expected, rtol=rel, atol=tol)
    perm = torch.from_numpy(rng.permutation(n))
    again = cluster_centroids(x[perm.to(x.device)], lab[perm].to(x.device), k)
    torch.testing.assert_close(again.double().cpu(), expected, rtol=rel, atol=tol)
