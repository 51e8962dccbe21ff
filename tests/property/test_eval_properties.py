"""Property tests of reid-eval's metrics, distances and re-ranking on generated inputs.

Each call either refuses its input with a ValueError/TypeError naming an argument, or returns a
result that satisfies the invariants (CMC, mAP and mINP in [0, 1], the CMC non-decreasing,
finite float32 distances) and equals the readable definitions of :mod:`reid_eval._reference`
(``plain_evaluate_rank``, ``plain_re_ranking``) or a float64 computation.

Not covered here: datasets, feature extraction, checkpoints and the ``reid-eval`` command
(files and models, not tensors); see docs/reliability.md.
"""

from __future__ import annotations

import json
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st

from reid_eval import (
    QueryGallerySplit,
    RankResult,
    ReIDEvaluator,
    distance_rows,
    evaluate_features,
    evaluate_rank,
    evaluate_records,
    iter_distance_chunks,
    iter_re_ranking_features,
    pairwise_distance,
    re_ranking,
    re_ranking_features,
)
from reid_eval._reference import plain_evaluate_rank, plain_re_ranking
from tests.property.support import (
    ALL_DTYPES,
    ORDINARY_KINDS,
    attempt,
    covers,
    finite,
    moderate,
    mostly,
    must_accept,
    must_refuse,
    refused,
    separated,
    sides,
    tensors,
)

ID_FORMS = ("numpy", "list", "torch", "int32")


def _ids(values: np.ndarray, form: str):
    return {
        "numpy": values,
        "list": values.tolist(),
        "torch": torch.from_numpy(values),
        "int32": values.astype(np.int32),
        "float": values.astype(np.float64),
        "2d": values.reshape(1, -1),
        "short": values[:-1],
    }[form]


