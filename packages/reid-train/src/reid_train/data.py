"""Training data: torchvision v2 transforms, datasets that survive unreadable images, loaders.

Images are decoded with PIL through ``reid_eval.features.load_image`` (RGB, fully decoded; an
unreadable file raises ``ImageReadError`` naming its path).

Unreadable images. Both datasets keep a per-process record of the files that failed:

* :class:`TrainImageDataset` replaces a bad image by another image of the same pseudo identity
  (the next readable one of that identity, in dataset order) and warns
  (:class:`BadImageWarning`, naming the path);
* :class:`ImageDataset` (feature extraction) returns a zero image with ``valid = False`` and
  warns; the engine should treat those rows as outliers (label −1), so that they never reach a
  training batch.

After ``max_bad_images`` distinct bad files, the next one raises :class:`BadImagesError` listing
every bad path. **Counting with DataLoader workers:** each worker process holds its own copy of
the dataset, hence its own count (and each rank its own), and a worker's record lives as long as
the worker: one epoch, or the whole run with ``persistent_workers``. The threshold therefore
applies per loading process: with W workers up to W × ``max_bad_images`` bad files can be
skipped in one epoch before an error, and a bad file met by several workers is warned about by
each. With ``workers: 0`` the count is exact and spans the life of the dataset object.
The warnings are located at the line of this module that met the bad file, not at the
DataLoader's frame in torch, so logs show where they come from and filters on
``module="reid_train.data"`` apply.

Augmentation randomness. v2 transforms draw from torch's global RNG. When an item comes as
``(index, seed)`` (the :class:`~reid_train.sampler.PKBatchSampler` with ``augment_seeds=True``,
as :func:`build_train_loader` sets it up), the transform runs under ``torch.random.fork_rng``
seeded with that seed: the augmented images are a function of ``(seed, epoch)`` whatever the
number of workers, and the caller's RNG state is left untouched.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode, v2

from reid_eval.datasets import ImageRecord
from reid_eval.features import ImageReadError, load_image

from .config import DataConfig
from .sampler import PKBatchSampler, epoch_generator

__all__ = [
    "record_ids",
    "BadImageWarning",
    "BadImagesError",
    "ImageDataset",
    "TrainImageDataset",
    "build_extract_loader",
    "build_test_transform",
    "build_train_loader",
    "build_train_transform",
]

_INTERPOLATION = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}
#: Random erasing of Zhong et al. (AAAI 2020) as used by SpCL/PPLR: area 2-40 %, aspect 0.3-3.3.
_ERASING_SCALE = (0.02, 0.4)
_ERASING_RATIO = (0.3, 1 / 0.3)


class BadImageWarning(UserWarning):
    """A training image could not be read and was skipped."""


class BadImagesError(RuntimeError):
    """Too many unreadable images, or no readable image left to stand in for one."""


def _interpolation(name: str) -> InterpolationMode:
    try:
        return _INTERPOLATION[name]
    except KeyError:
        raise ValueError(
            f"interpolation must be one of {', '.join(_INTERPOLATION)}, got {name!r}"
        ) from None


def build_train_transform(data: DataConfig) -> v2.Compose:
    """Training transform (PIL image → float32 ``[3, H, W]``), the SpCL/PPLR augmentation.

    Resize to ``(height, width)`` → horizontal flip (``flip_prob``) → zero-pad ``pad`` pixels
    and random-crop back to ``(height, width)`` (skipped when ``pad == 0``) → float in [0, 1] →
    normalise with ``mean``/``std`` → random erasing (``erasing_prob``; area 2-40 %, aspect
    0.3-3.3, filled with 0, i.e. the mean colour after normalisation; the official code fills
    with the ImageNet mean *values* in normalised space, a negligible difference).
    """
    size = (data.height, data.width)
    ops: list[Any] = [v2.Resize(size, interpolation=_interpolation(data.interpolation))]
    if data.flip_prob > 0:
        ops.append(v2.RandomHorizontalFlip(p=data.flip_prob))
    if data.pad > 0:
        ops += [v2.Pad(data.pad, fill=0), v2.RandomCrop(size)]
    ops += [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(data.mean), std=list(data.std)),
    ]
    if data.erasing_prob > 0:
        ops.append(
            v2.RandomErasing(
                p=data.erasing_prob, scale=_ERASING_SCALE, ratio=_ERASING_RATIO, value=0
            )
        )
    ops.append(v2.ToPureTensor())
    return v2.Compose(ops)


def build_test_transform(data: DataConfig) -> v2.Compose:
    """Test transform: resize (on the PIL image) → float in [0, 1] → normalise.

    It equals what ``reid-eval`` does with a checkpoint of the run (the checkpoint records the
    interpolation), so features extracted here and by ``reid-eval`` agree.
    """
    return v2.Compose(
        [
            v2.Resize((data.height, data.width), interpolation=_interpolation(data.interpolation)),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(data.mean), std=list(data.std)),
            v2.ToPureTensor(),
        ]
    )


class _BadImageLog:
    """Unreadable files met by this process, and the threshold that turns them into an error."""

    def __init__(self, max_bad_images: int) -> None:
        if isinstance(max_bad_images, bool) or not isinstance(max_bad_images, int):
            raise TypeError(f"max_bad_images must be an integer, got {max_bad_images!r}")
        if max_bad_images < 0:
            raise ValueError(f"max_bad_images must be >= 0, got {max_bad_images}")
        self.max_bad_images = max_bad_images
        self.reasons: dict[str, str] = {}

    def __contains__(self, path: str) -> bool:
        return path in self.reasons

    def add(self, path: str, error: Exception, what_next: str) -> None:
        """Record ``path``; warn, or raise once more than ``max_bad_images`` are recorded.

        The warning is attributed to the caller's line (the dataset method that met the bad
        file), not to whatever frame is above it: datasets are called from torch's DataLoader
        (``torch/utils/data/_utils/fetch.py``), which would otherwise be the reported location.
        """
        self.reasons[path] = str(error)
        count = len(self.reasons)
        if count > self.max_bad_images:
            listing = "\n".join(f"  {p}: {r}" for p, r in self.reasons.items())
            raise BadImagesError(
                f"{count} unreadable images, more than max_bad_images={self.max_bad_images} "
                f"(counted per loading process); fix or remove them, or raise "
                f"runtime.max_bad_images:\n{listing}"
            )
        _warn_here(
            f"skipping unreadable image '{path}' ({error}); {what_next} "
            f"[{count}/{self.max_bad_images} bad images allowed in this process]",
            BadImageWarning,
            sys._getframe(1),
        )


def _warn_here(message: str, category: type[Warning], frame: FrameType) -> None:
    """``warnings.warn`` located at ``frame``'s current line (file, line, module, registry)."""
    module_globals = frame.f_globals
    warnings.warn_explicit(
        message,
        category,
        frame.f_code.co_filename,
        frame.f_lineno,
        module=module_globals.get("__name__", "reid_train.data"),
        registry=module_globals.setdefault("__warningregistry__", {}),
        module_globals=module_globals,
    )


