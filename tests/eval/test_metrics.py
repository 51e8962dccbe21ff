"""Tests for :mod:`reid_eval.metrics` (CMC / mAP / mINP with the Market-1501 protocol)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

import reid_eval.metrics as metrics_module
from reid_eval._reference import plain_evaluate_rank
from reid_eval.metrics import RankResult, evaluate_rank

# --------------------------------------------------------------------------------------------
# Random problems, and the per-query definition of the protocol (reid_eval._reference)
# --------------------------------------------------------------------------------------------


def random_problem(
    seed: int,
    num_q: int,
    num_g: int,
    num_ids: int,
    num_cams: int,
    *,
    tie_levels: int | None = None,
    dtype: type = np.float64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random distances with repeated pids/cameras; pid 0 is a distractor id (also in queries).

    ``tie_levels`` draws integer distances from ``range(tie_levels)`` (many ties).
    """
    rng = np.random.default_rng(seed)
    if tie_levels is None:
        distmat = rng.normal(size=(num_q, num_g)).astype(dtype)  # negative distances too
    else:
        distmat = rng.integers(0, tie_levels, size=(num_q, num_g)).astype(dtype)
    g_pids = rng.integers(0, num_ids, size=num_g)
    q_pids = rng.integers(0, num_ids, size=num_q)
    g_camids = rng.integers(0, num_cams, size=num_g)
    q_camids = rng.integers(0, num_cams, size=num_q)
    return distmat, q_pids, g_pids, q_camids, g_camids


def assert_matches_reference(result: RankResult, *args: np.ndarray, max_rank: int) -> None:
    """``result`` equals :func:`reid_eval._reference.plain_evaluate_rank` (the definition)."""
    reference = plain_evaluate_rank(*args, max_rank=max_rank)
    assert result.num_valid_queries == reference.num_valid_queries
    assert result.num_queries == reference.num_queries == args[0].shape[0]
    assert result.cmc.shape == reference.cmc.shape
    np.testing.assert_allclose(result.cmc, reference.cmc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.ap, reference.ap, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.inp, reference.inp, rtol=0, atol=1e-12)
    assert result.mAP == pytest.approx(reference.ap.mean(), abs=1e-12)
    assert result.mINP == pytest.approx(reference.inp.mean(), abs=1e-12)


# --------------------------------------------------------------------------------------------
# Reference in the shape of torchreid's numpy ``eval_market1501`` (written from the protocol)
# --------------------------------------------------------------------------------------------


