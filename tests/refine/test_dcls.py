"""Known-answer and property tests of DCLS (Eq. 4-11) and its ablation options."""

from __future__ import annotations

import math

import pytest
import torch

from reid_refine import DCLSLoss, DCLSOptions, dcls_loss, dcls_smoothing_factors, dcls_targets

LN2 = math.log(2.0)
A = math.exp(-2.0)  # β between orthogonal unit vectors: d = ‖x − y‖² = 2 -> e^-2 = 0.1353353

# One sample, D=2, K=3, label 0.  Features are L2-normalised inside, so scale must not matter:
#   global g = (3,0) -> (1,0);  locals l0 = (2,0) -> (1,0), l1 = (0,5) -> (0,1), l2 = (1,0).
# β_{i,g}: l0·g: d=0 -> 1;  l1: d=2 -> A;  l2: 1.
# β_{i,j}: β01 = A, β02 = 1, β12 = A.
GLOBAL = torch.tensor([[3.0, 0.0]])
LOCALS = torch.tensor([[[2.0, 0.0], [0.0, 5.0], [1.0, 0.0]]])
# Local logits: l0 uniform -> (1/3,1/3,1/3); l1 (ln2,0,0) -> (1/2,1/4,1/4);
# l2 (0,ln2,0) -> (1/4,1/2,1/4)
LOCAL_LOGITS = torch.tensor([[[0.0, 0.0, 0.0], [LN2, 0.0, 0.0], [0.0, LN2, 0.0]]])
Y = torch.tensor([0])
U = [1 / 3, 1 / 3, 1 / 3]

# Eq. 6: y'_i = (1 − β_ig) y + β_ig / 3
Y1_0 = U  # β=1 -> uniform
Y1_1 = [1 - A + A / 3, A / 3, A / 3]  # = (0.9097765, 0.0451118, 0.0451118)
Y1_2 = U


def _mix(a: list[float], b: list[float], w: float) -> list[float]:
    """(1 − w)·a + w·b, written out for the hand computations."""
    return [(1 - w) * x + w * z for x, z in zip(a, b, strict=True)]