def _split_item(item: int | tuple[int, int] | Sequence[int]) -> tuple[int, int | None]:
    if isinstance(item, (tuple, list)):
        index, seed = item
        return int(index), int(seed)
    return int(item), None


def _apply(
    transform: Callable[[Image.Image], torch.Tensor], img: Image.Image, seed: int | None
) -> torch.Tensor:
    if seed is None:
        return transform(img)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return transform(img)


class TrainImageDataset(Dataset):
    """Training images with their epoch pseudo labels.

    ``dataset[i]`` (or ``dataset[(i, seed)]``, see the module doc) returns a dict:
    ``image`` (the transformed tensor), ``label`` (pseudo label), ``index`` (dataset index of
    the image actually returned: the replacement's when image i was unreadable; use it to look
    up per-sample data such as cross-agreement rows) and ``camid``.

    Args:
        records: the training images (``reid_eval`` ``ImageRecord``: path, pid, camid).
        labels: ``[N]`` pseudo label of each record (−1 = outlier; the sampler never picks
            them, but they may stay in the list so that indices are the full training set's).
        transform: PIL image → tensor (e.g. :func:`build_train_transform`).
        max_bad_images: unreadable files skipped per process before :class:`BadImagesError`.
        loader: decodes a path (default ``reid_eval.features.load_image``; must raise
            ``ImageReadError`` for unreadable files).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        transform: Callable[[Image.Image], torch.Tensor],
        *,
        max_bad_images: int = 10,
        loader: Callable[[str], Image.Image] = load_image,
    ) -> None:
        self.records = list(records)
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if self.labels.shape[0] != len(self.records):
            raise ValueError(
                f"labels must have one entry per record ({len(self.records)}), "
                f"got {self.labels.shape[0]}"
            )
        self.transform = transform
        self.loader = loader
        self.bad = _BadImageLog(max_bad_images)
        # members of each label, in dataset order (for replacements)
        order = np.argsort(self.labels, kind="stable")
        uniq, starts = np.unique(self.labels[order], return_index=True)
        self._groups = dict(zip(uniq.tolist(), np.split(order, starts[1:]), strict=True))

    def __len__(self) -> int:
        return len(self.records)

    def _replacements(self, index: int) -> list[int]:
        """Other indices of ``index``'s label, starting after it and wrapping around."""
        group = self._groups[int(self.labels[index])]
        pos = int(np.searchsorted(group, index))
        return [int(i) for i in np.concatenate([group[pos + 1 :], group[:pos]])]

    def _load(self, index: int) -> tuple[int, Image.Image]:
        for candidate in [index, *self._replacements(index)]:
            path = self.records[candidate].path
            if path in self.bad:
                continue
            try:
                return candidate, self.loader(path)
            except ImageReadError as e:
                self.bad.add(
                    path,
                    e,
                    f"using another image of pseudo identity {int(self.labels[index])}",
                )
        paths = [self.records[i].path for i in [index, *self._replacements(index)]]
        raise BadImagesError(
            f"no readable image left for pseudo identity {int(self.labels[index])}: "
            + ", ".join(f"'{p}'" for p in paths)
        )

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = _split_item(item)
        index, img = self._load(index)
        return {
            "image": _apply(self.transform, img, seed),
            "label": int(self.labels[index]),
            "index": index,
            "camid": int(self.records[index].camid),
        }


