"""The weights published with the official PPLR code (yoonkicho/PPLR) as our checkpoint folders.

The official ``ResNetPart`` (``pplr/models/resnet_part.py``) is saved with
``torch.save(model.state_dict())`` from inside ``nn.DataParallel``, so its keys are

* ``module.base.<i>.*`` — an ``nn.Sequential`` of a torchvision ResNet's conv1, bn1, relu,
  maxpool, layer1..layer4 (indices 0, 1, 4, 5, 6, 7 carry weights), last stride 1;
* ``module.bnneck.*`` and ``module.classifier.weight`` — the global BNNeck (BatchNorm1d, bias
  frozen) and bias-free classifier (as many rows as the model's capacity, 3000 in the official
  scripts);
* ``module.bnneck{i}.*`` and ``module.classifier{i}.weight`` for each part i.

Its evaluation feature is GAP → bnneck → L2-normalisation and its parts are the bins of
``AdaptiveAvgPool2d((P, 1))``: exactly our ``pplr`` model with ``part_bins="adaptive"`` and
``last_stride=1``, whose parameters these keys fill one to one. :func:`convert_official_pplr`
infers the architecture from the keys and shapes, checks it strictly and writes the folder
:func:`~reid_backbones.load_checkpoint` and ``reid-eval --checkpoint`` read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointError, save_checkpoint
from .models import IMAGENET_MEAN, IMAGENET_STD, build_model
from .resnet import BACKBONES, state_dict_mismatch, torch_load_safely

__all__ = ["convert_official_pplr"]

#: index in the official ``base`` Sequential -> our backbone's module name
_BASE_MODULES = {
    "0": "conv1",
    "1": "bn1",
    "4": "layer1",
    "5": "layer2",
    "6": "layer3",
    "7": "layer4",
}
_OUR_MODULES = {ours: index for index, ours in _BASE_MODULES.items()}
#: our part branch's module lists -> the official per-part attribute names
_PART_MODULES = {"necks": "bnneck", "classifiers": "classifier"}

#: (block type, blocks per layer) -> torchvision ResNet
_RESNET_LAYOUTS = {
    ("BasicBlock", (2, 2, 2, 2)): "resnet18",
    ("BasicBlock", (3, 4, 6, 3)): "resnet34",
    ("Bottleneck", (3, 4, 6, 3)): "resnet50",
    ("Bottleneck", (3, 4, 23, 3)): "resnet101",
    ("Bottleneck", (3, 8, 36, 3)): "resnet152",
}

_EXPECTED = (
    "an official PPLR checkpoint holds base.* (the ResNet), bnneck.* and classifier.weight "
    "(global head) and bnneck{i}.* / classifier{i}.weight per part (optionally behind "
    "DataParallel's 'module.' prefix)"
)


def _read(source: str | os.PathLike[str]) -> Any:
    path = Path(source).expanduser()
    if path.is_dir():
        raise CheckpointError(
            f"'{path}' is a folder: give the official .pth file itself (the file downloaded "
            "from the PPLR release, or the best.pth / last.pth its training script writes)"
        )
    if not path.is_file():
        raise CheckpointError(f"official PPLR checkpoint '{path}' does not exist")
    trust = (
        "If you trust the file, load it yourself with torch.load(path, map_location='cpu', "
        "weights_only=False) and pass the state dict it holds to convert_official_pplr"
    )
    return torch_load_safely(path, CheckpointError, trust)


def _state_dict(obj: Any, where: str) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors of a state dict, unwrapped from ``state_dict`` / ``model`` entries, without
    DataParallel's ``module.`` prefix; and whether the prefix was there."""
    for _ in range(4):
        if isinstance(obj, nn.Module):
            obj = obj.state_dict()
        inner = next(
            (
                obj[k]
                for k in ("state_dict", "model")
                if isinstance(obj, Mapping) and isinstance(obj.get(k), (Mapping, nn.Module))
            ),
            None,
        )
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where} does not hold a state dict (found {type(obj).__name__})")
    if not obj:
        raise CheckpointError(f"{where} holds an empty state dict")
    state: dict[str, torch.Tensor] = {}
    prefixed = False
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{where} holds {key!r}: {type(value).__name__}, not a tensor; give the model's "
                "state dict (or a dict wrapping it under 'state_dict')"
            )
        name = key
        while name.startswith("module."):
            name, prefixed = name.removeprefix("module."), True
        if name in state:
            raise CheckpointError(f"{where} holds '{name}' twice (with and without 'module.')")
        state[name] = value
    return state, prefixed


