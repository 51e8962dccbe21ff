"""Known-answer and property tests of PPLR: cross agreement (Eq. 6), AALS (Eq. 8), PGLR (9-10)."""

from __future__ import annotations

import math

import pytest
import torch

from reid_refine import (
    AALSLoss,
    PGLRLoss,
    aals_loss,
    cross_agreement,
    pglr_loss,
    pglr_targets,
    ranked_lists,
)
from tests.clustering.oracle import assert_knn_separated

LN2, LN3 = math.log(2.0), math.log(3.0)

# Global features (integers, so inner products and ties are exact):
#   g0=(4,0) g1=(3,1) g2=(3,-1) g3=(0,4) g4=(1,3)
# Inner products <g_i, g_j> (rows i, columns j = 0..4):
#   i=0: 16 12 12  0  4 -> ranked [0,1,2,4,3]  (tie 12: lower index 1 first)
#   i=1: 12 10  8  4  6 -> ranked [0,1,2,4,3]  (first column is 0, NOT the sample itself)
#   i=2: 12  8 10 -4  0 -> ranked [0,2,1,4,3]
#   i=3:  0  4 -4 16 12 -> ranked [3,4,1,0,2]
#   i=4:  4  6  0 12 10 -> ranked [3,4,1,0,2]
# Top-(k+1), first column dropped by position:
#   k=1: {1} {1} {2} {4} {4};   k=2: {1,2} {1,2} {2,1} {4,1} {4,1}
GLOBAL = torch.tensor([[4.0, 0.0], [3.0, 1.0], [3.0, -1.0], [0.0, 4.0], [1.0, 3.0]])
# Part 1 features p0=(1,0) p1=(1,0) p2=(0,1) p3=(0,1) p4=(1,1) -- many exact ties:
#   i=0: 1 1 0 0 1 -> [0,1,4,2,3]    i=1: same -> [0,1,4,2,3]
#   i=2: 0 0 1 1 1 -> [2,3,4,0,1]    i=3: same -> [2,3,4,0,1]
#   i=4: 1 1 1 1 2 -> [4,0,1,2,3]
#   k=1: {1} {1} {3} {3} {0};   k=2: {1,4} {1,4} {3,4} {3,4} {0,1}
PART1 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
# Part 0 = the global features -> agreement 1 everywhere.
PARTS = torch.stack([GLOBAL, PART1], dim=1)  # [5, 2, 2]


def test_ranked_lists_known_values_and_first_column_dropped_by_position() -> None:
    expected_k2 = torch.tensor([[1, 2], [1, 2], [2, 1], [4, 1], [4, 1]])
    for chunk in (1, 2, 3, 5, 64):
        assert torch.equal(ranked_lists(GLOBAL, 2, chunk_size=chunk), expected_k2)
    expected_p1 = torch.tensor([[1, 4], [1, 4], [3, 4], [3, 4], [0, 1]])
    assert torch.equal(ranked_lists(PART1, 2, chunk_size=2), expected_p1)


def test_cross_agreement_known_values() -> None:
    # k=2, part 1 vs global:
    #   i0 {1,2} vs {1,4}: 1/3   i1 {1,2} vs {1,4}: 1/3   i2 {2,1} vs {3,4}: 0
    #   i3 {4,1} vs {3,4}: 1/3   i4 {4,1} vs {0,1}: 1/3
    third = 1.0 / 3.0
    expected = torch.tensor([[1.0, third], [1.0, third], [1.0, 0.0], [1.0, third], [1.0, third]])
    for chunk in (1, 2, 3, 4, 5, None):
        torch.testing.assert_close(cross_agreement(GLOBAL, PARTS, k=2, chunk_size=chunk), expected)
    # k=1: global {1} {1} {2} {4} {4} vs part 1 {1} {1} {3} {3} {0} -> 1 1 0 0 0
    expected_k1 = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    torch.testing.assert_close(cross_agreement(GLOBAL, PARTS, k=1, chunk_size=2), expected_k1)


def _brute_force_agreement(g: torch.Tensor, parts: torch.Tensor, k: int) -> torch.Tensor:
    """Full N×N stable sort, top-(k+1), drop column 0, Jaccard of Python sets."""

    def lists(x: torch.Tensor) -> list[set[int]]:
        order = torch.sort(x @ x.T, dim=1, descending=True, stable=True).indices
        return [set(row[1 : k + 1].tolist()) for row in order]

    lg = lists(g)
    out = torch.zeros(g.shape[0], parts.shape[1])
    for p in range(parts.shape[1]):
        lp = lists(parts[:, p])
        for i in range(g.shape[0]):
            out[i, p] = len(lg[i] & lp[i]) / len(lg[i] | lp[i])
    return out


