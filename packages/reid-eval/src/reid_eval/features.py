"""Reading images and turning them into feature matrices (raw pixels or a model's embedding).

How an image becomes a model input (size, normalisation, resize interpolation) is a
:class:`Preprocessing`; a checkpoint records its own (``Preprocessing.from_checkpoint_config``),
and :func:`extract_features` takes it from a reid-backbones model when not given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from reid_backbones import DEFAULT_INTERPOLATION, IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS

from .datasets.base import ImageRecord

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INTERPOLATIONS",
    "ImageReadError",
    "ImageTensorDataset",
    "Preprocessing",
    "default_workers",
    "extract_features",
    "image_to_tensor",
    "load_image",
    "pixel_features",
]

# IMAGENET_MEAN / IMAGENET_STD (the normalisation of torchvision's ImageNet weights) and
# INTERPOLATIONS (the names a checkpoint may record) are owned by reid-backbones and re-exported.

#: Interpolation name -> the PIL filter; the filters torchvision's ``Resize`` applies to the PIL
#: images of reid-train's transforms, so training and evaluation resize alike.
_PIL_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
#: Interpolation name -> ``torch.nn.functional.interpolate`` mode (image tensors given directly).
_TORCH_MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest-exact"}


class ImageReadError(OSError):
    """An image file is missing, truncated or not an image."""


def load_image(path: str) -> Image.Image:
    """Open ``path`` as an RGB image, fully decoded; raise :class:`ImageReadError` naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError as e:
        raise ImageReadError(f"image '{path}' does not exist") from e
    except Image.DecompressionBombError as e:  # not an OSError: a pixel count past Pillow's limit
        raise ImageReadError(
            f"image '{path}' is too large to decode safely ({e}); crop or resize it, or delete it"
        ) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(
            f"image '{path}' is corrupt or not an image ({e}); replace or delete the file"
        ) from e


def _check_interpolation(interpolation: str) -> str:
    if interpolation not in _PIL_FILTERS:
        raise ValueError(
            f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}"
        )
    return interpolation


