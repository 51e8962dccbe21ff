"""Checkpoints without pickle: ``model.safetensors`` (weights) + ``config.json`` (how to rebuild).

A checkpoint directory is everything :func:`load_checkpoint` needs, so ``reid-eval`` (or anyone)
can evaluate a model from its folder alone. ``config.json`` holds the architecture, backbone,
options, number of classes, ghost-BN groups, input size, mean/std, the resize interpolation the
model was trained with, feature dimension, dtype, the versions of torch / torchvision /
reid-backbones that wrote it, and the caller's ``extra``.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from .models import MODELS, ReIDModel, build_model
from .resnet import BACKBONES, state_dict_mismatch
from .safetensors_format import (
    SafetensorsError,
    atomic_write,
    load_safetensors,
    read_safetensors_header,
    save_safetensors,
)

__all__ = [
    "CONFIG_NAME",
    "CheckpointError",
    "DEFAULT_INTERPOLATION",
    "INTERPOLATIONS",
    "WEIGHTS_NAME",
    "check_checkpoint",
    "load_checkpoint",
    "read_checkpoint_config",
    "save_checkpoint",
    "unwrap_model",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
"""The resize interpolations a checkpoint may record (``config.json`` ``"interpolation"``)."""

DEFAULT_INTERPOLATION = "bilinear"
"""What a checkpoint saved without ``"interpolation"`` (before reid-backbones 0.3) reads as."""


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, incomplete, or does not match what it describes."""


