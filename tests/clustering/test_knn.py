from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from reid_clustering import faiss_available, knn_search, rank_by_distance
from tests.clustering.oracle import clustered_features, plain


def test_self_search_finds_itself_first_and_matches_brute_force() -> None:
    x, _ = clustered_features(6, 10, seed=1)
    result = knn_search(x, k=7)
    assert result.indices.dtype == torch.int64 and result.similarities.dtype == torch.float32
    assert result.indices.shape == (60, 7)
    assert torch.equal(result.indices[:, 0], torch.arange(60))
    assert np.array_equal(result.indices.numpy(), plain.plain_knn(x, 7))
    sims = x @ x.T
    expected = np.take_along_axis(sims, result.indices.numpy(), axis=1)
    np.testing.assert_allclose(result.similarities.numpy(), expected, rtol=0, atol=1e-6)
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
    x, _ = clustered_features(10, 12, dim=48, seed=4)
    ours = knn_search(x, k=10, backend="torch")
    theirs = knn_search(x, k=10, backend="faiss-cpu")
    assert torch.equal(ours.indices, theirs.indices)
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
