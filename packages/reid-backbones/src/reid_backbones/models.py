"""The re-ID models of both papers behind one factory: ``baseline``, ``pplr`` and ``dcls``.

All three share a ResNet backbone (last stride 1) and a global branch: global average pooling →
BNNeck → bias-free classifier. They differ in the part/local branch (:class:`PartBranch`):

* ``baseline`` — none.
* ``pplr`` — P horizontal stripes of the backbone map (PPLR Sec. 3.1), each average-pooled
  with its own BNNeck and classifier; options ``num_parts`` (3) and ``part_bins``
  (``"adaptive"``: the bins of the official code's ``AdaptiveAvgPool2d((P, 1))``, neighbours
  sharing a row when P does not divide the map height; ``"disjoint"``: uniform stripes).
* ``dcls`` — an attention block on the backbone map, then N_l overlapping horizontal regions
  (DCLS Sec. 3.2, Fig. 1-2), each with its own BNNeck and classifier; options ``attention``
  (``"soft"``, ``"cbam"``, ``"eca"``, ``"se"`` or ``"none"``), ``num_regions`` (3; 0 gives the
  global branch alone) and ``overlap`` (True; False gives disjoint stripes, the "non-cross"
  ablation). The global branch pools the backbone map itself, not the attended one.

Which feature goes where follows the official PPLR code: the classifiers see the BNNeck outputs;
evaluation, clustering and the cross agreement use the L2-normalised BNNeck outputs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ._normalize import l2_normalize
from .attention import ATTENTIONS
from .ghost_bn import check_bn_groups, convert_to_ghost_bn
from .heads import BNNeck, PartBranch, make_classifier, region_rows
from .resnet import IBN_RESNETS, PretrainedSource, build_backbone

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODELS",
    "MODEL_OPTIONS",
    "PART_BINS",
    "ReIDModel",
    "ReIDOutput",
    "build_model",
    "check_input_size",
    "feature_map_size",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: PPLR part layouts: "adaptive" = the bins of nn.AdaptiveAvgPool2d((P, 1)) (official code;
#: neighbours share a row when P does not divide the map height), "disjoint" = uniform stripes.
PART_BINS: tuple[str, ...] = ("adaptive", "disjoint")

#: architecture -> its options and their defaults (the keyword ``**options`` of build_model).
MODEL_OPTIONS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "pplr": {"num_parts": 3, "part_bins": "adaptive"},
    "dcls": {"attention": "soft", "num_regions": 3, "overlap": True},
}

#: Architecture names :func:`build_model` accepts.
MODELS: tuple[str, ...] = tuple(MODEL_OPTIONS)


class ReIDOutput(NamedTuple):
    """What a model returns in training mode (``N`` images, ``D`` channels, ``P`` parts,
    ``K`` classes). Fields are ``None`` where the model has no parts or no classifier
    (``num_classes == 0``).

    Attributes:
        global_features: ``[N, D]`` global average-pooled map, **before** the BNNeck (the
            alternative triplet input, ``triplet_features: pooled`` in reid-train; see
            docs/design.md, "PPLR", "Soft triplet").
        global_bn_features: ``[N, D]`` the same **after** the BNNeck: the classifier's input, and
            the feature the official PPLR code (and reid-train by default) gives to its triplet
            and camera-proxy losses.
        global_logits: ``[N, K]`` global classifier outputs.
        part_features: ``[N, P, D]`` part/local features **after** their BNNecks (the official
            PPLR convention: its training output and, L2-normalised, its cross-agreement input).
        part_logits: ``[N, P, K]`` part/local classifier outputs.
        part_pooled_features: ``[N, P, D]`` part/local features before their BNNecks.
    """

    global_features: torch.Tensor
    global_bn_features: torch.Tensor
    global_logits: torch.Tensor | None
    part_features: torch.Tensor | None
    part_logits: torch.Tensor | None
    part_pooled_features: torch.Tensor | None


def _check_name(name: object) -> str:
    if not isinstance(name, str) or name not in MODEL_OPTIONS:
        raise ValueError(f"unknown model {name!r}; name must be one of {', '.join(MODELS)}")
    return name


def _check_input_size(input_size: object) -> tuple[int, int]:
    """``(height, width)`` as two ints >= 1, or a ValueError/TypeError naming ``input_size``."""
    wanted = "input_size must be (height, width), two positive integers"
    if isinstance(input_size, (str, bytes)) or not isinstance(input_size, Sequence):
        raise TypeError(f"{wanted}, got {input_size!r}")
    if len(input_size) != 2:
        raise ValueError(f"{wanted}, got {len(input_size)} value(s): {input_size!r}")
    for v in input_size:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{wanted}, got {input_size!r}")
        if v < 1:
            raise ValueError(f"{wanted}, got {input_size!r}")
    return int(input_size[0]), int(input_size[1])


def _check_last_stride(last_stride: object) -> int:
    if (
        isinstance(last_stride, bool)
        or last_stride not in (1, 2)
        or not isinstance(last_stride, numbers.Integral)
    ):
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
    return int(last_stride)


def _check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    valid = MODEL_OPTIONS[_check_name(name)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        allowed = ", ".join(f"{k}={v!r}" for k, v in valid.items()) or "none"
        raise TypeError(
            f"build_model({name!r}) got unknown option(s) {', '.join(unknown)}; "
            f"valid options for {name!r}: {allowed}"
        )
    resolved = {**valid, **options}
    if name == "pplr":
        p = resolved["num_parts"]
        if not isinstance(p, int) or isinstance(p, bool) or p < 1:
            raise ValueError(f"num_parts must be a positive integer, got {p!r}")
        if resolved["part_bins"] not in PART_BINS:
            raise ValueError(
                f"part_bins must be one of {', '.join(PART_BINS)}, got {resolved['part_bins']!r}"
            )
    if name == "dcls":
        n = resolved["num_regions"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"num_regions must be an integer >= 0 (paper: 0, 2 or 3), got {n!r}")
        if resolved["attention"] not in ATTENTIONS:
            raise ValueError(
                f"unknown attention {resolved['attention']!r}; choose one of "
                f"{', '.join(ATTENTIONS)}"
            )
        if not isinstance(resolved["overlap"], bool):
            raise ValueError(f"overlap must be True or False, got {resolved['overlap']!r}")
    return resolved


def feature_map_size(input_size: Sequence[int], last_stride: int = 1) -> tuple[int, int]:
    """``(h, w)`` of the ResNet feature map for images of ``input_size = (H, W)``.

    Every strided layer (the 7×7 stem, the max-pool, layers 2-4; layer 4 only with
    ``last_stride=2``) maps a side ``n`` to ``⌊(n − 1)/2⌋ + 1``: 256×128 gives 16×8 with
    ``last_stride=1`` and 8×4 with 2.

    Raises:
        ValueError, TypeError: ``input_size`` is not two positive integers, or ``last_stride``
            not 1 or 2.
    """
    input_size = _check_input_size(input_size)
    strided = 5 if _check_last_stride(last_stride) == 2 else 4
    sides = []
    for n in input_size:
        for _ in range(strided):
            n = (n - 1) // 2 + 1
        sides.append(n)
    return sides[0], sides[1]


def check_input_size(
    name: str, input_size: Sequence[int], last_stride: int = 1, **options: Any
) -> None:
    """Raise a ValueError when images of ``input_size`` are too small for model ``name``: its
    part / region split needs more feature-map rows than the backbone leaves (checked before any
    image is read, e.g. by a training config).

    Unknown names and options, bad option values, an ``input_size`` that is not two positive
    integers and a ``last_stride`` other than 1 or 2 are ValueErrors/TypeErrors too.
    """
    opts = _check_options(name, options)
    h, _ = feature_map_size(input_size, last_stride)
    if name == "pplr":
        if opts["part_bins"] == "adaptive":
            return  # adaptive bins fit any map height
        regions, overlap, what = opts["num_parts"], False, "num_parts"
    elif name == "dcls" and opts["num_regions"] > 0:
        regions, overlap, what = opts["num_regions"], opts["overlap"], "num_regions"
    else:
        return
    try:
        region_rows(h, regions, overlap)
    except ValueError:
        need = regions + 1 if overlap else regions
        stride = 32 if last_stride == 2 else 16
        raise ValueError(
            f"images {input_size[0]}x{input_size[1]} give a feature map {h} rows tall (stride "
            f"{stride}), too short for {what}={regions} "
            f"{'overlapping' if overlap else 'disjoint'} regions (needs >= {need} rows): use "
            f"images at least {(need - 1) * stride + 1} pixels tall (input_size), or fewer "
            f"{what.replace('num_', '')}"
        ) from None


def _check_ibn_size(backbone: object, input_size: Sequence[int]) -> None:
    """An IBN-a backbone's InstanceNorms (up to layer3, stride 16) need maps of 2+ positions."""
    h, w = input_size
    if isinstance(backbone, str) and backbone in IBN_RESNETS and -(-h // 16) * -(-w // 16) < 2:
        raise ValueError(
            f"images of input_size {h}x{w} leave 1x1 maps to the InstanceNorms of {backbone} "
            "(layer3, stride 16), which need more than one position: use images taller or "
            "wider than 16 pixels"
        )


def _autocast_on(device_type: str) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:  # torch < 2.4: no device argument
        if device_type == "cpu":
            return bool(torch.is_autocast_cpu_enabled())
        return bool(torch.is_autocast_enabled())


def _three_finite(values: object) -> bool:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 3:
        return False
    return all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )


