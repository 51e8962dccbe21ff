"""Attention blocks with one interface: a feature map ``[N, C, H, W]`` in, the same shape out.

``soft`` is the local-branch attention of DCLS (Fig. 2, Eq. 1-2); ``cbam``, ``eca`` and ``se`` are
the alternatives of its Table 3 ablation; ``none`` is the identity. Build one by name with
:func:`build_attention`; add your own with :func:`register_attention`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "ATTENTIONS",
    "CBAM",
    "ECA",
    "SEAttention",
    "SoftAttention",
    "build_attention",
    "register_attention",
]

#: name -> constructor taking the number of channels (and keyword options).
ATTENTIONS: dict[str, Callable[..., nn.Module]] = {}


def register_attention(
    name: str,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Class decorator adding an attention block to :data:`ATTENTIONS` under ``name``."""

    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    if name in ATTENTIONS:  # at once, not when the class is decorated
        raise ValueError(f"name {name!r} is already registered as an attention")

    def add(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in ATTENTIONS:
            raise ValueError(f"name {name!r} is already registered as an attention")
        ATTENTIONS[name] = factory
        return factory

    return add


def build_attention(name: str, channels: int, **kwargs: object) -> nn.Module:
    """Build the attention block ``name`` (``soft``, ``cbam``, ``eca``, ``se`` or ``none``).

    Args:
        name: a key of :data:`ATTENTIONS`.
        channels: number of channels C of the maps it will see.
        **kwargs: options of that block (e.g. ``reduction=16``).
    """
    if not isinstance(name, str) or name not in ATTENTIONS:
        raise ValueError(f"unknown attention {name!r}; name must be one of {', '.join(ATTENTIONS)}")
    _check_channels(channels)
    return ATTENTIONS[name](channels, **kwargs)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_channels(channels: object) -> None:
    if not _positive_int(channels):
        raise ValueError(f"channels must be a positive integer, got {channels!r}")


def _hidden(channels: int, reduction: int) -> int:
    _check_channels(channels)
    if not _positive_int(reduction):
        raise ValueError(f"reduction must be an integer >= 1, got {reduction!r}")
    return max(1, channels // reduction)


@register_attention("none")
def _identity(channels: int) -> nn.Module:
    return nn.Identity()


@register_attention("soft")
class SoftAttention(nn.Module):
    """Soft attention of DCLS (Fig. 2, Eq. 1-2), the block of HA-CNN (Li et al., CVPR 2018).

    * Spatial map ``F_s`` (1×H×W): the channel-wise mean of the input → 3×3 convolution with
      stride 2 → bilinear upsampling back to H×W → 1×1 convolution.
    * Channel map ``F_c`` (C×1×1), Eq. 1: global average pooling ``G^c(F)`` → 1×1 convolution
      C → C/r, ReLU → 1×1 convolution C/r → C, ReLU (r = 16).
    * Eq. 2: ``F = F_s ⊗ F_c`` (broadcast element-wise product, C×H×W), then a 1×1 convolution
      C → C and a sigmoid give the weight map, which multiplies the input.

    The paper names no normalisation layers inside the block, so there are none (HA-CNN's own
    blocks add BatchNorm after each convolution).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.spatial_down = nn.Conv2d(1, 1, kernel_size=3, stride=2, padding=1)
        self.spatial_out = nn.Conv2d(1, 1, kernel_size=1)
        self.channel_squeeze = nn.Conv2d(channels, hidden, kernel_size=1)
        self.channel_expand = nn.Conv2d(hidden, channels, kernel_size=1)
        self.fuse = nn.Conv2d(channels, channels, kernel_size=1)

    def spatial_map(self, x: torch.Tensor) -> torch.Tensor:
        """``F_s``: ``[N, 1, H, W]``."""
        s = self.spatial_down(x.mean(dim=1, keepdim=True))
        s = F.interpolate(s, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.spatial_out(s)

    def channel_map(self, x: torch.Tensor) -> torch.Tensor:
        """``F_c`` of Eq. 1: ``[N, C, 1, 1]``."""
        c = F.relu(self.channel_squeeze(F.adaptive_avg_pool2d(x, 1)))
        return F.relu(self.channel_expand(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.spatial_map(x) * self.channel_map(x)  # Eq. 2
        return x * torch.sigmoid(self.fuse(weights))


@register_attention("se")
class SEAttention(nn.Module):
    """Squeeze-and-excitation (Hu et al., CVPR 2018, Fig. 1 / Eq. 2-4).

    ``x · σ(W_2 δ(W_1 GAP(x)))`` with W_1: C → C/r, W_2: C/r → C (r = 16), δ = ReLU.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.squeeze = nn.Conv2d(channels, hidden, kernel_size=1)
        self.expand = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.expand(F.relu(self.squeeze(F.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(w)


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel size k = |log2(C)/γ + b/γ|_odd, γ = 2, b = 1 (Wang et al., 2020)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


@register_attention("eca")
class ECA(nn.Module):
    """Efficient channel attention (Wang et al., CVPR 2020, Fig. 2).

    ``x · σ(conv1d_k(GAP(x)))``: a bias-free 1-D convolution of size k (:func:`eca_kernel_size`,
    7 for 2048 channels) across the channel descriptor, no dimensionality reduction.
    """

    def __init__(self, channels: int, kernel_size: int | None = None) -> None:
        super().__init__()
        _check_channels(channels)
        k = eca_kernel_size(channels) if kernel_size is None else kernel_size
        if not _positive_int(k) or k % 2 == 0:
            raise ValueError(f"ECA kernel_size must be a positive odd integer, got {k!r}")
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.adaptive_avg_pool2d(x, 1).flatten(1).unsqueeze(1)  # [N, 1, C]
        w = torch.sigmoid(self.conv(y)).view(x.shape[0], x.shape[1], 1, 1)
        return x * w


@register_attention("cbam")
class CBAM(nn.Module):
    """Convolutional block attention module (Woo et al., ECCV 2018, Eq. 1-3), channel first.

    Channel: ``M_c = σ(MLP(AvgPool(x)) + MLP(MaxPool(x)))`` with a shared MLP C → C/r → C
    (r = 16, ReLU); spatial: ``M_s = σ(f^{7×7}([AvgPool_c(x'); MaxPool_c(x')]))`` on
    ``x' = M_c ⊗ x``; output ``M_s ⊗ x'``.
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction)
        if not _positive_int(kernel_size) or kernel_size % 2 == 0:
            # (an even kernel would make the spatial map one row and column larger than x)
            raise ValueError(
                f"CBAM kernel_size must be a positive odd integer, got {kernel_size!r}"
            )
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )
        self.spatial = nn.Conv2d(2, 1, kernel_size=kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        x = x * torch.sigmoid(channel)
        pooled = torch.cat((x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)), dim=1)
        return x * torch.sigmoid(self.spatial(pooled))