def _not_pplr(state: Mapping[str, torch.Tensor], where: str) -> CheckpointError:
    """The error for a state dict of some other architecture, saying what it looks like."""
    heads = sorted({k.split(".", 1)[0] for k in state})
    shown = ", ".join(heads[:8]) + (" ..." if len(heads) > 8 else "")
    if "backbone" in heads and "neck" in heads:
        arch = "dcls" if any(k.startswith("parts.attention.") for k in state) else "pplr/baseline"
        what = (
            f"a reid-backbones model ({arch}: backbone.*, neck.*), not an official PPLR one. It "
            "needs no conversion: load it into build_model(...) and save it with save_checkpoint"
        )
    elif "base" in heads and "feat_bn" in heads:
        what = (
            "the official code's global-only ResNet (pplr/models/resnet.py: base.*, feat_bn.*), "
            "not its part model ResNetPart; only ResNetPart checkpoints are converted"
        )
    elif {"conv1", "layer1", "layer4"} <= set(heads):
        what = (
            "a plain ResNet (conv1.*, layer1.* ... at the top level, no bnneck), e.g. ImageNet "
            "weights; to start a model from it pass it as pretrained= to build_model instead"
        )
    elif "base" in heads:
        what = "a model with a base.* ResNet but no bnneck.* head, not the official ResNetPart"
    else:
        what = "not the official PPLR layout"
    return CheckpointError(f"{where} is {what} (top-level names: {shown}); {_EXPECTED}")


def _infer_backbone(state: Mapping[str, torch.Tensor], where: str) -> str:
    blocks: list[int] = []
    for index in ("4", "5", "6", "7"):
        found = {
            int(m.group(1))
            for k in state
            if (m := re.match(rf"base\.{index}\.(\d+)\.", k)) is not None
        }
        if found != set(range(len(found))):
            raise CheckpointError(
                f"{where}: layer{int(index) - 3} (base.{index}) has blocks {sorted(found)}, not "
                "0..n-1: the checkpoint is incomplete or not a torchvision ResNet"
            )
        blocks.append(len(found))
    block = "Bottleneck" if "base.4.0.conv3.weight" in state else "BasicBlock"
    name = _RESNET_LAYOUTS.get((block, tuple(blocks)))
    if name is None:
        known = "; ".join(f"{n}: {b} {list(c)}" for (b, c), n in _RESNET_LAYOUTS.items())
        raise CheckpointError(
            f"{where}: base.4-7 hold {blocks} {block} blocks, which is no torchvision ResNet "
            f"({known})"
        )
    if name not in BACKBONES:
        raise CheckpointError(
            f"{where} holds a {name} backbone, which reid-backbones does not build (backbones: "
            f"{', '.join(BACKBONES)}); such a checkpoint cannot be converted"
        )
    return name


def _infer_parts(state: Mapping[str, torch.Tensor], where: str) -> int:
    """The number of parts: of the part BNNecks, or of the part classifiers when there are more
    of those (a part whose BNNeck is missing is then reported as missing keys, not taken for a
    model with fewer parts)."""
    necks = {int(m.group(1)) for k in state if (m := re.match(r"bnneck(\d+)\.", k))}
    heads = necks | {int(m.group(1)) for k in state if (m := re.match(r"classifier(\d+)\.", k))}
    if not necks:
        raise CheckpointError(
            f"{where} has a global bnneck but no part heads (bnneck0.*, bnneck1.*, ...): not an "
            "official PPLR ResNetPart checkpoint"
        )
    for found, what in ((necks, "bnneck"), (heads, "bnneck/classifier")):
        if found != set(range(len(found))):
            raise CheckpointError(
                f"{where}: the part heads are {what}{sorted(found)}, not {what}0.."
                f"{len(found) - 1}: parts are missing from the checkpoint"
            )
    return len(heads)


def _official_name(ours: str) -> str:
    """The official key of one of our ``pplr`` model's state-dict keys."""
    head, _, rest = ours.partition(".")
    if head == "backbone":
        module, _, tail = rest.partition(".")
        return f"base.{_OUR_MODULES[module]}.{tail}"
    if head == "neck":
        return f"bnneck.{rest}"
    if head == "classifier":
        return ours
    if head == "parts":
        kind, _, tail = rest.partition(".")
        index, _, tail = tail.partition(".")
        return f"{_PART_MODULES[kind]}{index}.{tail}"
    raise RuntimeError(f"no official name for our parameter {ours!r}")  # a bug of this module