@pytest.mark.parametrize("ties", [False, True])
def test_cross_agreement_matches_brute_force(ties: bool) -> None:
    gen = torch.Generator().manual_seed(0 if ties else 1)
    n, d, p, k = 37, 5, 3, 6
    if ties:  # small integers: many exactly tied inner products
        g = torch.randint(-1, 2, (n, d), generator=gen).float()
        parts = torch.randint(-1, 2, (n, p, d), generator=gen).float()
    else:
        g = torch.nn.functional.normalize(torch.randn(n, d, generator=gen), dim=1)
        parts = torch.nn.functional.normalize(torch.randn(n, p, d, generator=gen), dim=2)
        # The brute force ranks by one N×N matmul, cross_agreement by chunks of rows (other
        # shapes, other BLAS kernels): the same lists only without near-ties at the cuts (the
        # first column, dropped by position, and the (k+1)-th).
        for space in (g, *parts.unbind(1)):
            assert_knn_separated(space, (1, k + 1))
    expected = _brute_force_agreement(g, parts, k)
    assert 0.0 < expected.mean().item() < 1.0
    for chunk in (4, 5, 8, 36, 37, 100):  # 4, 5, 8, 36 do not divide 37
        got = cross_agreement(g, parts, k=k, chunk_size=chunk)
        assert got.shape == (n, p) and got.dtype == torch.float32
        torch.testing.assert_close(got, expected)


def test_cross_agreement_identical_spaces_and_float64() -> None:
    gen = torch.Generator().manual_seed(3)
    g = torch.randn(20, 4, generator=gen, dtype=torch.float64)
    parts = torch.stack([g, 2.0 * g], dim=1)  # positive scaling keeps every ranking
    torch.testing.assert_close(cross_agreement(g, parts, k=5), torch.ones(20, 2))


def test_cross_agreement_does_not_track_gradients() -> None:
    g = torch.randn(10, 3, requires_grad=True)
    parts = torch.randn(10, 2, 3, requires_grad=True)
    out = cross_agreement(g, parts, k=3)
    assert not out.requires_grad
    assert ((out >= 0) & (out <= 1)).all()


def test_cross_agreement_rejects_bad_input() -> None:
    g, parts = torch.randn(6, 3), torch.randn(6, 2, 3)
    with pytest.raises(ValueError, match=r"k must be an integer with 1 <= k < N = 6"):
        cross_agreement(g, parts, k=6)
    with pytest.raises(ValueError, match="k must be"):
        cross_agreement(g, parts, k=0)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        cross_agreement(g, parts, k=2, chunk_size=0)
    with pytest.raises(ValueError, match="part_feats must have N = 6 rows"):
        cross_agreement(g, torch.randn(5, 2, 3), k=2)
    with pytest.raises(ValueError, match="part_feats must have 3 dimensions"):
        cross_agreement(g, torch.randn(6, 3), k=2)
    with pytest.raises(ValueError, match="global_feats must have 2 dimensions"):
        cross_agreement(torch.randn(6), parts, k=2)
    bad = g.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="global_feats contains NaN or inf"):
        cross_agreement(bad, parts, k=2)
    badp = parts.clone()
    badp[0, 1, 0] = float("inf")
    with pytest.raises(ValueError, match="part_feats contains NaN or inf"):
        cross_agreement(g, badp, k=2)


# ---------------------------------------------------------------- AALS (Eq. 7-8)


def _kl_uniform(q: list[float]) -> float:
    k = len(q)
    return sum((1.0 / k) * (math.log(1.0 / k) - math.log(x)) for x in q)


