from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reid_eval.rerank import iter_re_ranking_features, re_ranking, re_ranking_features
from tests.clustering.oracle import clustered_features, plain


def _sq_euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).astype(np.float32)


def test_hand_checkable_case() -> None:
    # 1-D points q = 0, g1 = 1, g2 = 3 with Euclidean input distances; k1 = 1, k2 = 1.
    q_g = np.array([[1.0, 3.0]])
    q_q = np.array([[0.0]])
    g_g = np.array([[0.0, 2.0], [2.0, 0.0]])
    out = re_ranking(q_g, q_q, g_g, k1=1, k2=1, lambda_value=0.3)
    # Squared and divided by each column's maximum (9, 4, 9): T[q] = [0, 1/9, 1],
    # T[g1] = [1/4, 0, 1]. Ranked lists of 2 columns: q -> [q, g1], g1 -> [g1, q], g2 -> [g2, g1],
    # so R(q) = R(g1) = {q, g1}, R(g2) = {g2}; half sets are singletons: no expansion.
    vq = np.array([1.0, math.exp(-1 / 9)]) / (1 + math.exp(-1 / 9))  # V[q] on (q, g1)
    vg1 = np.array([math.exp(-1 / 4), 1.0]) / (1 + math.exp(-1 / 4))  # V[g1] on (q, g1)
    shared = np.minimum(vq, vg1).sum()
    jaccard_g1 = 1 - shared / (2 - shared)
    expected = [0.7 * jaccard_g1 + 0.3 / 9, 0.7 * 1.0 + 0.3 * 1.0]
    np.testing.assert_allclose(out, [expected], rtol=0, atol=1e-6)
    assert out.dtype == np.float32 and out.shape == (1, 2)


@pytest.mark.parametrize(("k1", "k2", "lam"), [(20, 6, 0.3), (6, 1, 0.0), (5, 3, 1.0)])
def test_equals_the_plain_loops(k1: int, k2: int, lam: float) -> None:
    x, _ = clustered_features(10, 8, dim=16, noise=0.7, seed=k1)
    q, g = x[:25], x[25:]
    dists = (_sq_euclidean(q, g), _sq_euclidean(q, q), _sq_euclidean(g, g))
    ours = re_ranking(*dists, k1=k1, k2=k2, lambda_value=lam)
    np.testing.assert_allclose(ours, plain.plain_re_ranking(*dists, k1, k2, lam), atol=2e-6)
    torch_in = re_ranking(*(torch.from_numpy(d) for d in dists), k1=k1, k2=k2, lambda_value=lam)
    np.testing.assert_array_equal(torch_in, ours)


def test_features_in_equals_the_classic_on_squared_euclidean_distances() -> None:
    x, _ = clustered_features(12, 10, dim=24, noise=0.8, seed=3)
    x = x * np.linspace(0.5, 2.0, x.shape[0], dtype=np.float32)[:, None]  # not unit norm
    q, g = x[:30], x[30:]
    classic = re_ranking(_sq_euclidean(q, g), _sq_euclidean(q, q), _sq_euclidean(g, g))
    for chunk in (7, 1024):
        ours = re_ranking_features(q, g, chunk_size=chunk)
        np.testing.assert_allclose(ours, classic, rtol=0, atol=2e-5)
    blocks = list(iter_re_ranking_features(torch.from_numpy(q), torch.from_numpy(g), chunk_size=8))
    assert [(a, b) for a, b, _ in blocks] == [(0, 8), (8, 16), (16, 24), (24, 30)]
    assert all(block.shape == (b - a, 90) for a, b, block in blocks)


def test_lambda_one_is_the_normalised_squared_input() -> None:
    x, _ = clustered_features(6, 6, dim=8, seed=4)
    q, g = x[:10], x[10:]
    q_g, q_q, g_g = _sq_euclidean(q, g), _sq_euclidean(q, q), _sq_euclidean(g, g)
    # T[q, g] = M[g, q] / max_r M[r, q]: the query's own column of the squared input.
    query_max = np.concatenate([q_q, q_g], axis=1).max(axis=1, keepdims=True) ** 2
    out = re_ranking(q_g, q_q, g_g, k1=5, k2=2, lambda_value=1.0)
    np.testing.assert_allclose(out, q_g**2 / query_max, rtol=1e-6)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((np.ones((2, 3)), np.zeros((2, 2)), np.zeros((2, 2))), {}, "shapes do not fit"),
        ((np.ones((2, 3)), np.zeros((2, 2)), np.zeros((3, 3))), {"k1": 10}, r"at least k1 \+ 1"),
        ((np.full((2, 3), np.nan), np.zeros((2, 2)), np.zeros((3, 3))), {}, "NaN or inf"),
        ((-np.ones((2, 3)), np.zeros((2, 2)), np.zeros((3, 3))), {"k1": 2}, "not similarities"),
        ((np.ones((2, 3)), np.zeros((2, 2)), np.zeros((3, 3))), {"k1": 0}, "positive integer"),
        (
            (np.ones((2, 3)), np.zeros((2, 2)), np.zeros((3, 3))),
            {"k1": 2, "k2": 1, "lambda_value": 2},
            r"lambda_value must lie in \[0, 1\]",
        ),
        ((np.ones((0, 3)), np.zeros((0, 0)), np.zeros((3, 3))), {}, "is empty"),
    ],
)
def test_bad_input(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        re_ranking(*args, **kwargs)


def test_bad_features() -> None:
    with pytest.raises(ValueError, match="dimensions differ"):
        re_ranking_features(np.ones((3, 4)), np.ones((5, 3)), k1=2)
    with pytest.raises(ValueError, match="NaN or inf"):
        re_ranking_features(np.full((3, 4), np.nan), np.ones((5, 4)), k1=2)
    with pytest.raises(ValueError, match="non-empty"):
        re_ranking_features(np.ones((0, 4)), np.ones((5, 4)), k1=2)


def test_evaluator_rerank_equals_ranking_the_reranked_matrix() -> None:
    from reid_eval import ReIDEvaluator, evaluate_rank

    x, labels = clustered_features(10, 6, dim=16, noise=0.6, seed=5)
    cams = np.arange(60) % 3
    q_idx, g_idx = np.arange(0, 60, 6), np.setdiff1d(np.arange(60), np.arange(0, 60, 6))
    evaluator = ReIDEvaluator(num_query=len(q_idx))
    evaluator.process(torch.from_numpy(x[q_idx]), labels[q_idx], cams[q_idx])
    evaluator.process(torch.from_numpy(x[g_idx]), labels[g_idx], cams[g_idx])
    got = evaluator.evaluate(rerank=True)
    expected = evaluate_rank(
        re_ranking_features(x[q_idx], x[g_idx]),
        labels[q_idx],
        labels[g_idx],
        cams[q_idx],
        cams[g_idx],
    )
    assert got.mAP == expected.mAP and np.array_equal(got.cmc, expected.cmc)
    # Unit features: cosine and Euclidean re-rank identically (the normalisation removes scale).
    cosine = evaluator.evaluate(rerank=True, metric="cosine")
    assert cosine.mAP == pytest.approx(got.mAP, abs=1e-6)