def image_to_tensor(
    img: Image.Image,
    size: tuple[int, int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = DEFAULT_INTERPOLATION,
) -> torch.Tensor:
    """Resize to ``size = (height, width)`` and normalise: ``[3, H, W]`` float32.

    ``interpolation``: ``"bilinear"`` (default), ``"bicubic"`` or ``"nearest"``, applied by PIL
    as torchvision's ``Resize`` does on PIL images (reid-train's ``data.interpolation``).
    """
    h, w = size
    if img.size != (w, h):
        img = img.resize((w, h), _PIL_FILTERS[_check_interpolation(interpolation)])
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model input: resize to ``size``, scale to [0, 1], normalise.

    Attributes:
        size: ``(height, width)`` of the model input.
        mean, std: per-channel (RGB) normalisation of the [0, 1] image.
        interpolation: the resize filter, one of :data:`INTERPOLATIONS`.
    """

    size: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = DEFAULT_INTERPOLATION

    def __post_init__(self) -> None:
        size = tuple(self.size)
        if len(size) != 2 or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in size
        ):
            raise ValueError(f"size must be (height, width), two positive integers; got {size!r}")
        mean, std = tuple(map(float, self.mean)), tuple(map(float, self.std))
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(
                f"mean and std need 3 values each (RGB), std positive; got {mean!r}, {std!r}"
            )
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        _check_interpolation(self.interpolation)

    @classmethod
    def from_checkpoint_config(cls, config: dict[str, Any]) -> Preprocessing:
        """The preprocessing a checkpoint's ``config.json`` records (``input_size``, ``mean``,
        ``std``, ``interpolation``; see :func:`reid_backbones.read_checkpoint_config`)."""
        try:
            size = config["input_size"]
        except KeyError:
            raise ValueError(
                "the checkpoint's config.json records no input_size; re-save it with "
                "reid_backbones.save_checkpoint"
            ) from None
        return cls(
            size=tuple(size),
            mean=tuple(config.get("mean", IMAGENET_MEAN)),
            std=tuple(config.get("std", IMAGENET_STD)),
            interpolation=config.get("interpolation", DEFAULT_INTERPOLATION),
        )

    def describe(self) -> str:
        """``"256x128, bicubic, mean (...), std (...)"`` for messages."""
        mean = ", ".join(f"{v:g}" for v in self.mean)
        std = ", ".join(f"{v:g}" for v in self.std)
        return f"{self.size[0]}x{self.size[1]}, {self.interpolation}, mean ({mean}), std ({std})"

    def image(self, img: Image.Image) -> torch.Tensor:
        """A PIL image (any mode; converted to RGB) as the model input ``[3, H, W]`` float32."""
        if img.mode != "RGB":
            img = img.convert("RGB")
        return image_to_tensor(img, self.size, self.mean, self.std, self.interpolation)

    def tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Image tensors ``[N, 3, h, w]`` (or ``[3, h, w]``) as model inputs ``[N, 3, H, W]``.

        ``images`` are RGB, un-normalised: uint8 in [0, 255] or floating point in [0, 1] (what
        ``torchvision.transforms.v2.ToImage`` + ``ToDtype(float32, scale=True)`` give). Another
        size is resized with ``torch.nn.functional.interpolate`` (antialiased), which is close
        to PIL's resize of a file but not bit-identical to it. Stays on ``images``' device.

        Raises:
            ValueError: another shape, a dtype other than uint8 / floating point, or floats
                outside [0, 1] (already normalised images: pass them to the model directly).
        """
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                "image tensors must be RGB with shape [N, 3, H, W] (or [3, H, W]), got shape "
                f"{tuple(images.shape)}"
            )
        if images.dtype == torch.uint8:
            x = images.float() / 255.0
        elif images.is_floating_point():
            x = images.float()
            if x.numel() and (x.min() < -1e-3 or x.max() > 1 + 1e-3):
                raise ValueError(
                    f"floating-point image tensors must hold values in [0, 1], got "
                    f"[{x.min().item():.3g}, {x.max().item():.3g}]: the extractor resizes and "
                    "normalises them itself (for already normalised inputs, call the model)"
                )
        else:
            raise ValueError(f"image tensors must be uint8 or floating point, got {images.dtype}")
        if tuple(x.shape[-2:]) != self.size:
            mode = _TORCH_MODES[self.interpolation]
            antialias = mode != "nearest-exact"
            x = nn.functional.interpolate(x, size=self.size, mode=mode, antialias=antialias)
            if mode == "bicubic":
                x = x.clamp(0, 1)  # bicubic overshoots; PIL clips to [0, 255] as well
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


def default_workers(device: str | torch.device = "cpu") -> int:
    """A default number of data-loading processes for feature extraction on ``device``.

    On a GPU, decoding JPEGs is the bottleneck: ``min(8, CPUs - 1)``. On the CPU the model
    needs the cores itself: ``min(4, CPUs // 4)`` (0, loading in the main process, below 4
    CPUs). CPUs are those this process may run on.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    if torch.device(device).type == "cpu":
        return min(4, cpus // 4)
    return max(0, min(8, cpus - 1))


class ImageTensorDataset(Dataset):
    """Records → normalised image tensors ``[3, H, W]`` (index-aligned with ``records``)."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        size: tuple[int, int] = (256, 128),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = DEFAULT_INTERPOLATION,
    ) -> None:
        self.records = list(records)
        self.size, self.mean, self.std = size, mean, std
        self.interpolation = _check_interpolation(interpolation)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> torch.Tensor:
        img = load_image(self.records[index].path)
        return image_to_tensor(img, self.size, self.mean, self.std, self.interpolation)


