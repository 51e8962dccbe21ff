"""reid_train.losses: soft triplet (PPLR Eq. 3) and camera proxies (Eq. 4), known answers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from reid_train.losses import (
    CameraProxyLoss,
    SoftTripletLoss,
    camera_proxies,
    camera_proxy_loss,
    euclidean_distances,
    soft_triplet_loss,
)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# --- soft triplet -------------------------------------------------------------------------


def test_soft_triplet_known_answer() -> None:
    # points on a line: 0, 1 (label 0) and 3, 7 (label 1); Euclidean, not squared, distances
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    y = torch.tensor([0, 0, 1, 1])
    # anchor: (hardest positive, hardest negative) = 0: (1, 3), 1: (1, 2), 3: (4, 2), 7: (4, 6)
    expected = (softplus(1 - 3) + softplus(1 - 2) + softplus(4 - 2) + softplus(4 - 6)) / 4
    assert soft_triplet_loss(x, y).item() == pytest.approx(expected, rel=1e-6)
    # margin is the target mass on the positive term (official convention)
    m = 0.3
    pairs = [(1, 3), (1, 2), (4, 2), (4, 6)]
    want = sum(m * softplus(an - ap) + (1 - m) * softplus(ap - an) for ap, an in pairs) / 4
    assert soft_triplet_loss(x, y, margin=m).item() == pytest.approx(want, rel=1e-6)
    assert SoftTripletLoss(m)(x, y).item() == pytest.approx(want, rel=1e-6)


def test_soft_triplet_is_the_log_softmax_of_eq3() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 5, generator=g, dtype=torch.float64)
    y = torch.arange(3).repeat_interleave(4)
    d = torch.cdist(x, x)
    same = y[:, None] == y[None, :]
    d_ap = torch.where(same, d, torch.zeros_like(d)).max(1).values
    d_an = torch.where(same, torch.full_like(d, float("inf")), d).min(1).values
    eq3 = -torch.log(torch.exp(d_an) / (torch.exp(d_ap) + torch.exp(d_an))).mean()
    assert soft_triplet_loss(x, y).item() == pytest.approx(eq3.item(), rel=1e-9)


def test_soft_triplet_gradients() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    assert torch.autograd.gradcheck(lambda f: soft_triplet_loss(f, y, 0.2), (x,))


def test_soft_triplet_edge_cases() -> None:
    # an anchor whose only positive is itself: d_ap is its self-distance (~1e-6)
    x = torch.tensor([[0.0], [1.0], [5.0]])
    y = torch.tensor([0, 1, 1])
    expected = (softplus(1e-6 - 1) + softplus(4 - 1) + softplus(4 - 5)) / 3
    assert soft_triplet_loss(x, y).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="two different labels"):
        soft_triplet_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="margin"):
        soft_triplet_loss(x, y, margin=1.5)
    with pytest.raises(ValueError, match="targets"):
        soft_triplet_loss(x, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integers"):
        soft_triplet_loss(x, torch.tensor([0.0, 1.0, 1.0]))
    # half precision is computed in float32
    out = soft_triplet_loss(x.to(torch.bfloat16), y)
    assert out.dtype == torch.float32


def test_euclidean_distances_match_cdist() -> None:
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(5, 4, generator=g), torch.randn(3, 4, generator=g)
    assert torch.allclose(euclidean_distances(a, b), torch.cdist(a, b), atol=1e-5)


# --- camera proxies -----------------------------------------------------------------------


def test_camera_proxies_known_answer() -> None:
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [1.0, 1.0], [5.0, 5.0], [0.0, 1.0]])
    labels = torch.tensor([1, 1, 1, 0, -1, 0])
    cams = torch.tensor([0, 0, 2, 1, 0, 1])
    proxies, plabels, pcams = camera_proxies(x, labels, cams)
    # (label, cam) pairs, sorted: (0, 1) from rows 3 and 5; (1, 0) rows 0, 1; (1, 2) row 2
    assert plabels.tolist() == [0, 1, 1] and pcams.tolist() == [1, 0, 2]
    expected = F.normalize(torch.tensor([[0.5, 1.0], [2.0, 0.0], [0.0, 2.0]]), dim=1)
    assert torch.allclose(proxies, expected)
    # parts [N, P, D]: one set of proxies per part, normalised along D
    parts = torch.stack([x, 2 * x.flip(1)], dim=1)
    pp, pl, pc = camera_proxies(parts, labels, cams)
    assert pp.shape == (3, 2, 2) and torch.equal(pl, plabels) and torch.equal(pc, pcams)
    assert torch.allclose(pp[:, 0], expected) and torch.allclose(pp[:, 1], expected.flip(1))
    with pytest.raises(ValueError, match="outlier"):
        camera_proxies(x, torch.full((6,), -1), cams)


@pytest.mark.parametrize("scale", [1e19, 1e-19, 1e30, 1e-30])
def test_camera_proxies_and_loss_at_extreme_feature_scales(scale: float) -> None:
    # F.normalize squares the entries: at 1e19 the float32 norm was inf (proxies of zeros), at
    # 1e-19 it underflowed (means divided by eps, not unit vectors).
    g = torch.Generator().manual_seed(7)
    x = torch.randn(24, 6, generator=g)
    labels, cams = torch.arange(4).repeat(6), torch.randint(0, 3, (24,), generator=g)
    expected = camera_proxies(x, labels, cams)
    got = camera_proxies(x * scale, labels, cams)
    assert torch.isfinite(got[0]).all()
    torch.testing.assert_close(got[0], expected[0])
    assert torch.equal(got[1], expected[1]) and torch.equal(got[2], expected[2])
    parts = torch.stack([x, -x], dim=1)
    torch.testing.assert_close(camera_proxies(parts * scale, labels, cams)[0][:, 1], -expected[0])
    # the loss normalises the batch features too: same loss, same (finite) gradient direction
    f = torch.randn(8, 6, generator=g)
    f_scaled = (f * scale).requires_grad_()
    loss = camera_proxy_loss(f_scaled, labels[:8], cams[:8], *expected, temperature=0.1)
    reference = camera_proxy_loss(f, labels[:8], cams[:8], *expected, temperature=0.1)
    assert torch.isfinite(loss) and reference.item() > 0
    torch.testing.assert_close(loss, reference)
    loss.backward()
    assert torch.isfinite(f_scaled.grad).all() and f_scaled.grad.abs().sum() > 0


def test_reid_refine_keeps_a_word_for_word_copy_of_the_normalisation() -> None:
    # reid-refine may not import reid-backbones: its private copy must stay the same code.
    root = Path(__file__).resolve().parents[2] / "packages"

    def code(package: str) -> str:
        text = (root / package / "src" / package.replace("-", "_") / "_normalize.py").read_text()
        return text.split('"""', 2)[2]  # the code after the module docstring

    assert code("reid-refine") == code("reid-backbones"), "the _normalize.py copies differ"