@st.composite
def identities(draw: st.DrawFn, num_query: int, num_gallery: int):
    """pids and camids of queries and gallery (few pids and cameras: matches and removals)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pids = draw(st.integers(1, 3))
    arrays = [
        rng.integers(0, pids, size=num_query),
        rng.integers(0, pids, size=num_gallery),
        rng.integers(0, 2, size=num_query),
        rng.integers(0, 3, size=num_gallery),
    ]
    forms = [draw(mostly(ID_FORMS, ("float", "2d", "short"))) for _ in arrays]
    return arrays, forms


def _evaluate_plain(distmat, arrays, max_rank):
    """plain_evaluate_rank on the float64 distances, or None where it finds no valid query."""
    d = distmat.double().cpu().numpy() if isinstance(distmat, torch.Tensor) else distmat
    try:
        return plain_evaluate_rank(np.asarray(d, dtype=np.float64), *arrays, max_rank=max_rank)
    except ValueError:
        return None


def _same_result(result: RankResult, reference: RankResult) -> None:
    assert result.num_valid_queries == reference.num_valid_queries
    assert result.num_queries == reference.num_queries
    np.testing.assert_allclose(result.cmc, reference.cmc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.ap, reference.ap, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.inp, reference.inp, rtol=0, atol=1e-12)
    assert result.mAP == pytest.approx(reference.mAP, abs=1e-12)
    assert result.mINP == pytest.approx(reference.mINP, abs=1e-12)


def _check_rank_result(result: RankResult, num_query: int, max_rank: int, num_gallery: int):
    """The invariants of a RankResult, and its rank() / to_dict()."""
    assert isinstance(result, RankResult) and result.num_queries == num_query
    assert 1 <= result.num_valid_queries <= num_query
    assert result.cmc.shape == (min(max_rank, num_gallery),)
    assert ((result.cmc >= 0) & (result.cmc <= 1)).all() and (np.diff(result.cmc) >= 0).all()
    for value in (result.mAP, result.mINP, *result.ap, *result.inp):
        assert 0 <= value <= 1 and math.isfinite(value)
    assert result.ap.shape == result.inp.shape == (result.num_valid_queries,)
    assert result.rank(1) == result.cmc[0] and result.rank(len(result.cmc)) == result.cmc[-1]
    for bad in (0, len(result.cmc) + 1):
        must_refuse(attempt(result.rank, bad), f"rank({bad})")
    summary = json.loads(json.dumps(result.to_dict()))
    assert summary["mAP"] == result.mAP and summary["cmc"] == result.cmc.tolist()
    assert result == result and "RankResult(" in repr(result)


@st.composite
def rank_inputs(draw: st.DrawFn):
    num_query, num_gallery = draw(sides(5)), draw(sides(8))
    distmat = draw(tensors((num_query, num_gallery), dtypes=ALL_DTYPES))
    if distmat.dtype != torch.bfloat16 and draw(st.booleans()):
        distmat = distmat.numpy()
    arrays, forms = draw(identities(num_query, num_gallery))
    return distmat, arrays, forms


@given(
    inputs=rank_inputs(),
    max_rank=mostly((1, 3, 10, 50), (0, -1, 2.5)),
    chunk_size=mostly((1, 2, 1024), (0,)),
    seed=st.integers(0, 2**16),
)
@example(  # no valid query: the message now names the id arrays
    inputs=(np.zeros((1, 1)), [np.array([0]), np.array([1]), np.array([0]), np.array([0])],
            ["numpy"] * 4),
    max_rank=1,
    chunk_size=1,
    seed=0,
)  # fmt: skip
@covers("evaluate_rank", "RankResult")
def test_evaluate_rank(inputs, max_rank, chunk_size, seed) -> None:
    """evaluate_rank: CMC non-decreasing in [0, 1] of length min(max_rank, G), mAP/mINP and
    per-query AP/INP in [0, 1]; equal to plain_evaluate_rank (stable ranking, same-pid
    same-camera removal) for every dtype and chunk_size; the same when the gallery is permuted
    (distinct distances) or the queries are; RankResult.rank/to_dict agree with the CMC."""
    distmat, arrays, forms = inputs
    args = [_ids(a, f) for a, f in zip(arrays, forms, strict=True)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # max_rank > gallery size
        result = attempt(evaluate_rank, distmat, *args, max_rank, chunk_size=chunk_size)
    num_query, num_gallery = distmat.shape
    d = torch.as_tensor(distmat) if isinstance(distmat, np.ndarray) else distmat
    valid_inputs = (
        num_query > 0 and num_gallery > 0 and finite(d.double())
        if d.dtype != torch.bool
        else num_query > 0 and num_gallery > 0
    )
    valid = (
        valid_inputs
        and all(f in ID_FORMS for f in forms)
        and isinstance(max_rank, int)
        and max_rank >= 1
        and chunk_size >= 1
    )
    reference = _evaluate_plain(distmat, arrays, max_rank) if valid else None
    if reference is None:
        must_refuse(result, "bad distances, ids, max_rank or chunk_size, or no valid query")
        return
    must_accept(result)
    _check_rank_result(result, num_query, max_rank, num_gallery)
    _same_result(result, reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert evaluate_rank(distmat, *args, max_rank, chunk_size=1) == result
        rng = np.random.default_rng(seed)
        d64 = d.double().cpu().numpy()
        if separated(d64, 0.0):
            perm = rng.permutation(num_gallery)
            q_pids, g_pids, q_cams, g_cams = arrays
            again = evaluate_rank(
                d64[:, perm], q_pids, g_pids[perm], q_cams, g_cams[perm], max_rank
            )
            _same_result(again, reference)
        perm = rng.permutation(num_query)
        again = evaluate_rank(
            d64[perm], arrays[0][perm], arrays[1], arrays[2][perm], arrays[3], max_rank
        )
        assert np.array_equal(np.sort(again.ap), np.sort(result.ap))
        assert again.mAP == pytest.approx(result.mAP, abs=1e-12)
        np.testing.assert_allclose(again.cmc, result.cmc, rtol=0, atol=1e-12)


@given(inputs=rank_inputs(), max_rank=mostly((1, 5, 50), ()))
@covers("evaluate_records")
def test_evaluate_records(inputs, max_rank) -> None:
    """evaluate_records: the result of evaluate_rank with the pids and camids of the records."""
    distmat, arrays, _ = inputs
    query = [
        SimpleNamespace(pid=int(p), camid=int(c)) for p, c in zip(arrays[0], arrays[2], strict=True)
    ]
    gallery = [
        SimpleNamespace(pid=int(p), camid=int(c)) for p, c in zip(arrays[1], arrays[3], strict=True)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = attempt(evaluate_records, distmat, query, gallery, max_rank)
        expected = attempt(evaluate_rank, distmat, *arrays, max_rank)
    if refused(expected):
        must_refuse(result, "what evaluate_rank refuses")
        return
    must_accept(result)
    assert result == expected


# --- distances ------------------------------------------------------------------------------------


@st.composite
def feature_pairs(draw: st.DrawFn, kinds=None):
    """query ``[Q, D]`` and gallery ``[G, D']`` (D' = D mostly), torch or numpy."""
    num_query, num_gallery, d = draw(sides(6)), draw(sides(6)), draw(sides(4))
    d_g = draw(mostly((d,), (d + 1,)))
    out = []
    for shape in ((num_query, d), (num_gallery, d_g)):
        t = draw(tensors(shape, dtypes=ALL_DTYPES, **({"kinds": kinds} if kinds else {})))
        if t.dtype != torch.bfloat16 and draw(mostly((False,), (True,))):
            t = t.numpy()
        out.append(t)
    return tuple(out)


def _float32(x) -> torch.Tensor:
    return torch.as_tensor(x).detach().float().cpu()


def _peaks(x: torch.Tensor) -> torch.Tensor:
    """Each row's largest |entry| (1 for zero rows), as a float64 column."""
    peak = x.double().abs().amax(dim=1, keepdim=True) if x.shape[1] else torch.ones(len(x), 1)
    return torch.where(peak > 0, peak, 1).double()


