"""Features of a checkpoint for any images: :class:`FeatureExtractor` and ``reid-eval extract``.

::

    from reid_eval import FeatureExtractor

    extract = FeatureExtractor("runs/pplr/best")          # device "auto": the GPU if there is one
    feats = extract("data/market/query")                  # a folder, a glob, paths, PIL images
    feats.shape                                           # or an image tensor: [N, D], float32

The images are resized and normalised as the checkpoint's ``config.json`` says (input size,
mean, std, interpolation), so a 384x128 checkpoint is fed 384x128 images.
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from reid_backbones import (
    check_checkpoint,
    check_input_size,
    load_checkpoint,
    read_checkpoint_config,
)

from .datasets.base import IMAGE_EXTENSIONS, is_image_file, list_images, name_parser
from .datasets.market1501 import Market1501
from .devices import resolve_device
from .features import Preprocessing, default_workers, embed_batches, iter_image_batches

__all__ = [
    "FeatureExtractor",
    "FeatureFileError",
    "check_output_path",
    "find_images",
    "parse_image_name",
    "save_features",
]

_GLOB_CHARS = frozenset("*?[")
_parse_market = name_parser(Market1501.regex)


class FeatureFileError(OSError):
    """The features file cannot be written (the message names the path and the reason)."""


class FeatureExtractor:
    """L2-normalised features of a checkpoint for a folder, a glob, paths, PIL images or tensors.

    The checkpoint's ``config.json`` gives the input size, the normalisation and the resize
    interpolation it was trained with (:class:`reid_eval.features.Preprocessing`); the model
    runs in evaluation mode on ``device``.

    Args:
        checkpoint: the folder written by ``reid_backbones.save_checkpoint`` (what reid-train
            writes to ``best/`` and ``last/``), or the ``model.safetensors`` in it.
        device: ``"auto"`` (default: CUDA when available, else the CPU), ``"cpu"``,
            ``"cuda"``, ``"cuda:1"``, ``"mps"``... (checked by :func:`reid_eval.resolve_device`).
        batch_size: images per forward pass.
        workers: data-loading processes for image files; default
            :func:`reid_eval.features.default_workers` for the device.
        size: ``(height, width)`` to resize to instead of the checkpoint's; only with
            ``force_size`` when it differs (the features of another size are not the ones the
            model was evaluated with).
        force_size: allow a ``size`` other than the checkpoint's.
        flip: average each image's features with those of its horizontal flip.

    Attributes:
        checkpoint: the checkpoint folder.
        config: its ``config.json``.
        device: the resolved device.
        model: the loaded model (evaluation mode).
        preprocessing: size, mean, std and interpolation applied to every image.

    Raises:
        ValueError: an unusable device; a ``size`` other than the checkpoint's without
            ``force_size``, or one too small for the model; ``batch_size < 1``; ``workers < 0``.
        reid_backbones.CheckpointError: not a checkpoint, or one that does not load.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str],
        device: str | torch.device = "auto",
        *,
        batch_size: int = 64,
        workers: int | None = None,
        size: Sequence[int] | None = None,
        force_size: bool = False,
        flip: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        self.checkpoint = check_checkpoint(checkpoint)
        self.config = read_checkpoint_config(self.checkpoint)
        preprocessing = Preprocessing.from_checkpoint_config(self.config)
        if size is not None:
            size = tuple(int(v) for v in size)
            if size != preprocessing.size:
                own = preprocessing.size
                if not force_size:
                    raise ValueError(
                        f"checkpoint '{self.checkpoint}' was trained on {own[0]}x{own[1]} "
                        f"images but size {size[0]}x{size[1]} was asked for; leave the size "
                        "out to use the checkpoint's, or force the other size (force_size=True,"
                        " --force-size) knowing that the features change"
                    )
                check_input_size(
                    self.config["architecture"],
                    size,
                    self.config.get("last_stride", 1),
                    **self.config.get("options", {}),
                )
                preprocessing = replace(preprocessing, size=size)
        self.preprocessing = preprocessing
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if workers is None:
            workers = default_workers(self.device)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
        self.batch_size, self.workers, self.flip = batch_size, workers, flip
        self.model = load_checkpoint(self.checkpoint, device=self.device)

    @property
    def feature_dim(self) -> int:
        """``D``, the width of the features."""
        return int(self.config.get("feature_dim") or self.model.feature_dim)

    def __repr__(self) -> str:
        return (
            f"FeatureExtractor('{self.checkpoint}', device='{self.device}', "
            f"{self.preprocessing.describe()}, batch_size={self.batch_size}, "
            f"workers={self.workers}, flip={self.flip})"
        )

    def __call__(self, images: Any, *, progress: bool | str = False) -> torch.Tensor:
        """The features of ``images``: ``[N, D]`` float32 on the CPU, rows L2-normalised.

        Args:
            images: one of
                * a folder (its images, not those of sub-folders), a glob pattern
                  (``"data/**/*.jpg"``, recursive) or an image file: the images found, sorted
                  by path (:func:`find_images`);
                * a list of paths: in the given order;
                * a PIL image or a list of them (any mode; converted to RGB);
                * an image tensor ``[N, 3, H, W]`` (or ``[3, H, W]``), RGB, uint8 in [0, 255]
                  or floating point in [0, 1], not normalised: resized with
                  ``torch.nn.functional.interpolate`` when not at the input size, then
                  normalised (on the tensor's device).
            progress: show a progress bar on a terminal (a string: its description).

        Raises:
            ValueError: no image (an empty list, a pattern that matched none), a tensor of
                another shape / dtype / range.
            TypeError: something else than the inputs above, or a list that mixes them.
            reid_eval.ImageReadError: naming a missing or unreadable image file.
        """
        batches, total = self._batches(images)
        if progress:
            from tqdm.auto import tqdm

            desc = progress if isinstance(progress, str) else "features"
            steps = -(-total // self.batch_size)
            batches = tqdm(batches, desc=desc, unit="batch", total=steps, disable=None)
        return embed_batches(self.model, batches, device=self.device, flip=self.flip)

    def _batches(self, images: Any) -> tuple[Iterable[torch.Tensor], int]:
        if isinstance(images, torch.Tensor):
            x = images.unsqueeze(0) if images.dim() == 3 else images
            self.preprocessing.tensor(x[:1])  # shape and dtype checked before anything runs
            return self._tensor_batches(x), int(x.shape[0])
        if isinstance(images, Image.Image):
            return self._pil_batches([images]), 1
        if isinstance(images, str | os.PathLike):
            return self._path_batches(find_images(images))
        if isinstance(images, np.ndarray) or not isinstance(images, Iterable):
            raise TypeError(
                "images must be a folder, a glob pattern, a list of paths, PIL images or an "
                f"image tensor [N, 3, H, W], got {type(images).__name__}"
            )
        items = list(images)
        if not items:
            raise ValueError("no images were given: the list is empty")
        if all(isinstance(i, Image.Image) for i in items):
            return self._pil_batches(items), len(items)
        if all(isinstance(i, str | os.PathLike) for i in items):
            return self._path_batches([os.fspath(i) for i in items])
        kinds = sorted({type(i).__name__ for i in items})
        raise TypeError(
            f"a list of images must hold only paths or only PIL images, got {', '.join(kinds)}"
        )

    def _path_batches(self, paths: list[str]) -> tuple[Iterable[torch.Tensor], int]:
        batches = iter_image_batches(
            paths,
            self.preprocessing,
            batch_size=self.batch_size,
            num_workers=min(self.workers, -(-len(paths) // self.batch_size)),
            device=self.device,
        )
        return batches, len(paths)

    def _pil_batches(self, images: list[Image.Image]) -> Iterator[torch.Tensor]:
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            yield torch.stack([self.preprocessing.image(img) for img in chunk])

    def _tensor_batches(self, images: torch.Tensor) -> Iterator[torch.Tensor]:
        for start in range(0, images.shape[0], self.batch_size):
            yield self.preprocessing.tensor(images[start : start + self.batch_size])


def find_images(spec: str | os.PathLike[str]) -> list[str]:
    """The image files ``spec`` names, sorted: a folder's images (not its sub-folders'), the
    image files a glob pattern matches (``**`` recurses) or one file.

    Paths keep the form given (a relative folder gives relative paths; ``~`` is expanded).
    Image files are those ending in one of :data:`reid_eval.datasets.base.IMAGE_EXTENSIONS`.

    Raises:
        ValueError: nothing matched, naming what was looked for.
    """
    text = os.path.expanduser(os.fspath(spec))
    extensions = ", ".join(IMAGE_EXTENSIONS)
    if os.path.isdir(text):
        paths = [os.path.join(text, name) for name in list_images(Path(text))]
        if not paths:
            below = glob.iglob(os.path.join(glob.escape(text), "**", "*"), recursive=True)
            deeper = next((p for p in below if is_image_file(p)), None)
            hint = (
                f"; its sub-folders do (e.g. '{deeper}'): give a pattern such as "
                f"'{os.path.join(text, '**', '*.jpg')}'"
                if deeper
                else ""
            )
            raise ValueError(f"no image ({extensions}) in folder '{text}'{hint}")
        return paths
    if _GLOB_CHARS & set(text):
        matched = glob.glob(text, recursive=True)
        paths = sorted(p for p in matched if is_image_file(p) and os.path.isfile(p))
        if not paths:
            others = f" ({len(matched)} other paths matched)" if matched else ""
            raise ValueError(f"no image ({extensions}) matched '{text}'{others}")
        return paths
    if os.path.isfile(text):
        return [text]
    raise ValueError(
        f"no image matched '{text}': no such file or folder (give a folder, an image file or "
        "a glob pattern such as 'data/query/*.jpg')"
    )


def parse_image_name(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(pid, camid)`` from a Market-1501-style file name, ``(-1, -1)`` for other names.

    ``0002_c1s1_000451_03.jpg`` gives ``(2, 0)`` (cameras ``c1..`` become 0-based ``camid``s,
    as in :func:`reid_eval.load_dataset`); Market-1501's junk images (``-1_c...``) give pid
    -1 and distractors (``0000_c...``) pid 0.
    """
    parsed = _parse_market(os.path.basename(os.fspath(path)))
    return parsed if parsed is not None else (-1, -1)


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Check that a file can be written at ``path`` (its folder is created); return it.

    Run before a long extraction, so that a bad ``--output`` fails at once.

    Raises:
        FeatureFileError: ``path`` is a folder, or its folder cannot be created or written to.
    """
    out = Path(path).expanduser()
    if out.is_dir():
        raise FeatureFileError(f"cannot write '{out}': it is a folder; give a file name")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"):
            pass
    except OSError as e:
        reason = e.strerror or str(e)
        raise FeatureFileError(f"cannot write '{out}': {reason} ('{e.filename or out}')") from e
    return out


def save_features(
    path: str | os.PathLike[str],
    features: torch.Tensor | np.ndarray,
    paths: Sequence[str],
) -> Path:
    """Write ``features`` with their image ``paths`` to the ``.npz`` file ``path``.

    Arrays: ``features`` ``[N, D]`` float32, ``paths`` ``[N]`` str, and ``pids`` / ``camids``
    ``[N]`` int64 read from Market-1501-style names (:func:`parse_image_name`; -1 where a name
    carries none). ``numpy.load(path)`` reads it without pickle. The file is written beside and
    renamed, so an interrupted write never leaves a partial file; the name is kept as given
    (numpy would add ``.npz`` to a name without it).

    Raises:
        FeatureFileError: the file cannot be written.
        ValueError: ``features`` and ``paths`` differ in length.
    """
    feats = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else features
    feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim != 2 or feats.shape[0] != len(paths):
        raise ValueError(
            f"features of shape {feats.shape} do not match {len(paths)} paths (expected [N, D])"
        )
    ids = np.array([parse_image_name(p) for p in paths], dtype=np.int64).reshape(-1, 2)
    out = check_output_path(path)
    tmp: Path | None = None
    try:
        with tempfile.NamedTemporaryFile(
            dir=out.parent, prefix=f".{out.name}.", suffix=".tmp", delete=False
        ) as f:
            tmp = Path(f.name)
            arrays = {"features": feats, "paths": np.array(paths, dtype=str)}
            np.savez(f, **arrays, pids=ids[:, 0], camids=ids[:, 1])
        tmp.chmod(0o644)  # a temporary file is private; the features file is an ordinary one
        os.replace(tmp, out)
    except OSError as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise FeatureFileError(f"cannot write '{out}': {e.strerror or e}") from e
    return out
