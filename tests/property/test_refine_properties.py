"""Property tests of reid-refine: every public function and module on generated inputs.

Each call either refuses its input with a ValueError/TypeError naming an argument, or returns a
result that satisfies the function's invariants and matches a float64 re-implementation of the
paper's formula (the docstrings' equations), within the rounding of the input dtype.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st

from reid_refine import (
    AALSLoss,
    DCLSLoss,
    DCLSLossOutput,
    DCLSOptions,
    LabelSmoothingLoss,
    PGLRLoss,
    SoftCrossEntropyLoss,
    aals_loss,
    aals_targets,
    cross_agreement,
    dcls_loss,
    dcls_smoothing_factors,
    dcls_targets,
    label_smoothing_loss,
    pglr_loss,
    pglr_targets,
    ranked_lists,
    soft_cross_entropy,
)
from tests.property.support import (
    ALL_DTYPES,
    FLOAT_DTYPES,
    ORDINARY_KINDS,
    attempt,
    coarsest,
    covers,
    eps,
    exactly_representable,
    finite,
    moderate,
    mostly,
    must_accept,
    must_refuse,
    separated,
    shapes,
    sides,
    tensors,
)

LABEL_DTYPES = mostly((torch.int64, torch.int32, torch.uint8), (torch.bool, torch.float32))
BAD_LABELS = mostly((False,), (True,))
UNIT_VALUES = mostly((0.0, 0.1, 0.5, 1.0, "0.3"), (-0.1, 1.5, math.nan, math.inf, None))


def _valid_unit(value: object, *, low_open: bool = False) -> bool:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return math.isfinite(v) and 0 <= v <= 1 and not (low_open and v == 0)


def _ok_float(x: torch.Tensor, ndim: int) -> bool:
    return x.is_floating_point() and x.dim() == ndim and finite(x)


def _labels(rng: np.random.Generator, n: int, k: int, dtype: torch.dtype, bad: bool):
    """``[n]`` labels in ``[0, k)`` (or, with ``bad``, some out of range) of ``dtype``."""
    values = rng.integers(0, max(k, 1), size=n)
    if bad and n:
        values[rng.integers(0, n)] = rng.choice([-1, k])
    t = torch.from_numpy(values)
    return t.bool() if dtype == torch.bool else t.to(dtype)


def _labels_ok(t: torch.Tensor, n: int, k: int) -> bool:
    if t.is_floating_point() or t.dtype == torch.bool or t.shape != (n,):
        return False
    return n == 0 or (int(t.min()) >= 0 and int(t.max()) < k)


def _close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float = 1.0):
    """``actual`` within the rounding of ``dtype`` (relative to ``scale``) of ``expected``."""
    tol = 64 * eps(dtype) * (1.0 + scale)
    torch.testing.assert_close(
        actual.detach().double().cpu(), expected.double().cpu(), rtol=tol, atol=tol
    )


def _distribution_rows(t: torch.Tensor, dtype: torch.dtype) -> None:
    """Every row (last dimension) a probability distribution, to rounding."""
    v = t.double()
    assert finite(v) and bool((v >= 0).all()) and bool((v <= 1 + 8 * eps(dtype)).all())
    if v.shape[-1]:
        _close(v.sum(-1), torch.ones(v.shape[:-1], dtype=torch.float64), dtype)


def _ce64(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row ``-Σ t·log_softmax(logits)`` in float64 (the definition)."""
    return -(target.double().cpu() * F.log_softmax(logits.double().cpu(), dim=-1)).sum(-1)


def _target_for(shape: tuple[int, ...], kind: str, seed: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "other_shape":
        shape = shape[:-1] + (shape[-1] + 1,) if shape else (1,)
    if kind == "onehot" and shape and shape[-1]:
        idx = torch.randint(0, shape[-1], shape[:-1], generator=g)
        t = F.one_hot(idx, shape[-1]).double()
    elif kind == "uniform" and shape and shape[-1]:
        t = torch.full(shape, 1.0 / shape[-1], dtype=torch.float64)
    else:
        t = torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64), dim=-1)
    if kind == "nan" and t.numel():
        t.view(-1)[0] = math.nan
    return t.to(dtype)


# --- soft cross-entropy and constant label smoothing ---------------------------------------------


