"""Attention blocks: one interface, and known answers with hand-set weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reid_backbones import (
    ATTENTIONS,
    CBAM,
    ECA,
    SEAttention,
    SoftAttention,
    build_attention,
    register_attention,
)
from reid_backbones.attention import eca_kernel_size


@pytest.mark.parametrize("name", ["soft", "cbam", "eca", "se", "none"])
def test_same_shape_in_and_out_any_memory_format(name: str) -> None:
    block = build_attention(name, 64)
    x = torch.randn(2, 64, 8, 4)
    y = block(x)
    assert y.shape == x.shape
    y_cl = block(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y_cl, y, rtol=1e-5, atol=1e-6)


def test_registry_and_errors() -> None:
    assert {"soft", "cbam", "eca", "se", "none"} <= set(ATTENTIONS)
    assert isinstance(build_attention("none", 8), nn.Identity)
    with pytest.raises(ValueError, match="unknown attention 'gc'.*soft"):
        build_attention("gc", 8)
    with pytest.raises(ValueError, match="already registered"):
        register_attention("soft")(SoftAttention)


def _set(conv: nn.Conv2d | nn.Conv1d, weight: torch.Tensor, bias: float | None = None) -> None:
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(conv.weight.shape))
        if conv.bias is not None:
            conv.bias.fill_(0.0 if bias is None else bias)


def test_soft_attention_known_answer() -> None:
    """DCLS Eq. 1-2 by hand: F_s from the channel mean, F_c from GAP, σ(fuse(F_s ⊗ F_c)) · x."""
    c, hidden = 32, 2  # reduction 16
    block = SoftAttention(c)
    # Spatial: the 3×3 stride-2 conv keeps the centre pixel ×2 (+0.5); the 1×1 conv ×3 (−1).
    centre = torch.zeros(3, 3)
    centre[1, 1] = 2.0
    _set(block.spatial_down, centre, 0.5)
    _set(block.spatial_out, torch.tensor([3.0]), -1.0)
    # Channel: squeeze sums channel halves; expand maps hidden unit j to channels with weight.
    w0 = torch.zeros(hidden, c)
    w0[0, : c // 2] = 1.0
    w0[1, c // 2 :] = -1.0
    w1 = torch.linspace(-1.0, 1.0, c * hidden).reshape(c, hidden)
    _set(block.channel_squeeze, w0, 0.0)
    _set(block.channel_expand, w1, 0.1)
    _set(block.fuse, torch.eye(c), 0.0)
    # A map that is constant over space (per sample and channel): upsampling is then exact.
    a = torch.randn(2, c)
    x = a[:, :, None, None].expand(2, c, 6, 4).contiguous()

    s = 3.0 * (2.0 * a.mean(1) + 0.5) - 1.0  # F_s, one value per sample
    f_c = torch.relu(torch.relu(a @ w0.T) @ w1.T + 0.1)  # Eq. 1, [N, C]
    expected = a * torch.sigmoid(s[:, None] * f_c)  # Eq. 2, fuse = identity, then σ · x
    y = block(x)
    torch.testing.assert_close(y, expected[:, :, None, None].expand_as(x), rtol=1e-5, atol=1e-6)


def test_soft_attention_spatial_map_follows_rows() -> None:
    """With the identity spatial path, F_s is the bilinearly restored channel mean."""
    block = SoftAttention(16)
    centre = torch.zeros(3, 3)
    centre[1, 1] = 1.0
    _set(block.spatial_down, centre, 0.0)
    _set(block.spatial_out, torch.tensor([1.0]), 0.0)
    x = torch.zeros(1, 16, 8, 4)
    x[:, :, :4] = 1.0  # top half bright
    f_s = block.spatial_map(x)
    assert f_s.shape == (1, 1, 8, 4)
    assert f_s[0, 0, 0].min() > f_s[0, 0, -1].max()


def test_zero_fuse_gives_half_the_input() -> None:
    block = SoftAttention(32)
    _set(block.fuse, torch.zeros(32, 32), 0.0)
    x = torch.randn(2, 32, 5, 3)
    torch.testing.assert_close(block(x), 0.5 * x)


def test_se_known_answer() -> None:
    block = SEAttention(32)  # hidden 2
    _set(block.squeeze, torch.ones(2, 32), 0.0)
    _set(block.expand, torch.full((32, 2), 0.25), -1.0)
    x = torch.rand(3, 32, 4, 2)
    gap = x.mean((2, 3))
    z = torch.relu(gap.sum(1, keepdim=True)).repeat(1, 2)  # both hidden units
    expected = x * torch.sigmoid(z @ torch.full((2, 32), 0.25) - 1.0)[:, :, None, None]
    torch.testing.assert_close(block(x), expected)


def test_eca_kernel_sizes_and_known_answer() -> None:
    assert [eca_kernel_size(c) for c in (64, 256, 512, 1024, 2048)] == [3, 5, 5, 5, 7]
    block = ECA(2048)
    assert block.conv.kernel_size == (7,)
    block = ECA(16, kernel_size=3)
    _set(block.conv, torch.tensor([1.0, 0.0, 0.0]))  # each channel weighted by its left neighbour
    x = torch.randn(2, 16, 3, 3)
    gap = x.mean((2, 3))
    left = torch.cat((torch.zeros(2, 1), gap[:, :-1]), 1)
    torch.testing.assert_close(block(x), x * torch.sigmoid(left)[:, :, None, None])
    with pytest.raises(ValueError, match="odd"):
        ECA(16, kernel_size=4)


def test_cbam_known_answer() -> None:
    block = CBAM(32)
    for conv in (block.mlp[0], block.mlp[2]):
        _set(conv, torch.zeros_like(conv.weight), 0.0)  # M_c = σ(0 + 0) = 1/2
    spatial = torch.zeros(2, 7, 7)
    spatial[1, 3, 3] = 1.0  # M_s = σ(channel max of x')
    _set(block.spatial, spatial, 0.0)
    x = torch.randn(2, 32, 6, 4)
    half = 0.5 * x
    expected = half * torch.sigmoid(half.amax(1, keepdim=True))
    torch.testing.assert_close(block(x), expected)