def _distances64(q: torch.Tensor, g: torch.Tensor, metric: str) -> torch.Tensor:
    """The definition in float64: ‖q − g‖² or 1 − cos(q, g) (zero rows: cos 0)."""
    q, g = q.double(), g.double()
    if metric == "euclidean":
        return ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    qn = q / q.norm(dim=1, keepdim=True).clamp_min(1e-300)
    gn = g / g.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return 1 - qn @ gn.T


def _feature_pair_valid(q, g) -> bool:
    q32, g32 = _float32(q), _float32(g)
    return (
        q32.dim() == 2
        and g32.dim() == 2
        and q32.shape[1] == g32.shape[1]
        and finite(q32)
        and finite(g32)
    )  # bool features are 0/1 numbers to reid-eval (reid-clustering refuses them)


@given(
    pair=feature_pairs(),
    metric=mostly(("euclidean", "cosine"), ("manhattan",)),
    rows_kind=mostly(("some", "all", "none"), ("float", "bool", "outside")),
    chunk_size=mostly((1, 256, 1024), (0,)),
    seed=st.integers(0, 2**16),
)
@example(  # NaN in a feature: the distances were NaN
    pair=(torch.tensor([[math.nan, 1.0]]), torch.tensor([[0.0, 1.0]])),
    metric="euclidean",
    rows_kind="all",
    chunk_size=1,
    seed=0,
)
@example(  # 1e30: the squared norms overflow float32, the distances were inf - inf = NaN
    pair=(torch.tensor([[1e30, 1.0]]), torch.tensor([[0.0, 1.0]])),
    metric="euclidean",
    rows_kind="all",
    chunk_size=1,
    seed=0,
)
@example(  # 1e30 with cosine: F.normalize's norm overflowed, every distance was 1
    pair=(torch.tensor([[1e30, 1e30]]), torch.tensor([[1e30, 1e30], [1e30, -1e30]])),
    metric="cosine",
    rows_kind="all",
    chunk_size=1,
    seed=0,
)
@example(  # float row numbers were truncated to indices without a word
    pair=(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, 1.0]])),
    metric="euclidean",
    rows_kind="float",
    chunk_size=1,
    seed=0,
)
@covers("pairwise_distance", "distance_rows", "iter_distance_chunks")
def test_distances(pair, metric, rows_kind, chunk_size, seed) -> None:
    """pairwise_distance: float32 [Q, G], finite, the squared Euclidean distance (>= 0) or
    1 − cos (in [0, 2]) of the float64 features within float32 rounding, for any dtype and
    magnitude (refused where the squared Euclidean distances overflow float32); distance_rows
    and iter_distance_chunks give the same bits; NaN/inf features are refused."""
    query, gallery = pair
    out = attempt(pairwise_distance, query, gallery, metric)
    valid = _feature_pair_valid(query, gallery) and metric in ("euclidean", "cosine")
    if not valid:
        must_refuse(out, "bad features or metric")
        return
    q32, g32 = _float32(query), _float32(gallery)
    if metric == "cosine" or (moderate(q32, 1e15) and moderate(g32, 1e15)):
        must_accept(out)
    if refused(out):
        assert "overflow" in str(out.error)
        return
    num_query, num_gallery = q32.shape[0], g32.shape[0]
    assert out.dtype == torch.float32 and out.shape == (num_query, num_gallery) and finite(out)
    expected = _distances64(q32, g32, metric)
    got = out.double()
    eps32 = torch.finfo(torch.float32).eps
    if metric == "euclidean":
        assert bool((got >= 0).all())
        scale = q32.double().pow(2).sum(1)[:, None] + g32.double().pow(2).sum(1)[None, :]
        # relative to the squared norms, plus float32's underflow (values below 2^-126 flush)
        bound = 8 * (q32.shape[1] + 2) * (eps32 * scale + 2.0**-126)
        assert bool(((got - expected).abs() <= bound).all())
    else:
        assert bool((got >= -4 * eps32).all() and (got <= 2 + 4 * eps32).all())
        torch.testing.assert_close(got, expected, rtol=0, atol=8 * (q32.shape[1] + 2) * eps32)
    rng = np.random.default_rng(seed)
    rows = {
        "some": rng.integers(-num_query, max(num_query, 1), size=3) if num_query else [],
        "all": np.arange(num_query),
        "none": np.zeros(0, dtype=np.int64),
        "float": np.arange(num_query, dtype=np.float64) + 0.5,
        "bool": np.ones(num_query, dtype=bool),
        "outside": np.array([num_query]),
    }[rows_kind]
    picked = attempt(distance_rows, query, gallery, rows, metric)
    if rows_kind in ("float", "bool", "outside") and not (rows_kind != "outside" and not num_query):
        must_refuse(picked, "rows not integer indices in range")
    else:
        must_accept(picked)
        assert torch.equal(picked, out[torch.as_tensor(np.asarray(rows), dtype=torch.long)])
    chunks = attempt(iter_distance_chunks, query, gallery, metric, chunk_size)
    if chunk_size < 1:
        must_refuse(chunks, "chunk_size < 1")
        return
    must_accept(chunks)
    parts = [(start, block.clone()) for start, block in chunks]
    assert [s for s, _ in parts] == sorted(s for s, _ in parts)
    joined = torch.cat([b for _, b in parts]) if parts else out[:0]
    assert torch.equal(joined, out)