@given(
    logits=tensors(shapes(max_dims=3), dtypes=ALL_DTYPES),
    target_kind=mostly(("softmax", "onehot", "uniform"), ("nan", "other_shape")),
    target_dtype=st.sampled_from(FLOAT_DTYPES),
    reduction=mostly(("mean", "sum", "none"), ("median",)),
    seed=st.integers(0, 2**16),
)
@covers("soft_cross_entropy", "SoftCrossEntropyLoss")
def test_soft_cross_entropy(logits, target_kind, target_dtype, reduction, seed) -> None:
    """soft_cross_entropy: the reduction's shape; finite and >= 0 for distribution targets; equal
    to -Σ t·log_softmax(logits) in float64; the same under a joint permutation of the classes
    (and of the rows, for reduction='none'); SoftCrossEntropyLoss gives the function's answer."""
    shape = tuple(logits.shape)
    target = _target_for(shape, target_kind, seed, target_dtype).to(logits.device)
    out = attempt(soft_cross_entropy, logits, target, reduction=reduction)
    valid = (
        logits.is_floating_point()
        and logits.dim() >= 1
        and finite(logits)
        and target_kind != "other_shape"
        and not (target_kind == "nan" and logits.numel())
        and reduction in ("mean", "sum", "none")
        and not (reduction == "mean" and math.prod(shape[:-1]) == 0)
    )
    if not valid:
        must_refuse(out, "non-float/NaN/inf logits, bad target, bad reduction or empty mean")
        return
    must_accept(out)
    expected = _ce64(logits, target)
    expected = {"mean": expected.mean(), "sum": expected.sum(), "none": expected}[reduction]
    assert out.shape == expected.shape
    assert finite(out) and bool((out >= 0).all())
    scale = float(logits.double().abs().max()) if logits.numel() else 0.0
    _close(out, expected, coarsest(logits.dtype, target.dtype), scale)
    if shape[-1] > 1:
        perm = torch.randperm(shape[-1], generator=torch.Generator().manual_seed(seed))
        permuted = soft_cross_entropy(logits[..., perm], target[..., perm], reduction=reduction)
        _close(permuted, out.double(), coarsest(logits.dtype, target.dtype), scale)
    if reduction == "none" and logits.dim() >= 2 and shape[0] > 1:
        rows = torch.randperm(shape[0], generator=torch.Generator().manual_seed(seed))
        assert torch.equal(
            soft_cross_entropy(logits[rows], target[rows], reduction="none"), out[rows]
        )
    if reduction == "mean":
        assert torch.equal(SoftCrossEntropyLoss()(logits, target), out)


@given(
    logits=tensors(
        mostly([st.tuples(sides(5), sides(5))], [shapes(max_dims=3)]).flatmap(lambda s: s),
        dtypes=ALL_DTYPES,
    ),
    label_dtype=LABEL_DTYPES,
    bad_labels=BAD_LABELS,
    epsilon=UNIT_VALUES,
    seed=st.integers(0, 2**16),
)
@covers("label_smoothing_loss", "LabelSmoothingLoss")
def test_label_smoothing_loss(logits, label_dtype, bad_labels, epsilon, seed) -> None:
    """label_smoothing_loss: finite and >= 0; equal to the cross-entropy against
    (1 − ε)·onehot + ε/K in float64; the same for rows permuted; LabelSmoothingLoss(ε) agrees."""
    rng = np.random.default_rng(seed)
    n = logits.shape[0] if logits.dim() else 0
    k = logits.shape[1] if logits.dim() == 2 else 0
    targets = _labels(rng, n, k, label_dtype, bad_labels).to(logits.device)
    out = attempt(label_smoothing_loss, logits, targets, epsilon)
    valid = _ok_float(logits, 2) and n > 0 and _labels_ok(targets, n, k) and _valid_unit(epsilon)
    if not valid:
        must_refuse(out, "bad logits, labels or epsilon, or an empty batch")
        return
    must_accept(out)
    e = float(epsilon)  # type: ignore[arg-type]
    smooth = (1 - e) * F.one_hot(targets.long().cpu(), k).double() + e / k
    scale = float(logits.double().abs().max())
    assert out.dim() == 0 and finite(out) and float(out) >= 0
    _close(out, _ce64(logits, smooth).mean(), logits.dtype, scale)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    _close(label_smoothing_loss(logits[perm], targets[perm], e), out.double(), logits.dtype, scale)
    assert torch.equal(LabelSmoothingLoss(e)(logits, targets), out)


