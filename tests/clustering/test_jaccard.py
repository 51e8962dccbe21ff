from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import torch

from reid_clustering import compute_jaccard_distance, faiss_available, half_width
from reid_clustering._reference import plain_jaccard_distance
from tests.clustering.oracle import assert_knn_separated, clustered_features, exact_knn


def _cuts(k1: int, k2: int) -> list[int]:
    """Where the Jaccard distance depends on the ranked lists: which neighbours are in the
    first k1 (R), round(k1/2) + 1 (half sets) and k2 (query expansion) columns."""
    return sorted({k1, half_width(k1)} | ({k2} if k2 != 1 else set()))


# Seeds whose data has no near-tie at those cuts (assert_knn_separated): the reference's kNN is a
# numpy (BLAS) matmul, ours pair_dot, so a near-tie there could go either way on another CPU.
@pytest.mark.parametrize(("k1", "k2", "seed"), [(20, 6, 2), (30, 6, 30), (6, 1, 3), (7, 3, 7)])
def test_dense_equals_the_plain_reference_loops(k1: int, k2: int, seed: int) -> None:
    x, _ = clustered_features(12, 15, dim=32, noise=0.6, seed=seed)
    assert_knn_separated(x, _cuts(k1, k2))
    ours = compute_jaccard_distance(x, k1, k2, normalize=False)
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float32 and ours.shape == (180, 180)
    reference = plain_jaccard_distance(x, k1, k2)
    # Same neighbour sets; the weights' inner products differ in the last bits (BLAS vs pair_dot,
    # ≲ 3e-7 seen), and so do the float32 sums: 2e-6 leaves room for other summation orders.
    np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-6)
    # Exactly 1 where the reference has no shared support, exactly where it has.
    assert np.array_equal(ours == 1, reference == 1)


def test_sparse_holds_exactly_the_pairs_below_one_with_the_dense_values() -> None:
    x, _ = clustered_features(10, 12, noise=0.7, seed=7)
    dense = compute_jaccard_distance(x, 10, 4)
    sp = compute_jaccard_distance(x, 10, 4, sparse=True)
    assert isinstance(sp, scipy.sparse.csr_matrix) and sp.dtype == np.float32
    assert sp.has_sorted_indices
    stored = np.zeros(dense.shape, dtype=bool)
    stored[np.repeat(np.arange(sp.shape[0]), np.diff(sp.indptr)), sp.indices] = True
    assert np.array_equal(stored, dense < 1)
    assert np.array_equal(sp.data, dense[stored])  # bit-identical, not just close
    assert stored.diagonal().all()  # explicit (near-)zero diagonal entries are kept
    radius = compute_jaccard_distance(x, 10, 4, sparse=True, max_distance=0.5)
    assert radius.nnz == int((dense <= 0.5).sum())


def test_symmetric_with_zero_diagonal_and_values_in_unit_interval() -> None:
    x, _ = clustered_features(8, 10, noise=0.8, seed=8)
    d = compute_jaccard_distance(x, 12, 6)
    np.testing.assert_allclose(d, d.T, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.diag(d), 0, atol=1e-6)
    assert d.min() >= 0 and d.max() <= 1


def test_torch_input_gives_torch_output_and_normalisation_is_applied() -> None:
    x, _ = clustered_features(6, 10, seed=9)
    # torch's float32 normalisation of 3x vs numpy's float64 one: the features differ in the last
    # bits, which must not reorder neighbours at the cuts.
    assert_knn_separated(x, _cuts(8, 3), renormalised=True)
    as_torch = compute_jaccard_distance(torch.from_numpy(x) * 3.0, 8, 3)
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float32
    np.testing.assert_allclose(
        as_torch.numpy(), compute_jaccard_distance(x, 8, 3, normalize=False), rtol=0, atol=1e-6
    )
    doubles = compute_jaccard_distance(x.astype(np.float64), 8, 3)
    assert doubles.dtype == np.float32


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu not installed")
def test_faiss_backend_gives_the_same_distance() -> None:
    x, _ = clustered_features(10, 10, seed=10)
    assert_knn_separated(x, _cuts(10, 4))  # faiss ranks by a BLAS sgemm, torch by pair_dot
    torch_d = compute_jaccard_distance(x, 10, 4, backend="torch")
    faiss_d = compute_jaccard_distance(x, 10, 4, backend="faiss-cpu")
    np.testing.assert_allclose(torch_d, faiss_d, rtol=0, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_input_stays_on_the_gpu() -> None:
    x, _ = clustered_features(10, 10, seed=14)
    # The GPU normalises the features with its own reduction order: last-bit differences.
    assert_knn_separated(x, _cuts(10, 4), renormalised=True)
    gpu = compute_jaccard_distance(torch.from_numpy(x).cuda(), 10, 4)
    assert gpu.is_cuda
    np.testing.assert_allclose(gpu.cpu().numpy(), compute_jaccard_distance(x, 10, 4), atol=1e-5)
    sp = compute_jaccard_distance(torch.from_numpy(x).cuda(), 10, 4, sparse=True)
    assert isinstance(sp, scipy.sparse.csr_matrix)


def test_duplicate_features_do_not_break_the_encoding() -> None:
    x, _ = clustered_features(4, 6, seed=12)
    x = np.concatenate([x, x[:3]])  # exact duplicates tie at similarity 1
    d = compute_jaccard_distance(x, 5, 2)
    # The reference's own kNN (a BLAS matmul, then argpartition) may split exact ties at a cut in
    # any order; rank by exact inner products instead, ties by index like knn_search, and check
    # that only identical rows come that close at the cuts.
    assert_knn_separated(x, _cuts(5, 2), identical_tie=True)
    reference = plain_jaccard_distance(x, 5, 2, ranked=exact_knn(x, 5))
    np.testing.assert_allclose(d, reference, atol=2e-6)
    assert d[0, 24] == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize(
    ("features", "kwargs", "error", "message"),
    [
        (np.ones((5, 4, 2)), {}, ValueError, "must be 2-D"),
        (np.full((30, 4), np.nan), {"k1": 5}, ValueError, "NaN or inf in 30 of 30 rows"),
        (np.r_[np.eye(4), np.zeros((1, 4))] + 0, {"k1": 2, "k2": 1}, ValueError, "zero norm"),
        (np.eye(6), {"k1": 6}, ValueError, "more samples than k1: got N=6, k1=6"),
        (np.eye(8), {"k1": 3, "k2": 4}, ValueError, "cannot exceed k1"),
        (np.eye(8), {"k1": 3, "k2": 2, "max_distance": 0.5}, ValueError, "sparse=True"),
        (np.eye(8), {"k1": 0}, ValueError, "k1 must be >= 1"),
        (np.eye(8).astype(complex), {"k1": 3}, TypeError, "real numbers"),
        ([[1.0, 0.0]], {}, TypeError, "numpy array or a torch tensor"),
    ],
)
def test_bad_input_gets_a_clear_error(features, kwargs, error, message) -> None:  # noqa: ANN001
    with pytest.raises(error, match=message):
        compute_jaccard_distance(features, **kwargs)
