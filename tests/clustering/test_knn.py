from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from reid_clustering import _knn_bf16, faiss_available, knn_search, rank_by_distance
from reid_clustering import knn as knn_module
from reid_clustering._pairwise import dot_error_bound, pair_dot
from reid_clustering._reference import plain_knn
from tests.clustering.oracle import assert_knn_separated, clustered_features


def test_self_search_finds_itself_first_and_matches_brute_force() -> None:
    x, _ = clustered_features(6, 10, seed=1)
    result = knn_search(x, k=7)
    assert result.indices.dtype == torch.int64 and result.similarities.dtype == torch.float32
    assert result.indices.shape == (60, 7)
    assert torch.equal(result.indices[:, 0], torch.arange(60))
    # plain_knn ranks by a numpy (BLAS) matmul, knn_search by pair_dot: the same order only
    # where no two of the first 8 similarities of a row are within rounding of each other.
    assert_knn_separated(x, range(1, 8))
    assert np.array_equal(result.indices.numpy(), plain_knn(x, 7))
    # The similarities are pair_dot's: within its bound of the exact inner products (float64).
    x64 = x.astype(np.float64)
    exact = np.take_along_axis(x64 @ x64.T, result.indices.numpy(), axis=1)
    rel, absolute = dot_error_bound(x.shape[1])
    norms = np.linalg.norm(x64, axis=1)
    bound = rel * norms[:, None] * norms[result.indices.numpy()] + absolute
    assert (np.abs(result.similarities.numpy() - exact) <= bound).all()
    assert bool((result.similarities[:, :-1] >= result.similarities[:, 1:]).all())


def test_chunk_size_does_not_change_the_result() -> None:
    x, _ = clustered_features(5, 8, seed=2)
    whole = knn_search(x, k=5)
    for chunk in (1, 3, 40, 1000):
        part = knn_search(x, k=5, chunk_size=chunk)
        assert torch.equal(part.indices, whole.indices)


def test_ties_are_ordered_by_database_index() -> None:
    db = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    q = torch.tensor([[1.0, 0.0]])
    assert knn_search(q, db, k=4).indices.tolist() == [[0, 2, 4, 1]]


def test_query_against_database_and_numpy_torch_agree() -> None:
    x, _ = clustered_features(4, 10, seed=3)
    a = knn_search(x[:7], x, k=3)
    b = knn_search(torch.from_numpy(x[:7]), torch.from_numpy(x), k=3)
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.indices[:, 0], torch.arange(7))


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu not installed")
def test_torch_and_faiss_cpu_backends_agree() -> None:
    x, _ = clustered_features(10, 12, dim=48, seed=1)
    # faiss ranks by a BLAS sgemm, the torch backend by pair_dot: the same order only where the
    # data leaves no near-ties among the first 11 similarities of a row (checked, exactly).
    assert_knn_separated(x, range(1, 11))
    ours = knn_search(x, k=10, backend="torch")
    theirs = knn_search(x, k=10, backend="faiss-cpu")
    assert torch.equal(ours.indices, theirs.indices)
    # Unit vectors, D = 48: each side is within γ_48 ≈ 2.9e-6 of the exact inner product.
    torch.testing.assert_close(ours.similarities, theirs.similarities, rtol=0, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_backend_stays_on_the_gpu() -> None:
    x, _ = clustered_features(4, 10, seed=5)
    gpu = knn_search(torch.from_numpy(x).cuda(), k=5)
    assert gpu.indices.is_cuda
    assert torch.equal(gpu.indices.cpu(), knn_search(x, k=5).indices)


def test_missing_faiss_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)
    x, _ = clustered_features(2, 5)
    with pytest.raises(ImportError, match=r"reid-clustering\[faiss-cpu\]"):
        knn_search(x, k=2, backend="faiss-cpu")
    with pytest.raises(ImportError, match=r"reid-clustering\[faiss-gpu\]"):
        knn_search(x, k=2, backend="faiss-gpu")
    assert not faiss_available()
    # "auto" falls back to torch without faiss.
    assert knn_search(x, k=2, backend="auto").indices.shape == (10, 2)


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu not installed")
@pytest.mark.skipif(faiss_available(gpu=True), reason="a GPU faiss build is present")
def test_faiss_gpu_without_a_gpu_is_a_clear_error() -> None:
    x, _ = clustered_features(2, 5)
    with pytest.raises(ImportError, match="GPU build of faiss"):
        knn_search(x, k=2, backend="faiss-gpu")


