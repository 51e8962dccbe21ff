"""torchvision ResNets as re-ID backbones: images in, feature map out, with a ``last_stride``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision import models

__all__ = [
    "RESNETS",
    "PretrainedWeightsError",
    "ResNetBackbone",
    "build_backbone",
    "load_pretrained",
]

#: name -> (torchvision constructor, output channels)
RESNETS: dict[str, tuple[Callable[..., models.ResNet], int]] = {
    "resnet18": (models.resnet18, 512),
    "resnet34": (models.resnet34, 512),
    "resnet50": (models.resnet50, 2048),
    "resnet101": (models.resnet101, 2048),
}


class PretrainedWeightsError(RuntimeError):
    """Weights could not be read or do not match the architecture."""


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its pooling and classifier.

    ``forward`` maps images ``[N, 3, H, W]`` to the layer-4 feature map ``[N, C, H/s, W/s]`` with
    ``s = 16`` when ``last_stride=1`` (the re-ID convention of PPLR/DCLS: 16×8 maps at 256×128)
    and ``s = 32`` when ``last_stride=2`` (ImageNet's). Parameter names equal torchvision's, so
    torchvision ``.pth`` files load directly (their ``fc.*`` entries are ignored).
    """

    def __init__(self, name: str = "resnet50", last_stride: int = 1) -> None:
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(RESNETS)}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        factory, channels = RESNETS[name]
        net = factory(weights=None)
        self.name = name
        self.out_channels = channels
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        if last_stride == 1:
            block = self.layer4[0]
            # torchvision's Bottleneck strides in conv2 (ResNet v1.5); BasicBlock in conv1.
            strided = block.conv2 if isinstance(block, models.resnet.Bottleneck) else block.conv1
            strided.stride = (1, 1)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise PretrainedWeightsError(
            f"pretrained weights file '{path}' does not exist. Give the path of a torchvision "
            "state dict (.pth), e.g. resnet50-0676ba61.pth downloaded on a machine with internet, "
            "or pretrained=None to start from random weights."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure is reported the same way
        raise PretrainedWeightsError(f"could not read weights from '{path}': {e}") from e
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise PretrainedWeightsError(f"'{path}' does not hold a state dict (found {type(state)})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_pretrained(module: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a torchvision-format state dict into ``module`` with a strict, readable key check.

    Classifier entries (``fc.*``) are ignored; any other missing or unexpected key, or a shape
    mismatch, raises :class:`PretrainedWeightsError` listing them.
    """
    path = Path(path).expanduser()
    state = {k: v for k, v in _read_state_dict(path).items() if not k.startswith("fc.")}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or wrong:

        def show(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" ... ({len(items)} in all)" if len(items) > 8 else "")

        report = [f"weights in '{path}' do not match {type(module).__name__}:"]
        if missing:
            report.append(f"  missing in the file: {show(missing)}")
        if unexpected:
            report.append(f"  unexpected in the file: {show(unexpected)}")
        if wrong:
            report.append(f"  shape mismatch: {show(wrong)}")
        report.append("  (is it the state dict of the same architecture?)")
        raise PretrainedWeightsError("\n".join(report))
    module.load_state_dict(state, strict=True)


def build_backbone(
    name: str = "resnet50",
    *,
    last_stride: int = 1,
    pretrained: str | os.PathLike[str] | None = None,
) -> ResNetBackbone:
    """Build a ResNet backbone (see :class:`ResNetBackbone`).

    Args:
        name: ``"resnet18"``, ``"resnet34"``, ``"resnet50"`` or ``"resnet101"``.
        last_stride: stride of the last stage, 1 (re-ID) or 2 (ImageNet).
        pretrained: path of a torchvision-format ``.pth`` state dict, or ``None`` for random
            initialisation (torchvision's default initialisation).
    """
    backbone = ResNetBackbone(name, last_stride=last_stride)
    if pretrained is not None:
        load_pretrained(backbone, pretrained)
    return backbone