def torchreid_style_eval(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
    *,
    sort_kind: str = "quicksort",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, int]:
    """The field's per-query numpy loop: argsort the whole matrix, then one iteration per query.

    Conventions of that loop, kept here: ``np.argsort`` with its default (unstable) kind, a 0/1
    match matrix in ranked order, CMC clipped cumulative sums averaged in **float32**, AP as the
    sum of ``cumsum / (i + 1) * match`` over the valid list divided by the number of matches,
    mAP as ``np.mean``; INP (fast-reid's addition) as ``cumsum[last match] / (last match + 1)``.
    ``sort_kind="stable"`` is the only deviation, for tied distances (whose order the default
    sort leaves unspecified). Returns (cmc float32, AP per valid query, INP per valid query,
    mAP, mINP, number of valid queries).
    """
    num_q, num_g = distmat.shape
    if num_g < max_rank:
        max_rank = num_g
    indices = np.argsort(distmat, axis=1, kind=sort_kind)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    num_valid_q = 0.0
    for q_idx in range(num_q):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        raw_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(raw_cmc):
            continue  # the query's identity has no match left in the gallery
        cmc = raw_cmc.cumsum()
        last_match = np.max(np.where(raw_cmc == 1)[0])
        all_inp.append(cmc[last_match] / (last_match + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        num_valid_q += 1.0
        num_rel = raw_cmc.sum()
        precision = np.asarray([x / (i + 1.0) for i, x in enumerate(raw_cmc.cumsum())])
        all_ap.append((precision * raw_cmc).sum() / num_rel)
    assert num_valid_q > 0
    cmc32 = np.asarray(all_cmc).astype(np.float32).sum(0) / num_valid_q
    ap, inp = np.asarray(all_ap), np.asarray(all_inp)
    return cmc32, ap, inp, float(np.mean(ap)), float(np.mean(inp)), int(num_valid_q)


# AP terms are summed in another order (numpy's pairwise sum over the valid list vs. one pass
# over the matches), so the APs may differ in the last bit or two: allow 4 ulps of 1.0.
LAST_BITS = 4 * np.finfo(np.float64).eps


def assert_matches_torchreid_style(
    result: RankResult, *args: np.ndarray, max_rank: int, sort_kind: str = "quicksort"
) -> None:
    cmc32, ap, inp, m_ap, m_inp, num_valid = torchreid_style_eval(
        *args, max_rank=max_rank, sort_kind=sort_kind
    )
    assert result.num_valid_queries == num_valid
    assert cmc32.dtype == np.float32
    np.testing.assert_array_equal(result.cmc.astype(np.float32), cmc32)  # every bit
    np.testing.assert_array_equal(result.inp, inp)  # every bit
    assert result.mINP == m_inp
    np.testing.assert_allclose(result.ap, ap, rtol=0, atol=LAST_BITS)
    assert abs(result.mAP - m_ap) <= LAST_BITS


# --------------------------------------------------------------------------------------------
# Known answers, computed by hand
# --------------------------------------------------------------------------------------------

# Gallery:        g0   g1   g2   g3   g4
#   pid            1    2    1    0    1      (pid 0 = distractor)
#   camid          1    0    0    1    1
#
# q0 (pid 1, cam 0), distances [0.5, 0.1, 0.3, 0.2, 0.9]
#   ranked: g1 (0.1), g3 (0.2), g2 (0.3), g0 (0.5), g4 (0.9)
#   g2 has pid 1 and cam 0 -> removed; valid list: g1 x, g3 x, g0 match, g4 match
#   first match at rank 3; AP = (1/3 + 2/4) / 2 = 5/12; INP = 2 matches / position 4 = 1/2
# q1 (pid 2, cam 1), distances [0.4, 0.6, 0.2, 0.8, 0.1]
#   ranked: g4 (0.1), g2 (0.2), g0 (0.4), g1 (0.6), g3 (0.8); nothing removed (g1 is cam 0)
#   first match (g1) at rank 4; AP = 1/4; INP = 1/4
# CMC (max_rank 5): q0 [0, 0, 1, 1, 1], q1 [0, 0, 0, 1, 1] -> [0, 0, 1/2, 1, 1]
# mAP = (5/12 + 1/4) / 2 = 1/3; mINP = (1/2 + 1/4) / 2 = 3/8
DIST = np.array([[0.5, 0.1, 0.3, 0.2, 0.9], [0.4, 0.6, 0.2, 0.8, 0.1]])
Q_PIDS = np.array([1, 2])
Q_CAMS = np.array([0, 1])
G_PIDS = np.array([1, 2, 1, 0, 1])
G_CAMS = np.array([1, 0, 0, 1, 1])


def test_known_answer_two_queries() -> None:
    result = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)
    np.testing.assert_allclose(result.cmc, [0.0, 0.0, 0.5, 1.0, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(result.ap, [5 / 12, 1 / 4], rtol=0, atol=1e-15)
    np.testing.assert_allclose(result.inp, [1 / 2, 1 / 4], rtol=0, atol=1e-15)
    assert result.mAP == pytest.approx(1 / 3, abs=1e-15)
    assert result.mINP == pytest.approx(3 / 8, abs=1e-15)
    assert result.num_valid_queries == 2
    assert result.num_queries == 2
    assert result.cmc.dtype == np.float64
    assert result.ap.dtype == np.float64 and result.inp.dtype == np.float64
    assert result.rank(3) == 0.5
    assert_matches_reference(result, DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)


def test_known_answer_max_rank_truncates_cmc() -> None:
    # Same data, max_rank 3: the CMC is the first three values [0, 0, 1/2]; AP/INP unchanged.
    result = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=3)
    np.testing.assert_allclose(result.cmc, [0.0, 0.0, 0.5], rtol=0, atol=1e-15)
    assert result.mAP == pytest.approx(1 / 3, abs=1e-15)
    assert result.mINP == pytest.approx(3 / 8, abs=1e-15)


def test_same_id_same_camera_removal_changes_the_answer() -> None:
    # Move g2 (pid 1) from cam 0 to cam 1: it is no longer removed for q0 (cam 0) and becomes a
    # true match at rank 3. q0 valid list: g1 x, g3 x, g2 match, g0 match, g4 match
    #   AP = (1/3 + 2/4 + 3/5) / 3 = 43/90; INP = 3/5; first match still at rank 3.
    # q1 is unchanged (AP 1/4, INP 1/4). mAP = (43/90 + 1/4) / 2 = 131/360; mINP = (3/5+1/4)/2.
    g_cams = G_CAMS.copy()
    g_cams[2] = 1
    result = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, g_cams, max_rank=5)
    np.testing.assert_allclose(result.ap, [43 / 90, 1 / 4], rtol=0, atol=1e-15)
    np.testing.assert_allclose(result.inp, [3 / 5, 1 / 4], rtol=0, atol=1e-15)
    np.testing.assert_allclose(result.cmc, [0.0, 0.0, 0.5, 1.0, 1.0], rtol=0, atol=1e-15)
    assert result.mAP == pytest.approx(131 / 360, abs=1e-15)
    assert result.mINP == pytest.approx(17 / 40, abs=1e-15)

    # The removed entry also shifts later positions: if g0 (rank 4 in the full list, a match for
    # q0) were not preceded by the removed g2, it would be at valid position 3, not 4. Put g2 in
    # q0's camera but *behind* everything (distance 1.0): q0's valid list becomes
    #   g1 x, g3 x, g0 match, g4 match  -> same AP 5/12 as the base case.
    dist = DIST.copy()
    dist[0, 2] = 1.0
    result = evaluate_rank(dist, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)
    assert result.ap[0] == pytest.approx(5 / 12, abs=1e-15)


def test_invalid_queries_are_skipped_and_counted() -> None:
    # Move g1 (q1's only pid-2 entry) to cam 1 = q1's camera: it is removed and q1 has no true
    # match left -> q1 is invalid. Only q0 counts: CMC [0, 0, 1, 1, 1], mAP 5/12, mINP 1/2.
    g_cams = G_CAMS.copy()
    g_cams[1] = 1
    result = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, g_cams, max_rank=5)
    assert result.num_valid_queries == 1
    assert result.num_queries == 2
    np.testing.assert_allclose(result.cmc, [0.0, 0.0, 1.0, 1.0, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(result.ap, [5 / 12], rtol=0, atol=1e-15)
    assert result.mAP == pytest.approx(5 / 12, abs=1e-15)
    assert result.mINP == pytest.approx(1 / 2, abs=1e-15)


def test_query_without_any_gallery_match_is_invalid() -> None:
    # A third query with pid 7, which is not in the gallery: skipped, results as the base case.
    dist = np.vstack([DIST, [0.1, 0.2, 0.3, 0.4, 0.5]])
    result = evaluate_rank(dist, [1, 2, 7], G_PIDS, [0, 1, 0], G_CAMS, max_rank=5)
    assert (result.num_valid_queries, result.num_queries) == (2, 3)
    assert result.mAP == pytest.approx(1 / 3, abs=1e-15)


def test_all_queries_invalid_raises() -> None:
    # Every pid-1 entry in cam 0 (q0's camera) and g1 in cam 1 (q1's camera): nothing valid.
    g_cams = np.array([0, 1, 0, 1, 0])
    with pytest.raises(ValueError, match=r"No valid query: none of the 2 queries has a true match"):
        evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, g_cams, max_rank=5)
    with pytest.raises(ValueError, match="pids do not overlap"):
        evaluate_rank(DIST, [5, 6], G_PIDS, Q_CAMS, G_CAMS, max_rank=5)


# One query, pid 5 in camera 2, and eight gallery entries (index order g0..g7):
#   pid     0     3     0     5     5     5     5     5      (pid 0 = distractor)
#   camid   2     2     1     2     3     0     1     2
#   dist  0.10  0.40  0.55  0.05  0.30  0.80  0.20  0.25
# Ranked by distance: g3 (0.05), g0 (0.10), g6 (0.20), g7 (0.25), g4 (0.30), g1 (0.40), g2 (0.55),
# g5 (0.80). g3 and g7 have pid 5 and camera 2 -> removed. g0 is a distractor in the query's
# camera: a different pid, so it is *not* removed and counts as a non-match.
# Valid ranked list: g0 x, g6 match, g4 match, g1 x, g2 x, g5 match (matches at 2, 3, 6)
#   CMC (max_rank 6) = [0, 1, 1, 1, 1, 1]
#   AP  = (1/2 + 2/3 + 3/6) / 3 = 5/9
#   INP = 3 matches / position 6 of the last match = 1/2
ONE_DIST = np.array([[0.10, 0.40, 0.55, 0.05, 0.30, 0.80, 0.20, 0.25]])
ONE_G_PIDS = np.array([0, 3, 0, 5, 5, 5, 5, 5])
ONE_G_CAMS = np.array([2, 2, 1, 2, 3, 0, 1, 2])


def test_known_answer_single_query_same_camera_matches_removed() -> None:
    result = evaluate_rank(ONE_DIST, [5], ONE_G_PIDS, [2], ONE_G_CAMS, max_rank=6)
    assert result.cmc.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert result.ap.tolist() == [pytest.approx(5 / 9, abs=1e-15)]
    assert result.mAP == pytest.approx(5 / 9, abs=1e-15)
    assert result.inp.tolist() == [0.5]
    assert result.mINP == 0.5
    assert (result.num_valid_queries, result.num_queries) == (1, 1)
    assert_matches_torchreid_style(
        result, ONE_DIST, np.array([5]), ONE_G_PIDS, np.array([2]), ONE_G_CAMS, max_rank=6
    )

    # Without the removal g3 would be a rank-1 hit: the same entries seen from camera 4 give
    # matches at 1, 3, 4, 5, 8 of 8: rank-1 = 1, AP = (1 + 2/3 + 3/4 + 4/5 + 5/8) / 5 = 461/600,
    # INP = 5/8.
    result = evaluate_rank(ONE_DIST, [5], ONE_G_PIDS, [4], ONE_G_CAMS, max_rank=6)
    assert result.rank(1) == 1.0
    assert result.mAP == pytest.approx(461 / 600, abs=1e-15)
    assert result.mINP == 5 / 8


def test_known_answer_query_without_valid_match_is_skipped_and_counted() -> None:
    # Add a second query, pid 3 in camera 2: the only pid-3 entry (g1) is in camera 2 too, so it
    # is removed and the query has no true match -> skipped but counted in num_queries. The
    # metrics are those of the first query alone (5/9, 1/2, first match at rank 2).
    dist = np.vstack([ONE_DIST, ONE_DIST[:, ::-1]])
    result = evaluate_rank(dist, [5, 3], ONE_G_PIDS, [2, 2], ONE_G_CAMS, max_rank=6)
    assert (result.num_valid_queries, result.num_queries) == (1, 2)
    assert result.cmc.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert result.mAP == pytest.approx(5 / 9, abs=1e-15)
    assert result.mINP == 0.5
    # Alone, that query makes the evaluation impossible.
    with pytest.raises(ValueError, match="No valid query: none of the 1 queries"):
        evaluate_rank(ONE_DIST, [3], ONE_G_PIDS, [2], ONE_G_CAMS, max_rank=6)


def test_distractors_stay_in_the_gallery() -> None:
    # Distractors (pid 0) are never removed, whatever their camera, and push matches down.
    # Query pid 1, camera 0. Gallery: two distractors closest (cameras 0 and 1), then the match.
    #   ranked: d0 x (pid 0, cam 0), d1 x (pid 0, cam 1), g match -> rank-1 0, AP = 1/3, INP 1/3.
    result = evaluate_rank([[0.1, 0.2, 0.3]], [1], [0, 0, 1], [0], [0, 1, 1], max_rank=3)
    assert result.cmc.tolist() == [0.0, 0.0, 1.0]
    assert result.mAP == pytest.approx(1 / 3, abs=1e-15)
    assert result.mINP == pytest.approx(1 / 3, abs=1e-15)
    # Without the distractors the match is at rank 1.
    result = evaluate_rank([[0.3]], [1], [1], [0], [1], max_rank=1)
    assert result.mAP == 1.0
    # Junk (pid -1) left in the gallery is an ordinary non-match too (loaders drop it).
    result = evaluate_rank([[0.1, 0.3]], [1], [-1, 1], [0], [0, 1], max_rank=2)
    assert result.mAP == 0.5


# --------------------------------------------------------------------------------------------
# Ties
# --------------------------------------------------------------------------------------------


def test_ties_keep_gallery_order() -> None:
    # One query (pid 1, cam 0); three gallery entries at the same distance 0.3,
    # pids [2, 1, 1], cams [1, 1, 1]. Stable order: g0 x, g1 match, g2 match
    #   rank-1 = 0, first match at rank 2; AP = (1/2 + 2/3) / 2 = 7/12; INP = 2/3.
    # Reversed tie order (g2, g1, g0) would give rank-1 = 1, AP = 1, INP = 1.
    dist = np.full((1, 3), 0.3)
    args = (dist, [1], [2, 1, 1], [0], [1, 1, 1])
    result = evaluate_rank(*args, max_rank=3)
    np.testing.assert_allclose(result.cmc, [0.0, 1.0, 1.0], rtol=0, atol=0)
    assert result.mAP == pytest.approx(7 / 12, abs=1e-15)
    assert result.mINP == pytest.approx(2 / 3, abs=1e-15)

    # Two entries at distance 0.3 with pids [2, 1]: stable -> non-match first: AP 1/2, rank-1 0.
    result = evaluate_rank([[0.3, 0.3]], [1], [2, 1], [0], [1, 1], max_rank=2)
    assert result.rank(1) == 0.0
    assert result.mAP == 0.5
    # ... and with the gallery order swapped the match comes first: AP 1, rank-1 1.
    result = evaluate_rank([[0.3, 0.3]], [1], [1, 2], [0], [1, 1], max_rank=2)
    assert result.rank(1) == 1.0
    assert result.mAP == 1.0


def test_negative_zero_ties_with_zero() -> None:
    # -0.0 == 0.0, so they tie and keep gallery order: the non-match g0 (0.0) ranks first.
    # AP = 1/2, rank-1 = 0. (Ordering by bit pattern without care would put -0.0 first.)
    result = evaluate_rank([[0.0, -0.0]], [1], [2, 1], [0], [1, 1], max_rank=2)
    assert result.rank(1) == 0.0
    assert result.mAP == 0.5
    result32 = evaluate_rank(
        torch.tensor([[0.0, -0.0]], dtype=torch.float32), [1], [2, 1], [0], [1, 1], max_rank=2
    )
    assert result32.mAP == 0.5


@pytest.mark.parametrize("tie_compare_limit", [0, 3, 10**9])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_heavy_ties_match_stable_reference(
    monkeypatch: pytest.MonkeyPatch, tie_compare_limit: int, dtype: type
) -> None:
    # Distances from {0, 1, 2}: almost every entry is tied. The limit selects the tie-breaking
    # path (0: stable argsort of tied rows; 10**9: prefix comparison; 3: a mix of both).
    monkeypatch.setattr(metrics_module, "_TIE_COMPARE_LIMIT", tie_compare_limit)
    args = random_problem(3, 40, 90, num_ids=4, num_cams=3, tie_levels=3, dtype=dtype)
    result = evaluate_rank(*args, max_rank=20, chunk_size=16)
    assert_matches_reference(result, *args, max_rank=20)
    # The data is tie-sensitive: ranking ties the other way round (by descending gallery index,
    # what an unstable sort may do) gives a different mAP. Reversing the gallery's columns makes
    # the stable reference break ties that way.
    distmat, q_pids, g_pids, q_camids, g_camids = args
    reversed_ties = plain_evaluate_rank(
        distmat[:, ::-1], q_pids, g_pids[::-1], q_camids, g_camids[::-1], max_rank=20
    )
    assert abs(reversed_ties.mAP - result.mAP) > 1e-3


def test_all_distances_equal() -> None:
    # Every distance equal: the ranking is the gallery order itself.
    # Query pid 1 cam 0; gallery pids [1, 3, 1, 1, 3, 1], cams [0, 1, 1, 0, 1, 1]
    #   g0 and g3 are removed (pid 1, cam 0) -> valid list g1 x, g2 match, g4 x, g5 match
    #   AP = (1/2 + 2/4) / 2 = 1/2; INP = 2/4 = 1/2; CMC [0, 1, 1, 1].
    result = evaluate_rank(
        np.zeros((1, 6)), [1], [1, 3, 1, 1, 3, 1], [0], [0, 1, 1, 0, 1, 1], max_rank=4
    )
    np.testing.assert_allclose(result.cmc, [0.0, 1.0, 1.0, 1.0], rtol=0, atol=0)
    assert result.mAP == 0.5
    assert result.mINP == 0.5


# --------------------------------------------------------------------------------------------
# Agreement with the loop reference and with scikit-learn
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_loop_reference_on_random_data(seed: int, dtype: type) -> None:
    distmat, q_pids, g_pids, q_camids, g_camids = random_problem(
        seed, 70, 150, num_ids=12, num_cams=4, dtype=dtype
    )
    # Make invalid queries: q0's pid is absent from the gallery; all gallery entries of q1's pid
    # are in q1's camera (removed, so no true match is left).
    q_pids[0] = 99
    q_pids[1] = 0  # the distractor id
    g_camids[g_pids == 0] = q_camids[1]
    args = (distmat, q_pids, g_pids, q_camids, g_camids)
    result = evaluate_rank(*args, max_rank=50, chunk_size=32)
    assert_matches_reference(result, *args, max_rank=50)
    assert 0 < result.num_valid_queries <= result.num_queries - 2


@pytest.mark.parametrize("seed", [20, 21, 22])
def test_matches_torchreid_style_loop_without_ties(seed: int) -> None:
    # Continuous distances (no ties), distractors and invalid queries: the torchreid-style loop
    # with its default unstable argsort agrees to the last bit (CMC in float32, INP) or two (AP).
    rng = np.random.default_rng(seed)
    num_q, num_g = 60, 500
    g_pids = rng.integers(0, 25, size=num_g)  # pid 0: distractors
    q_pids = rng.integers(1, 28, size=num_q)  # 25..27 are not in the gallery: invalid
    g_camids = rng.integers(0, 5, size=num_g)
    q_camids = rng.integers(0, 5, size=num_q)
    # Each row: a random permutation of distinct values (no ties, also in float32).
    levels = np.tile(np.linspace(0.01, 4.0, num_g), (num_q, 1))
    for dtype in (np.float64, np.float32):
        distmat = rng.permuted(levels, axis=1).astype(dtype)
        assert all(np.unique(row).size == num_g for row in distmat)
        args = (distmat, q_pids, g_pids, q_camids, g_camids)
        result = evaluate_rank(*args, max_rank=50, chunk_size=16)
        assert result.num_valid_queries < num_q
        assert_matches_torchreid_style(result, *args, max_rank=50)


@pytest.mark.parametrize("seed", [23, 24])
def test_matches_torchreid_style_loop_with_ties(seed: int) -> None:
    # Distances from 6 levels (ties everywhere): equal with the loop using a stable argsort.
    rng = np.random.default_rng(seed)
    num_q, num_g = 50, 300
    g_pids = rng.integers(0, 10, size=num_g)
    q_pids = rng.integers(1, 10, size=num_q)
    g_camids = rng.integers(0, 3, size=num_g)
    q_camids = rng.integers(0, 3, size=num_q)
    distmat = rng.integers(0, 6, size=(num_q, num_g)).astype(np.float32)
    args = (distmat, q_pids, g_pids, q_camids, g_camids)
    result = evaluate_rank(*args, max_rank=20, chunk_size=7)
    assert_matches_torchreid_style(result, *args, max_rank=20, sort_kind="stable")


def test_matches_loop_reference_market_like() -> None:
    # Market-like mix: many ids, 6 cameras, ~20% distractors (pid 0) and junk (pid -1) in the
    # gallery, queries with real ids only.
    rng = np.random.default_rng(11)
    num_q, num_g = 200, 1500
    g_pids = rng.integers(1, 120, size=num_g)
    g_pids[rng.random(num_g) < 0.15] = 0
    g_pids[rng.random(num_g) < 0.05] = -1
    q_pids = rng.choice(g_pids[g_pids > 0], size=num_q)
    g_camids = rng.integers(1, 7, size=num_g)
    q_camids = rng.integers(1, 7, size=num_q)
    distmat = rng.random((num_q, num_g)).astype(np.float32)
    args = (distmat, q_pids, g_pids, q_camids, g_camids)
    result = evaluate_rank(*args)
    assert result.cmc.shape == (50,)
    assert_matches_reference(result, *args, max_rank=50)


@pytest.mark.parametrize("seed", [4, 5])
def test_ap_equals_sklearn_average_precision(seed: int) -> None:
    distmat, q_pids, g_pids, q_camids, g_camids = random_problem(
        seed, 50, 120, num_ids=8, num_cams=3
    )
    assert np.unique(distmat).size == distmat.size  # continuous draws: no ties
    result = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
    expected = []
    for q in range(distmat.shape[0]):
        valid = ~((g_pids == q_pids[q]) & (g_camids == q_camids[q]))
        y_true = g_pids[valid] == q_pids[q]
        if y_true.any():
            expected.append(average_precision_score(y_true, -distmat[q, valid]))
    assert len(expected) == result.num_valid_queries
    np.testing.assert_allclose(result.ap, expected, rtol=0, atol=1e-12)
    assert result.mAP == pytest.approx(np.mean(expected), abs=1e-12)


# --------------------------------------------------------------------------------------------
# Inputs: torch, lists, dtypes, chunking, max_rank
# --------------------------------------------------------------------------------------------


def test_torch_and_list_inputs_match_numpy() -> None:
    distmat, q_pids, g_pids, q_camids, g_camids = random_problem(6, 30, 80, 6, 3)
    expected = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=10)

    as_torch = evaluate_rank(
        torch.from_numpy(distmat).requires_grad_(),
        torch.from_numpy(q_pids),
        torch.from_numpy(g_pids),
        torch.from_numpy(q_camids).int(),
        torch.from_numpy(g_camids).int(),
        max_rank=10,
    )
    as_lists = evaluate_rank(
        distmat.tolist(),
        q_pids.tolist(),
        g_pids.tolist(),
        q_camids.tolist(),
        g_camids.tolist(),
        max_rank=10,
    )
    for result in (as_torch, as_lists):
        assert result == expected
        np.testing.assert_array_equal(result.cmc, expected.cmc)
        np.testing.assert_array_equal(result.ap, expected.ap)
        np.testing.assert_array_equal(result.inp, expected.inp)
        assert result.mAP == expected.mAP and result.mINP == expected.mINP

    # float32 tensor == float32 numpy; bfloat16 tensor == its exact float32 values.
    d32 = distmat.astype(np.float32)
    ids = (q_pids, g_pids, q_camids, g_camids)
    r32 = evaluate_rank(d32, *ids, max_rank=10)
    assert evaluate_rank(torch.from_numpy(d32), *ids, max_rank=10) == r32
    bf16 = torch.from_numpy(d32).bfloat16()
    assert evaluate_rank(bf16, *ids, max_rank=10) == evaluate_rank(
        bf16.float().numpy(), *ids, max_rank=10
    )