class _ImageFiles(Dataset):
    """Paths → ``(tensor, None)``, or ``(None, message)`` for an unreadable file, so that the
    error reaches the main process as one sentence (an exception raised in a DataLoader worker
    comes back wrapped in the worker's traceback)."""

    def __init__(self, paths: Sequence[str], preprocessing: Preprocessing) -> None:
        self.paths = [os.fspath(p) for p in paths]
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, str | None]:
        try:
            return self.preprocessing.image(load_image(self.paths[index])), None
        except ImageReadError as e:
            return None, str(e)


def _collate(
    items: list[tuple[torch.Tensor | None, str | None]],
) -> tuple[torch.Tensor | None, str | None]:
    for _, error in items:
        if error is not None:
            return None, error
    return torch.stack([t for t, _ in items]), None  # type: ignore[misc]


def iter_image_batches(
    paths: Sequence[str],
    preprocessing: Preprocessing,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> Iterator[torch.Tensor]:
    """Yield the model inputs of ``paths``, ``batch_size`` at a time, in order.

    Raises:
        ImageReadError: naming the first missing or unreadable file.
    """
    loader = DataLoader(
        _ImageFiles(paths, preprocessing),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=torch.device(device).type == "cuda",
    )
    for images, error in loader:
        if error is not None:
            raise ImageReadError(error)
        yield images


def model_preprocessing(
    model: nn.Module,
    *,
    size: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    interpolation: str = DEFAULT_INTERPOLATION,
    force_size: bool = False,
) -> Preprocessing:
    """The :class:`Preprocessing` for ``model``: what is given, else what the model records.

    A reid-backbones model (also inside DataParallel / DDP / ``torch.compile``) records its
    ``input_size``, ``mean`` and ``std``; other models record nothing, so they need ``size``
    and get ImageNet's mean and std unless given.

    Raises:
        ValueError: no ``size`` for a model that records none; a ``size`` other than the
            model's own without ``force_size``.
    """
    recorded = _recorded(model)
    own = recorded.get("input_size")
    if size is None:
        if own is None:
            raise ValueError(
                f"{type(model).__name__} does not record its input size: pass size=(height, "
                "width) (reid-backbones models and checkpoints record theirs)"
            )
        size = own
    size = tuple(size)
    if own is not None and tuple(own) != size and not force_size:
        raise ValueError(_size_mismatch(tuple(own), size))
    return Preprocessing(
        size=size,  # type: ignore[arg-type]
        mean=tuple(mean if mean is not None else recorded.get("mean", IMAGENET_MEAN)),
        std=tuple(std if std is not None else recorded.get("std", IMAGENET_STD)),
        interpolation=interpolation,
    )


def _size_mismatch(own: tuple[int, ...], given: tuple[int, ...]) -> str:
    return (
        f"the model was trained on {own[0]}x{own[1]} images but size {given[0]}x{given[1]} was "
        "asked for; leave the size out to use the model's own, or force the other size "
        "(force_size=True, --force-size) knowing that the features change"
    )


def _recorded(model: nn.Module) -> dict[str, Any]:
    """``input_size`` / ``mean`` / ``std`` recorded by a (wrapped) reid-backbones model."""
    from reid_backbones import unwrap_model

    try:
        net = unwrap_model(model)
    except TypeError:  # not a reid-backbones model: nothing recorded
        return {}
    if getattr(net, "input_size", None) is None:
        return {}
    return {k: getattr(net, k) for k in ("input_size", "mean", "std") if hasattr(net, k)}


@torch.no_grad()
def embed_batches(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    device: str | torch.device = "cpu",
    flip: bool = False,
    normalize: bool = True,
) -> torch.Tensor:
    """Run ``model`` (eval mode, then back to its mode) over model-input batches; ``[N, D]``
    float32 on the CPU (L2-normalised rows with ``normalize``).

    Raises:
        ValueError: no batch, or the model returns neither ``[B, D]`` nor ``[B, C, H, W]``.
        FloatingPointError: the model produced NaN or inf.
    """
    was_training = model.training
    model = model.to(device).eval()
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    out = []
    try:
        for images in batches:
            images = images.to(device, dtype=dtype, non_blocking=True)
            feats = _embed(model, images)
            if flip:
                feats = (feats + _embed(model, images.flip(-1))) / 2
            out.append(feats.float().cpu())
    finally:
        model.train(was_training)  # a training loop's model comes back in the mode it was in
    if not out:
        raise ValueError("there are no images to extract features from")
    feats = torch.cat(out)
    if not torch.isfinite(feats).all():
        raise FloatingPointError(
            "the model produced NaN/inf features; check the checkpoint and the input size"
        )
    return nn.functional.normalize(feats, dim=1) if normalize else feats


def extract_features(
    model: nn.Module,
    records: Sequence[ImageRecord],
    *,
    size: tuple[int, int] | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    flip: bool = False,
    normalize: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    interpolation: str = DEFAULT_INTERPOLATION,
    force_size: bool = False,
    progress: str | None = None,
) -> torch.Tensor:
    """Run ``model`` (eval mode) over the images of ``records``; return ``[N, D]`` on CPU.

    For a checkpoint folder, :class:`reid_eval.FeatureExtractor` does all of this with the
    checkpoint's own preprocessing (interpolation included).

    Args:
        model: maps ``[B, 3, H, W]`` to ``[B, D]`` (a ``[B, C, h, w]`` map is average-pooled);
            run in eval mode, then returned to the mode it was in.
        records: the images (anything with ``.path``), in the order of the returned rows.
        size: input ``(height, width)``. Default: the size a reid-backbones model records
            (``model.input_size``); required for other models. A size other than the model's
            own is a ValueError unless ``force_size``.
        batch_size, num_workers: data loading.
        device: where the model runs (it is moved there).
        flip: average the features of the image and its horizontal flip.
        normalize: L2-normalise each row (the features re-ID compares).
        mean, std: input normalisation. Default: the model's own (reid-backbones models record
            them), else ImageNet's.
        interpolation: the resize filter, ``"bilinear"`` (default), ``"bicubic"`` or
            ``"nearest"``; a checkpoint records the one it was trained with.
        force_size: allow a ``size`` other than the model's own.
        progress: show a progress bar with this description on a terminal (``None``: silent).

    Raises:
        ValueError: no records; no ``size`` for a model that records none; a ``size`` other
            than the model's own without ``force_size``.
        ImageReadError: naming a missing or unreadable image.
        FloatingPointError: the model produced NaN or inf.
    """
    if len(records) == 0:
        raise ValueError("records is empty: there are no images to extract features from")
    preprocessing = model_preprocessing(
        model, size=size, mean=mean, std=std, interpolation=interpolation, force_size=force_size
    )
    batches: Iterable[torch.Tensor] = iter_image_batches(
        [r.path for r in records],
        preprocessing,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
    )
    if progress is not None:
        total = -(-len(records) // batch_size)
        batches = tqdm(batches, desc=progress, unit="batch", total=total, disable=None)
    return embed_batches(model, batches, device=device, flip=flip, normalize=normalize)


def _embed(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    feats = model(images)
    if feats.dim() == 4:
        feats = feats.mean(dim=(2, 3))
    if feats.dim() != 2:
        raise ValueError(f"the model must return [B, D] or [B, C, H, W], got {tuple(feats.shape)}")
    return feats


def pixel_features(
    records: Sequence[ImageRecord], size: tuple[int, int] = (32, 16), normalize: bool = True
) -> torch.Tensor:
    """Raw-pixel features: each image resized to ``size``, centred and flattened (``[N, 3·H·W]``).

    The weakest sensible baseline: no learning at all.
    """
    if len(records) == 0:
        raise ValueError("records is empty: there are no images to extract features from")
    rows = [image_to_tensor(load_image(r.path), size, (0.5,) * 3, (0.5,) * 3) for r in records]
    feats = torch.stack(rows).flatten(1)
    feats = feats - feats.mean(dim=1, keepdim=True)
    return nn.functional.normalize(feats, dim=1) if normalize else feats
