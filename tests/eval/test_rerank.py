from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reid_eval._reference import plain_re_ranking
from reid_eval.rerank import iter_re_ranking_features, re_ranking, re_ranking_features
from tests.clustering.oracle import clustered_features
from tests.helpers import assert_rank_gaps, gamma32


def _sq_euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).astype(np.float32)


# Where re-ranking depends on the ranked lists (k1 = 20, k2 = 6): the first k2, half_width(k1) = 11
# and k1 + 1 = 21 columns (the sample itself first).
RANK_CUTS = (6, 11, 21)


def _exact_distances(x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Squared Euclidean distances of all rows of ``x`` (float64), and error bounds of float32
    evaluations: ``‖a‖² + ‖b‖² − 2⟨a, b⟩`` (any matmul kernel, shape or chunk size) is within
    ``γ_{D+2}(‖a‖ + ‖b‖)² <= 4γ_{D+2}·max‖x‖²`` of the exact value, the elementwise
    ``Σ(a − b)²`` within ``γ_{D+3}·d``. Two rankings of such values can only differ where exact
    distances are closer than the sum of the two computations' bounds (:func:`assert_rank_gaps`).
    """
    x64 = x.astype(np.float64)
    exact = ((x64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
    dim, norm2 = x.shape[1], float((x64**2).sum(1).max())
    return exact, 4 * gamma32(dim + 2) * norm2, gamma32(dim + 3) * float(exact.max())


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
    np.testing.assert_allclose(ours, plain_re_ranking(*dists, k1, k2, lam), atol=2e-6)
    torch_in = re_ranking(*(torch.from_numpy(d) for d in dists), k1=k1, k2=k2, lambda_value=lam)
    np.testing.assert_array_equal(torch_in, ours)


def test_features_in_equals_the_classic_on_squared_euclidean_distances() -> None:
    x, _ = clustered_features(12, 10, dim=24, noise=0.8, seed=3)
    x = x * np.linspace(0.5, 2.0, x.shape[0], dtype=np.float32)[:, None]  # not unit norm
    q, g = x[:30], x[30:]
    # The classic ranks elementwise distances, ours matmul ones (chunks of 7 or all rows):
    # the same neighbours only if the data has no near-tie at the cuts.
    exact, by_matmul, elementwise = _exact_distances(x)
    assert_rank_gaps(exact, RANK_CUTS, by_matmul + elementwise, descending=False)
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
        ((np.ones((2, 3)), np.zeros((2, 2)), np.zeros((3, 3))), {"k1": 10}, "at least 11 samples"),
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


@pytest.mark.parametrize(
    ("num_q", "num_g", "kwargs", "advice"),
    [
        # one query, one gallery sample: k1 alone cannot fix it (k2 = 6 > 2 too); the message
        # used to say only "lower k1"
        (1, 1, {}, "lower k1 to at most 1 and k2 to at most 2, or pass at least 20 gallery"),
        (1, 5, {}, "lower k1 to at most 5, or pass at least 20 gallery samples"),
        (1, 19, {}, "lower k1 to at most 19, or pass at least 20 gallery samples"),
        # many queries, a small gallery: the queries count among the neighbours too
        (15, 3, {}, "lower k1 to at most 17, or pass at least 6 gallery samples"),
        # k1 fits, k2 does not
        (3, 2, {"k1": 4, "k2": 6}, "lower k2 to at most 5, or pass at least 3 gallery samples"),
    ],
)
def test_too_few_samples_for_k1_k2_names_the_counts_and_the_fixes(
    num_q: int, num_g: int, kwargs: dict, advice: str
) -> None:
    k1, k2 = kwargs.get("k1", 20), kwargs.get("k2", 6)
    need = max(k1 + 1, k2)
    counts = rf"got {num_q + num_g} \({num_q} query \+ {num_g} gallery\); "
    message = rf"needs at least {need} samples in query and gallery together .*{counts}{advice}"
    q, g = np.random.default_rng(0).random((num_q, 4)), np.random.default_rng(1).random((num_g, 4))
    with pytest.raises(ValueError, match=message):
        re_ranking_features(q, g, **kwargs)
    with pytest.raises(ValueError, match=message):
        re_ranking(_sq_euclidean(q, g), _sq_euclidean(q, q), _sq_euclidean(g, g), **kwargs)
    # the largest k1 and k2 the message names are accepted
    fit = {"k1": min(k1, num_q + num_g - 1), "k2": min(k2, num_q + num_g)}
    assert re_ranking_features(q, g, **fit).shape == (num_q, num_g)


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
    euclidean = re_ranking_features(x[q_idx], x[g_idx])
    ids = (labels[q_idx], labels[g_idx], cams[q_idx], cams[g_idx])
    expected = evaluate_rank(euclidean, *ids)
    assert got.mAP == expected.mAP and np.array_equal(got.cmc, expected.cmc)
    # Unit features: cosine and Euclidean re-rank identically (the normalisation removes scale).
    # The cosine path re-normalises the features in float32 (last-bit changes, within γ_{D+5}
    # of each entry, moving a squared distance of unit vectors by ≤ 8γ_{D+5}), so the ranked
    # lists must have no near-tie at the cuts, the two re-ranked matrices must then agree
    # closely, and no query may have a match and a non-match that close: then every match keeps
    # its rank, and the metrics are equal.
    exact, by_matmul, _ = _exact_distances(x)
    renormalised = 8 * gamma32(x.shape[1] + 5)
    assert_rank_gaps(exact, RANK_CUTS, 2 * by_matmul + renormalised, descending=False)
    qn, gn = (torch.nn.functional.normalize(torch.from_numpy(x[i]), dim=1) for i in (q_idx, g_idx))
    cosine_matrix = re_ranking_features(qn, gn)  # what evaluate(metric="cosine") ranks
    close = 1e-5  # ≲ 3e-7 seen
    np.testing.assert_allclose(cosine_matrix, euclidean, rtol=0, atol=close)
    _assert_matches_separated(euclidean, *ids, margin=2 * close)
    cosine = evaluator.evaluate(rerank=True, metric="cosine")
    assert cosine == evaluate_rank(cosine_matrix, *ids)
    assert cosine == got


def _assert_matches_separated(
    dist: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_cams: np.ndarray,
    g_cams: np.ndarray,
    margin: float,
) -> None:
    """Fail unless, for each query, gallery entries next to each other in the ranking (those the
    protocol keeps) that differ in being a match are more than ``margin`` apart: a change of the
    distances by less than ``margin / 2`` then leaves every match at its rank (CMC, AP, INP)."""
    for i in range(dist.shape[0]):
        kept = ~((g_pids == q_pids[i]) & (g_cams == q_cams[i]))
        order = np.argsort(dist[i, kept], kind="stable")
        ranked, match = dist[i, kept][order], (g_pids[kept] == q_pids[i])[order]
        flips = match[1:] != match[:-1]
        gaps = np.diff(ranked.astype(np.float64))[flips]
        assert gaps.size == 0 or gaps.min() > margin, f"query {i}: a match within {margin:g}"