def unwrap_model(model: nn.Module) -> ReIDModel:
    """The :class:`ReIDModel` inside DataParallel / DistributedDataParallel / torch.compile."""
    seen = model
    for _ in range(8):
        if isinstance(seen, ReIDModel):
            return seen
        inner = getattr(seen, "module", None)
        if inner is None:
            inner = getattr(seen, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            break
        seen = inner
    raise TypeError(
        f"expected a model made by reid_backbones.build_model, got {type(model).__name__}"
    )


def _write_text_atomic(path: Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def save_checkpoint(
    model: nn.Module,
    directory: str | os.PathLike[str],
    extra: Mapping[str, Any] | None = None,
    *,
    interpolation: str = DEFAULT_INTERPOLATION,
) -> Path:
    """Save ``model`` to ``directory`` (created if needed) as safetensors + ``config.json``.

    Each file is written to a temporary name and renamed, so a crash never leaves a half-written
    file; the weights are replaced first, the config last.

    Args:
        model: a :class:`ReIDModel` (DataParallel / DDP / compiled wrappers are unwrapped).
        directory: the checkpoint folder.
        extra: JSON-serialisable information to keep in ``config.json`` under ``"extra"``
            (epoch, metrics, training config, ...).
        interpolation: how training resized the images to the model's input size, one of
            :data:`INTERPOLATIONS` (``config.json`` ``"interpolation"``; ``reid-eval`` resizes
            the same way).

    Returns:
        The directory.

    Raises:
        ValueError: ``interpolation`` is not one of :data:`INTERPOLATIONS`.
        TypeError: ``model`` is not a reid-backbones model, or ``extra`` is not a
            JSON-serialisable mapping.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}"
        )
    if extra is not None and not isinstance(extra, Mapping):
        raise TypeError(f"extra must be a mapping (a dict) or None, got {type(extra).__name__}")
    net = unwrap_model(model)
    from . import __version__

    config: dict[str, Any] = {"format_version": FORMAT_VERSION, **net.config()}
    config["interpolation"] = interpolation
    config["dtype"] = str(next(net.parameters()).dtype).removeprefix("torch.")
    config["versions"] = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "reid-backbones": __version__,
    }
    if extra is not None:
        config["extra"] = dict(extra)
    try:
        text = json.dumps(config, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise TypeError(f"extra must be JSON-serialisable (str, numbers, lists, dicts): {e}") from e
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "architecture": net.arch, "backbone": net.backbone_name}
    save_safetensors(net.state_dict(), directory / WEIGHTS_NAME, metadata=metadata)
    _write_text_atomic(directory / CONFIG_NAME, text)
    return directory


def _checkpoint_folder(path: str | os.PathLike[str]) -> Path:
    """The checkpoint folder meant by ``path``: the folder itself, or the one holding the given
    ``model.safetensors``. Any other existing file is refused, naming the folder to give."""
    path = Path(path)
    if path.name == WEIGHTS_NAME and not path.is_dir():
        return path.parent  # a missing weights file is then reported inside its folder
    if not path.is_file():
        return path
    folder = path.parent
    if (folder / CONFIG_NAME).is_file() or (folder / WEIGHTS_NAME).is_file():
        hint = f"give its folder '{folder}' (or '{folder / WEIGHTS_NAME}') instead"
    else:
        hint = (
            f"give the folder written by save_checkpoint, which holds {WEIGHTS_NAME} and "
            f"{CONFIG_NAME} ('{folder}', where this file is, holds neither)"
        )
    raise CheckpointError(f"'{path}' is a file, not a checkpoint folder: {hint}")


def check_checkpoint(checkpoint: str | os.PathLike[str]) -> Path:
    """Check quickly that ``checkpoint`` looks loadable; return its folder.

    Meant to run before anything slow (scanning a dataset), so that a typo in the path fails at
    once. ``checkpoint`` is the folder written by :func:`save_checkpoint` or the
    ``model.safetensors`` inside it. Checked: the path exists; ``config.json`` parses and names
    an architecture and backbone this package knows; ``model.safetensors`` is there and starts
    with a valid safetensors header. The tensors themselves are not read
    (:func:`load_checkpoint` does that, and compares them with the config).

    Raises:
        CheckpointError: what is wrong and what to give instead.
    """
    folder = _checkpoint_folder(checkpoint)
    if not folder.exists():
        raise CheckpointError(
            f"checkpoint '{checkpoint}' does not exist{_nearby(folder)} (a checkpoint is a "
            f"folder holding {WEIGHTS_NAME} and {CONFIG_NAME}, written by save_checkpoint; give "
            f"that folder or the {WEIGHTS_NAME} in it)"
        )
    config = read_checkpoint_config(folder)
    arch, backbone = config["architecture"], config["backbone"]
    if arch not in MODELS:
        raise CheckpointError(
            f"'{folder / CONFIG_NAME}' names an unknown architecture {arch!r} (this "
            f"reid-backbones knows {', '.join(MODELS)}); was it written by a newer version?"
        )
    if backbone not in BACKBONES:
        raise CheckpointError(
            f"'{folder / CONFIG_NAME}' names an unknown backbone {backbone!r} "
            f"(known: {', '.join(BACKBONES)})"
        )
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(
            f"'{folder}' has {CONFIG_NAME} but no {WEIGHTS_NAME}: the checkpoint is incomplete "
            "(was the copy interrupted?)"
        )
    try:
        read_safetensors_header(weights)
    except (OSError, SafetensorsError) as e:
        problem = e.problem if isinstance(e, SafetensorsError) else str(e)
        raise CheckpointError(
            f"{problem}; re-save the checkpoint with reid_backbones.save_checkpoint, or copy the "
            "file again if it was cut short"
        ) from e
    return folder


def _nearby(path: Path) -> str:
    """``"; did you mean 'X'?"`` for a sibling folder whose name is close to ``path``'s."""
    parent = path.parent
    try:  # a bounded look: the parent may be a huge folder
        entries = itertools.islice(parent.iterdir(), 2000) if parent.is_dir() else ()
        names = [p.name for p in entries if p.is_dir()]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return f"; did you mean '{parent / close[0]}'?" if close else ""


def read_checkpoint_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint directory (architecture, options, extra...).

    ``directory`` is the checkpoint folder or the ``model.safetensors`` inside it. A config
    saved without ``"interpolation"`` (before reid-backbones 0.3) reads as
    :data:`DEFAULT_INTERPOLATION` (``"bilinear"``, what those versions' training used by
    default and ``reid-eval`` always used).

    Raises:
        CheckpointError: the folder does not exist, ``directory`` is some other file (the
            message names the folder to give), ``config.json`` is missing or malformed, or it
            records an interpolation other than :data:`INTERPOLATIONS`.
    """
    directory = _checkpoint_folder(directory)
    if not directory.is_dir():
        raise CheckpointError(
            f"checkpoint directory '{directory}' does not exist (a checkpoint is a folder "
            f"holding {WEIGHTS_NAME} and {CONFIG_NAME}, written by save_checkpoint)"
        )
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(
            f"'{directory}' has no {CONFIG_NAME}: is it a reid-backbones checkpoint folder? "
            "(written by reid_backbones.save_checkpoint)"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"could not read '{path}': {e}") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"'{path}' does not hold a JSON object")
    missing = [k for k in ("architecture", "backbone", "num_classes") if k not in config]
    if missing:
        raise CheckpointError(f"'{path}' lacks {', '.join(missing)}")
    interpolation = config.setdefault("interpolation", DEFAULT_INTERPOLATION)
    if interpolation not in INTERPOLATIONS:
        raise CheckpointError(
            f"'{path}' records an unknown interpolation {interpolation!r} (this reid-backbones "
            f"knows {', '.join(INTERPOLATIONS)}); was it written by a newer version?"
        )
    return config


def _check_state(model: nn.Module, tensors: Mapping[str, torch.Tensor], directory: Path) -> None:
    report = state_dict_mismatch(
        model.state_dict(), tensors, where="the weights", shape=list, limit=6
    )  # fmt: skip
    if report:
        header = f"the weights in '{directory / WEIGHTS_NAME}' do not match its {CONFIG_NAME}:"
        hint = "  (were the files of two different checkpoints mixed?)"
        raise CheckpointError("\n".join([header, *report, hint]))


def load_checkpoint(
    directory: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> ReIDModel:
    """Rebuild the model saved by :func:`save_checkpoint`, in evaluation mode, on ``device``.

    No pickle is involved: the architecture comes from ``config.json`` and the tensors from
    ``model.safetensors``. The config is available afterwards as :func:`read_checkpoint_config`.

    Args:
        directory: the checkpoint folder, or the ``model.safetensors`` inside it (its folder is
            used).
        device: where to put the model.

    Raises:
        CheckpointError: missing folder or files, a path to any other file than
            ``model.safetensors`` (the message names the folder to give), unknown
            architecture/backbone, or weights whose names/shapes differ from the model the
            config describes.
    """
    directory = check_checkpoint(directory)  # folder, config, known names, weights header
    config = read_checkpoint_config(directory)
    weights = directory / WEIGHTS_NAME
    arch, backbone = config["architecture"], config["backbone"]
    keys = ("last_stride", "bn_groups", "input_size", "mean", "std")
    kwargs = {k: config[k] for k in keys if k in config}
    options = dict(config.get("options", {}))
    if arch == "pplr":  # saved before part_bins existed: those models pooled disjoint stripes
        options.setdefault("part_bins", "disjoint")
    try:
        model = build_model(
            arch,
            backbone=backbone,
            num_classes=int(config["num_classes"]),
            **kwargs,
            **options,
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"the {CONFIG_NAME} of '{directory}' cannot be built: {e}") from e
    try:
        tensors, _ = load_safetensors(weights)
    except SafetensorsError as e:
        raise CheckpointError(str(e)) from e
    _check_state(model, tensors, directory)
    model.load_state_dict(tensors, strict=True)
    dtype = getattr(torch, str(config.get("dtype", "float32")), None)
    if isinstance(dtype, torch.dtype) and dtype != torch.float32:
        model.to(dtype)
    return model.to(device).eval()