@st.composite
def evaluation_inputs(draw: st.DrawFn, kinds=None):
    """``(query, gallery, ids, id forms)`` for the feature evaluators."""
    query, gallery = draw(feature_pairs(kinds=kinds))
    num_query = _float32(query).shape[0] if _float32(query).dim() == 2 else 0
    num_gallery = _float32(gallery).shape[0] if _float32(gallery).dim() == 2 else 0
    arrays, forms = draw(identities(num_query, num_gallery))
    return query, gallery, arrays, forms


@given(
    inputs=evaluation_inputs(kinds=ORDINARY_KINDS + ("huge", "tiny")),
    metric=mostly(("euclidean", "cosine"), ()),
    normalize=st.booleans(),
    chunk_size=mostly((None, 1, 300), (0,)),
)
@example(  # normalize=True at 1e30: F.normalize's norm overflowed, every feature became 0
    inputs=(
        torch.tensor([[1e30, 0.0], [0.0, 1e30]]),
        torch.tensor([[2e30, 1e29], [1e29, 2e30], [-1e30, 1e30]]),
        [np.array([0, 1]), np.array([0, 1, 1]), np.array([0, 0]), np.array([1, 1, 1])],
        ["numpy"] * 4,
    ),
    metric="euclidean",
    normalize=True,
    chunk_size=None,
)
@covers("evaluate_features")
def test_evaluate_features(inputs, metric, normalize, chunk_size) -> None:
    """evaluate_features: the result of evaluate_rank(pairwise_distance(q, g, metric)) (of the
    L2-normalised features with normalize=True), for any chunk_size; what pairwise_distance
    refuses is refused."""
    query, gallery, arrays, forms = inputs
    num_query = _float32(query).shape[0] if _float32(query).dim() == 2 else 0
    num_gallery = _float32(gallery).shape[0] if _float32(gallery).dim() == 2 else 0
    args = [_ids(a, f) for a, f in zip(arrays, forms, strict=True)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = attempt(
            evaluate_features,
            query,
            gallery,
            *args,
            10,
            metric=metric,
            normalize=normalize,
            chunk_size=chunk_size,
        )
    if not _feature_pair_valid(query, gallery) or min(num_query, num_gallery) == 0:
        must_refuse(result, "bad or empty features")
        return
    q32, g32 = _float32(query), _float32(gallery)
    if normalize:  # the definition: unit rows (float64, so that 1e±30 normalises too)
        q32 = F.normalize(q32.double() / _peaks(q32), dim=1).float()
        g32 = F.normalize(g32.double() / _peaks(g32), dim=1).float()
    distances = attempt(pairwise_distance, q32, g32, metric)
    if refused(distances) or (chunk_size is not None and chunk_size < 1):
        must_refuse(result, "distances that overflow, or chunk_size < 1")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = attempt(evaluate_rank, distances, *arrays, 10)
    if refused(expected) or not all(f in ID_FORMS for f in forms):
        must_refuse(result, "what evaluate_rank refuses")
        return
    must_accept(result)
    if moderate(_float32(query)) and moderate(_float32(gallery)):
        assert result == expected
    else:  # the unit rows may differ in the last bit from the float64 ones: ties may break
        assert result.num_valid_queries == expected.num_valid_queries


@given(
    inputs=evaluation_inputs(kinds=ORDINARY_KINDS),
    num_query_mode=st.booleans(),
    rerank=mostly((False, True), ()),
    batch=st.integers(1, 4),
)
@covers("ReIDEvaluator", "QueryGallerySplit")
def test_reid_evaluator(inputs, num_query_mode, rerank, batch) -> None:
    """ReIDEvaluator: process() in batches of any size (num_query, or is_query per batch), then
    evaluate() gives evaluate_features' answer on the concatenated sets, or with rerank=True
    evaluate_rank of re_ranking_features; len() counts the samples; split() returns the query
    and gallery features and ids in the order processed (a QueryGallerySplit)."""
    query, gallery, arrays, _ = inputs
    if not _feature_pair_valid(query, gallery):
        return
    q, g = _float32(query), _float32(gallery)
    evaluator = ReIDEvaluator(num_query=q.shape[0] if num_query_mode and q.shape[0] else None)
    for side, feats, pids, camids in (
        ("q", q, arrays[0], arrays[2]),
        ("g", g, arrays[1], arrays[3]),
    ):
        for start in range(0, feats.shape[0], batch):
            stop = start + batch
            kwargs = {} if evaluator.num_query is not None else {"is_query": side == "q"}
            evaluator.process(feats[start:stop], pids[start:stop], camids[start:stop], **kwargs)
    assert len(evaluator) == q.shape[0] + g.shape[0]
    if q.shape[0] and g.shape[0]:
        split = evaluator.split()
        assert isinstance(split, QueryGallerySplit)
        assert torch.equal(split.query_feats, q) and torch.equal(split.gallery_feats, g)
        for got, want in zip(split[2:], (arrays[0], arrays[1], arrays[2], arrays[3]), strict=True):
            assert np.array_equal(got, want)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        # The evaluator's state comes from process(): its messages name that call and its
        # arguments (num_query, is_query), and the id arrays evaluate_features checks.
        state = ("process", "num_query", "is_query", "query_pids")
        result = attempt(evaluator.evaluate, rerank=rerank, k1=2, k2=1, also=state)
        if rerank:
            expected = attempt(
                lambda: evaluate_rank(re_ranking_features(q, g, k1=2, k2=1), *arrays, 50),
                also=("k1", "query_pids", "query_features", "gallery_features"),
            )
        else:
            expected = attempt(evaluate_features, q, g, *arrays, 50)
    if refused(expected):
        must_refuse(result, "what evaluate_features refuses")
        return
    must_accept(result)
    assert result == expected


# --- re-ranking -----------------------------------------------------------------------------------


def _squared_euclidean64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a[:, None, :].astype(np.float64) - b[None, :, :]) ** 2).sum(-1)


