"""Tests for chunked distances, :func:`evaluate_features` and :class:`ReIDEvaluator`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reid_eval.distance as distance_module
import reid_eval.metrics as metrics_module
from reid_eval import (
    QueryGallerySplit,
    RankResult,
    ReIDEvaluator,
    evaluate_features,
    evaluate_rank,
    iter_distance_chunks,
    pairwise_distance,
)
from tests.helpers import gamma32


def make_features(
    seed: int,
    num_q: int = 70,
    num_g: int = 240,
    dim: int = 16,
    num_ids: int = 20,
    num_cams: int = 4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features around one centre per identity (several images each); pid 0 = distractors."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_ids, dim))
    g_pids = rng.integers(0, num_ids, size=num_g)
    q_pids = rng.integers(1, num_ids, size=num_q)
    g_camids = rng.integers(0, num_cams, size=num_g)
    q_camids = rng.integers(0, num_cams, size=num_q)
    gf = (centres[g_pids] + 1.5 * rng.normal(size=(num_g, dim))).astype(np.float32)
    qf = (centres[q_pids] + 1.5 * rng.normal(size=(num_q, dim))).astype(np.float32)
    return qf, gf, q_pids, g_pids, q_camids, g_camids


def assert_identical(a: RankResult, b: RankResult) -> None:
    assert a == b  # every field, every bit
    np.testing.assert_array_equal(a.ap, b.ap)
    np.testing.assert_array_equal(a.cmc, b.cmc)


def classic_distance(q: torch.Tensor, g: torch.Tensor, metric: str) -> torch.Tensor:
    """The usual one-liners, computed on the whole matrix at once."""
    q, g = q.float(), g.float()
    if metric == "euclidean":
        return (q.pow(2).sum(1, keepdim=True) + g.pow(2).sum(1)[None] - 2 * q @ g.T).clamp_min(0)
    q = torch.nn.functional.normalize(q, dim=1)
    g = torch.nn.functional.normalize(g, dim=1)
    return 1 - q @ g.T


def distance_error_bound(
    q: torch.Tensor,
    g: torch.Tensor,
    metric: str,
    *,
    reduced: bool = False,
    own_normalisation: bool = False,
) -> torch.Tensor:
    """float64 bound of ``|float32 distance − exact distance|`` for every pair, whichever matmul
    kernel (summation order, matrix shape, chunking, device) computed the inner products.

    A float32 sum of n terms is within ``γ_n·Σ|terms|`` of the exact sum in any order (Higham,
    eq. 3.5; :func:`tests.helpers.gamma32`). Euclidean ``(‖q‖² + ‖g‖²) − 2⟨q, g⟩``: the squared
    norms, their sum, the product and the final subtraction give
    ``γ_{D+3}·(‖q‖² + ‖g‖² + 2Σ|q_d g_d|)``. Cosine ``1 − ⟨q̂, ĝ⟩`` of the normalised features:
    ``γ_{D+2}·(1 + Σ|q̂_d ĝ_d|)`` for those normalised features. ``own_normalisation``: against
    the exact cosine distance, for a computation that normalised the features itself (each
    entry within ``γ_{D+3}`` of the exact unit vector's: squares, sum, square root, division),
    ``2γ_{D+3}·Σ|q̂_d ĝ_d|`` more. ``reduced``: the matmul may round its inputs to TF32 first,
    ``2·2⁻¹¹`` more per product.
    """
    q, g = q.detach().float().cpu(), g.detach().float().cpu()
    dim = q.shape[1]
    if metric == "cosine":
        q = torch.nn.functional.normalize(q, dim=1)
        g = torch.nn.functional.normalize(g, dim=1)
    q, g = q.double(), g.double()
    products = q.abs() @ g.abs().T  # Σ_d |q_d g_d|
    extra = 2 * 2.0**-11 if reduced else 0.0
    if metric == "euclidean":
        norms = q.pow(2).sum(1)[:, None] + g.pow(2).sum(1)[None]
        return gamma32(dim + 3) * (norms + 2 * products) + extra * 2 * products
    renormalised = 2 * gamma32(dim + 3) if own_normalisation else 0.0
    return gamma32(dim + 2) * (1 + products) + (extra + renormalised) * products


def exact_distance(q: np.ndarray, g: np.ndarray, metric: str) -> torch.Tensor:
    """The distances of the float32 features ``q``, ``g`` in float64 (error ~1e-13, far below
    any float32 bound)."""
    q64, g64 = torch.from_numpy(q).double(), torch.from_numpy(g).double()
    if metric == "euclidean":
        return q64.pow(2).sum(1)[:, None] + g64.pow(2).sum(1)[None] - 2 * q64 @ g64.T
    q64, g64 = q64 / q64.norm(dim=1, keepdim=True), g64 / g64.norm(dim=1, keepdim=True)
    return 1 - q64 @ g64.T


# --------------------------------------------------------------------------------------------
# Distances, whole and chunked
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_pairwise_distance_equals_the_classic_expression(metric: str) -> None:
    # 600 query rows: three row blocks of the default size (256), the last one partial.
    gen = torch.Generator().manual_seed(0)
    q, g = torch.randn(600, 24, generator=gen), torch.randn(90, 24, generator=gen)
    dist = pairwise_distance(q, g, metric)
    assert dist.dtype == torch.float32 and dist.shape == (600, 90)
    # The classic multiplies all 600 rows at once, pairwise_distance 256 at a time: other matmul
    # kernels, so the two may differ in the last bits, by at most the sum of their error bounds
    # (a fixed atol would not do: an ulp of a distance of 128 is already 1.5e-5).
    difference = (dist.double() - classic_distance(q, g, metric).double()).abs()
    assert bool((difference <= 2 * distance_error_bound(q, g, metric)).all())
    # numpy input gives the same tensor
    assert torch.equal(pairwise_distance(q.numpy(), g.numpy(), metric), dist)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("chunk_size", [1, 5, 8, 9, 64, 1000])
def test_distance_chunks_are_bit_identical_to_the_whole_matrix(
    monkeypatch: pytest.MonkeyPatch, metric: str, chunk_size: int
) -> None:
    # Row blocks of 4 so that small inputs cross many block and chunk boundaries.
    monkeypatch.setattr(distance_module, "ROW_BLOCK", 4)
    gen = torch.Generator().manual_seed(1)
    q, g = torch.randn(37, 12, generator=gen), torch.randn(50, 12, generator=gen)
    whole = pairwise_distance(q, g, metric)
    starts, chunks = zip(*iter_distance_chunks(q, g, metric, chunk_size), strict=True)
    rows = -(-chunk_size // 4) * 4  # rounded up to a multiple of the row block
    assert list(starts) == list(range(0, 37, rows))
    assert all(c.shape[0] <= rows for c in chunks)
    assert torch.equal(torch.cat(chunks), whole)


def test_distance_chunks_validate_before_iterating() -> None:
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1, got 0"):
        iter_distance_chunks(torch.zeros(2, 3), torch.zeros(4, 3), chunk_size=0)
    with pytest.raises(ValueError, match="metric must be 'euclidean' or 'cosine'"):
        iter_distance_chunks(torch.zeros(2, 3), torch.zeros(4, 3), "l1")
    with pytest.raises(TypeError, match="must be a torch.Tensor or a numpy.ndarray, got list"):
        pairwise_distance([[1.0]], torch.zeros(1, 1))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# evaluate_features
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("normalize", [False, True])
def test_evaluate_features_equals_evaluate_rank_on_pairwise_distance(
    monkeypatch: pytest.MonkeyPatch, metric: str, normalize: bool
) -> None:
    monkeypatch.setattr(distance_module, "ROW_BLOCK", 8)
    qf, gf, *ids = make_features(2)
    q, g = torch.from_numpy(qf), torch.from_numpy(gf)
    if normalize:
        dist = pairwise_distance(
            torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(g, dim=1), metric
        )
    else:
        dist = pairwise_distance(q, g, metric)
    expected = evaluate_rank(dist, *ids)
    assert 0 < expected.mAP < 1 and expected.num_valid_queries > 0
    for chunk_size in (None, 1, 8, 20, 70, 10_000):
        result = evaluate_features(
            q, g, *ids, metric=metric, normalize=normalize, chunk_size=chunk_size
        )
        assert_identical(result, expected)


def test_evaluate_features_with_tied_features_keeps_gallery_order() -> None:
    # Duplicate gallery images (identical features) tie exactly; the tie is broken by gallery
    # order as in evaluate_rank. Query pid 1 (cam 0) at distance 0 from g0 (pid 2) and g1
    # (pid 1), both camera 1: stable order g0 x, g1 match -> rank-1 0, AP 1/2.
    qf = np.array([[1.0, 0.0]], dtype=np.float32)
    gf = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 5.0]], dtype=np.float32)
    result = evaluate_features(qf, gf, [1], [2, 1, 3], [0], [1, 1, 1], max_rank=3)
    assert result.cmc.tolist() == [0.0, 1.0, 1.0]
    assert result.mAP == 0.5
    swapped = evaluate_features(qf, gf, [1], [1, 2, 3], [0], [1, 1, 1], max_rank=3)
    assert swapped.mAP == 1.0


def test_evaluate_features_input_types_agree() -> None:
    qf, gf, q_pids, g_pids, q_camids, g_camids = make_features(3)
    expected = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids)
    as_torch = evaluate_features(
        torch.from_numpy(qf).requires_grad_(),
        torch.from_numpy(gf),
        torch.from_numpy(q_pids),
        torch.from_numpy(g_pids).int(),
        q_camids.tolist(),
        torch.from_numpy(g_camids),
    )
    assert_identical(as_torch, expected)
    # float64 features are evaluated in float32, as pairwise_distance does
    as_float64 = evaluate_features(
        qf.astype(np.float64), gf.astype(np.float64), q_pids, g_pids, q_camids, g_camids
    )
    assert_identical(as_float64, expected)


def test_evaluate_features_never_holds_more_than_one_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(distance_module, "ROW_BLOCK", 4)
    seen: list[tuple[int, int]] = []
    original_add = metrics_module.RankAccumulator.add

    def spy(
        self: metrics_module.RankAccumulator, start: int, dist: np.ndarray, **kwargs: bool
    ) -> None:
        seen.append((start, dist.shape[0]))
        assert dist.shape[1] == 240
        original_add(self, start, dist, **kwargs)

    monkeypatch.setattr(metrics_module.RankAccumulator, "add", spy)
    qf, gf, *ids = make_features(4)
    evaluate_features(qf, gf, *ids, chunk_size=10)  # rounded up to 12 rows
    assert seen == [(start, min(12, 70 - start)) for start in range(0, 70, 12)]

    # Automatic chunks hold about AUTO_CHUNK_ELEMENTS distances, in whole row blocks.
    import reid_eval.evaluator as evaluator_module

    monkeypatch.setattr(evaluator_module, "AUTO_CHUNK_ELEMENTS", 240 * 9)
    seen.clear()
    evaluate_features(qf, gf, *ids)
    assert {rows for _, rows in seen[:-1]} == {8}  # 9 rows' worth -> 8 (whole blocks of 4)


def test_evaluate_features_max_rank_warning_points_at_the_caller() -> None:
    qf, gf, *ids = make_features(5, num_g=30)
    with pytest.warns(UserWarning, match=r"gallery samples \(30\) is smaller than max_rank") as rec:
        result = evaluate_features(qf, gf, *ids)
    assert rec[0].filename == __file__
    assert result.cmc.shape == (30,)


def test_evaluate_features_overflowing_distances_are_reported() -> None:
    # Finite float32 features whose squared norms overflow float32.
    qf = np.full((2, 4), 1e20, dtype=np.float32)
    gf = np.full((3, 4), -1e20, dtype=np.float32)
    with pytest.raises(ValueError, match=r"overflow .*first in query row 0.*normalize=True"):
        evaluate_features(qf, gf, [1, 2], [1, 2, 1], [0, 0], [1, 1, 1], max_rank=3)
    # ... and the suggested fix works
    result = evaluate_features(
        qf, gf, [1, 2], [1, 2, 1], [0, 0], [1, 1, 1], max_rank=3, normalize=True
    )
    assert result.num_valid_queries == 2


QF, GF, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS = make_features(6, num_q=5, num_g=12, dim=4)


def _with(**changes: object) -> dict[str, object]:
    args: dict[str, object] = {
        "query_feats": QF,
        "gallery_feats": GF,
        "query_pids": Q_PIDS,
        "gallery_pids": G_PIDS,
        "query_camids": Q_CAMS,
        "gallery_camids": G_CAMS,
        "max_rank": 10,
    }
    args.update(changes)
    return args


def _nan_at(feats: np.ndarray, row: int, value: float) -> np.ndarray:
    feats = feats.copy()
    feats[row, 1] = value
    return feats


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"gallery_feats": GF[:, :3]}, r"different feature dimensions: 4 \(shape \(5, 4\)\) vs 3"),
        ({"query_feats": QF[0]}, r"query_feats must be 2-D .* got shape \(4,\)"),
        ({"query_feats": QF[:0]}, r"query_feats is empty \(shape \(0, 4\)\): the query set"),
        ({"gallery_feats": GF[:0]}, r"gallery_feats is empty .* the gallery set"),
        ({"query_pids": Q_PIDS[:4]}, r"query_pids has length 4 but query_feats has 5 rows"),
        (
            {"gallery_pids": G_PIDS[:-1]},
            r"gallery_pids has length 11 but gallery_feats has 12 rows",
        ),
        ({"query_camids": Q_CAMS[:1]}, r"query_camids has length 1 but query_feats has 5 rows"),
        ({"gallery_camids": G_CAMS[:3]}, r"gallery_camids has length 3 but gallery_feats has 12"),
        ({"gallery_pids": G_PIDS.astype(float)}, r"gallery_pids must hold integers"),
        ({"query_feats": _nan_at(QF, 3, np.nan)}, r"query_feats contains NaN or inf .*row 3"),
        ({"gallery_feats": _nan_at(GF, 7, np.inf)}, r"gallery_feats contains NaN or inf .*row 7"),
        (
            {"gallery_feats": GF.astype(np.float64) * 1e300},
            r"gallery_feats contains NaN or inf \(first in row 0, after conversion to float32\)",
        ),
        ({"metric": "manhattan"}, r"metric must be 'euclidean' or 'cosine', got 'manhattan'"),
        ({"chunk_size": 0}, r"chunk_size must be an integer >= 1, got 0"),
        ({"max_rank": 0}, r"max_rank must be an integer >= 1, got 0"),
        ({"query_feats": QF.astype(np.complex64)}, r"query_feats must hold real numbers"),
    ],
)
def test_evaluate_features_bad_input(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate_features(**_with(**changes))  # type: ignore[arg-type]


def test_evaluate_features_rejects_mixed_devices_and_other_types() -> None:
    on_meta = torch.empty(12, 4, device="meta")  # a second device that needs no GPU
    with pytest.raises(ValueError, match=r"query_feats is on cpu but gallery_feats on meta"):
        evaluate_features(**_with(query_feats=torch.from_numpy(QF), gallery_feats=on_meta))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"query_feats must be a torch.Tensor or a numpy.ndarray"):
        evaluate_features(**_with(query_feats=QF.tolist()))  # type: ignore[arg-type]


def test_evaluate_features_no_valid_query() -> None:
    with pytest.raises(ValueError, match="No valid query"):
        evaluate_features(**_with(query_pids=np.full(5, 99)))  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_evaluate_features_on_cuda_equals_evaluate_rank_of_its_distances() -> None:
    qf, gf, *ids = make_features(7, num_q=300, num_g=2000, dim=64)
    q, g = torch.from_numpy(qf).cuda(), torch.from_numpy(gf).cuda()
    for metric in ("euclidean", "cosine"):
        expected = evaluate_rank(pairwise_distance(q, g, metric), *ids)
        for chunk_size in (None, 100, 256, 1000):
            result = evaluate_features(q, g, *ids, metric=metric, chunk_size=chunk_size)
            assert_identical(result, expected)
        # The CPU uses other kernels: last-bit distance changes (which may swap near-tied
        # gallery entries, so the metrics need not match), each device within the float32
        # bound of the exact distances.
        exact = exact_distance(qf, gf, metric)
        bound = distance_error_bound(
            q, g, metric, reduced=torch.backends.cuda.matmul.allow_tf32, own_normalisation=True
        )
        for dist in (pairwise_distance(qf, gf, metric), pairwise_distance(q, g, metric).cpu()):
            assert bool(((dist.double() - exact).abs() <= bound).all())
    # Where every product and sum is exact (small integer features), the devices give the same
    # bits, and so the same ranking and metrics, ties included.
    qi, gi = np.rint(qf), np.rint(gf)
    on_gpu = evaluate_features(torch.from_numpy(qi).cuda(), torch.from_numpy(gi).cuda(), *ids)
    assert_identical(on_gpu, evaluate_features(qi, gi, *ids))


# --------------------------------------------------------------------------------------------
# ReIDEvaluator
# --------------------------------------------------------------------------------------------


def batches(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def test_evaluator_with_num_query_equals_evaluate_features() -> None:
    qf, gf, q_pids, g_pids, q_camids, g_camids = make_features(8)
    feats = torch.from_numpy(np.concatenate([qf, gf]))
    pids = np.concatenate([q_pids, g_pids])
    camids = np.concatenate([q_camids, g_camids])
    evaluator = ReIDEvaluator(num_query=len(qf))
    for part in batches(len(feats), 32):  # 70 queries: the third batch holds both
        evaluator.process(feats[part], torch.from_numpy(pids[part]), camids[part])
    assert len(evaluator) == len(feats)

    expected = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids)
    assert_identical(evaluator.evaluate(), expected)
    assert_identical(evaluator.evaluate(), expected)  # evaluating again changes nothing
    cosine = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, metric="cosine")
    assert_identical(evaluator.evaluate(metric="cosine"), cosine)

    split = evaluator.split()
    assert isinstance(split, QueryGallerySplit)
    assert torch.equal(split.query_feats, torch.from_numpy(qf))
    assert torch.equal(split.gallery_feats, torch.from_numpy(gf))
    np.testing.assert_array_equal(split.gallery_pids, g_pids)
    np.testing.assert_array_equal(split.query_camids, q_camids)

    evaluator.reset()
    assert len(evaluator) == 0
    with pytest.raises(ValueError, match="ReIDEvaluator has no samples: call process"):
        evaluator.evaluate()


def test_evaluator_with_is_query_per_batch_or_per_sample() -> None:
    qf, gf, q_pids, g_pids, q_camids, g_camids = make_features(9)
    evaluator = ReIDEvaluator(metric="cosine", normalize=True, max_rank=20)
    # Gallery first, then queries, in batches of 25; one batch mixes both with a mask.
    evaluator.process(gf[:100], g_pids[:100], g_camids[:100], is_query=False)
    mixed_feats = np.concatenate([gf[100:110], qf[:30]])
    mixed_mask = np.r_[np.zeros(10, dtype=bool), np.ones(30, dtype=bool)]
    evaluator.process(
        torch.from_numpy(mixed_feats),
        np.r_[g_pids[100:110], q_pids[:30]],
        np.r_[g_camids[100:110], q_camids[:30]],
        is_query=torch.from_numpy(mixed_mask),
    )
    for part in batches(40, 25):
        rows = slice(30 + part.start, 30 + part.stop)
        evaluator.process(qf[rows], q_pids[rows], q_camids[rows], is_query=True)
    evaluator.process(gf[110:], g_pids[110:], g_camids[110:], is_query=np.bool_(False))
    evaluator.process(gf[:0], g_pids[:0], g_camids[:0], is_query=False)  # empty batch: ignored

    expected = evaluate_features(
        qf, gf, q_pids, g_pids, q_camids, g_camids, 20, metric="cosine", normalize=True
    )
    assert_identical(evaluator.evaluate(), expected)
    assert evaluator.evaluate().cmc.shape == (20,)


def test_evaluator_copies_features_and_keeps_their_device() -> None:
    qf, gf, q_pids, g_pids, q_camids, g_camids = make_features(10)
    buffer = torch.from_numpy(qf.copy())
    evaluator = ReIDEvaluator()
    evaluator.process(buffer, q_pids, q_camids, is_query=True)
    evaluator.process(torch.from_numpy(gf).requires_grad_(), g_pids, g_camids, is_query=False)
    buffer.zero_()  # the caller reuses its buffer: the evaluator holds its own copy
    split = evaluator.split()
    assert not split.gallery_feats.requires_grad
    assert split.query_feats.device == torch.device("cpu")
    expected = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids)
    assert_identical(evaluator.evaluate(), expected)


def test_evaluator_bad_use() -> None:
    with pytest.raises(ValueError, match="num_query must be an integer >= 1, got 0"):
        ReIDEvaluator(num_query=0)
    with pytest.raises(ValueError, match="metric must be 'euclidean' or 'cosine'"):
        ReIDEvaluator(metric="l2")

    feats, pids, camids = torch.zeros(4, 3), [1, 2, 3, 4], [0, 0, 1, 1]
    with_num_query = ReIDEvaluator(num_query=2)
    with pytest.raises(ValueError, match="built with num_query .* takes no is_query"):
        with_num_query.process(feats, pids, camids, is_query=True)
    with_num_query.process(feats[:2], pids[:2], camids[:2])
    with pytest.raises(ValueError, match="processed 2 samples but num_query is 2: the gallery"):
        with_num_query.evaluate()

    evaluator = ReIDEvaluator()
    with pytest.raises(ValueError, match="process\\(\\) needs is_query"):
        evaluator.process(feats, pids, camids)
    with pytest.raises(ValueError, match=r"is_query must be a bool or a 1-D bool array .*\(4,\)"):
        evaluator.process(feats, pids, camids, is_query=[1, 0, 1, 0])
    with pytest.raises(ValueError, match=r"pids must be a 1-D array with one id per feature row"):
        evaluator.process(feats, pids[:3], camids, is_query=True)
    with pytest.raises(ValueError, match=r"camids must hold integers"):
        evaluator.process(feats, pids, [0.0, 0.0, 1.0, 1.0], is_query=True)
    with pytest.raises(ValueError, match=r"features must be 2-D"):
        evaluator.process(feats[0], pids[:1], camids[:1], is_query=True)
    evaluator.process(feats, pids, camids, is_query=True)
    with pytest.raises(ValueError, match="features have dimension 5 but earlier batches had 3"):
        evaluator.process(torch.zeros(4, 5), pids, camids, is_query=False)
    with pytest.raises(ValueError, match="features are on meta but earlier batches were on cpu"):
        evaluator.process(torch.empty(4, 3, device="meta"), pids, camids, is_query=False)
    with pytest.raises(ValueError, match="has no gallery samples: every batch so far was passed"):
        evaluator.evaluate()
    assert len(evaluator) == 4  # rejected batches were not added


def test_inputs_are_not_modified() -> None:
    # The ranking turns float chunks into sort keys in place only for buffers it owns.
    qf, gf, q_pids, g_pids, q_camids, g_camids = make_features(11)
    dist = pairwise_distance(qf, gf).numpy() - 50.0  # negative values: their bits get flipped
    dist_copy = dist.copy()
    as_tensor = torch.from_numpy(dist.copy())
    tensor_copy = as_tensor.clone()
    expected = evaluate_rank(dist, q_pids, g_pids, q_camids, g_camids, chunk_size=16)
    assert evaluate_rank(as_tensor, q_pids, g_pids, q_camids, g_camids) == expected
    np.testing.assert_array_equal(dist, dist_copy)
    assert torch.equal(as_tensor, tensor_copy)

    q, g = torch.from_numpy(qf.copy()), torch.from_numpy(gf.copy())
    evaluate_features(q, g, q_pids, g_pids, q_camids, g_camids, chunk_size=16)
    evaluate_features(q, g, q_pids, g_pids, q_camids, g_camids, metric="cosine", normalize=True)
    assert torch.equal(q, torch.from_numpy(qf)) and torch.equal(g, torch.from_numpy(gf))


def test_read_only_and_big_endian_features_are_accepted(recwarn: pytest.WarningsRecorder) -> None:
    qf, gf, *ids = make_features(12)
    expected = evaluate_features(qf, gf, *ids)
    read_only = gf.copy()
    read_only.setflags(write=False)
    assert_identical(evaluate_features(qf.astype(">f4"), read_only, *ids), expected)
    assert not [w for w in recwarn if "not writable" in str(w.message)]


def test_evaluator_max_rank_warning_points_at_the_caller() -> None:
    qf, gf, q_pids, g_pids, q_camids, g_camids = make_features(13, num_g=30)
    evaluator = ReIDEvaluator()
    evaluator.process(qf, q_pids, q_camids, is_query=True)
    evaluator.process(gf, g_pids, g_camids, is_query=False)
    with pytest.warns(UserWarning, match=r"gallery samples \(30\) is smaller than max_rank") as rec:
        result = evaluator.evaluate()
    assert len(rec) == 1 and rec[0].filename == __file__
    assert result.cmc.shape == (30,)