# --- PPLR: ranked lists and cross agreement -------------------------------------------------------


def _oracle_ranked(x: torch.Tensor, m: int) -> torch.Tensor:
    """Top-m by inner product, descending, ties to the lower index (stable sort of all N)."""
    sims = x @ x.T
    return torch.sort(sims, dim=1, descending=True, stable=True).indices[:, :m]


def _jaccard_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = []
    for ra, rb in zip(a.tolist(), b.tolist(), strict=True):
        sa, sb = set(ra), set(rb)
        out.append(len(sa & sb) / len(sa | sb))
    return torch.tensor(out, dtype=torch.float64)


KNN_MODES = ("none", "oracle", "global_ranked", "float_output", "short", "repeats", "not_callable")


def _knn_for(mode: str):
    if mode in ("oracle", "global_ranked"):
        return _oracle_ranked
    if mode == "float_output":
        return lambda x, m: _oracle_ranked(x, m).float()
    if mode == "short":
        return lambda x, m: _oracle_ranked(x, m)[:, : m - 1]
    if mode == "repeats":
        return lambda x, m: torch.zeros(x.shape[0], m, dtype=torch.long, device=x.device)
    if mode == "not_callable":
        return 3
    return None


@st.composite
def agreement_inputs(draw: st.DrawFn):
    """``(global_feats [N, D], part_feats [N, P, D_p], k)``; k sometimes out of range."""
    n = draw(sides(7))
    d, p, dp = draw(sides(3)), draw(sides(3)), draw(sides(3))
    global_feats = draw(tensors((n, d), dtypes=ALL_DTYPES))
    part_feats = draw(tensors((n, p, dp), dtypes=FLOAT_DTYPES))
    k = draw(
        mostly([st.integers(1, max(1, n - 1))], [st.sampled_from((-1, 0, n, True))]).flatmap(
            lambda s: s
        )
    )
    return global_feats, part_feats, k


@given(
    inputs=agreement_inputs(),
    chunk_size=mostly((None, 1, 2), (0,)),
    knn_mode=mostly(KNN_MODES[:3], KNN_MODES[3:]),
)
@example(  # inner products of 1e29 overflow float32: every similarity was inf, a tie
    inputs=(
        torch.tensor([[1.2573e29], [-1.3210e29], [6.4042e29]]),
        torch.tensor([[[1.2573e29, -1.3210e29, 6.4042e29]], [[1.0490e29, -5.3567e29, 3.6160e29]],
                      [[1.3040e30, 9.4708e29, -7.0374e29]]]),
        1,
    ),
    chunk_size=None,
    knn_mode="none",
)  # fmt: skip
@covers("ranked_lists", "cross_agreement")
def test_ranked_lists_and_cross_agreement(inputs, chunk_size, knn_mode) -> None:
    """ranked_lists: [N, k] int64, each row k distinct indices in [0, N); the stable descending
    sort of x·xᵀ without its first column where the products are exact (small integers).
    cross_agreement: [N, P] float32 in [0, 1]; |R_g ∩ R_p| / |R_g ∪ R_p| of those lists; the
    same with knn= or global_ranked= from the same search; rows permuted with the features when
    the similarities have no ties; a knn that breaks its contract is refused naming knn."""
    global_feats, part_feats, k = inputs
    n, p = global_feats.shape[0], part_feats.shape[1]
    valid_k = not isinstance(k, bool) and 1 <= k < n
    valid_chunk = chunk_size is None or chunk_size >= 1

    ranked = attempt(ranked_lists, global_feats, k, chunk_size=chunk_size)
    if not (_ok_float(global_feats, 2) and valid_k and valid_chunk):
        must_refuse(ranked, "bad features, k or chunk_size")
    else:
        must_accept(ranked)
        assert ranked.dtype == torch.int64 and ranked.shape == (n, k)
        assert bool((ranked >= 0).all() and (ranked < n).all())
        assert all(len(set(row)) == k for row in ranked.tolist())
        if exactly_representable(global_feats):
            assert torch.equal(ranked, _oracle_ranked(global_feats, k + 1)[:, 1:])

    knn = _knn_for(knn_mode)
    kwargs = {"chunk_size": chunk_size}
    if knn_mode == "global_ranked":
        if _ok_float(global_feats, 2) and valid_k:
            kwargs["global_ranked"] = _oracle_ranked(global_feats, k + 1)
    elif knn is not None:
        kwargs["knn"] = knn
    scores = attempt(cross_agreement, global_feats, part_feats, k, **kwargs)
    searches = knn_mode == "none" or (knn_mode == "global_ranked" and p > 0)
    valid = (
        _ok_float(global_feats, 2)
        and _ok_float(part_feats, 3)
        and valid_k
        and (valid_chunk or not searches)  # chunk_size is a parameter of the built-in search
    )
    broken_knn = knn_mode in ("float_output", "short", "repeats", "not_callable")
    if not valid or broken_knn:
        must_refuse(scores, "bad inputs or a knn that breaks its contract")
        return
    must_accept(scores)
    assert scores.dtype == torch.float32 and scores.shape == (n, p)
    assert bool((scores >= 0).all() and (scores <= 1).all())
    exact = exactly_representable(global_feats) and exactly_representable(part_feats)
    if exact:
        rl_g = _oracle_ranked(global_feats, k + 1)[:, 1:]
        for q in range(p):
            rl_p = _oracle_ranked(part_feats[:, q, :], k + 1)[:, 1:]
            _close(scores[:, q], _jaccard_rows(rl_g, rl_p), torch.float32)
        assert torch.equal(cross_agreement(global_feats, part_feats, k, knn=_oracle_ranked), scores)
    sims = [(global_feats.double() @ global_feats.double().T).cpu().numpy()]
    sims += [(f.double() @ f.double().T).cpu().numpy() for f in part_feats.unbind(1)]
    margin = 64 * eps(global_feats.dtype) * max(1.0, *(float(np.abs(s).max()) for s in sims))
    if moderate(global_feats) and moderate(part_feats) and all(separated(s, margin) for s in sims):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(n + k))
        permuted = cross_agreement(global_feats[perm], part_feats[perm], k)
        assert torch.equal(permuted, scores[perm])