def test_integer_distances_match_float_distances() -> None:
    args = random_problem(7, 25, 60, 5, 3, tie_levels=9, dtype=np.int64)
    expected = evaluate_rank(args[0].astype(np.float64), *args[1:], max_rank=10)
    for dtype in (np.int64, np.int16, np.uint8, np.uint64):
        assert evaluate_rank(args[0].astype(dtype), *args[1:], max_rank=10) == expected


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_chunk_size_does_not_change_the_result(dtype: type) -> None:
    args = random_problem(8, 45, 100, 10, 4, dtype=dtype)
    base = evaluate_rank(*args, chunk_size=1)
    for chunk_size in (2, 7, 44, 45, 10_000):
        other = evaluate_rank(*args, chunk_size=chunk_size)
        assert other == base
        np.testing.assert_array_equal(other.ap, base.ap)
        np.testing.assert_array_equal(other.cmc, base.cmc)
    tied = random_problem(9, 45, 100, 5, 2, tie_levels=4, dtype=dtype)
    assert evaluate_rank(*tied, chunk_size=1) == evaluate_rank(*tied, chunk_size=10_000)


def test_max_rank_larger_than_gallery_warns_and_shrinks_cmc() -> None:
    with pytest.warns(UserWarning, match=r"gallery samples \(5\) is smaller than max_rank \(50\)"):
        result = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)  # max_rank=50 by default
    assert result.cmc.shape == (5,)
    np.testing.assert_allclose(result.cmc, [0.0, 0.0, 0.5, 1.0, 1.0], rtol=0, atol=1e-15)
    assert result.mAP == pytest.approx(1 / 3, abs=1e-15)


