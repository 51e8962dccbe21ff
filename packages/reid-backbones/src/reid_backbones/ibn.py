"""Instance-Batch Normalization (IBN-a) for torchvision ResNets.

Pan, Luo, Shi and Tang, "Two at Once: Enhancing Learning and Generalization Capacities via
IBN-Net", ECCV 2018. IBN-a normalises the output of the first convolution of every residual block
in stages 1-3 with InstanceNorm (affine) on the first half of the channels and BatchNorm on the
other half; stage 4 and the stem keep plain BatchNorm. Instance statistics remove appearance
(colour, illumination, style) variation, which is why IBN backbones transfer better across re-ID
cameras and datasets.

The module and parameter names (``layerX.Y.bn1.IN.*``, ``layerX.Y.bn1.BN.*``) are those of the
public IBN-Net ``resnet*_ibn_a`` checkpoints, so their ``.pth`` files load with the strict key
check of :func:`reid_backbones.load_pretrained`.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

__all__ = ["IBN", "convert_to_ibn_a"]


class IBN(nn.Module):
    """Half InstanceNorm, half BatchNorm over the channel dimension (the IBN-a layer).

    Args:
        planes: number of input channels.
        ratio: fraction of the channels given to InstanceNorm (0.5 in IBN-Net-a); the first
            ``int(planes * ratio)`` channels go to ``IN``, the rest to ``BN``.
    """

    def __init__(self, planes: int, ratio: float = 0.5) -> None:
        super().__init__()
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0 < ratio < 1:
            raise ValueError(f"ratio must be in (0, 1), got {ratio!r}")
        if isinstance(planes, bool) or not isinstance(planes, int) or planes < 1:
            raise ValueError(f"planes must be a positive integer, got {planes!r}")
        self.half = int(planes * ratio)
        if not 0 < self.half < planes:
            raise ValueError(
                f"IBN needs channels for both of its norms: planes={planes} with ratio={ratio} "
                f"gives {self.half} to InstanceNorm and {planes - self.half} to BatchNorm"
            )
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.shape[0] and x.shape[2] * x.shape[3] < 2:
            raise ValueError(
                f"x must have more than one spatial position for IBN's InstanceNorm, got "
                f"{x.shape[2]}x{x.shape[3]} maps (use larger images)"
            )
        first, second = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        # An empty batch: torch's instance norm fails on it (nothing to normalise anyway).
        instance = self.IN(first) if x.shape[0] else first
        return torch.cat((instance, self.BN(second)), dim=1)


def convert_to_ibn_a(
    net: nn.Module, stages: tuple[str, ...] = ("layer1", "layer2", "layer3")
) -> None:
    """Turn a torchvision ResNet into its IBN-a variant, in place.

    The ``bn1`` of every block (Bottleneck: after the 1×1 ``conv1``; BasicBlock: after the 3×3
    ``conv1``) of the given stages becomes an :class:`IBN` layer with the same number of
    channels, initialised like IBN-Net (weights 1, biases 0).
    """
    if isinstance(stages, str):
        raise TypeError(f"stages must be a sequence of stage names, got the string {stages!r}")
    missing = [s for s in stages if not isinstance(getattr(net, s, None), nn.Module)]
    if missing:
        raise ValueError(f"stages names {missing}, which the network does not have")
    for stage in stages:
        for block in getattr(net, stage):
            block.bn1 = IBN(block.bn1.num_features)