def convert_official_pplr(
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    input_size: Sequence[int] = (384, 128),
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = "bicubic",
) -> Path:
    """Convert an official PPLR checkpoint into a checkpoint folder of our ``pplr`` model.

    Args:
        path_or_state_dict: the official ``.pth`` file (read with ``torch.load(...,
            weights_only=True)``: a file holding pickled Python objects besides tensors is
            refused) or its state dict; either may wrap the state dict under ``"state_dict"``
            or ``"model"``, and the keys may carry DataParallel's ``module.`` prefix.
        out_dir: the checkpoint folder to write (:func:`~reid_backbones.save_checkpoint`).
        input_size: ``(height, width)`` recorded in ``config.json`` for evaluation: 384×128 for
            the Market-1501 / MSMT17 weights, 256×256 for VeRi-776 (the official settings).
        mean, std: the input normalisation recorded with it (ImageNet's, as the official code).
        interpolation: the resize filter recorded with it; the official code resizes with
            ``T.Resize(..., interpolation=3)``, PIL's bicubic.

    Inferred from the keys and shapes: the backbone (``resnet18/34/50/101`` from the blocks per
    layer and their type), the number of parts (``bnneck{i}`` heads), the number of classes
    (rows of ``classifier.weight``; the official scripts keep a fixed capacity of 3000, of which
    only the first K, the last epoch's clusters, were trained) and the feature dimension (must
    equal the backbone's). The model is built with ``last_stride=1`` and
    ``part_bins="adaptive"`` (the official ``AdaptiveAvgPool2d((P, 1))``); every official key
    must fill one of its parameters and every parameter must be filled, with equal shapes
    (BatchNorm ``num_batches_tracked`` counters alone may be absent).

    Returns:
        The checkpoint folder; ``load_checkpoint(out_dir)`` gives the model in evaluation mode,
        whose features are the official model's (L2-normalised post-BNNeck global features).

    Raises:
        CheckpointError: the file cannot be read or holds code, or the state dict is not an
            official PPLR ``ResNetPart`` (another architecture, missing or unexpected keys,
            mismatched shapes); the message names the problem.
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        where = f"'{Path(path_or_state_dict).expanduser()}'"
        raw = _read(path_or_state_dict)
    else:
        where, raw = "the state dict", path_or_state_dict
    state, prefixed = _state_dict(raw, where)
    if not any(k.startswith("base.") for k in state) or not any(
        k.startswith("bnneck.") for k in state
    ):
        raise _not_pplr(state, where)
    backbone = _infer_backbone(state, where)
    num_parts = _infer_parts(state, where)
    classifier = state.get("classifier.weight")
    if classifier is None or classifier.dim() != 2:
        got = "missing" if classifier is None else f"of shape {list(classifier.shape)}"
        raise CheckpointError(
            f"{where}: classifier.weight is {got}; the official ResNetPart always has a global "
            "classifier [num_classes, feature_dim] (is the checkpoint complete?)"
        )
    num_classes = int(classifier.shape[0])
    if num_classes == 0:  # Linear(D, 0): nothing to carry, and our model then has no classifier
        state = {
            k: v
            for k, v in state.items()
            if v.numel() != 0 or not re.fullmatch(r"classifier\d*\.weight", k)
        }

    model = build_model(
        "pplr",
        backbone,
        num_classes=num_classes,
        pretrained=None,
        last_stride=1,
        input_size=input_size,
        mean=mean,
        std=std,
        num_parts=num_parts,
        part_bins="adaptive",
    )
    dim = model.feature_dim
    neck = state.get("bnneck.weight")
    if neck is not None and tuple(neck.shape) != (dim,):
        why = (
            "the official ResNetPart hard-codes 2048-wide heads, so only its ResNet-50/101/152 "
            "models work"
            if tuple(neck.shape) == (2048,)
            else "the checkpoint mixes parts of different models"
        )
        raise CheckpointError(
            f"{where}: bnneck.weight has {neck.shape[0] if neck.dim() == 1 else list(neck.shape)}"
            f" features but its {backbone} backbone gives {dim} ({why})"
        )

    own = model.state_dict()
    names = {_official_name(k): k for k in own}
    expected = {official: own[ours] for official, ours in names.items()}
    given = dict(state)
    for key in set(expected) - set(given):
        if key.endswith(".num_batches_tracked"):
            given[key] = expected[key]  # counters only; torch before 0.4.1 did not save them
    report = state_dict_mismatch(expected, given, where=where, shape=list, limit=6)
    if report:
        raise CheckpointError(
            "\n".join(
                [
                    f"{where} does not match the official PPLR {backbone} with {num_parts} parts "
                    f"and {num_classes} classes inferred from it (names without 'module.'):",
                    *report,
                    "  (was the file cut short, edited, or saved from a modified model? "
                    "convert_official_pplr takes the official ResNetPart state dict unchanged)",
                ]
            )
        )
    model.load_state_dict({names[k]: v for k, v in given.items()}, strict=True)
    source = str(path_or_state_dict) if isinstance(path_or_state_dict, (str, os.PathLike)) else None
    extra = {
        "converted_from": {
            "format": "official PPLR ResNetPart (yoonkicho/PPLR)",
            "file": source,
            "module_prefix": prefixed,
        }
    }
    return save_checkpoint(model, out_dir, extra=extra, interpolation=interpolation)