def test_same_pid_pairs_equal_the_dense_comparison() -> None:
    # The ranking core lists each query's same-pid gallery entries from a pid index instead of a
    # [queries, gallery] comparison; it must give the same pairs in the same order.
    rng = np.random.default_rng(30)
    g_pids = rng.integers(-1, 9, size=200)
    q_pids = rng.integers(-1, 12, size=40)  # 9..11 are absent from the gallery
    rows, cols = metrics_module._GalleryIndex(g_pids).same_pid_pairs(q_pids)
    expected_rows, expected_cols = np.nonzero(q_pids[:, None] == g_pids[None, :])
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_array_equal(cols, expected_cols)


# --------------------------------------------------------------------------------------------
# RankResult
# --------------------------------------------------------------------------------------------


def test_rank_result_accessors_and_to_dict() -> None:
    result = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)
    assert [result.rank(k) for k in range(1, 6)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"rank k=0 is out of range.*1\.\.5"):
        result.rank(0)
    with pytest.raises(ValueError, match=r"rank k=6 is out of range"):
        result.rank(6)

    summary = result.to_dict()
    assert json.loads(json.dumps(summary)) == summary
    assert summary == {
        "mAP": pytest.approx(1 / 3, abs=1e-15),
        "mINP": pytest.approx(3 / 8, abs=1e-15),
        "rank1": 0.0,
        "rank5": 1.0,  # no rank10: the curve has 5 ranks
        "cmc": [0.0, 0.0, 0.5, 1.0, 1.0],
        "num_valid_queries": 2,
        "num_queries": 2,
    }
    assert "rank10" not in summary
    assert "mAP=0.3333" in repr(result) and "rank5=1.0000" in repr(result)

    # Frozen, with read-only arrays.
    with pytest.raises(AttributeError):
        result.mAP = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        result.cmc[0] = 1.0