@st.composite
def rerank_inputs(draw: st.DrawFn):
    """(q_g, q_q, g_g) distance matrices of features, sometimes broken or rescaled."""
    num_query, num_gallery, d = draw(sides(4)), draw(sides(6)), draw(sides(3))
    x = draw(tensors((num_query + num_gallery, d), dtypes=(torch.float64,), kinds=ORDINARY_KINDS,
                     specials=False)).cpu().numpy()  # fmt: skip
    q, g = x[:num_query], x[num_query:]
    dists = [_squared_euclidean64(q, g), _squared_euclidean64(q, q), _squared_euclidean64(g, g)]
    scale = draw(mostly((1.0, 2.0**-3, 2.0**40, 2.0**-40), ()))
    dists = [(d_ * scale).astype(np.float32) for d_ in dists]
    defect = draw(mostly(("none",), ("nan", "negative", "shape", "bool")))
    if defect == "nan" and dists[0].size:
        dists[0].flat[0] = np.nan
    elif defect == "negative" and dists[0].size:
        dists[0].flat[0] = -1.0
    elif defect == "shape":
        dists[1] = dists[1][:, :-1] if dists[1].shape[1] else np.zeros((1, 1), np.float32)
    elif defect == "bool":
        dists[2] = dists[2] > 0
    as_torch = draw(st.booleans())
    return [torch.from_numpy(d_) if as_torch else d_ for d_ in dists], scale, defect