# Eq. 7 (cross): y''_0 = (1 − β01) y'_0 + β01 y'_1 = (0.4113474, 0.2943263, 0.2943263)
Y2_0 = _mix(Y1_0, Y1_1, A)
# middle: y''_1 = 0.3 y'_1 + 0.7 (β10 y'_0 + β12 y'_2)/(β10 + β12) = 0.3 y'_1 + 0.7 u
#        = (0.5062663, 0.2468669, 0.2468669)
Y2_1 = _mix(Y1_1, U, 0.7)
Y2_2 = _mix(Y1_2, Y1_1, A)  # β21 = A, same as y''_0
# Eq. 8: weights β_ig / Σ_j β_jg = (1, A, 1)/(2 + A) = (0.4683105, 0.0633789, 0.4683105)
W = [1 / (2 + A), A / (2 + A), 1 / (2 + A)]
PRED = [U, [0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]
GUIDE = [sum(W[i] * PRED[i][c] for i in range(3)) for c in range(3)]
# GUIDE = 0.4683105*u + 0.0633789*(1/2,1/4,1/4) + 0.4683105*(1/4,1/2,1/4)
#       = (0.3048706, 0.4061035, 0.2890259)
# y'_g = 0.5 y + 0.5 GUIDE = (0.6524353, 0.2030518, 0.1445129)
YG = _mix([1.0, 0.0, 0.0], GUIDE, 0.5)


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor([rows], dtype=torch.float32)


def test_smoothing_factors_known_values() -> None:
    beta_lg, beta_ll = dcls_smoothing_factors(GLOBAL, LOCALS)
    torch.testing.assert_close(beta_lg, torch.tensor([[1.0, A, 1.0]]))
    torch.testing.assert_close(beta_ll, torch.tensor([[[1.0, A, 1.0], [A, 1.0, A], [1.0, A, 1.0]]]))
    # Cosine (Table 6): d = 1 − cos -> orthogonal gives e^-1, opposite e^-2
    beta_lg_c, _ = dcls_smoothing_factors(GLOBAL, LOCALS, metric="cosine")
    torch.testing.assert_close(beta_lg_c, torch.tensor([[1.0, math.exp(-1.0), 1.0]]))
    opposite = torch.tensor([[[-1.0, 0.0]]])
    assert dcls_smoothing_factors(GLOBAL, opposite)[0].item() == pytest.approx(math.exp(-4.0))
    assert dcls_smoothing_factors(GLOBAL, opposite, "cosine")[0].item() == pytest.approx(
        math.exp(-2.0)
    )


@pytest.mark.parametrize("scale", [1e19, 1e-19, 1e30, 1e-30])
def test_smoothing_factors_at_extreme_feature_scales(scale: float) -> None:
    # F.normalize squares the entries: at 1e19 the float32 norm was inf (every feature became
    # zeros, β = 1 everywhere), at 1e-19 it underflowed (features divided by eps, β ≈ 1).
    beta_lg, beta_ll = dcls_smoothing_factors(GLOBAL * scale, LOCALS * scale)
    torch.testing.assert_close(beta_lg, torch.tensor([[1.0, A, 1.0]]))
    torch.testing.assert_close(beta_ll, torch.tensor([[[1.0, A, 1.0], [A, 1.0, A], [1.0, A, 1.0]]]))
    gen = torch.Generator().manual_seed(5)
    g, loc = torch.randn(6, 16, generator=gen), torch.randn(6, 3, 16, generator=gen)
    for metric in ("euclidean", "cosine"):
        expected = dcls_smoothing_factors(g, loc, metric)
        scaled = dcls_smoothing_factors(g * scale, loc * scale, metric)
        for got, want in zip(scaled, expected, strict=True):
            assert torch.isfinite(got).all()
            torch.testing.assert_close(got, want)
    # a zero local feature stays zero (norm 0): d = 0 + 1 − 0 = 1 from the unit global feature
    zero_local = LOCALS.clone()
    zero_local[0, 1] = 0.0
    beta_lg, _ = dcls_smoothing_factors(GLOBAL * scale, zero_local * scale)
    torch.testing.assert_close(beta_lg, torch.tensor([[1.0, math.exp(-1.0), 1.0]]))


def test_l2_normalize_helper_matches_f_normalize_and_keeps_its_edge_cases() -> None:
    from reid_refine._normalize import l2_normalize

    gen = torch.Generator().manual_seed(2)
    x = torch.randn(64, 32, generator=gen) * torch.rand(64, 1, generator=gen) * 100
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        y = x.to(dtype)
        assert torch.equal(l2_normalize(y, dim=1), torch.nn.functional.normalize(y, dim=1))
    odd = torch.tensor([[0.0, 0.0], [float("nan"), 1.0], [float("inf"), 1.0], [1e-45, 0.0]])
    got = l2_normalize(odd, dim=1)
    assert torch.equal(got[0], torch.zeros(2))  # zero stays zero
    assert torch.isnan(got[1]).all() and torch.isnan(got[2, 0]) and got[2, 1] == 0  # as F.normalize
    assert torch.equal(got[3], torch.tensor([1.0, 0.0]))  # a subnormal entry: a unit vector


def test_hand_checked_constants() -> None:
    assert Y2_0[0] == pytest.approx(0.4113474, abs=1e-6)
    assert Y2_1[0] == pytest.approx(0.5062663, abs=1e-6)
    assert GUIDE == pytest.approx([0.3048706, 0.4061035, 0.2890259], abs=1e-6)
    assert YG == pytest.approx([0.6524353, 0.2030518, 0.1445129], abs=1e-6)


def test_dcls_targets_known_values() -> None:
    local_t, global_t = dcls_targets(GLOBAL, LOCALS, LOCAL_LOGITS, Y)
    torch.testing.assert_close(local_t, _t([Y2_0, Y2_1, Y2_2]))
    torch.testing.assert_close(global_t, torch.tensor([YG]))


def test_dcls_ablation_modes_known_values() -> None:
    # LS'_l only (no Eq. 7): the Eq. 6 labels.
    local_t, _ = dcls_targets(GLOBAL, LOCALS, LOCAL_LOGITS, Y, local_smoothing="initial")
    torch.testing.assert_close(local_t, _t([Y1_0, Y1_1, Y1_2]))
    # Constant LS per branch (CLS_l, CLS_g), ε = 0.1: (0.9 + 0.1/3, 0.1/3, 0.1/3)
    cls_row = [0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3]
    local_t, global_t = dcls_targets(
        GLOBAL, LOCALS, LOCAL_LOGITS, Y, local_smoothing="constant", global_smoothing="constant"
    )
    torch.testing.assert_close(local_t, _t([cls_row] * 3))
    torch.testing.assert_close(global_t, torch.tensor([cls_row]))
    # ε = 0.3 -> (0.8, 0.1, 0.1)
    _, global_t = dcls_targets(
        GLOBAL, LOCALS, LOCAL_LOGITS, Y, global_smoothing="constant", epsilon=0.3
    )
    torch.testing.assert_close(global_t, torch.tensor([[0.8, 0.1, 0.1]]))
    # No smoothing at all: one-hot labels (LS_g off / LS_l off).
    local_t, global_t = dcls_targets(
        GLOBAL, LOCALS, LOCAL_LOGITS, Y, local_smoothing="none", global_smoothing="none"
    )
    torch.testing.assert_close(local_t, _t([[1.0, 0.0, 0.0]] * 3))
    torch.testing.assert_close(global_t, torch.tensor([[1.0, 0.0, 0.0]]))
    # Non-cross guidance: outer regions guided by the opposite outer region (β02 = 1, so
    # y''_0 = y'_2 = u), middle keeps y'_1.
    local_t, _ = dcls_targets(GLOBAL, LOCALS, LOCAL_LOGITS, Y, guidance="non_cross")
    torch.testing.assert_close(local_t, _t([U, Y1_1, U]))


def test_dcls_weight_edges_behave_as_the_paper_says() -> None:
    # W_l = 0: the middle label is only smoothed by its global similarity: y''_1 = y'_1.
    local_t, _ = dcls_targets(GLOBAL, LOCALS, LOCAL_LOGITS, Y, w_l=0.0)
    torch.testing.assert_close(local_t[0, 1], torch.tensor(Y1_1))
    # W_l = 1: the middle label is fully guided by its neighbours: (β10 y'_0 + β12 y'_2)/Σ = u.
    local_t, _ = dcls_targets(GLOBAL, LOCALS, LOCAL_LOGITS, Y, w_l=1.0)
    torch.testing.assert_close(local_t[0, 1], torch.tensor(U))
    # Outer labels do not depend on W_l.
    torch.testing.assert_close(local_t[0, 0], torch.tensor(Y2_0))
    # W_g = 0: global label not smoothed (one-hot); W_g = 1: purely the local guidance.
    _, global_t = dcls_targets(GLOBAL, LOCALS, LOCAL_LOGITS, Y, w_g=0.0)
    torch.testing.assert_close(global_t, torch.tensor([[1.0, 0.0, 0.0]]))
    _, global_t = dcls_targets(GLOBAL, LOCALS, LOCAL_LOGITS, Y, w_g=1.0)
    torch.testing.assert_close(global_t, torch.tensor([GUIDE]))


def test_dcls_two_local_regions() -> None:
    # N_l = 2 (top l0 = (1,0), bottom l1 = (0,1)): each guides the other with the outer rule.
    locals2 = LOCALS[:, :2]
    local_t, global_t = dcls_targets(GLOBAL, locals2, LOCAL_LOGITS[:, :2], Y)
    torch.testing.assert_close(local_t, _t([_mix(Y1_0, Y1_1, A), _mix(Y1_1, Y1_0, A)]))
    # Eq. 8 with two locals: weights (1, A)/(1 + A)
    guide = [(PRED[0][c] + A * PRED[1][c]) / (1 + A) for c in range(3)]
    torch.testing.assert_close(global_t, torch.tensor([_mix([1.0, 0.0, 0.0], guide, 0.5)]))
    # W_l is unused for N_l = 2.
    torch.testing.assert_close(
        dcls_targets(GLOBAL, locals2, LOCAL_LOGITS[:, :2], Y, w_l=0.0)[0], local_t
    )


def test_dcls_targets_are_distributions_on_random_data() -> None:
    gen = torch.Generator().manual_seed(11)
    n, k, d = 16, 7, 8
    g = torch.randn(n, d, generator=gen)
    loc = torch.randn(n, 3, d, generator=gen)
    loc[0, 0] = -g[0]  # an opposite pair: the smallest β, e^-4
    logits = 3 * torch.randn(n, 3, k, generator=gen)
    y = torch.randint(0, k, (n,), generator=gen)
    beta_lg, beta_ll = dcls_smoothing_factors(g, loc)
    for b in (beta_lg, beta_ll):
        assert (b > 0).all() and (b <= 1).all()
    assert beta_lg.min().item() == pytest.approx(math.exp(-4.0), rel=1e-4)
    for metric in ("euclidean", "cosine"):
        for local_mode in ("dcls", "initial", "constant", "none"):
            for global_mode in ("dcls", "constant", "none"):
                for guidance in ("cross", "non_cross"):
                    options = DCLSOptions(
                        0.7,
                        0.5,
                        metric,
                        local_smoothing=local_mode,
                        global_smoothing=global_mode,
                        guidance=guidance,
                    )
                    lt, gt = dcls_targets(g, loc, logits, y, options)
                    assert lt.shape == (n, 3, k) and gt.shape == (n, k)
                    assert (lt >= 0).all() and (gt >= 0).all()
                    torch.testing.assert_close(lt.sum(-1), torch.ones(n, 3))
                    torch.testing.assert_close(gt.sum(-1), torch.ones(n))
                    # the true label keeps the largest share in every smoothed label
                    assert (lt.argmax(-1) == y[:, None]).all()


def test_dcls_loss_known_value_and_gradients() -> None:
    glob_logits = torch.tensor([[LN2, 0.0, 0.0]], requires_grad=True)  # q_g = (1/2, 1/4, 1/4)
    loc_logits = LOCAL_LOGITS.clone().requires_grad_(True)
    gf = GLOBAL.clone().requires_grad_(True)
    lf = LOCALS.clone().requires_grad_(True)
    out = dcls_loss(glob_logits, loc_logits, gf, lf, Y)
    # Eq. 11: −Σ y'_g log q_g = YG0 ln2 + (YG1 + YG2) * 2 ln2
    expected_g = YG[0] * LN2 + (YG[1] + YG[2]) * 2 * LN2
    # Eq. 10 per local: −Σ y''_i log softmax(ŷ_i), then the mean over the three locals
    logq = [[math.log(p) for p in row] for row in PRED]
    ce = [
        -sum(t * lq for t, lq in zip(tg, logq[i], strict=True))
        for i, tg in enumerate([Y2_0, Y2_1, Y2_2])
    ]
    expected_l = sum(ce) / 3
    assert out.global_loss.item() == pytest.approx(expected_g, rel=1e-6)
    assert out.local_loss.item() == pytest.approx(expected_l, rel=1e-6)
    assert out.total.item() == pytest.approx(expected_g + expected_l, rel=1e-6)
    torch.testing.assert_close(out.global_targets, torch.tensor([YG]))
    out.total.backward()
    assert glob_logits.grad is not None and glob_logits.grad.abs().sum() > 0
    assert loc_logits.grad is not None and loc_logits.grad.abs().sum() > 0
    # Features only feed the (detached) targets: no gradient reaches them.
    assert gf.grad is None and lf.grad is None
    # Gradient of the global loss alone does not reach the local logits (Eq. 8 is detached).
    loc_logits2 = LOCAL_LOGITS.clone().requires_grad_(True)
    dcls_loss(glob_logits, loc_logits2, GLOBAL, LOCALS, Y).global_loss.backward()
    assert loc_logits2.grad is None
    # Module form gives the same numbers.
    mod = DCLSLoss()
    assert mod(glob_logits, LOCAL_LOGITS, GLOBAL, LOCALS, Y).total.item() == pytest.approx(
        expected_g + expected_l, rel=1e-6
    )


def test_dcls_uniform_logits_and_single_cluster() -> None:
    # Uniform logits: every soft CE equals ln K whatever the targets -> total = 2 ln 3.
    out = dcls_loss(
        torch.zeros(2, 3),
        torch.zeros(2, 3, 3),
        torch.randn(2, 4),
        torch.randn(2, 3, 4),
        torch.tensor([0, 2]),
    )
    assert out.total.item() == pytest.approx(2 * math.log(3.0), rel=1e-6)
    # K = 1: every target is (1,) and every loss 0.
    lt, gt = dcls_targets(
        torch.randn(2, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 1), torch.tensor([0, 0])
    )
    assert torch.equal(lt, torch.ones(2, 3, 1)) and torch.allclose(gt, torch.ones(2, 1))
    out = dcls_loss(
        torch.randn(2, 1),
        torch.randn(2, 3, 1),
        torch.randn(2, 4),
        torch.randn(2, 3, 4),
        torch.tensor([0, 0]),
    )
    assert out.total.item() == pytest.approx(0.0, abs=1e-7)


def test_dcls_rejects_bad_input() -> None:
    g, loc, logits, y = (
        torch.randn(2, 4),
        torch.randn(2, 3, 4),
        torch.randn(2, 3, 5),
        torch.tensor([0, 1]),
    )
    for name, kwargs in (
        ("w_l", {"w_l": 1.5}),
        ("w_l", {"w_l": -0.1}),
        ("w_g", {"w_g": 2.0}),
        ("w_g", {"w_g": float("nan")}),
        ("epsilon", {"epsilon": 1.1}),
    ):
        with pytest.raises(ValueError, match=rf"{name} must lie in \[0, 1\]"):
            dcls_targets(g, loc, logits, y, **kwargs)
        with pytest.raises(ValueError, match=name):
            DCLSLoss(**kwargs)
        with pytest.raises(ValueError, match=rf"{name} must lie in \[0, 1\]"):
            DCLSOptions(**kwargs)
    with pytest.raises(ValueError, match="metric must be one of"):
        dcls_targets(g, loc, logits, y, metric="manhattan")
    with pytest.raises(ValueError, match="metric must be one of"):
        DCLSLoss(metric="manhattan")
    with pytest.raises(ValueError, match="local_smoothing must be one of"):
        dcls_targets(g, loc, logits, y, local_smoothing="cross")
    with pytest.raises(ValueError, match="global_smoothing must be one of"):
        dcls_targets(g, loc, logits, y, global_smoothing="initial")
    with pytest.raises(ValueError, match="guidance must be one of"):
        dcls_targets(g, loc, logits, y, guidance="neighbour")
    with pytest.raises(ValueError, match=r"local_feats must have shape \[N, N_l, D\]"):
        dcls_targets(g, torch.randn(2, 3, 5), logits, y)
    with pytest.raises(ValueError, match=r"local_feats must have shape \[N, N_l, D\]"):
        dcls_targets(g, torch.randn(3, 3, 4), logits, y)
    with pytest.raises(ValueError, match=r"local_logits must have shape \[N, N_l, K\]"):
        dcls_targets(g, loc, torch.randn(2, 2, 5), y)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 5\)"):
        dcls_targets(g, loc, logits, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="N_l in"):
        dcls_targets(g, torch.randn(2, 4, 4), torch.randn(2, 4, 5), y)
    with pytest.raises(ValueError, match="non_cross"):
        dcls_targets(g, loc[:, :2], logits[:, :2], y, guidance="non_cross")
    bad = g.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="global_feats contains NaN or inf"):
        dcls_targets(bad, loc, logits, y)
    with pytest.raises(ValueError, match="local_logits contains NaN or inf"):
        dcls_targets(g, loc, torch.full((2, 3, 5), float("inf")), y)
    with pytest.raises(ValueError, match=r"global_logits must have shape \[N, K\]"):
        dcls_loss(torch.randn(2, 4), logits, g, loc, y)
    # N_l = 4 is fine without Eq. 7.
    lt, _ = dcls_targets(
        g, torch.randn(2, 4, 4), torch.randn(2, 4, 5), y, local_smoothing="initial"
    )
    assert lt.shape == (2, 4, 5)