_OUTLIER = "its features are zeros and it is treated as an outlier"
#: The warning's ending for an evaluation's query / gallery images.
LEFT_OUT_OF_EVALUATION = "it is left out of this evaluation"


class ImageDataset(Dataset):
    """Images for feature extraction: ``{"image", "index", "valid"}`` per record, in order.

    An unreadable image gives a zero tensor shaped like the others and ``valid = False`` (with a
    :class:`BadImageWarning`), up to ``max_bad_images`` per process, then
    :class:`BadImagesError`. Treat invalid rows as outliers.

    Args:
        records: the images.
        transform: PIL image → ``[3, H, W]`` tensor (e.g. :func:`build_test_transform`).
        size: ``(height, width)`` of the zero image returned for an unreadable file.
        max_bad_images, loader: as in :class:`TrainImageDataset`.
        what_next: how the caller uses an invalid row, for the warning (default: an outlier).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Callable[[Image.Image], torch.Tensor],
        size: tuple[int, int],
        *,
        max_bad_images: int = 10,
        loader: Callable[[str], Image.Image] = load_image,
        what_next: str = _OUTLIER,
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self.size = (int(size[0]), int(size[1]))
        self.loader = loader
        self.bad = _BadImageLog(max_bad_images)
        self.what_next = what_next

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.records[index].path
        if path not in self.bad:
            try:
                image = self.transform(self.loader(path))
                return {"image": image, "index": int(index), "valid": True}
            except ImageReadError as e:
                self.bad.add(path, e, self.what_next)
        return {"image": torch.zeros(3, *self.size), "index": int(index), "valid": False}


def _pin_memory(device: torch.device | str | None) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def build_train_loader(
    records: Sequence[ImageRecord],
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    data: DataConfig,
    *,
    iters: int,
    seed: int,
    epoch: int = 0,
    num_replicas: int = 1,
    rank: int = 0,
    max_bad_images: int = 10,
    device: torch.device | str | None = None,
    persistent_workers: bool = False,
) -> DataLoader:
    """The epoch's training loader: P×K batches of augmented images with pseudo labels.

    A :class:`TrainImageDataset` over all ``records`` (outliers, label −1, are never sampled),
    batched by a :class:`~reid_train.sampler.PKBatchSampler` (``data.batch_size`` per rank,
    ``data.num_instances``, ``iters`` batches, cross-camera companions when
    ``data.cross_camera_instances``) with per-sample augmentation seeds: batches and images are
    a function of ``(seed, epoch)`` (and rank). Batches are dicts of tensors: ``image``
    ``[B, 3, H, W]`` float32, ``label``, ``index``, ``camid`` ``[B]`` int64.

    Args:
        records, labels: the training set and this epoch's pseudo labels.
        data: the ``data`` section (sizes, augmentation, ``workers``).
        iters: batches per epoch and rank.
        seed, epoch: the randomness of the epoch.
        num_replicas, rank: distributed sharding (see the sampler; keep the loader out of
            ``accelerator.prepare``).
        max_bad_images: see the module doc (per loading process).
        device: where the batches go; ``pin_memory`` is used only for CUDA.
        persistent_workers: keep workers between iterations of this loader (off by default;
            a new loader is built every epoch since the labels change).

    Raises:
        TooFewIdentitiesError: fewer pseudo identities than P (from the sampler).
    """
    dataset = TrainImageDataset(
        records, labels, build_train_transform(data), max_bad_images=max_bad_images
    )
    sampler = PKBatchSampler(
        dataset.labels,
        data.batch_size,
        data.num_instances,
        iters,
        camids=[r.camid for r in dataset.records],
        cross_camera=data.cross_camera_instances,
        seed=seed,
        epoch=epoch,
        num_replicas=num_replicas,
        rank=rank,
        augment_seeds=True,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=data.workers,
        pin_memory=_pin_memory(device),
        persistent_workers=persistent_workers and data.workers > 0,
        # Only seeds the workers' base seed; drawn from here, not from the global RNG.
        generator=epoch_generator(seed, epoch, stream=2),
    )


def build_extract_loader(
    records: Sequence[ImageRecord],
    data: DataConfig,
    *,
    max_bad_images: int = 10,
    device: torch.device | str | None = None,
    what_next: str = _OUTLIER,
) -> DataLoader:
    """Loader for feature extraction (clustering, evaluation): test transform, records in order,
    ``data.test_batch_size`` per batch; batches ``{"image", "index", "valid"}`` (see
    :class:`ImageDataset`). For several ranks, give each its shard of ``records``."""
    dataset = ImageDataset(
        records,
        build_test_transform(data),
        (data.height, data.width),
        max_bad_images=max_bad_images,
        what_next=what_next,
    )
    return DataLoader(
        dataset,
        batch_size=data.test_batch_size,
        shuffle=False,
        num_workers=data.workers,
        pin_memory=_pin_memory(device),
    )


def record_ids(records: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(pids, camids)`` of image records (``reid_eval.ImageRecord``), as numpy arrays."""
    return np.array([r.pid for r in records]), np.array([r.camid for r in records])