def test_to_dict_includes_rank10_when_available() -> None:
    args = random_problem(10, 20, 40, 5, 3)
    summary = evaluate_rank(*args, max_rank=10).to_dict()
    assert {"rank1", "rank5", "rank10"} <= summary.keys()
    assert len(summary["cmc"]) == 10
    assert summary["rank10"] == summary["cmc"][9]
    assert all(math.isfinite(v) for v in summary["cmc"])


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------

IDS = (Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)


@pytest.mark.parametrize(
    ("distmat", "match"),
    [
        (np.zeros(5), r"distmat must be 2-D .* got shape \(5,\)"),
        (np.zeros((2, 5, 1)), r"distmat must be 2-D .* got shape \(2, 5, 1\)"),
        (np.zeros((0, 5)), r"distmat is empty \(shape \(0, 5\)\)"),
        (np.zeros((2, 0)), r"distmat is empty \(shape \(2, 0\)\)"),
        (np.zeros((2, 5), dtype=complex), r"distmat must hold real numbers"),
    ],
)
def test_bad_distmat_shape_or_dtype(distmat: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate_rank(distmat, *IDS)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_distmat(bad: float) -> None:
    dist = DIST.copy()
    dist[1, 3] = bad
    with pytest.raises(ValueError, match=r"distmat contains NaN or inf \(first in query row 1\)"):
        evaluate_rank(dist, *IDS, max_rank=5)
    with pytest.raises(ValueError, match=r"NaN or inf \(first in query row 1\)"):
        evaluate_rank(torch.from_numpy(dist).float(), *IDS, max_rank=5, chunk_size=1)


@pytest.mark.parametrize(
    ("position", "value", "match"),
    [
        (0, [1, 2, 3], r"query_pids has length 3 but distmat has 2 rows; .* one id per row"),
        (1, [1, 2], r"gallery_pids has length 2 but distmat has 5 columns.*one id per column"),
        (2, [0], r"query_camids has length 1 but distmat has 2 rows"),
        (3, [1, 0, 0, 1, 1, 1], r"gallery_camids has length 6 but distmat has 5 columns"),
        (0, [[1, 2]], r"query_pids must be a 1-D integer array, got shape \(1, 2\)"),
        (3, np.array([1.0, 0, 0, 1, 1]), r"gallery_camids must hold integers, got dtype float64"),
        (1, ["a", "b", "c", "d", "e"], r"gallery_pids must hold integers"),
    ],
)
def test_bad_ids(position: int, value: object, match: str) -> None:
    ids = list(IDS)
    ids[position] = value
    with pytest.raises(ValueError, match=match):
        evaluate_rank(DIST, *ids)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_rank": 0}, r"max_rank must be an integer >= 1, got 0"),
        ({"max_rank": -3}, r"max_rank must be an integer >= 1, got -3"),
        ({"max_rank": 2.5}, r"max_rank must be an integer >= 1, got 2.5"),
        ({"chunk_size": 0}, r"chunk_size must be an integer >= 1, got 0"),
    ],
)
def test_bad_max_rank_or_chunk_size(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate_rank(DIST, *IDS, **kwargs)  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensor_input_matches_numpy() -> None:
    distmat, q_pids, g_pids, q_camids, g_camids = random_problem(12, 40, 100, 8, 3)
    expected = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, chunk_size=16)
    on_gpu = evaluate_rank(
        torch.from_numpy(distmat).cuda(),
        torch.from_numpy(q_pids).cuda(),
        torch.from_numpy(g_pids).cuda(),
        torch.from_numpy(q_camids).cuda(),
        torch.from_numpy(g_camids).cuda(),
        chunk_size=16,
    )
    assert on_gpu == expected
    np.testing.assert_array_equal(on_gpu.ap, expected.ap)
