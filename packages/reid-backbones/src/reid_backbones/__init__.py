"""Backbones and re-ID models for unsupervised person re-identification (PPLR, DCLS).

* Backbones: torchvision ResNet-18/34/50/101 and their IBN-a variants, ``last_stride``, strict
  loading of local / ImageNet weights (:func:`build_backbone`).
* Attention blocks with one interface: DCLS soft attention, CBAM, ECA, SE
  (:func:`build_attention`).
* Models: ``baseline``, ``pplr`` and ``dcls`` (:func:`build_model`), ghost BatchNorm
  (``bn_groups``), classifiers reset from centroids.
* Checkpoints without pickle (:func:`save_checkpoint` / :func:`load_checkpoint`) and ONNX export;
  the official PPLR weights converted to them (:func:`convert_official_pplr`).
"""

from .attention import (
    ATTENTIONS,
    CBAM,
    ECA,
    SEAttention,
    SoftAttention,
    build_attention,
    register_attention,
)
from .checkpoint import (
    DEFAULT_INTERPOLATION,
    INTERPOLATIONS,
    CheckpointError,
    check_checkpoint,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
    unwrap_model,
)
from .ghost_bn import GhostBatchNorm1d, GhostBatchNorm2d, convert_to_ghost_bn, set_bn_groups
from .heads import BNNeck, PartBranch, region_rows
from .ibn import IBN, convert_to_ibn_a
from .models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODEL_OPTIONS,
    MODELS,
    ReIDModel,
    ReIDOutput,
    build_model,
    check_input_size,
    feature_map_size,
)
from .normalize import l2_normalize
from .official import convert_official_pplr
from .onnx_export import export_onnx
from .resnet import (
    BACKBONES,
    IBN_RESNETS,
    RESNETS,
    PretrainedSource,
    PretrainedWeightsError,
    ResNetBackbone,
    build_backbone,
    imagenet_weights_url,
    load_pretrained,
    load_state_dict_checked,
)
from .safetensors_format import SafetensorsError, load_safetensors, save_safetensors

__version__ = "0.3.0"

__all__ = [
    "l2_normalize",
    "ATTENTIONS",
    "BACKBONES",
    "BNNeck",
    "CBAM",
    "CheckpointError",
    "DEFAULT_INTERPOLATION",
    "ECA",
    "GhostBatchNorm1d",
    "GhostBatchNorm2d",
    "IBN",
    "IBN_RESNETS",
    "IMAGENET_MEAN",
    "INTERPOLATIONS",
    "IMAGENET_STD",
    "MODELS",
    "MODEL_OPTIONS",
    "PartBranch",
    "PretrainedSource",
    "PretrainedWeightsError",
    "RESNETS",
    "ReIDModel",
    "ReIDOutput",
    "ResNetBackbone",
    "SEAttention",
    "SafetensorsError",
    "SoftAttention",
    "__version__",
    "build_attention",
    "build_backbone",
    "build_model",
    "check_input_size",
    "feature_map_size",
    "convert_official_pplr",
    "convert_to_ghost_bn",
    "convert_to_ibn_a",
    "export_onnx",
    "imagenet_weights_url",
    "load_checkpoint",
    "load_pretrained",
    "load_safetensors",
    "load_state_dict_checked",
    "check_checkpoint",
    "read_checkpoint_config",
    "region_rows",
    "register_attention",
    "save_checkpoint",
    "save_safetensors",
    "set_bn_groups",
    "unwrap_model",
]