# --- PPLR: AALS and PGLR --------------------------------------------------------------------------


@st.composite
def part_batches(draw: st.DrawFn):
    """part_logits [N, P, K] (sometimes another rank), targets [N], agreement [N, P]."""
    n, p, k = draw(sides(4)), draw(sides(3)), draw(sides(4))
    shape = draw(mostly([(n, p, k)], [(n, k), (n, p, k, 1)]))
    part_logits = draw(tensors(shape, dtypes=FLOAT_DTYPES + (torch.int64,)))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    targets = _labels(rng, n, k, draw(LABEL_DTYPES), draw(BAD_LABELS))
    agreement_kind = draw(mostly(("unit", "ends"), ("outside", "nan", "shape")))
    a = rng.uniform(0, 1, size=(n, p))
    if agreement_kind == "ends":
        a = rng.integers(0, 2, size=(n, p)).astype(np.float64)
    elif agreement_kind == "outside" and a.size:
        a.flat[0] = rng.choice([-0.25, 1.25])
    elif agreement_kind == "nan" and a.size:
        a.flat[0] = math.nan
    elif agreement_kind == "shape":
        a = rng.uniform(0, 1, size=(n, p + 1))
    agreement = torch.from_numpy(a).to(draw(st.sampled_from(FLOAT_DTYPES)))
    device = part_logits.device
    return part_logits, targets.to(device), agreement.to(device), seed


def _part_inputs_ok(part_logits, targets, agreement) -> bool:
    if not _ok_float(part_logits, 3):
        return False
    n, p, k = part_logits.shape
    if p < 1 or k < 1 or not _labels_ok(targets, n, k):
        return False
    a = agreement.double()
    return (
        agreement.is_floating_point()
        and tuple(agreement.shape) == (n, p)
        and finite(a)
        and bool(((a >= 0) & (a <= 1)).all())
    )


