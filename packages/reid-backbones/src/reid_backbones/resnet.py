"""ResNets as re-ID backbones: images in, feature map out, with a ``last_stride``.

torchvision's ResNet-18/34/50/101 and their IBN-a variants (:mod:`reid_backbones.ibn`). Weights
come from a local torchvision-format file, a torchvision weight enum, or ``"imagenet"`` (downloaded
into the torch hub cache where the machine has internet; a clear error naming the file to fetch
where it has not).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models

from .ibn import convert_to_ibn_a

__all__ = [
    "BACKBONES",
    "IBN_RESNETS",
    "RESNETS",
    "PretrainedSource",
    "PretrainedWeightsError",
    "ResNetBackbone",
    "build_backbone",
    "imagenet_weights_url",
    "load_pretrained",
    "load_state_dict_checked",
]

#: name -> (torchvision constructor, output channels)
RESNETS: dict[str, tuple[Callable[..., models.ResNet], int]] = {
    "resnet18": (models.resnet18, 512),
    "resnet34": (models.resnet34, 512),
    "resnet50": (models.resnet50, 2048),
    "resnet101": (models.resnet101, 2048),
}

#: IBN-a variant -> the torchvision ResNet it modifies (:func:`reid_backbones.convert_to_ibn_a`).
IBN_RESNETS: dict[str, str] = {
    "resnet18_ibn_a": "resnet18",
    "resnet34_ibn_a": "resnet34",
    "resnet50_ibn_a": "resnet50",
    "resnet101_ibn_a": "resnet101",
}

#: Every backbone name :func:`build_backbone` accepts.
BACKBONES: tuple[str, ...] = (*RESNETS, *IBN_RESNETS)

# ImageNet checkpoints released with IBN-Net (Pan et al., ECCV 2018), in its own key layout, which
# is ours. torchvision's own URLs come from its weight enums.
_IBN_URLS = {
    name: f"https://github.com/XingangPan/IBN-Net/releases/download/v1.0/{name}-{tag}.pth"
    for name, tag in {
        "resnet18_ibn_a": "2f571257",
        "resnet34_ibn_a": "94bc1577",
        "resnet50_ibn_a": "d9d0bb7b",
        "resnet101_ibn_a": "59ea0ac6",
    }.items()
}

#: What ``pretrained=`` accepts: a local file, ``"imagenet"``, a torchvision weight enum, or None.
PretrainedSource = str | os.PathLike | models.WeightsEnum | None


class PretrainedWeightsError(RuntimeError):
    """Weights could not be read or do not match the architecture."""


def torch_load_safely(path: Path, error: type[Exception], trust: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a file it refuses or cannot read
    raises ``error`` with one short message naming the file, the reason and the fix (``trust``:
    what to do with a file one trusts). A pickle naming Python objects is refused without
    running them, as unpickling could run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found:
            raise error(
                f"'{path}' holds Python objects besides tensors (it names {found.group(1)}), and "
                "unpickling them could run code, so it is refused (read with "
                f"torch.load(weights_only=True)). {trust}"
            ) from e
        reason = re.search(r"WeightsUnpickler error:\s*(.+?)\s*$", str(e), re.M)
        raise error(
            f"'{path}' cannot be read with torch.load(weights_only=True) "
            f"({reason.group(1) if reason else str(e).splitlines()[0]}): it is not a torch.save "
            f"file, is damaged, or holds Python objects that are refused as they could run code. "
            f"{trust}"
        ) from e
    except Exception as e:  # noqa: BLE001 - truncated file, not a torch file, ...
        first = str(e).splitlines()[0] if str(e) else ""
        raise error(
            f"could not read '{path}' as a torch.save file ({type(e).__name__}: {first}); is "
            "the download complete?"
        ) from e


class ResNetBackbone(nn.Module):
    """A torchvision ResNet (or its IBN-a variant) without its pooling and classifier.

    ``forward`` maps images ``[N, 3, H, W]`` to the layer-4 feature map ``[N, C, H/s, W/s]`` with
    ``s = 16`` when ``last_stride=1`` (the re-ID convention of PPLR/DCLS: 16×8 maps at 256×128)
    and ``s = 32`` when ``last_stride=2`` (ImageNet's). Parameter names equal torchvision's (and,
    for ``*_ibn_a``, IBN-Net's), so torchvision / IBN-Net ``.pth`` files load directly (their
    ``fc.*`` entries are ignored).
    """

    def __init__(self, name: str = "resnet50", last_stride: int = 1) -> None:
        super().__init__()
        if not isinstance(name, str) or name not in BACKBONES:
            raise ValueError(
                f"unknown backbone {name!r}; name must be one of {', '.join(BACKBONES)}"
            )
        if (
            isinstance(last_stride, bool)
            or last_stride not in (1, 2)
            or not isinstance(last_stride, int)
        ):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
        factory, channels = RESNETS[IBN_RESNETS.get(name, name)]
        net = factory(weights=None)
        if name in IBN_RESNETS:
            convert_to_ibn_a(net)
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


_TRUST = (
    "If you trust the file, load it with torch.load(path, weights_only=False) and save the "
    "state dict it holds with torch.save(state_dict, 'weights.pth')"
)


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise PretrainedWeightsError(
            f"pretrained weights file '{path}' does not exist. Give the path of a torchvision "
            "state dict (.pth), e.g. resnet50-0676ba61.pth downloaded on a machine with internet, "
            "or pretrained=None to start from random weights."
        )
    try:
        if path.suffix == ".safetensors":
            from .safetensors_format import load_safetensors

            state = load_safetensors(path)[0]
        else:
            state = torch_load_safely(path, PretrainedWeightsError, _TRUST)
    except PretrainedWeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is reported the same way
        raise PretrainedWeightsError(f"could not read weights from '{path}': {e}") from e
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise PretrainedWeightsError(f"'{path}' does not hold a state dict (found {type(state)})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_state_dict_checked(
    module: nn.Module, state: Mapping[str, torch.Tensor], source: str
) -> None:
    """Load ``state`` into ``module`` with a strict, readable key check.

    Classifier entries (``fc.*``) and a DataParallel ``module.`` prefix are ignored, and
    BatchNorm ``num_batches_tracked`` counters absent from files written before torch 0.4.1 are
    left at their current value (as torch itself does); any other missing or unexpected key, or
    a shape mismatch, raises :class:`PretrainedWeightsError` listing them (``source`` names where
    the weights came from).
    """
    state = {
        k.removeprefix("module."): v
        for k, v in state.items()
        if not k.removeprefix("module.").startswith("fc.")
    }
    own = module.state_dict()
    for key in set(own) - set(state):
        if key.endswith(".num_batches_tracked"):
            state[key] = own[key]
    report = state_dict_mismatch(own, state, where="the file", shape=tuple, limit=8)
    if report:
        raise PretrainedWeightsError(
            "\n".join(
                [
                    f"weights in {source} do not match {type(module).__name__}:",
                    *report,
                    "  (is it the state dict of the same architecture?)",
                ]
            )
        )
    module.load_state_dict(state, strict=True)


def state_dict_mismatch(
    own: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    *,
    where: str,
    shape: Callable[[torch.Size], object] = tuple,
    limit: int = 8,
) -> list[str]:
    """Report lines for the keys of ``given`` that do not fit a module's ``own`` state dict.

    Empty when both have the same keys and shapes. ``where`` names the source in the lines
    ("missing in {where}: ..."), ``shape`` formats shapes, ``limit`` caps the keys shown per line.
    """
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    wrong = sorted(
        f"{k}: file {shape(given[k].shape)} vs model {shape(own[k].shape)}"
        for k in set(own) & set(given)
        if tuple(given[k].shape) != tuple(own[k].shape)
    )

    def show(items: list[str]) -> str:
        more = f" ... ({len(items)} in all)" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    report = []
    if missing:
        report.append(f"  missing in {where}: {show(missing)}")
    if unexpected:
        report.append(f"  unexpected in {where}: {show(unexpected)}")
    if wrong:
        report.append(f"  shape mismatch: {show(wrong)}")
    return report


def load_pretrained(module: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a torchvision-format state dict file into ``module`` with a strict key check.

    The file is a ``torch.save`` file (read with ``weights_only=True``) or a ``.safetensors``
    file. It may hold the state dict itself or wrap it under ``"state_dict"`` / ``"model"``
    (keys may carry DataParallel's ``module.`` prefix). A re-ID checkpoint (the folder
    :func:`~reid_backbones.save_checkpoint` writes, or its ``model.safetensors``) also works: its
    ``backbone.*`` weights initialise the backbone, e.g. a model trained on a labelled source
    dataset before unsupervised training on the target. Checked by
    :func:`load_state_dict_checked`: a mismatch raises :class:`PretrainedWeightsError`.
    """
    path = Path(path).expanduser()
    if path.is_dir() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"  # a re-ID checkpoint folder (save_checkpoint)
    state = _read_state_dict(path)
    own = module.state_dict()
    if not any(k.startswith("backbone.") for k in own) and any(
        k.startswith("backbone.") for k in state
    ):
        # A whole re-ID model (e.g. a source-domain checkpoint): its backbone initialises ours.
        state = {
            k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")
        }
    load_state_dict_checked(module, state, f"'{path}'")


def imagenet_weights_url(name: str) -> str:
    """URL of the ImageNet weights :func:`build_backbone` fetches for ``pretrained="imagenet"``.

    torchvision ResNets use ``IMAGENET1K_V1`` (the weights ``pretrained=True`` gave in the PPLR
    era); IBN-a ResNets use the checkpoints released with IBN-Net.
    """
    if isinstance(name, str) and name in _IBN_URLS:
        return _IBN_URLS[name]
    if isinstance(name, str) and name in RESNETS:
        return models.get_model_weights(name)["IMAGENET1K_V1"].url
    raise ValueError(f"unknown backbone {name!r}; name must be one of {', '.join(BACKBONES)}")


def _download_state_dict(url: str, name: str) -> Mapping[str, torch.Tensor]:
    """Fetch ``url`` through the torch hub cache (no network when the file is already cached)."""
    try:
        state = torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=True, weights_only=True
        )
    except Exception as e:  # noqa: BLE001 - no network, proxy, disk, corrupt download...
        file_name = url.rsplit("/", 1)[-1]
        raise PretrainedWeightsError(
            f"could not get the ImageNet weights of {name} from {url} ({type(e).__name__}: {e}). "
            f"Without internet, download {file_name} on a machine that has it and pass "
            f"pretrained='/path/to/{file_name}' (a local state dict file), or copy it into the "
            "torch hub cache (torch.hub.get_dir()/checkpoints), or use pretrained=None for "
            "random weights."
        ) from e
    return state