def test_aals_known_values() -> None:
    # N=2, P=1, K=3.  Row 0 logits (ln2,0,0) -> q=(1/2,1/4,1/4), label 0;
    # row 1 logits (0,0,0) -> q uniform, label 1.
    logits = torch.tensor([[[LN2, 0.0, 0.0]], [[0.0, 0.0, 0.0]]])
    targets = torch.tensor([0, 1])
    # C = (1, 0.5): row 0 = 1 * CE = ln2 = 0.6931472
    #               row 1 = 0.5 * ln3 + 0.5 * KL(u||u) = 0.5 * 1.0986123 = 0.5493061
    #               mean = 0.6212267
    loss = aals_loss(logits, targets, torch.tensor([[1.0], [0.5]]))
    assert loss.item() == pytest.approx((LN2 + 0.5 * LN3) / 2, rel=1e-6)
    assert loss.item() == pytest.approx(0.6212267, rel=1e-6)
    # C = (0, 0): row 0 = KL(u || (1/2,1/4,1/4)) = 1/3[(ln1/3 - ln1/2) + 2(ln1/3 - ln1/4)]
    #   = 1/3[-0.4054651 + 0.5753641] = 0.0566330; row 1 = KL(u||u) = 0.  mean = 0.0283165
    loss0 = aals_loss(logits, targets, torch.zeros(2, 1))
    assert _kl_uniform([0.5, 0.25, 0.25]) == pytest.approx(0.0566330, rel=1e-5)
    assert loss0.item() == pytest.approx(0.0566330 / 2, rel=1e-5)


def test_aals_matches_kl_div_form_and_averages_parts() -> None:
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(6, 3, 4, generator=gen)
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    c = torch.rand(6, 3, generator=gen)
    logp = torch.log_softmax(logits, dim=-1)
    ce = -logp.gather(-1, targets[:, None, None].expand(6, 3, 1)).squeeze(-1)
    kl = torch.nn.functional.kl_div(logp, torch.full_like(logp, 0.25), reduction="none").sum(-1)
    per_part = (c * ce + (1 - c) * kl).mean(dim=0)  # batch mean per part
    expected = per_part.mean()
    torch.testing.assert_close(aals_loss(logits, targets, c), expected)
    torch.testing.assert_close(AALSLoss()(logits, targets, c), expected)
    singles = [aals_loss(logits[:, p : p + 1], targets, c[:, p : p + 1]) for p in range(3)]
    torch.testing.assert_close(torch.stack(singles).mean(), expected)


def test_aals_single_cluster_and_gradients() -> None:
    # K=1: CE and KL(u||q) are both 0.
    logits = torch.randn(3, 2, 1, requires_grad=True)
    assert aals_loss(logits, torch.zeros(3, dtype=torch.long), torch.rand(3, 2)).item() == 0.0
    # Gradients reach the part logits, never the agreement scores.
    logits = torch.zeros(1, 1, 2, requires_grad=True)
    c = torch.tensor([[0.5]], requires_grad=True)
    aals_loss(logits, torch.tensor([0]), c).backward()
    # grad = softmax - target, target = 0.5*(1,0) + 0.5*(1/2,1/2) = (0.75, 0.25)
    torch.testing.assert_close(logits.grad, torch.tensor([[[-0.25, 0.25]]]))
    assert c.grad is None


def test_aals_rejects_bad_input() -> None:
    logits, targets, c = torch.zeros(2, 3, 4), torch.tensor([0, 1]), torch.full((2, 3), 0.5)
    with pytest.raises(ValueError, match=r"agreement must have shape \[2, 3\]"):
        aals_loss(logits, targets, torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"agreement must lie in \[0, 1\]"):
        aals_loss(logits, targets, torch.full((2, 3), 1.5))
    with pytest.raises(ValueError, match="agreement contains NaN"):
        aals_loss(logits, targets, torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 4\)"):
        aals_loss(logits, torch.tensor([0, 4]), c)
    with pytest.raises(ValueError, match="part_logits must have 3 dimensions"):
        aals_loss(torch.zeros(2, 4), targets, c)
    with pytest.raises(ValueError, match="part_logits contains NaN"):
        aals_loss(torch.full((2, 3, 4), float("nan")), targets, c)


# ---------------------------------------------------------------- PGLR (Eq. 9-10)


