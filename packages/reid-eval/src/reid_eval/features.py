"""Reading images and turning them into feature matrices (raw pixels or a model's embedding)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from reid_backbones import IMAGENET_MEAN, IMAGENET_STD

from .datasets.base import ImageRecord

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageReadError",
    "ImageTensorDataset",
    "extract_features",
    "load_image",
    "pixel_features",
]

# IMAGENET_MEAN / IMAGENET_STD: the normalisation of torchvision's ImageNet weights, owned by
# reid-backbones and re-exported here.


class ImageReadError(OSError):
    """An image file is missing, truncated or not an image."""


def load_image(path: str) -> Image.Image:
    """Open ``path`` as an RGB image, fully decoded; raise :class:`ImageReadError` naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError as e:
        raise ImageReadError(f"image '{path}' does not exist") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(
            f"image '{path}' is corrupt or not an image ({e}); replace or delete the file"
        ) from e


def image_to_tensor(
    img: Image.Image,
    size: tuple[int, int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Resize to ``size = (height, width)`` (bilinear) and normalise: ``[3, H, W]`` float32."""
    h, w = size
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


class ImageTensorDataset(Dataset):
    """Records → normalised image tensors ``[3, H, W]`` (index-aligned with ``records``)."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        size: tuple[int, int] = (256, 128),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.records = list(records)
        self.size, self.mean, self.std = size, mean, std

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> torch.Tensor:
        img = load_image(self.records[index].path)
        return image_to_tensor(img, self.size, self.mean, self.std)


@torch.no_grad()
def extract_features(
    model: nn.Module,
    records: Sequence[ImageRecord],
    *,
    size: tuple[int, int] = (256, 128),
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    flip: bool = False,
    normalize: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    progress: str | None = None,
) -> torch.Tensor:
    """Run ``model`` (eval mode) over the images of ``records``; return ``[N, D]`` on CPU.

    Args:
        model: maps ``[B, 3, H, W]`` to ``[B, D]`` (a ``[B, C, h, w]`` map is average-pooled);
            run in eval mode, then returned to the mode it was in.
        records: the images, in the order of the returned rows.
        size: input ``(height, width)``.
        batch_size, num_workers: data loading.
        device: where the model runs (it is moved there).
        flip: average the features of the image and its horizontal flip.
        normalize: L2-normalise each row (the features re-ID compares).
        mean, std: input normalisation (a checkpoint's ``config.json`` records its own).
        progress: show a progress bar with this description (``None``: silent).
    """
    if len(records) == 0:
        raise ValueError("records is empty: there are no images to extract features from")
    was_training = model.training
    model = model.to(device).eval()
    loader = DataLoader(
        ImageTensorDataset(records, size, mean, std),
        batch_size=batch_size,
        num_workers=num_workers,
    )
    out = []
    batches = loader if progress is None else tqdm(loader, desc=progress, unit="batch")
    for images in batches:
        images = images.to(device)
        feats = _embed(model, images)
        if flip:
            feats = (feats + _embed(model, images.flip(-1))) / 2
        out.append(feats.float().cpu())
    model.train(was_training)  # a training loop's model comes back in the mode it was in
    feats = torch.cat(out)
    if not torch.isfinite(feats).all():
        raise FloatingPointError(
            "the model produced NaN/inf features; check the checkpoint and the input size"
        )
    return nn.functional.normalize(feats, dim=1) if normalize else feats


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