@given(batch=part_batches())
@example(  # uniform logits, C = 0: the loss is exactly 0 and came out as -2.2e-16
    batch=(
        torch.tensor([[[3.0, 3.0, 3.0]]], dtype=torch.float64),
        torch.tensor([2]),
        torch.tensor([[0.0]]),
        29,
    )
)
@example(  # K = 0 classes: aals_targets raised torch's RuntimeError from one_hot
    batch=(torch.zeros(0, 0, 0), torch.zeros(0, dtype=torch.long), torch.zeros(0, 0), 0)
)
@covers("aals_loss", "aals_targets", "AALSLoss")
def test_aals(batch) -> None:
    """aals_targets: [N, P, K] rows that are distributions, C·y + (1 − C)/K. aals_loss: finite
    and >= 0; equal in float64 to the mean of C·H(y, q) + (1 − C)·KL(u ‖ q) (PPLR Eq. 8); the
    same under a joint permutation of the parts; AALSLoss agrees."""
    part_logits, targets, agreement, seed = batch
    ok = _part_inputs_ok(part_logits, targets, agreement)
    k = part_logits.shape[-1] if part_logits.dim() else 0
    refined = attempt(aals_targets, targets, agreement, k, part_logits.dtype)
    a = agreement.double()
    targets_ok = (
        part_logits.is_floating_point()
        and k >= 1
        and agreement.dim() == 2
        and finite(a)
        and bool(((a >= 0) & (a <= 1)).all())
        and _labels_ok(targets, agreement.shape[0], k)
    )
    if not targets_ok:
        must_refuse(refined, "bad num_classes, dtype, targets or agreement")
    else:
        must_accept(refined)
        n, p = agreement.shape
        assert refined.shape == (n, p, k) and refined.dtype == part_logits.dtype
        _distribution_rows(refined, part_logits.dtype)
        c = agreement.double().cpu()[:, :, None]
        y = F.one_hot(targets.long().cpu(), k).double()[:, None, :]
        _close(refined, c * y + (1 - c) / k, part_logits.dtype)

    loss = attempt(aals_loss, part_logits, targets, agreement)
    if not ok or part_logits.shape[0] == 0:
        must_refuse(loss, "bad inputs or an empty batch")
        return
    must_accept(loss)
    assert loss.dim() == 0 and finite(loss) and float(loss) >= 0
    logq = F.log_softmax(part_logits.double().cpu(), dim=-1)
    c = agreement.double().cpu()
    ce = -logq.gather(2, targets.long().cpu()[:, None, None].expand(-1, logq.shape[1], 1))[..., 0]
    kl = -math.log(k) - logq.mean(-1)
    scale = float(part_logits.double().abs().max())
    _close(loss, (c * ce + (1 - c) * kl).mean(), part_logits.dtype, scale)
    perm = torch.randperm(part_logits.shape[1], generator=torch.Generator().manual_seed(seed))
    permuted = aals_loss(part_logits[:, perm], targets, agreement[:, perm])
    _close(permuted, loss.double(), part_logits.dtype, scale)
    assert torch.equal(AALSLoss()(part_logits, targets, agreement), loss)


@given(
    batch=part_batches(),
    global_shape=mostly(("match",), ("other",)),
    global_dtype=st.sampled_from(FLOAT_DTYPES),
    beta=mostly((0.5, 1.0, 1e-3), (0.0, -1.0, 2.0, math.nan, "x")),
)
@covers("pglr_loss", "pglr_targets", "PGLRLoss")
def test_pglr(batch, global_shape, global_dtype, beta) -> None:
    """pglr_targets: [N, K] distributions, β·y + (1 − β)·Σ_p softmax_p(C)·softmax(part logits)
    (PPLR Eq. 9) in float64; the same under a joint permutation of the parts. pglr_loss: finite,
    >= 0, the cross-entropy against those targets (Eq. 10); PGLRLoss(β) agrees."""
    part_logits, targets, agreement, seed = batch
    ok = _part_inputs_ok(part_logits, targets, agreement)
    valid_beta = _valid_unit(beta, low_open=True)
    refined = attempt(pglr_targets, part_logits, targets, agreement, beta)
    if not (ok and valid_beta):
        must_refuse(refined, "bad inputs or beta")
    else:
        must_accept(refined)
        n, p, k = part_logits.shape
        assert refined.shape == (n, k)
        _distribution_rows(refined, part_logits.dtype)
        b = float(beta)
        w = torch.softmax(agreement.double().cpu(), dim=1)[:, :, None]
        ens = (w * torch.softmax(part_logits.double().cpu(), dim=-1)).sum(1)
        expected = b * F.one_hot(targets.long().cpu(), k).double() + (1 - b) * ens
        _close(refined, expected, part_logits.dtype)
        perm = torch.randperm(p, generator=torch.Generator().manual_seed(seed))
        permuted = pglr_targets(part_logits[:, perm], targets, agreement[:, perm], b)
        _close(permuted, refined.double(), part_logits.dtype)

    g = torch.Generator().manual_seed(seed)
    n = part_logits.shape[0] if part_logits.dim() else 0
    k = part_logits.shape[-1] if part_logits.dim() == 3 else 1
    shape = (n, k) if global_shape == "match" else (n, k + 1)
    global_logits = torch.randn(shape, generator=g).to(global_dtype).to(part_logits.device)
    loss = attempt(pglr_loss, global_logits, part_logits, targets, agreement, beta)
    if not (ok and valid_beta and global_shape == "match" and n > 0):
        must_refuse(loss, "bad inputs, beta or global_logits shape, or an empty batch")
        return
    must_accept(loss)
    assert loss.dim() == 0 and finite(loss) and float(loss) >= 0
    _close(loss, _ce64(global_logits, refined).mean(), global_dtype, 1.0)
    assert torch.equal(PGLRLoss(beta)(global_logits, part_logits, targets, agreement), loss)