class ReIDModel(nn.Module):
    """Backbone + global BNNeck/classifier + optional part/local branch (see the module doc).

    Use :func:`build_model` to create one. Modes:

    * training — ``forward(images)`` returns a :class:`ReIDOutput`;
    * evaluation — ``forward(images)`` returns the L2-normalised post-BNNeck global feature
      ``[N, D]`` (retrieval); :meth:`extract` also gives the part features for clustering.

    Inputs are images ``[N, 3, H, W]`` normalised with ``mean``/``std`` (metadata stored in
    checkpoints; the model does not normalise). Everything follows the device and dtype of the
    model and its input; ``channels_last`` and autocast work.
    """

    def __init__(
        self,
        arch: str,
        backbone: str = "resnet50",
        num_classes: int = 0,
        *,
        pretrained: PretrainedSource = None,
        last_stride: int = 1,
        input_size: Sequence[int] = (256, 128),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        **options: Any,
    ) -> None:
        super().__init__()
        _check_name(arch)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        for label, values in (("mean", mean), ("std", std)):
            if not _three_finite(values) or (label == "std" and min(values) <= 0):
                raise ValueError(
                    f"{label} must be 3 finite numbers (one per RGB channel"
                    f"{', each > 0' if label == 'std' else ''}), got {values!r}"
                )
        self.arch = arch
        self.options = _check_options(arch, options)
        check_input_size(arch, input_size, last_stride, **self.options)
        _check_ibn_size(backbone, input_size)
        self.backbone_name = backbone
        self.last_stride = last_stride
        self.bn_groups = 1
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

        self.backbone = build_backbone(backbone, last_stride=last_stride, pretrained=pretrained)
        dim = self.backbone.out_channels
        self.neck = BNNeck(dim)
        self.classifier = make_classifier(dim, num_classes, self.neck.weight)
        self.num_classes = num_classes
        self.parts: PartBranch | None = None
        if arch == "pplr":
            self.parts = PartBranch(
                dim,
                self.options["num_parts"],
                overlap=False,
                adaptive=self.options["part_bins"] == "adaptive",
                num_classes=num_classes,
            )
        elif arch == "dcls" and self.options["num_regions"] > 0:
            self.parts = PartBranch(
                dim,
                self.options["num_regions"],
                overlap=self.options["overlap"],
                attention=self.options["attention"],
                num_classes=num_classes,
            )

    @property
    def feature_dim(self) -> int:
        """D, the channels of the backbone map (2048 for ResNet-50, 512 for ResNet-18/34)."""
        return self.backbone.out_channels

    @property
    def num_parts(self) -> int:
        """P, the number of part/local features (0 without a part branch)."""
        return 0 if self.parts is None else self.parts.num_regions

    def _check_images(self, images: torch.Tensor) -> None:
        """Raise a ValueError/TypeError naming ``images`` when the model cannot run on them.

        ``images`` must be a floating-point ``[N, 3, H, W]`` tensor on the model's device, of its
        dtype (unless autocast is on), tall enough for its parts / regions (and, with an IBN-a
        backbone, leaving more than one position to its InstanceNorms); in training mode ``N``
        must split into ``bn_groups`` groups of at least 2 images (BatchNorm batch statistics).
        :meth:`forward` and :meth:`extract` call it.
        """
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a tensor [N, 3, H, W], got {type(images).__name__}")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got shape {list(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(
                f"images must be a floating-point tensor (normalised with mean/std), got "
                f"{images.dtype}"
            )
        param = self.neck.weight
        if images.device != param.device:
            raise ValueError(
                f"images are on {images.device} but the model is on {param.device}: move one"
            )
        if images.dtype != param.dtype and not _autocast_on(images.device.type):
            raise TypeError(
                f"images are {images.dtype} but the model is {param.dtype}: convert the images "
                "(or the model), or run under torch.autocast"
            )
        h, w = int(images.shape[2]), int(images.shape[3])
        if h < 1 or w < 1:
            raise ValueError(f"images must be at least 1x1 pixels, got {h}x{w}")
        check_input_size(self.arch, (h, w), self.last_stride, **self.options)
        _check_ibn_size(self.backbone_name, (h, w))
        if self.training:
            n, g = int(images.shape[0]), max(1, self.bn_groups)
            if n % g or n // g < 2:
                raise ValueError(
                    f"in training mode images must be a batch of at least 2 per BatchNorm group "
                    f"(bn_groups={g}: a multiple of {g}, at least {2 * g}), got {n}; BatchNorm "
                    "needs batch statistics (use model.eval() to embed fewer)"
                )

    def forward(self, images: torch.Tensor) -> ReIDOutput | torch.Tensor:
        """Training: :class:`ReIDOutput`. Evaluation: L2-normalised global features ``[N, D]``.

        Raises:
            ValueError, TypeError: ``images`` the model cannot run on (see ``_check_images``).
        """
        self._check_images(images)
        fmap = self.backbone(images)
        pooled = F.adaptive_avg_pool2d(fmap, 1).flatten(1)
        bn = self.neck(pooled)
        if not self.training:
            return l2_normalize(bn, dim=1)
        logits = self.classifier(bn) if self.classifier is not None else None
        part_pooled = part_bn = part_logits = None
        if self.parts is not None:
            part_pooled, part_bn, part_logits = self.parts(fmap)
        return ReIDOutput(pooled, bn, logits, part_bn, part_logits, part_pooled)

    def extract(
        self, images: torch.Tensor, parts: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """L2-normalised post-BNNeck features for clustering and the cross agreement.

        Returns ``(global [N, D], parts [N, P, D])``; ``parts`` is None when ``parts=False`` or
        the model has no part branch. Call it in evaluation mode (``model.eval()``) and under
        ``torch.no_grad()`` as for retrieval; it does not change the mode itself.
        """
        self._check_images(images)
        fmap = self.backbone(images)
        g = l2_normalize(self.neck(F.adaptive_avg_pool2d(fmap, 1).flatten(1)), dim=1)
        if not parts or self.parts is None:
            return g, None
        return g, l2_normalize(self.parts.bn_features(fmap), dim=2)

    @torch.no_grad()
    def reset_classifiers(
        self, global_centroids: torch.Tensor, part_centroids: torch.Tensor | None = None
    ) -> None:
        """Re-create every classifier with K outputs initialised from cluster centroids.

        PPLR (and SpCL before it) start each epoch's classifiers from the L2-normalised
        centroids of the current clusters; call this after clustering, each epoch. Centroids are
        L2-normalised here; the new layers take the model's device and dtype.

        The classifiers are **new parameters**: rebuild the optimizer (or swap its classifier
        parameter group) afterwards, as their number of rows K changes from epoch to epoch.

        Args:
            global_centroids: ``[K, D]`` centroids of the global features.
            part_centroids: ``[K, P, D]`` centroids of each part's features; required for
                models with parts, None for those without.

        Raises:
            TypeError: a centroid argument is not a floating-point tensor.
            ValueError: shapes do not match the model, K is 0, or a centroid holds NaN/inf.
        """
        d = self.feature_dim
        k = self._check_centroids(global_centroids, part_centroids)
        like = self.neck.weight
        classifier = make_classifier(d, k, like)
        assert classifier is not None
        classifier.weight.copy_(l2_normalize(global_centroids.to(like), dim=1))
        self.classifier = classifier
        if self.parts is not None and part_centroids is not None:
            self.parts.reset_classifiers(part_centroids)
        self.num_classes = k

    @torch.no_grad()
    def load_centroids(
        self, global_centroids: torch.Tensor, part_centroids: torch.Tensor | None = None
    ) -> int:
        """Copy cluster centroids into the first K rows of the existing classifiers, in place.

        The official PPLR code's way: the model is built with a fixed capacity
        (``num_classes``, e.g. 3000), each epoch's L2-normalised centroids overwrite rows
        ``0..K-1`` and the caller slices the logits to ``[..., :K]``. The parameters stay the
        same objects, so the optimizer state carries over and DDP wrappers stay valid (unlike
        :meth:`reset_classifiers`, which creates new layers).

        Args:
            global_centroids: ``[K, D]``; part_centroids: ``[K, P, D]`` for models with parts.

        Returns:
            K, the number of rows written.

        Raises:
            TypeError: a centroid argument is not a floating-point tensor.
            ValueError: shapes do not match the model, K is 0 or exceeds the classifier
                capacity, or a centroid holds NaN/inf. Nothing is written then.
        """
        k = self._check_centroids(global_centroids, part_centroids)
        if self.classifier is None or k > self.classifier.out_features:
            capacity = 0 if self.classifier is None else self.classifier.out_features
            raise ValueError(
                f"the {k} clusters of global_centroids do not fit the classifier capacity of "
                f"{capacity} rows; build the model with a larger num_classes"
            )
        weight = self.classifier.weight
        weight[:k].copy_(l2_normalize(global_centroids.to(weight), dim=1))
        if self.parts is not None and part_centroids is not None:
            assert self.parts.classifiers is not None
            for i, fc in enumerate(self.parts.classifiers):
                fc.weight[:k].copy_(l2_normalize(part_centroids[:, i].to(fc.weight), dim=1))
        return k

    def _check_centroids(
        self, global_centroids: torch.Tensor, part_centroids: torch.Tensor | None
    ) -> int:
        """K, after checking the centroids' types, shapes and values against the model."""
        d = self.feature_dim
        for label, t in (
            ("global_centroids", global_centroids),
            ("part_centroids", part_centroids),
        ):
            if t is None and label == "part_centroids":
                continue
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                what = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
                raise TypeError(f"{label} must be a floating-point tensor, got {what}")
        if global_centroids.dim() != 2 or global_centroids.shape[1] != d:
            raise ValueError(
                f"global_centroids must be [K, {d}], got {list(global_centroids.shape)}"
            )
        k = global_centroids.shape[0]
        if k < 1:
            raise ValueError("global_centroids is empty: there must be at least one cluster")
        if self.parts is None:
            if part_centroids is not None:
                raise ValueError(f"this {self.arch!r} model has no parts: pass part_centroids=None")
        else:
            want = [k, self.num_parts, d]
            if part_centroids is None or list(part_centroids.shape) != want:
                got = None if part_centroids is None else list(part_centroids.shape)
                raise ValueError(f"part_centroids must be {want} (K, P, D) here, got {got}")
        like = self.neck.weight
        for label, t in (
            ("global_centroids", global_centroids),
            ("part_centroids", part_centroids),
        ):
            if t is not None and not bool(torch.isfinite(t.detach().to(like.dtype)).all()):
                raise ValueError(
                    f"{label} holds NaN or inf (in the model's {like.dtype}): the classifier "
                    "rows would be NaN"
                )
        return k

    def config(self) -> dict[str, Any]:
        """The arguments that rebuild this model (saved as ``config.json`` by checkpoints)."""
        return {
            "architecture": self.arch,
            "backbone": self.backbone_name,
            "num_classes": self.num_classes,
            "last_stride": self.last_stride,
            "bn_groups": self.bn_groups,
            "options": dict(self.options),
            "feature_dim": self.feature_dim,
            "num_parts": self.num_parts,
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
        }


def build_model(
    name: str,
    backbone: str = "resnet50",
    num_classes: int = 0,
    pretrained: PretrainedSource = None,
    last_stride: int = 1,
    bn_groups: int = 1,
    *,
    input_size: Sequence[int] = (256, 128),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    **options: Any,
) -> ReIDModel:
    """Build a re-ID model: ``"baseline"``, ``"pplr"`` or ``"dcls"`` (see :data:`MODEL_OPTIONS`).

    Args:
        name: architecture.
        backbone: a name of :data:`reid_backbones.BACKBONES` (``"resnet50"``,
            ``"resnet50_ibn_a"``, ...).
        num_classes: classifier outputs K; 0 builds no classifiers (create them later with
            :meth:`ReIDModel.reset_classifiers`).
        pretrained: backbone weights: None, a local torchvision/IBN-Net ``.pth`` file,
            ``"imagenet"`` or a torchvision weight enum (see :func:`build_backbone`).
        last_stride: 1 (re-ID, both papers) or 2.
        bn_groups: G > 1 turns every BatchNorm into a ghost BatchNorm normalising over
            ``batch / G`` samples in training (:mod:`reid_backbones.ghost_bn`).
        input_size: ``(height, width)`` the model is meant for (metadata for checkpoints and
            export; 256×128 in DCLS, 384×128 in PPLR).
        mean, std: the input normalisation (metadata; ImageNet's by default).
        **options: architecture options — pplr: ``num_parts=3``, ``part_bins="adaptive"``
            (or ``"disjoint"``); dcls: ``attention="soft"``,
            ``num_regions=3``, ``overlap=True``. Unknown ones raise a TypeError listing the valid
            ones.
    """
    check_bn_groups(bn_groups)  # before the (slow) build; True is not 1 group
    model = ReIDModel(
        name,
        backbone,
        num_classes,
        pretrained=pretrained,
        last_stride=last_stride,
        input_size=input_size,
        mean=mean,
        std=std,
        **options,
    )
    if bn_groups != 1:
        convert_to_ghost_bn(model, bn_groups)
        model.bn_groups = bn_groups
    return model