@given(
    inputs=rerank_inputs(),
    k1=mostly((1, 2, 3, 20), (0, True)),
    k2=mostly((1, 2, 6), (0,)),
    lambda_value=mostly((0.0, 0.3, 1.0), (-0.1, 1.5, math.nan, "x")),
)
@example(  # distances of 2^40: their squares overflowed float32 and the result was NaN
    inputs=(
        [np.array([[1.0, 4.0]], np.float32) * 2**40, np.array([[0.0]], np.float32),
         np.array([[0.0, 9.0], [9.0, 0.0]], np.float32) * 2**40],
        2.0**40,
        "none",
    ),
    k1=1,
    k2=1,
    lambda_value=0.3,
)  # fmt: skip
@example(  # all distances 0: the reference divided 0 by 0 (NaN), the library keeps 0
    inputs=([np.zeros((1, 1), np.float32)] * 3, 1.0, "none"), k1=1, k2=1, lambda_value=0.0
)
@example(  # lambda_value="x": float()'s message named no argument
    inputs=([np.zeros((1, 1), np.float32)] * 3, 1.0, "none"), k1=1, k2=1, lambda_value="x"
)
@covers("re_ranking")
def test_re_ranking(inputs, k1, k2, lambda_value) -> None:
    """re_ranking: float32 [Q, G], finite, in [0, 1] up to rounding; equal to plain_re_ranking
    (the reference loops) within 2e-6; the same for the distances scaled by any power of two
    (the classic normalises each column: 2^±40 overflowed or underflowed float32 when squared).
    Bad shapes, NaN, negative distances, k1/k2/lambda_value out of range are refused."""
    dists, scale, defect = inputs
    out = attempt(re_ranking, *dists, k1, k2, lambda_value)
    num_query, num_gallery = np.asarray(dists[0]).shape
    n = num_query + num_gallery
    valid = (
        defect == "none"
        and num_query > 0
        and num_gallery > 0
        and not isinstance(k1, bool)
        and k1 >= 1
        and k2 >= 1
        and max(k1 + 1, k2) <= n
        and isinstance(lambda_value, float)
        and 0 <= lambda_value <= 1
    )
    if not valid:
        must_refuse(out, "bad distances, k1, k2 or lambda_value")
        return
    must_accept(out)
    assert out.dtype == np.float32 and out.shape == (num_query, num_gallery) and finite(out)
    assert (out >= -1e-6).all() and (out <= 1 + 1e-6).all()
    plain = [np.asarray(d_, dtype=np.float32) / np.float32(scale) for d_ in dists]
    expected = plain_re_ranking(*plain, k1, k2, lambda_value)
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-6)
    if scale != 1.0:
        assert np.array_equal(re_ranking(*plain, k1, k2, lambda_value), out)