# --- DCLS -----------------------------------------------------------------------------------------

OPTION_VALUES = {
    "w_l": (0.7, 0.0, 1.0, -0.5, math.nan),
    "w_g": (0.5, 0.0, 1.0, 2.0),
    "metric": ("euclidean", "cosine", "manhattan"),
    "local_smoothing": ("dcls", "initial", "constant", "none", "bogus"),
    "global_smoothing": ("dcls", "constant", "none", "bogus"),
    "guidance": ("cross", "non_cross", "bogus"),
    "epsilon": (0.1, 0.0, 1.0, 1.1),
}
VALID_OPTIONS = {
    "w_l": (0.7, 0.0, 1.0),
    "w_g": (0.5, 0.0, 1.0),
    "metric": ("euclidean", "cosine"),
    "local_smoothing": ("dcls", "initial", "constant", "none"),
    "global_smoothing": ("dcls", "constant", "none"),
    "guidance": ("cross", "non_cross"),
    "epsilon": (0.1, 0.0, 1.0),
}


def _unit64(x: torch.Tensor) -> torch.Tensor:
    """Rows L2-normalised in float64 (zero rows stay zero)."""
    x = x.double().cpu()
    norm = x.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, x / torch.where(norm > 0, norm, 1), 0)


def _betas64(g: torch.Tensor, loc: torch.Tensor, metric: str):
    g, loc = _unit64(g), _unit64(loc)
    cos_lg = (loc * g[:, None]).sum(-1)
    cos_ll = loc @ loc.transpose(1, 2)
    if metric == "euclidean":
        sq_g, sq_l = (g * g).sum(-1)[:, None], (loc * loc).sum(-1)
        d_lg = (sq_l + sq_g - 2 * cos_lg).clamp_min(0)
        d_ll = (sq_l[:, :, None] + sq_l[:, None, :] - 2 * cos_ll).clamp_min(0)
    else:
        d_lg, d_ll = (1 - cos_lg).clamp_min(0), (1 - cos_ll).clamp_min(0)
    b_ll = torch.exp(-d_ll)
    idx = torch.arange(loc.shape[1])
    b_ll[:, idx, idx] = 1.0
    return torch.exp(-d_lg), b_ll


