"""Backbones and re-ID models (ResNet backbones today; the part models arrive with their issue)."""

from .resnet import (
    RESNETS,
    PretrainedWeightsError,
    ResNetBackbone,
    build_backbone,
    load_pretrained,
)

__version__ = "0.1.0"

__all__ = [
    "RESNETS",
    "PretrainedWeightsError",
    "ResNetBackbone",
    "__version__",
    "build_backbone",
    "load_pretrained",
]
