"""Ghost BatchNorm equals BatchNorm applied to each group by hand (outputs and running stats)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from reid_backbones import (
    GhostBatchNorm1d,
    GhostBatchNorm2d,
    build_model,
    convert_to_ghost_bn,
    set_bn_groups,
)


def _by_hand(bn: nn.Module, x: torch.Tensor, groups: int) -> tuple[torch.Tensor, list[nn.Module]]:
    """Each group through its own copy of ``bn`` (what each DataParallel replica does)."""
    replicas = [copy.deepcopy(bn) for _ in range(groups)]
    outs = [r(chunk) for r, chunk in zip(replicas, x.chunk(groups), strict=True)]
    return torch.cat(outs), replicas


@pytest.mark.parametrize("running_stats", ["mean", "first"])
@pytest.mark.parametrize(
    ("cls", "shape"), [(nn.BatchNorm2d, (12, 6, 5, 3)), (nn.BatchNorm1d, (12, 6))]
)
def test_equals_per_group_batchnorm(cls: type, shape: tuple[int, ...], running_stats: str) -> None:
    torch.manual_seed(0)
    plain = cls(shape[1], momentum=0.3)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-0.5, 0.5)
        plain.running_mean.uniform_(-1, 1)
        plain.running_var.uniform_(0.5, 2)
    ghost = convert_to_ghost_bn(copy.deepcopy(plain), 3, running_stats)
    assert isinstance(ghost, (GhostBatchNorm1d, GhostBatchNorm2d)) and ghost.groups == 3

    for step in range(2):  # two steps: the running averages compound
        x = torch.randn(*shape) * 2 + 1
        x_ghost = x.clone().requires_grad_(True)
        y = ghost(x_ghost)
        x_hand = x.clone().requires_grad_(True)
        expected, replicas = _by_hand(plain, x_hand, 3)
        torch.testing.assert_close(y, expected)

        g = torch.randn_like(y)
        y.backward(g)
        expected.backward(g)
        torch.testing.assert_close(x_ghost.grad, x_hand.grad)
        hand_weight_grad = sum(r.weight.grad for r in replicas)
        torch.testing.assert_close(ghost.weight.grad, hand_weight_grad)
        ghost.weight.grad = None

        for name in ("running_mean", "running_var"):
            stats = torch.stack([getattr(r, name) for r in replicas])
            want = stats.mean(0) if running_stats == "mean" else stats[0]
            torch.testing.assert_close(getattr(ghost, name), want)
            getattr(plain, name).copy_(want)  # next step starts from the same state
        assert int(ghost.num_batches_tracked) == step + 1

    ghost.eval()
    plain.eval()
    x = torch.randn(*shape)
    torch.testing.assert_close(ghost(x), plain(x))  # evaluation: running statistics


def test_cumulative_average_and_channels_last() -> None:
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(4, momentum=None)
    ghost = convert_to_ghost_bn(copy.deepcopy(plain), 2)
    for _ in range(3):
        x = torch.randn(8, 4, 3, 3)
        expected, replicas = _by_hand(plain, x, 2)
        y = ghost(x.contiguous(memory_format=torch.channels_last))
        assert y.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y, expected)
        mean = torch.stack([r.running_mean for r in replicas]).mean(0)
        torch.testing.assert_close(ghost.running_mean, mean)
        plain.load_state_dict(ghost.state_dict())


def test_groups_one_is_batchnorm_and_errors() -> None:
    bn = nn.BatchNorm2d(4)
    ghost = convert_to_ghost_bn(copy.deepcopy(bn), 1)
    x = torch.randn(6, 4, 2, 2)
    torch.testing.assert_close(ghost(x), bn(x))
    ghost = convert_to_ghost_bn(ghost, 4)
    with pytest.raises(ValueError, match="batch size divisible by 4, got 6"):
        ghost(x)
    one = convert_to_ghost_bn(nn.BatchNorm1d(4), 4)
    with pytest.raises(ValueError, match="1 sample per group"):
        one(torch.randn(4, 4))
    with pytest.raises(ValueError, match="bn_groups must be a positive integer"):
        convert_to_ghost_bn(nn.BatchNorm1d(4), 0)
    with pytest.raises(ValueError, match="running_stats must be one of mean, first"):
        convert_to_ghost_bn(nn.BatchNorm1d(4), 2, "all")


def test_model_with_groups_equals_the_model_run_per_group() -> None:
    """bn_groups=2 on a batch of 4 = the bn_groups=1 model on each half (backbone, necks)."""
    torch.manual_seed(0)
    plain = build_model("pplr", "resnet18", num_classes=5)
    ghost = build_model("pplr", "resnet18", num_classes=5, bn_groups=2)
    assert ghost.bn_groups == 2 and ghost.config()["bn_groups"] == 2
    assert set(ghost.state_dict()) == set(plain.state_dict())
    assert not any(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d) for m in ghost.modules())
    assert not ghost.neck.bias.requires_grad  # BNNeck's frozen bias survives the conversion
    ghost.load_state_dict(plain.state_dict())

    x = torch.randn(4, 3, 64, 32)
    out = ghost.train()(x)
    halves = [plain.train()(x[:2]), copy.deepcopy(plain)(x[2:])]  # two "replicas"
    for field in ("global_bn_features", "global_logits", "part_features", "part_logits"):
        expected = torch.cat([getattr(h, field) for h in halves])
        torch.testing.assert_close(getattr(out, field), expected, rtol=1e-4, atol=1e-5)

    set_bn_groups(ghost, 4)
    assert ghost.bn_groups == 4 and ghost.backbone.bn1.groups == 4