def _dcls_targets64(g, loc, logits, targets, o: DCLSOptions):
    """DCLS Eq. 4-8 as the docstring of ``dcls_targets`` states them, in float64."""
    b_lg, b_ll = _betas64(g, loc, o.metric)
    n, n_l, k = logits.shape
    y = F.one_hot(targets.long().cpu(), k).double()
    const = (1 - o.epsilon) * y + o.epsilon / k
    if o.local_smoothing == "none":
        local = y[:, None].expand(n, n_l, k)
    elif o.local_smoothing == "constant":
        local = const[:, None].expand(n, n_l, k)
    else:
        y1 = (1 - b_lg[:, :, None]) * y[:, None] + b_lg[:, :, None] / k  # Eq. 6
        local = y1
        if o.local_smoothing == "dcls":

            def outer(i: int, j: int) -> torch.Tensor:
                b = b_ll[:, i, j, None]
                return (1 - b) * y1[:, i] + b * y1[:, j]

            if n_l == 2:
                local = torch.stack([outer(0, 1), outer(1, 0)], 1)
            elif o.guidance == "non_cross":
                local = torch.stack([outer(0, 2), y1[:, 1], outer(2, 0)], 1)
            else:
                b10, b12 = b_ll[:, 1, 0, None], b_ll[:, 1, 2, None]
                guide = (b10 * y1[:, 0] + b12 * y1[:, 2]) / (b10 + b12)
                middle = (1 - o.w_l) * y1[:, 1] + o.w_l * guide
                local = torch.stack([outer(0, 1), middle, outer(2, 1)], 1)
    if o.global_smoothing == "none":
        glob = y
    elif o.global_smoothing == "constant":
        glob = const
    else:
        w = b_lg / b_lg.sum(1, keepdim=True)
        guide = (w[:, :, None] * torch.softmax(logits.double().cpu(), -1)).sum(1)
        glob = (1 - o.w_g) * y + o.w_g * guide  # Eq. 8
    return local, glob


@st.composite
def dcls_batches(draw: st.DrawFn):
    n, n_l = draw(sides(4)), draw(mostly((2, 3), (0, 1, 4)))
    d, k = draw(sides(4)), draw(sides(4))
    local_d = draw(mostly((d,), (d + 1,)))
    global_feats = draw(tensors((n, d), dtypes=ALL_DTYPES))
    local_feats = draw(tensors((n, n_l, local_d), dtypes=FLOAT_DTYPES))
    local_logits = draw(tensors((n, n_l, k), dtypes=FLOAT_DTYPES, kinds=ORDINARY_KINDS))
    global_logits = draw(tensors((n, draw(mostly((k,), (k + 1,)))), kinds=ORDINARY_KINDS))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    targets = _labels(rng, n, k, draw(LABEL_DTYPES), draw(BAD_LABELS))
    device = global_feats.device
    return (
        global_feats,
        local_feats.to(device),
        local_logits.to(device),
        global_logits.to(device),
        targets.to(device),
    )


@st.composite
def option_changes(draw: st.DrawFn) -> dict[str, object]:
    names = draw(st.lists(mostly(sorted(OPTION_VALUES), ("bogus_option",)), max_size=3))
    return {
        name: draw(mostly(VALID_OPTIONS[name], set(OPTION_VALUES[name]) - set(VALID_OPTIONS[name])))
        if name in VALID_OPTIONS
        else 1
        for name in names
    }


def _options_valid(changes: dict[str, object]) -> bool:
    return all(name in VALID_OPTIONS and v in VALID_OPTIONS[name] for name, v in changes.items())


