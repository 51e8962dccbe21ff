"""The losses refuse an empty batch (a mean over no rows is NaN) with a ValueError naming it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from reid_refine import (
    AALSLoss,
    DCLSLoss,
    LabelSmoothingLoss,
    PGLRLoss,
    SoftCrossEntropyLoss,
    aals_loss,
    dcls_loss,
    label_smoothing_loss,
    pglr_loss,
    soft_cross_entropy,
)

K, P, D = 5, 3, 8


def _batch(n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "logits": torch.randn(n, K, generator=g),
        "probs": torch.softmax(torch.randn(n, K, generator=g), dim=1),
        "part_logits": torch.randn(n, P, K, generator=g),
        "targets": torch.randint(0, K, (n,), generator=g),
        "agreement": torch.rand(n, P, generator=g),
        "global_feats": torch.randn(n, D, generator=g),
        "local_feats": torch.randn(n, P, D, generator=g),
    }


CASES: dict[str, tuple[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]]] = {
    "soft_cross_entropy": (
        "soft_cross_entropy",
        lambda b: soft_cross_entropy(b["logits"], b["probs"]),
    ),
    "SoftCrossEntropyLoss": (
        "soft_cross_entropy",
        lambda b: SoftCrossEntropyLoss()(b["logits"], b["probs"]),
    ),
    "label_smoothing_loss": (
        "label_smoothing_loss",
        lambda b: label_smoothing_loss(b["logits"], b["targets"]),
    ),
    "LabelSmoothingLoss": (
        "label_smoothing_loss",
        lambda b: LabelSmoothingLoss()(b["logits"], b["targets"]),
    ),
    "aals_loss": (
        "aals_loss",
        lambda b: aals_loss(b["part_logits"], b["targets"], b["agreement"]),
    ),
    "AALSLoss": (
        "aals_loss",
        lambda b: AALSLoss()(b["part_logits"], b["targets"], b["agreement"]),
    ),
    "pglr_loss": (
        "pglr_loss",
        lambda b: pglr_loss(b["logits"], b["part_logits"], b["targets"], b["agreement"]),
    ),
    "PGLRLoss": (
        "pglr_loss",
        lambda b: PGLRLoss()(b["logits"], b["part_logits"], b["targets"], b["agreement"]),
    ),
    "dcls_loss": (
        "dcls_loss",
        lambda b: (
            dcls_loss(
                b["logits"], b["part_logits"], b["global_feats"], b["local_feats"], b["targets"]
            ).total
        ),
    ),
    "DCLSLoss": (
        "dcls_loss",
        lambda b: (
            DCLSLoss()(
                b["logits"], b["part_logits"], b["global_feats"], b["local_feats"], b["targets"]
            ).total
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_empty_batch_is_refused(case: str) -> None:
    func, call = CASES[case]
    with pytest.raises(ValueError, match=rf"^{func}: the batch is empty") as info:
        call(_batch(0))
    assert "at least one sample" in str(info.value)


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_sample_batch_still_computes(case: str) -> None:
    _, call = CASES[case]
    loss = call(_batch(1))
    assert loss.dim() == 0 and bool(torch.isfinite(loss))


def test_soft_cross_entropy_empty_rows_in_any_leading_dimension() -> None:
    # [N, P, K] with P = 0 has no rows either: the mean would be NaN.
    with pytest.raises(ValueError, match="soft_cross_entropy: the batch is empty"):
        soft_cross_entropy(torch.zeros(4, 0, K), torch.zeros(4, 0, K))


def test_soft_cross_entropy_sum_and_none_of_an_empty_batch_are_defined() -> None:
    # Only the mean is undefined: the sum over no rows is 0, "none" gives the empty rows.
    empty = torch.zeros(0, K)
    assert soft_cross_entropy(empty, empty, reduction="sum").item() == 0.0
    assert soft_cross_entropy(empty, empty, reduction="none").shape == (0,)


def test_finite_check_in_chunks_finds_a_late_nan() -> None:
    from reid_refine._checks import _all_finite

    x = torch.zeros(50, 3, 7)
    assert _all_finite(x, chunk_elements=8)
    x[49, 2, 6] = float("nan")
    assert not _all_finite(x, chunk_elements=8)
    assert not _all_finite(x)
    x[49, 2, 6] = float("-inf")
    assert not _all_finite(x, chunk_elements=100)