def test_pglr_known_values() -> None:
    # N=1, P=2, K=2, label 1.  Part 0 logits (0,0) -> (1/2,1/2); part 1 (ln3,0) -> (3/4,1/4).
    # Global logits (ln3, 0) -> q_g = (3/4, 1/4).
    part = torch.tensor([[[0.0, 0.0], [LN3, 0.0]]])
    glob = torch.tensor([[LN3, 0.0]])
    y = torch.tensor([1])
    # C = (0, 0): w = (1/2, 1/2); ensemble = (0.625, 0.375);
    # target = 0.5*(0,1) + 0.5*(0.625,0.375) = (0.3125, 0.6875)
    # loss = -(0.3125 ln 0.75 + 0.6875 ln 0.25) = 0.0899006 + 0.9530773 = 1.0429779
    c0 = torch.zeros(1, 2)
    torch.testing.assert_close(pglr_targets(part, y, c0), torch.tensor([[0.3125, 0.6875]]))
    expected0 = -(0.3125 * math.log(0.75) + 0.6875 * math.log(0.25))
    assert expected0 == pytest.approx(1.0429779, rel=1e-6)
    assert pglr_loss(glob, part, y, c0).item() == pytest.approx(expected0, rel=1e-6)
    # C = (1, 0): w = (e/(e+1), 1/(e+1)) = (0.7310586, 0.2689414)
    # ensemble = 0.7310586*(0.5,0.5) + 0.2689414*(0.75,0.25) = (0.5672353, 0.4327647)
    # target = (0.2836177, 0.7163823); loss = 0.2836177*0.2876821 + 0.7163823*1.3862944
    #        = 0.0815919 + 0.9931167 = 1.0747086
    c1 = torch.tensor([[1.0, 0.0]])
    w0 = math.e / (math.e + 1.0)
    ens0 = w0 * 0.5 + (1 - w0) * 0.75
    t0 = 0.5 * ens0
    assert t0 == pytest.approx(0.2836177, rel=1e-6)
    expected1 = -(t0 * math.log(0.75) + (1 - t0) * math.log(0.25))
    assert expected1 == pytest.approx(1.0747086, rel=1e-6)
    assert pglr_loss(glob, part, y, c1).item() == pytest.approx(expected1, rel=1e-6)
    assert PGLRLoss(beta=0.5)(glob, part, y, c1).item() == pytest.approx(expected1, rel=1e-6)
    # beta = 1: plain cross-entropy -ln(1/4) = ln4 = 1.3862944
    assert pglr_loss(glob, part, y, c1, beta=1.0).item() == pytest.approx(2 * LN2, rel=1e-6)


def test_pglr_targets_are_distributions_and_detached() -> None:
    gen = torch.Generator().manual_seed(7)
    part = torch.randn(8, 3, 5, generator=gen, requires_grad=True)
    glob = torch.randn(8, 5, generator=gen, requires_grad=True)
    y = torch.randint(0, 5, (8,), generator=gen)
    c = torch.rand(8, 3, generator=gen)
    t = pglr_targets(part, y, c, beta=0.3)
    assert not t.requires_grad
    assert (t >= 0).all()
    torch.testing.assert_close(t.sum(dim=1), torch.ones(8))
    assert (t.gather(1, y[:, None]) >= 0.3 - 1e-6).all()  # the one-hot share beta is kept
    pglr_loss(glob, part, y, c, beta=0.3).backward()
    assert part.grad is None  # the part ensemble is a target, not a gradient path
    assert glob.grad is not None and glob.grad.abs().sum() > 0
    torch.testing.assert_close(glob.grad, (torch.softmax(glob, 1) - t).detach() / 8)


def test_pglr_single_cluster() -> None:
    glob = torch.randn(2, 1, requires_grad=True)
    loss = pglr_loss(glob, torch.randn(2, 3, 1), torch.tensor([0, 0]), torch.rand(2, 3))
    assert loss.item() == 0.0


@pytest.mark.parametrize("beta", [0.0, -0.5, 1.5, float("nan")])
def test_pglr_rejects_bad_beta(beta: float) -> None:
    with pytest.raises(ValueError, match=r"beta must lie in \(0, 1\]"):
        pglr_loss(
            torch.zeros(2, 3),
            torch.zeros(2, 2, 3),
            torch.tensor([0, 1]),
            torch.zeros(2, 2),
            beta=beta,
        )
    with pytest.raises(ValueError, match="beta"):
        PGLRLoss(beta=beta)


def test_pglr_rejects_bad_shapes() -> None:
    part, y, c = torch.zeros(2, 2, 3), torch.tensor([0, 1]), torch.zeros(2, 2)
    with pytest.raises(ValueError, match=r"global_logits must have shape \[N, K\] = \[2, 3\]"):
        pglr_loss(torch.zeros(2, 4), part, y, c)
    with pytest.raises(ValueError, match="global_logits contains NaN"):
        pglr_loss(torch.full((2, 3), float("nan")), part, y, c)
    with pytest.raises(ValueError, match=r"agreement must have shape \[2, 2\]"):
        pglr_loss(torch.zeros(2, 3), part, y, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\)"):
        pglr_loss(torch.zeros(2, 3), part, torch.tensor([0, 5]), c)