def test_camera_proxy_loss_refuses_an_empty_batch() -> None:
    proxies, plabels, pcams = _tiny_proxies()
    empty, none = torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match=r"camera_proxy_loss: the batch is empty \(features has"):
        camera_proxy_loss(empty, none, none, proxies, plabels, pcams)  # it returned 0
    module = CameraProxyLoss()
    module.set_proxies(torch.eye(2), torch.tensor([0, 0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="at least one sample"):
        module(empty, none, none)
    f, y, c = torch.ones(1, 2), torch.tensor([0]), torch.tensor([0])
    assert torch.isfinite(camera_proxy_loss(f, y, c, proxies, plabels, pcams))  # one sample


def _tiny_proxies() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    proxies = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8], [0.0, -1.0]])
    labels = torch.tensor([0, 0, 1, 2, 3])
    cams = torch.tensor([0, 1, 0, 0, 0])
    return proxies, labels, cams


def test_camera_proxy_loss_known_answer() -> None:
    proxies, plabels, pcams = _tiny_proxies()
    f = torch.tensor([[2.0, 0.0]])  # normalised to [1, 0]
    y, c = torch.tensor([0]), torch.tensor([0])
    # positive: proxy 1 (cluster 0, other camera), similarity 0; proxy 0 (own camera) is
    # neither positive nor negative; negatives 2, 3, 4 with similarities -1, 0.6, 0
    args = (f, y, c, proxies, plabels, pcams)
    loss = camera_proxy_loss(*args, temperature=1.0, num_hard_negatives=1)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(0.6)))  # hardest negative: 3
    loss = camera_proxy_loss(*args, temperature=0.5, num_hard_negatives=2)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(1.2) + 1))  # negatives 3 and 4
    # fewer negatives than asked for: only the true negatives enter
    loss = camera_proxy_loss(*args, temperature=1.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(0.6) + math.exp(-1) + 1))