@given(
    pair=feature_pairs(kinds=ORDINARY_KINDS + ("huge", "tiny")),
    k1=mostly((1, 2, 3), (0,)),
    k2=mostly((1, 2), ()),
    lambda_value=mostly((0.0, 0.3, 1.0), ("x",)),
    chunk_size=mostly((1, 3, 1024), (0,)),
)
@example(  # features of 1e30: their squared distances squared overflowed float32 (NaN)
    pair=(torch.tensor([[1e30], [3e30]]), torch.tensor([[2e30], [-1e30]])),
    k1=1,
    k2=1,
    lambda_value=0.3,
    chunk_size=1024,
)
@example(  # features with no dimension: max() of an empty tensor raised a RuntimeError
    pair=(torch.zeros(1, 0, dtype=torch.bfloat16), torch.zeros(1, 0, dtype=torch.bfloat16)),
    k1=1,
    k2=1,
    lambda_value=0.0,
    chunk_size=1,
)
@example(  # different dimensions: the message now names query_features and gallery_features
    pair=(torch.zeros(1, 1), torch.zeros(1, 2)), k1=1, k2=1, lambda_value=0.0, chunk_size=1
)
@example(  # chunk_size=0: range()'s own ValueError named no argument
    pair=(torch.eye(2), torch.eye(2)), k1=1, k2=1, lambda_value=0.3, chunk_size=0
)
@covers("re_ranking_features", "iter_re_ranking_features")
def test_re_ranking_features(pair, k1, k2, lambda_value, chunk_size) -> None:
    """re_ranking_features: float32 [Q, G], finite; equal to re_ranking of the squared Euclidean
    distances (float64, then float32) when no near-tie can reorder the neighbours, at any feature
    magnitude; iter_re_ranking_features yields the same rows in order; bad features, k1,
    lambda_value or chunk_size are refused."""
    query, gallery = pair
    out = attempt(re_ranking_features, query, gallery, k1, k2, lambda_value, chunk_size=chunk_size)
    ok = _feature_pair_valid(query, gallery)
    q, g = _float32(query), _float32(gallery)
    n = q.shape[0] + g.shape[0] if ok else 0
    valid = (
        ok
        and min(q.shape[0], g.shape[0]) > 0
        and k1 >= 1
        and max(k1 + 1, k2) <= n
        and lambda_value != "x"
        and chunk_size >= 1
    )
    if not valid:
        must_refuse(out, "bad features, k1, k2, lambda_value or chunk_size")
        return
    must_accept(out)
    assert out.dtype == np.float32 and out.shape == (q.shape[0], g.shape[0]) and finite(out)
    blocks = list(
        iter_re_ranking_features(query, gallery, k1, k2, lambda_value, chunk_size=chunk_size)
    )
    assert [b[0] for b in blocks] == list(range(0, q.shape[0], chunk_size))
    assert np.array_equal(np.concatenate([b[2].cpu().numpy() for b in blocks]), out)
    x = torch.cat([q, g]).double().numpy()
    full = _squared_euclidean64(x, x)
    scale = float(full.max()) if full.size and full.max() > 0 else 1.0
    if not separated(full / scale, 1e-4):
        return  # a near-tie: the matmul and the elementwise distances may rank it differently
    nq = q.shape[0]
    parts = (full[:nq, nq:], full[:nq, :nq], full[nq:, nq:])
    dists = [(d_ / scale).astype(np.float32) for d_ in parts]  # re-ranking ignores the scale
    np.testing.assert_allclose(out, re_ranking(*dists, k1, k2, lambda_value), rtol=0, atol=2e-5)