@given(batch=dcls_batches(), changes=option_changes(), use_object=st.booleans())
@example(  # a zero float16 local feature: F.normalize gave 0/0 = NaN, so β was NaN
    batch=(
        torch.tensor([[0.1257]]),
        torch.tensor([[[1.0], [0.0]]], dtype=torch.float16),
        torch.tensor([[[0.1257], [-0.1321]]]),
        torch.tensor([[0.1257]]),
        torch.tensor([0]),
    ),
    changes={},
    use_object=False,
)
@example(  # guidance='non_cross' with N_l = 2: the message now names local_feats
    batch=(
        torch.tensor([[0.5, 1.0]]),
        torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]),
        torch.tensor([[[0.5, -0.5], [1.0, 0.0]]]),
        torch.tensor([[0.5, 0.0]]),
        torch.tensor([1]),
    ),
    changes={"guidance": "non_cross"},
    use_object=True,
)
@covers(
    "dcls_smoothing_factors",
    "dcls_targets",
    "dcls_loss",
    "DCLSLoss",
    "DCLSOptions",
    "DCLSLossOutput",
)
def test_dcls(batch, changes, use_object) -> None:
    """dcls_smoothing_factors: β_lg [N, N_l] and β_ll [N, N_l, N_l] in (0, 1], β_ll symmetric with
    a unit diagonal, equal to exp(−d) of the float64-normalised features (Eq. 4-5). dcls_targets:
    distributions equal to Eq. 6-8 in float64, the same for rows permuted. dcls_loss: local and
    global losses finite and >= 0, total = local + global; DCLSLoss agrees. A bad option is a
    ValueError (TypeError for an unknown name) naming it."""
    global_feats, local_feats, local_logits, global_logits, targets = batch
    options_ok = _options_valid(changes)
    if use_object:
        opts = attempt(DCLSOptions, **changes)
        if not options_ok:
            must_refuse(opts, f"bad options {changes}")
            return
        must_accept(opts)
        args, kwargs = (opts,), {}
    else:
        args, kwargs = (), changes
    o = DCLSOptions(**changes) if options_ok else DCLSOptions()
    n = global_feats.shape[0]
    d = global_feats.shape[1]
    feats_ok = (
        _ok_float(global_feats, 2)
        and _ok_float(local_feats, 3)
        and local_feats.shape[0] == n
        and local_feats.shape[2] == d
    )

    betas = attempt(dcls_smoothing_factors, global_feats, local_feats, o.metric)
    if not feats_ok:
        must_refuse(betas, "bad features")
    else:
        must_accept(betas)
        b_lg, b_ll = betas
        n_l = local_feats.shape[1]
        assert b_lg.shape == (n, n_l) and b_ll.shape == (n, n_l, n_l)
        assert bool((b_lg > 0).all() and (b_lg <= 1).all() and (b_ll > 0).all())
        assert bool((b_ll <= 1).all()) and torch.equal(b_ll, b_ll.transpose(1, 2))
        assert bool((b_ll.diagonal(dim1=1, dim2=2) == 1).all())
        e_lg, e_ll = _betas64(global_feats, local_feats, o.metric)
        dtype = coarsest(global_feats.dtype, local_feats.dtype)
        _close(b_lg, e_lg, dtype, 4.0)
        _close(b_ll, e_ll, local_feats.dtype, 4.0)

    n_l, k = local_logits.shape[1], local_logits.shape[2]
    needs_eq7 = o.local_smoothing == "dcls"
    eq7_ok = not needs_eq7 or n_l == 3 or (n_l == 2 and o.guidance == "cross")
    targets_ok = feats_ok and n_l >= 1 and k >= 1 and _labels_ok(targets, n, k) and eq7_ok
    targets_ok = targets_ok and local_feats.shape[1] == n_l
    targets_ok = targets_ok and _ok_float(local_logits, 3)
    refined = attempt(
        dcls_targets, global_feats, local_feats, local_logits, targets, *args, **kwargs
    )
    if not (options_ok and targets_ok):
        must_refuse(refined, "bad options, features, logits or labels")
    else:
        must_accept(refined)
        local_t, global_t = refined
        assert local_t.shape == (n, n_l, k) and global_t.shape == (n, k)
        _distribution_rows(local_t, local_logits.dtype)
        _distribution_rows(global_t, local_logits.dtype)
        e_local, e_global = _dcls_targets64(global_feats, local_feats, local_logits, targets, o)
        coarse = coarsest(global_feats.dtype, local_feats.dtype, local_logits.dtype)
        _close(local_t, e_local, coarse, 4.0)
        _close(global_t, e_global, coarse, 4.0)
        if n > 1:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(n * 7 + k))
            p_local, p_global = dcls_targets(
                global_feats[perm], local_feats[perm], local_logits[perm], targets[perm], o
            )
            _close(p_local, local_t[perm].double(), coarse, 4.0)
            _close(p_global, global_t[perm].double(), coarse, 4.0)

    out = attempt(
        dcls_loss, global_logits, local_logits, global_feats, local_feats, targets, *args, **kwargs
    )
    loss_ok = (
        options_ok
        and targets_ok
        and n > 0
        and _ok_float(global_logits, 2)
        and global_logits.shape == (n, k)
    )
    if not loss_ok:
        must_refuse(out, "bad inputs or an empty batch")
        return
    must_accept(out)
    assert isinstance(out, DCLSLossOutput)
    for part in (out.local_loss, out.global_loss, out.total):
        assert part.dim() == 0 and finite(part) and float(part) >= 0
    assert torch.equal(out.total, out.local_loss + out.global_loss)
    module = DCLSLoss(*args, **kwargs)
    again = module(global_logits, local_logits, global_feats, local_feats, targets)
    assert torch.equal(again.total, out.total)