def _load_source(backbone: ResNetBackbone, pretrained: PretrainedSource) -> None:
    if isinstance(pretrained, models.WeightsEnum):
        if backbone.name in IBN_RESNETS:
            raise PretrainedWeightsError(
                f"{backbone.name} has no torchvision weights; use pretrained='imagenet' (IBN-Net's "
                "release) or the path of a resnet*_ibn_a .pth file"
            )
        url = pretrained.url
        state = _download_state_dict(url, backbone.name)
        load_state_dict_checked(backbone, state, f"{pretrained} ({url})")
    elif isinstance(pretrained, str) and pretrained.lower() == "imagenet":
        url = imagenet_weights_url(backbone.name)
        load_state_dict_checked(backbone, _download_state_dict(url, backbone.name), url)
    elif isinstance(pretrained, (str, os.PathLike)):
        load_pretrained(backbone, pretrained)
    else:
        raise TypeError(
            "pretrained must be None, 'imagenet', a torchvision weight enum or the path of a "
            f"state dict file, got {type(pretrained).__name__}"
        )


def build_backbone(
    name: str = "resnet50",
    *,
    last_stride: int = 1,
    pretrained: PretrainedSource = None,
) -> ResNetBackbone:
    """Build a ResNet backbone (see :class:`ResNetBackbone`).

    Args:
        name: one of :data:`BACKBONES`: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``,
            ``"resnet101"`` or their IBN-a variants ``"resnet50_ibn_a"`` etc.
        last_stride: stride of the last stage, 1 (re-ID) or 2 (ImageNet).
        pretrained: ``None`` for random initialisation (torchvision's); the path of a
            torchvision-format ``.pth`` state dict (for ``*_ibn_a``: an IBN-Net checkpoint such
            as ``resnet50_ibn_a-d9d0bb7b.pth``); ``"imagenet"`` (see
            :func:`imagenet_weights_url`) or a torchvision weight enum such as
            ``ResNet50_Weights.IMAGENET1K_V1``, both downloaded through the torch hub cache.

    Raises:
        PretrainedWeightsError: the weights cannot be read, fetched, or do not match.
    """
    backbone = ResNetBackbone(name, last_stride=last_stride)
    if pretrained is not None:
        _load_source(backbone, pretrained)
    return backbone
