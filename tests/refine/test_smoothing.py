"""Known-answer tests of the soft-target cross-entropy and constant label smoothing."""

from __future__ import annotations

import math

import pytest
import torch

from reid_refine import LabelSmoothingLoss, label_smoothing_loss, soft_cross_entropy

LN2, LN3 = math.log(2.0), math.log(3.0)


def test_soft_cross_entropy_known_values() -> None:
    # Row 0: logits (ln2, 0, 0) -> softmax (1/2, 1/4, 1/4); target (1/2, 1/4, 1/4):
    #   -(0.5 ln 0.5 + 0.25 ln 0.25 + 0.25 ln 0.25) = 0.5 ln2 + 0.5 * 2 ln2 = 1.5 ln2 = 1.0397208
    # Row 1: uniform logits, one-hot target -> ln 3 = 1.0986123
    logits = torch.tensor([[LN2, 0.0, 0.0], [0.0, 0.0, 0.0]])
    target = torch.tensor([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0]])
    per_row = soft_cross_entropy(logits, target, reduction="none")
    torch.testing.assert_close(per_row, torch.tensor([1.5 * LN2, LN3]))
    assert soft_cross_entropy(logits, target).item() == pytest.approx((1.5 * LN2 + LN3) / 2)
    assert soft_cross_entropy(logits, target, reduction="sum").item() == pytest.approx(
        1.5 * LN2 + LN3, rel=1e-6
    )


def test_label_smoothing_known_values() -> None:
    # K = 3, eps = 0.3: target row = (1 - 0.3) onehot + 0.1.
    # Row 0 (label 0, softmax (1/2, 1/4, 1/4)): -(0.8 ln 1/2 + 0.1 ln 1/4 + 0.1 ln 1/4)
    #   = 0.8 ln2 + 0.2 * 2 ln2 = 1.2 ln2 = 0.8317766
    # Row 1 (label 2, uniform): ln3 = 1.0986123.  Mean = 0.9651945
    logits = torch.tensor([[LN2, 0.0, 0.0], [0.0, 0.0, 0.0]])
    targets = torch.tensor([0, 2])
    loss = label_smoothing_loss(logits, targets, epsilon=0.3)
    assert loss.item() == pytest.approx((1.2 * LN2 + LN3) / 2, rel=1e-6)
    assert loss.item() == pytest.approx(0.9651945, rel=1e-6)
    # eps = 0 is plain cross-entropy: (ln2 + ln3) / 2
    plain = label_smoothing_loss(logits, targets, epsilon=0.0)
    assert plain.item() == pytest.approx((LN2 + LN3) / 2, rel=1e-6)
    assert plain.item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, targets).item(), rel=1e-6
    )
    # Module form, default eps = 0.1: row 0 = 0.9 ln2 + 0.0333.. * 2 * 2 ln2 ... computed as
    # -(0.9333 ln 1/2 + 2 * 0.0333 ln 1/4) = (0.9333 + 0.1333) ln2 = 1.0667 ln2
    module = LabelSmoothingLoss()
    assert module.epsilon == 0.1
    expected = ((0.9 + 0.1 / 3) * LN2 + 2 * (0.1 / 3) * 2 * LN2 + LN3) / 2
    assert module(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_single_cluster_is_zero() -> None:
    # K = 1: log_softmax of one class is 0, so every loss is exactly 0.
    logits = torch.tensor([[5.0], [-2.0]], requires_grad=True)
    loss = label_smoothing_loss(logits, torch.tensor([0, 0]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(2, 1))


def test_label_smoothing_gradient_reaches_logits() -> None:
    logits = torch.zeros(1, 4, requires_grad=True)
    label_smoothing_loss(logits, torch.tensor([1]), epsilon=0.2).backward()
    # d/dz of -Σ t log softmax(z) = softmax(z) - t = 0.25 - (0.05, 0.85, 0.05, 0.05)
    torch.testing.assert_close(logits.grad, torch.tensor([[0.2, -0.6, 0.2, 0.2]]))


@pytest.mark.parametrize("eps", [-0.1, 1.5, float("nan"), float("inf")])
def test_label_smoothing_rejects_bad_epsilon(eps: float) -> None:
    with pytest.raises(ValueError, match="epsilon"):
        label_smoothing_loss(torch.zeros(2, 3), torch.tensor([0, 1]), epsilon=eps)
    with pytest.raises(ValueError, match="epsilon"):
        LabelSmoothingLoss(epsilon=eps)


def test_label_smoothing_rejects_bad_targets_and_logits() -> None:
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\)"):
        label_smoothing_loss(logits, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\)"):
        label_smoothing_loss(logits, torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="targets must be an integer tensor"):
        label_smoothing_loss(logits, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"targets must have shape \[2\]"):
        label_smoothing_loss(logits, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="logits contains NaN or inf"):
        label_smoothing_loss(torch.tensor([[0.0, float("nan"), 0.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="logits contains NaN or inf"):
        label_smoothing_loss(torch.tensor([[0.0, float("inf"), 0.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="logits must have 2 dimensions"):
        label_smoothing_loss(torch.zeros(3), torch.tensor([0]))


def test_soft_cross_entropy_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="target_probs must have the shape of logits"):
        soft_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="target_probs contains NaN"):
        soft_cross_entropy(torch.zeros(1, 2), torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="logits contains NaN"):
        soft_cross_entropy(torch.tensor([[float("nan"), 1.0]]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="reduction"):
        soft_cross_entropy(torch.zeros(1, 2), torch.zeros(1, 2), reduction="max")