@pytest.mark.parametrize(
    ("query", "kwargs", "message"),
    [
        (np.zeros((4, 3, 2), np.float32), {"k": 1}, "must be 2-D"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), {"k": 1}, "NaN or inf in 1 of 2 rows"),
        (np.eye(3), {"k": 4}, "exceeds the database size 3"),
        (np.eye(3), {"k": 0}, "k must be >= 1"),
        (np.eye(3), {"k": 1, "backend": "annoy"}, "unknown kNN backend"),
        (np.eye(3), {"k": 1, "database": np.eye(4)}, "dimensions differ"),
        (np.eye(3), {"k": 1, "database": torch.eye(3, device="meta")}, "move both to one device"),
        (np.zeros((0, 3)), {"k": 1}, "is empty"),
        ("features", {"k": 1}, "numpy array or a torch tensor"),
    ],
)
def test_bad_input_is_named(query: object, kwargs: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        knn_search(query, **kwargs)


def test_rank_by_distance_is_a_stable_argsort() -> None:
    rng = np.random.default_rng(0)
    d = rng.integers(0, 5, size=(37, 23)).astype(np.float32)  # many ties
    expected = np.argsort(d, axis=1, kind="stable")[:, :6]
    for chunk in (1, 5, 4096):
        got = rank_by_distance(torch.from_numpy(d), 6, chunk_size=chunk)
        assert np.array_equal(got.numpy(), expected)
    with pytest.raises(ValueError, match="exceeds the number of columns"):
        rank_by_distance(torch.from_numpy(d), 24)


# --- the ranking values: pair_dot, the same bits for any batch, chunking or BLAS ----------------


def _brute_force(x: np.ndarray | torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition: every pair scored by pair_dot, per row (value desc, index asc)."""
    x = torch.as_tensor(x)
    n = x.shape[0]
    rows, cols = torch.arange(n).repeat_interleave(n), torch.arange(n).repeat(n)
    vals = pair_dot(x, x, rows, cols).view(n, n)
    order = vals.sort(dim=1, descending=True, stable=True).indices[:, :k]  # stable: index asc
    return vals.gather(1, order), order


def test_pair_dot_sums_in_the_documented_tree_order() -> None:
    # D = 3: the tree adds p0 + p2 first, then p1. With p = (2⁻²⁴, 1, 2⁻²⁴) that gives
    # 2⁻²³ + 1 = 1 + 2⁻²³ exactly, where a left-to-right sum would round (2⁻²⁴ + 1) down to 1.
    a = torch.tensor([[2.0**-24, 1.0, 2.0**-24]])
    one = torch.ones(1, 3)
    got = pair_dot(a, one, torch.tensor([0]), torch.tensor([0]))
    assert got.item() == 1 + 2.0**-23
    # D = 4: (p0 + p2) + (p1 + p3).
    b = torch.tensor([[1.0, 2.0**-24, -1.0, 2.0**-24]])
    assert pair_dot(b, torch.ones(1, 4), torch.tensor([0]), torch.tensor([0])).item() == 2.0**-23


@pytest.mark.parametrize("dim", [1, 2, 3, 5, 48, 257, 2048])
def test_pair_dot_is_within_its_bound_and_independent_of_the_batch(dim: int) -> None:
    g = torch.Generator().manual_seed(dim)
    x = torch.randn(40, dim, generator=g) * 10.0 ** torch.randint(-3, 4, (40, 1), generator=g)
    rows = torch.randint(0, 40, (500,), generator=g)
    cols = torch.randint(0, 40, (500,), generator=g)
    got = pair_dot(x, x, rows, cols)
    exact = (x.double()[rows] * x.double()[cols]).sum(1)
    rel, absolute = dot_error_bound(dim)
    bound = rel * (x.double()[rows].abs() * x.double()[cols].abs()).sum(1) + absolute
    assert bool(((got.double() - exact).abs() <= bound).all())
    # The same pair gives the same bits in any batch: reversed, one by one, in small chunks.
    perm = torch.arange(499, -1, -1)
    assert torch.equal(pair_dot(x, x, rows[perm], cols[perm]), got[perm])
    singles = torch.cat([pair_dot(x, x, rows[t : t + 1], cols[t : t + 1]) for t in range(20)])
    assert torch.equal(singles, got[:20])
    assert pair_dot(x, x, rows[:0], cols[:0]).shape == (0,)


def test_exact_search_is_the_pair_dot_ranking() -> None:
    for k, data in ((7, _near_ties()), (31, clustered_features(25, 17, dim=64, seed=11)[0])):
        values, indices = _brute_force(data, k)
        for chunk in (None, 1, 37, 64):
            got = knn_search(data, k=k, precision="exact", chunk_size=chunk)
            assert torch.equal(got.indices, indices)
            assert torch.equal(got.similarities, values)
        q = knn_search(data[:50], data, k=k)  # query against database: the same definition
        assert torch.equal(q.indices, indices[:50])
        assert torch.equal(q.similarities, values[:50])


def test_rows_with_more_ties_than_kept_candidates_are_recomputed() -> None:
    # 60 copies of one vector: their rows have 60 tied values, more than the k + 8 kept from the
    # blocks, so they are recomputed as whole rows; ties go to the lower index.
    x, _ = clustered_features(10, 10, dim=32, seed=5)
    x = np.concatenate([np.repeat(x[:1], 60, axis=0), x])
    got = knn_search(x, k=5, precision="exact", chunk_size=16)
    values, indices = _brute_force(x, 5)
    assert torch.equal(got.indices, indices) and torch.equal(got.similarities, values)
    assert got.indices[:60].tolist() == [[0, 1, 2, 3, 4]] * 60


def test_reduced_precision_matmuls_do_not_change_the_result() -> None:
    x, _ = clustered_features(20, 12, dim=48, seed=8)
    expected = knn_search(x, k=9, precision="exact")
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")  # matmuls may round inputs: wider windows
    try:
        assert not knn_module._fp32_matmul_is_ieee(torch.device("cpu"))
        _assert_identical(knn_search(x, k=9, precision="exact"), expected)
        _assert_identical(knn_search(x, k=9, precision="bf16-candidates"), expected)
    finally:
        torch.set_float32_matmul_precision(previous)


def test_norms_that_overflow_float32_products_are_refused() -> None:
    x = np.eye(4, dtype=np.float32) * 1e19
    with pytest.raises(ValueError, match="overflow float32"):
        knn_search(x, k=2)
    assert knn_search(x / 1e19, k=2).indices[:, 0].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("scale", [1e-25, 1e-12, 1e12, 1e15])
def test_tiny_and_large_features_are_rescaled_exactly(scale: float) -> None:
    # Inner products of features around 1e-25 underflow float32 and those around 1e15 are
    # beyond the bound's range; scaling by a power of two first keeps the neighbours exact.
    x, _ = clustered_features(6, 10, dim=16, seed=12)
    expected = knn_search(x, k=5)
    got = knn_search(x * np.float32(scale), k=5)
    assert torch.equal(got.indices, expected.indices)
    q = knn_search(x[:7] * np.float32(scale), x, k=5)
    assert torch.equal(q.indices, expected.indices[:7])


# --- precision="bf16-candidates": bf16 candidates, certified, ranked like the exact path -------


def _both(x: np.ndarray | torch.Tensor, k: int, **kwargs: object) -> tuple:
    fast = knn_search(x, k=k, precision="bf16-candidates", **kwargs)
    exact = knn_search(x, k=k, precision="exact", **kwargs)
    return fast, exact


def _assert_identical(fast: object, exact: object) -> None:
    # Both rank their candidates with pair_dot: equal by construction, bit for bit.
    assert torch.equal(fast.indices, exact.indices)
    assert torch.equal(fast.similarities, exact.similarities)


def _fast_stats(x: np.ndarray | torch.Tensor, k: int) -> dict:
    """Run the bf16 path directly; fail if it declined (it must not on these inputs)."""
    x = torch.as_tensor(x)
    bounds = knn_module._Bounds.of(x, x)
    found = _knn_bf16.certified_candidates(x, k, bounds.pair_dot_error(x.shape[1]))
    assert found is not None, "the bf16 path declined"
    knn_module._from_bf16_candidates(x, k, found, bounds)
    return found.stats


def _near_ties(seed: int = 0) -> np.ndarray:
    """Exact duplicates, copies differing in one ulp, and rows tied by symmetry."""
    rng = np.random.default_rng(seed)
    x, _ = clustered_features(12, 15, dim=48, noise=0.3, seed=seed)
    dup = x[rng.integers(0, len(x), 20)]  # exact duplicates: tied similarities everywhere
    ulp = dup.copy()
    ulp[:, 0] = np.nextafter(ulp[:, 0], np.float32(2))  # differ in the last bit only
    swap = x[:10].copy()
    swap[:, [1, 2]] = swap[:, [2, 1]]  # same multiset of coordinates, other pairings
    return np.concatenate([x, dup, ulp, swap]).astype(np.float32)


@pytest.mark.parametrize(
    ("name", "k", "chunk_size"),
    [
        ("clustered", 7, None),
        ("clustered", 31, None),
        ("clustered", 31, 64),
        ("clustered", 10, 37),
        ("clustered", 5, 16),
        ("shuffled", 31, 100),
        ("scaled", 12, None),  # not normalised, norms from 1e-3 to 1e3
        ("near_ties", 9, None),
        ("near_ties", 25, 32),
        ("far", 180, None),  # k-th neighbour below zero similarity
    ],
)
def test_bf16_candidates_equal_the_exact_search(name: str, k: int, chunk_size: int | None) -> None:
    rng = np.random.default_rng(7)
    if name == "near_ties":
        x = _near_ties()
    elif name == "far":
        x = rng.standard_normal((200, 64)).astype(np.float32)
    else:
        x, _ = clustered_features(25, 17, dim=64, seed=11)  # 425 rows
        if name == "shuffled":
            x = x[rng.permutation(len(x))]
        elif name == "scaled":
            x = x * (10.0 ** rng.uniform(-3, 3, size=(len(x), 1))).astype(np.float32)
    fast, exact = _both(x, k, chunk_size=chunk_size)
    _assert_identical(fast, exact)
    stats = _fast_stats(x, k)
    assert stats["failed_checks"] == 0
    assert stats["candidates"] >= k * (stats["rows"] - stats["fallback_rows"])


def test_bf16_candidates_ties_are_ordered_by_index() -> None:
    x = _near_ties(seed=3)
    fast, exact = _both(x, 12)
    _assert_identical(fast, exact)
    s = fast.similarities
    tied = s[:, :-1] == s[:, 1:]
    assert bool(tied.any())  # the data has ties, and inside each one indices ascend
    assert bool((fast.indices[:, :-1][tied] < fast.indices[:, 1:][tied]).all())


def test_bf16_candidates_fall_back_to_whole_rows_on_duplicates() -> None:
    # 150 copies of one vector: their rows have 150 exactly tied candidates, more than the cap
    # (2k + 64 = 74 here), so they are recomputed as whole float32 rows.
    x, _ = clustered_features(20, 10, dim=32, seed=5)
    x = np.concatenate([x, np.repeat(x[:1], 150, axis=0)])
    fast, exact = _both(x, 5)
    _assert_identical(fast, exact)
    stats = _fast_stats(x, 5)
    assert stats["fallback_rows"] >= 150


def test_bf16_candidates_fall_back_when_the_bound_is_loose(monkeypatch: pytest.MonkeyPatch) -> None:
    # A bound 300× too large certifies only huge candidate sets: rows take the fallback.
    bound = _knn_bf16._bf16_error_bound
    monkeypatch.setattr(
        _knn_bf16,
        "_bf16_error_bound",
        lambda x, xb: bound(x, xb) * 300,  # type: ignore[operator]
    )
    x, _ = clustered_features(30, 12, dim=48, seed=9)
    fast, exact = _both(x, 8)
    _assert_identical(fast, exact)
    stats = _fast_stats(x, 8)
    assert 0 < stats["fallback_rows"] <= stats["rows"]


def test_bf16_candidates_fallback_cap_and_mixed_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    # A tiny cap sends every row with more than k + 2 certified candidates to the fallback: the
    # result mixes ranked candidates and recomputed rows.
    monkeypatch.setattr(_knn_bf16, "_fallback_cap", lambda n, k: k + 2)
    x, _ = clustered_features(30, 12, dim=48, seed=10)
    fast, exact = _both(x, 8, chunk_size=50)
    _assert_identical(fast, exact)
    stats = _fast_stats(x, 8)
    assert 0 < stats["fallback_rows"] < stats["rows"]


def test_bf16_self_check_redoes_rows_that_fail_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend the bf16 GEMM broke its error model on rows 3 and 7 (their k-th value below the
    # certified lower bound): those rows are recomputed in float32, and the result is unchanged.
    real = _knn_bf16.certified_candidates

    def broken(x: torch.Tensor, k: int, err: torch.Tensor) -> _knn_bf16.Candidates:
        found = real(x, k, err)
        lb = found.kth_lower_bound.clone()
        lb[[3, 7]] = torch.inf
        return found._replace(kth_lower_bound=lb)

    monkeypatch.setattr(_knn_bf16, "certified_candidates", broken)
    x, _ = clustered_features(10, 10, dim=32, seed=4)
    exact = knn_search(x, k=6, precision="exact")
    _assert_identical(knn_search(x, k=6, precision="bf16-candidates"), exact)
    assert _fast_stats(x, 6)["failed_checks"] == 2


def test_bf16_error_bound_holds() -> None:
    """max |out − v| over all pairs stays below 2⁻⁸|out| + ρ (rows and columns both ways)."""
    rng = np.random.default_rng(0)
    unit, _ = clustered_features(40, 20, dim=256, seed=1)
    cases = {
        "unit": unit,
        "gaussian": rng.standard_normal((700, 300)).astype(np.float32),
        "scaled": (unit * 10.0 ** rng.uniform(-4, 4, (len(unit), 1))).astype(np.float32),
        "wide_range": (
            rng.standard_normal((500, 128)) * 2.0 ** rng.integers(-40, 40, (500, 128))
        ).astype(np.float32),
        "nonnegative": np.abs(unit),  # ReLU-like: Σ|x||y| = xᵀy, the worst case for the bound
    }
    for name, features in cases.items():
        x = torch.from_numpy(features)
        xb = x.to(torch.bfloat16)
        rho = _knn_bf16._bf16_error_bound(x, xb)
        assert rho is not None
        out = torch.mm(xb, xb.t()).double()  # the bf16 GEMM of the candidate pass
        exact = torch.mm(x.double(), x.double().t())  # the exact inner products (float64)
        err = (out - exact).abs()
        bound = out.abs() * 2.0**-8 + torch.minimum(rho[:, None], rho[None, :])
        ratio = float((err / bound).max())
        assert ratio <= 1.0, (name, ratio)
        if name == "unit":
            assert ratio > 0.05  # and it is not absurdly loose on ordinary features
    huge = torch.full((3, 4), 2.0**62)  # products could overflow float32: no bound, exact path
    assert _knn_bf16._bf16_error_bound(huge, huge.bfloat16()) is None


def test_bf16_threshold_is_conservative() -> None:
    """τ is below every out whose upper bound reaches lb, including negative and -inf cases."""
    kth = torch.tensor([0.75, 0.001, -0.3, -torch.inf, 0.5]).bfloat16()
    rho = torch.tensor([0.004, 0.004, 0.004, 0.004, 0.6], dtype=torch.float64)
    tau = _knn_bf16._candidate_threshold(kth, rho).double()
    lb = _knn_bf16._kth_lower_bound(kth, rho)
    assert tau[3] == -torch.inf
    for i in (0, 1, 2, 4):
        # the smallest float32 out with out + 2⁻⁸|out| + ρ >= lb must be kept (out >= τ)
        grid = torch.linspace(float(lb[i]) - 1, float(lb[i]) + 1, 200001, dtype=torch.float64)
        upper = grid + grid.abs() * 2.0**-8 + rho[i]
        assert float(grid[upper >= lb[i]].min()) >= float(tau[i])


def test_precision_auto_picks_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = knn_module._bf16_wanted
    big = torch.zeros(4000, 128)
    monkeypatch.delenv(knn_module.PRECISION_ENV, raising=False)
    monkeypatch.setattr(knn_module, "_cpu_has_fast_bf16", lambda: True)
    assert wanted("auto", big, 30)
    assert not wanted("auto", big[:1000], 30)  # small: the exact search is quick anyway
    assert not wanted("auto", big[:, :32], 30)
    assert not wanted("exact", big, 30)
    assert wanted("bf16-candidates", big[:10], 3)
    monkeypatch.setattr(knn_module, "_cpu_has_fast_bf16", lambda: False)
    assert not wanted("auto", big, 30)
    assert wanted("bf16-candidates", big, 30)
    with pytest.raises(ValueError, match="unknown kNN precision"):
        knn_search(big[:10], k=2, precision="fp16")


def test_environment_variable_forces_a_path(monkeypatch: pytest.MonkeyPatch) -> None:
    resolve = knn_module._resolve_precision
    monkeypatch.setenv(knn_module.PRECISION_ENV, "bf16-candidates")
    assert resolve("auto") == "bf16-candidates"
    assert resolve("exact") == "exact"  # an explicit argument wins
    monkeypatch.setenv(knn_module.PRECISION_ENV, "exact")
    assert resolve("auto") == "exact"
    monkeypatch.setenv(knn_module.PRECISION_ENV, "fast")
    with pytest.raises(ValueError, match="REID_KNN_PRECISION='fast' is not a kNN precision"):
        knn_search(np.eye(3), k=1)


def test_bf16_candidates_query_against_database_is_exact() -> None:
    x, _ = clustered_features(6, 10, dim=32, seed=6)
    a = knn_search(x[:9], x, k=5, precision="bf16-candidates")
    b = knn_search(x[:9], x, k=5, precision="exact")
    _assert_identical(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_search_gives_the_cpu_bits() -> None:
    x = torch.from_numpy(clustered_features(8, 10, dim=32, seed=7)[0])
    cpu = knn_search(x, k=5)
    gpu = knn_search(x.cuda(), k=5, precision="bf16-candidates")
    assert gpu.indices.is_cuda
    assert torch.equal(gpu.indices.cpu(), cpu.indices)
    assert torch.equal(gpu.similarities.cpu(), cpu.similarities)


@pytest.mark.parametrize("k", [1, 5, 31])
def test_indices_only_search_gives_the_same_indices(k: int) -> None:
    """``similarities=False`` re-scores only near-ties; its indices are those of the full
    search, on near ties, exact duplicates, integer-valued ties and clustered data."""
    g = torch.Generator().manual_seed(k)
    base = torch.nn.functional.normalize(torch.randn(50, 16, generator=g), dim=1)
    cases = [
        _near_ties(),
        torch.cat([base, base[:20], base[:10] + 1e-7]),
        torch.randint(-3, 4, (300, 8), generator=g).float(),
        torch.as_tensor(clustered_features(40, 6, dim=32, seed=k)[0]),
    ]
    for x in cases:
        if k > x.shape[0]:
            continue
        full = knn_search(x, k=k, precision="exact")
        fast = knn_search(x, k=k, precision="exact", similarities=False)
        assert fast.similarities is None
        assert torch.equal(fast.indices, full.indices)
    # The bf16 candidate path (it ranks with the similarities) also returns the indices only.
    x = torch.as_tensor(clustered_features(40, 6, dim=32, seed=k)[0])
    bf16 = knn_search(x, k=k, precision="bf16-candidates", similarities=False)
    assert bf16.similarities is None
    assert torch.equal(bf16.indices, knn_search(x, k=k, precision="bf16-candidates").indices)
    # Query against a database, and a row that needs its whole row recomputed, go the full way.
    x = cases[1]
    assert torch.equal(
        knn_search(x[:30], x, k=k, similarities=False).indices, knn_search(x[:30], x, k=k).indices
    )


@pytest.mark.parametrize("held", [1, 500])
def test_bf16_candidates_compacted_midway_are_the_same(
    monkeypatch: pytest.MonkeyPatch, held: int
) -> None:
    """Pairs below their row's current threshold are dropped whenever more than _HELD_PAIRS are
    held (thresholds only rise): the search's answer cannot change."""
    x, _ = clustered_features(25, 17, dim=64, seed=11)
    monkeypatch.setattr(_knn_bf16, "_BF16_BLOCK", 64)  # many blocks: many compactions
    reference = knn_search(x, k=12, precision="exact")
    monkeypatch.setattr(_knn_bf16, "_HELD_PAIRS", held)
    _assert_identical(knn_search(x, k=12, precision="bf16-candidates"), reference)


def test_strided_views_are_searched_like_their_copies() -> None:
    """A part of [N, P, D] features (what cross agreement passes) needs no contiguous copy."""
    x, _ = clustered_features(20, 12, dim=48, seed=5)
    parts = torch.from_numpy(np.stack([x, x[::-1].copy()], axis=1))  # [N, 2, D]
    view = parts[:, 1, :]
    assert not view.is_contiguous()
    for precision in ("exact", "bf16-candidates"):
        for sims in (True, False):
            got = knn_search(view, k=9, precision=precision, similarities=sims)
            want = knn_search(view.contiguous(), k=9, precision=precision, similarities=sims)
            assert torch.equal(got.indices, want.indices)
            if sims:
                assert torch.equal(got.similarities, want.similarities)