def test_dcls_options_are_one_object_for_every_entry_point() -> None:
    """DCLSOptions holds the seven settings; keyword changes apply on top of it, unknown ones
    are refused by name, and the three entry points agree."""
    gen = torch.Generator().manual_seed(3)
    g, loc = torch.randn(4, 6, generator=gen), torch.randn(4, 3, 6, generator=gen)
    gl, ll = torch.randn(4, 5, generator=gen), torch.randn(4, 3, 5, generator=gen)
    y = torch.tensor([0, 1, 4, 1])
    assert DCLSOptions() == DCLSOptions(0.7, 0.5, "euclidean", "dcls", "dcls", "cross", 0.1)
    opts = DCLSOptions(w_l=0.3, metric="cosine", local_smoothing="initial")
    a = dcls_targets(g, loc, ll, y, opts)
    b = dcls_targets(g, loc, ll, y, w_l=0.3, metric="cosine", local_smoothing="initial")
    c = dcls_targets(
        g, loc, ll, y, DCLSOptions(metric="cosine"), w_l=0.3, local_smoothing="initial"
    )
    for x, z in ((a, b), (a, c)):
        assert torch.equal(x[0], z[0]) and torch.equal(x[1], z[1])
    out = dcls_loss(gl, ll, g, loc, y, opts)
    assert torch.equal(out.local_targets, a[0]) and torch.equal(out.global_targets, a[1])
    assert torch.equal(DCLSLoss(opts)(gl, ll, g, loc, y).total, out.total)
    assert DCLSLoss(opts).options is opts
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['wl'\]"):
        dcls_targets(g, loc, ll, y, wl=0.3)
    with pytest.raises(TypeError, match="options must be a DCLSOptions"):
        dcls_loss(gl, ll, g, loc, y, {"w_l": 0.3})