def test_camera_proxy_loss_averages_positives_and_counts_samples_without_one() -> None:
    proxies = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    plabels = torch.tensor([0, 0, 0, 1])
    pcams = torch.tensor([0, 1, 2, 0])
    f = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    y, c = torch.tensor([0, 1]), torch.tensor([0, 0])
    # sample 0: positives 1 (sim 0) and 2 (sim 0.6), negative 3 (sim -1); sample 1's cluster is
    # seen by its own camera only: no positive, contributes 0 but counts in the batch of 2
    z = 1 + math.exp(0.6) + math.exp(-1)
    per_sample = -0.5 * ((0 - math.log(z)) + (0.6 - math.log(z)))
    loss = camera_proxy_loss(f, y, c, proxies, plabels, pcams, temperature=1.0)
    assert loss.item() == pytest.approx(per_sample / 2)


def test_camera_proxy_loss_without_any_positive_is_zero_with_a_graph() -> None:
    proxies, plabels, pcams = _tiny_proxies()
    f = torch.randn(2, 2, requires_grad=True)
    loss = camera_proxy_loss(f, torch.tensor([1, 3]), torch.tensor([0, 0]), proxies, plabels, pcams)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(f.grad, torch.zeros(2, 2))


def test_camera_proxy_loss_gradients_and_module() -> None:
    g = torch.Generator().manual_seed(3)
    feats = F.normalize(torch.randn(40, 6, generator=g, dtype=torch.float64), dim=1)
    labels = torch.arange(8).repeat(5)
    cams = torch.randint(0, 3, (40,), generator=g)
    proxies, plabels, pcams = camera_proxies(feats, labels, cams)
    x = torch.randn(8, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y, c = labels[:8], cams[:8]

    def fn(t: torch.Tensor) -> torch.Tensor:
        return camera_proxy_loss(t, y, c, proxies.double(), plabels, pcams, 0.1, 5)

    assert torch.autograd.gradcheck(fn, (x,))
    module = CameraProxyLoss(temperature=0.1, num_hard_negatives=5)
    with pytest.raises(RuntimeError, match="set_proxies"):
        module(x, y, c)
    module.set_proxies(feats, labels, cams)
    assert torch.allclose(module(x.float(), y, c), fn(x).float())


def test_camera_proxy_loss_checks_inputs() -> None:
    proxies, plabels, pcams = _tiny_proxies()
    f, y, c = torch.randn(2, 2), torch.tensor([0, 1]), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="proxies must have shape"):
        camera_proxy_loss(torch.randn(2, 3), y, c, proxies, plabels, pcams)
    with pytest.raises(ValueError, match="temperature"):
        camera_proxy_loss(f, y, c, proxies, plabels, pcams, temperature=0.0)
    with pytest.raises(ValueError, match="proxy_labels"):
        camera_proxy_loss(f, y, c, proxies, plabels[:2], pcams)
