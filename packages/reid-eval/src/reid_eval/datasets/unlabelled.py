"""A user's own unlabelled training images, with labelled query and gallery folders."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from .base import (
    UNLABELLED,
    DatasetError,
    DatasetLayoutError,
    ImageRecord,
    ReIDDataset,
    format_examples,
    list_images,
)
from .folder import (
    DEFAULT_CAMERA_PATTERN,
    _numbering,
    camera_regex,
    drop_unlabelled,
    scan_identity_folders,
)

__all__ = ["UnlabelledFolder", "TRAIN_CAMERAS", "TEST_LABELS"]

#: Where the camera of a training image comes from: its file name (``camera_pattern``), the
#: sub-folder of ``train/`` it is in, or nowhere (camera 0 for every image).
TRAIN_CAMERAS = ("names", "folders", "single")

#: How query and gallery images carry their identity: Market-1501 names
#: (``<pid>_c<camera>...``), one sub-folder per identity, or ``auto`` (sub-folders when the
#: query folder has any).
TEST_LABELS = ("auto", "names", "folders")

_MARKET_NAME = re.compile(r"^(-1|\d+)_c(\d+)")

_LAYOUT = """  ROOT/train/<image>             training images, no identities (train_cameras="names":
                                 the camera in the name, e.g. 'cam2_000123.jpg', 'x_c3.png';
                                 train_cameras="single": any name, all camera 0)
  or ROOT/train/<camera>/<image>   (train_cameras="folders": one sub-folder per camera)
  ROOT/query/0001_c1_000001.jpg    labelled test images with Market-1501 names
  ROOT/gallery/0001_c2_000007.jpg    '<pid>_c<camera>...' (pid 0 = distractor, -1 = junk)
  or ROOT/query/<identity>/<image> and ROOT/gallery/<identity>/<image> (one sub-folder per
     identity, the camera in the file name as for training)"""


class UnlabelledFolder:
    """Your own unlabelled training images plus labelled query and gallery images.

    The point of unsupervised re-ID: train on images nobody labelled, evaluate on a small labelled
    set. Layout::

        ROOT/train/      training images, without identities: every one gets pid -1
        ROOT/query/      labelled queries
        ROOT/gallery/    labelled gallery

    Training cameras (``train_cameras``):

    * ``"names"`` (default): read from each file name by ``camera_pattern`` (a regex whose first
      group is the camera; the default finds ``c3`` / ``cam3`` after ``_``, ``-``, ``.`` or at
      the start: ``0002_c3s1_000451_03.jpg``, ``cam3_0001.jpg``, ``img-c3.png``);
    * ``"folders"``: ``ROOT/train/<camera>/<image>``, one sub-folder per camera (any names);
    * ``"single"``: every training image is camera 0 (one camera, or cameras unknown; the
      camera-aware options such as ``cluster.camera_debias`` then do nothing).

    Query and gallery identities (``test_labels``): ``"names"``, Market-1501 file names
    ``<pid>_c<camera>...`` (``0001_c1s1_001051_00.jpg``, ``0001_c2_7.png``; gallery pid 0 =
    distractor, kept); ``"folders"``, one sub-folder per identity as in the ``folder`` layout (the
    camera read from the file name by ``camera_pattern``; numeric folder names are the pids, other
    names are numbered 1, 2, ... over query and gallery together; a gallery folder ``0`` holds
    distractors); ``"auto"`` (default): ``"folders"`` when ``ROOT/query`` holds sub-folders,
    else ``"names"``. Test images with pid -1 are dropped with a warning that says how many (an
    image without identity cannot be scored), so are queries with pid 0 (a distractor query has
    no true match).

    Camera labels (of ``c3``, or a camera folder's name) are numbered 0, 1, ... over all splits
    together (numbers in numeric order, then other names in sorted order), so that a camera has
    the same ``camid`` in training and test when it has the same label; with ``"single"`` the
    training images are camera 0 and only the test labels are numbered.
    """

    name = "unlabelled"
    display_name = "unlabelled folder dataset"

    def __init__(
        self,
        root: str | os.PathLike[str],
        train_cameras: str = "names",
        test_labels: str = "auto",
        camera_pattern: str = DEFAULT_CAMERA_PATTERN,
    ) -> None:
        if train_cameras not in TRAIN_CAMERAS:
            raise ValueError(
                f"train_cameras must be one of {', '.join(TRAIN_CAMERAS)}, got {train_cameras!r}"
            )
        if test_labels not in TEST_LABELS:
            raise ValueError(
                f"test_labels must be one of {', '.join(TEST_LABELS)}, got {test_labels!r}"
            )
        self.camera_regex = camera_regex(camera_pattern)
        self.root = Path(root).expanduser()
        self.train_cameras = train_cameras
        self.test_labels = test_labels

    def load(self) -> ReIDDataset:
        """Read the three folders (see the class docstring)."""
        if not self.root.is_dir():
            raise DatasetLayoutError(
                f"{self.display_name}: data root '{self.root}' does not exist or is not a "
                f"folder. Expected layout:\n{_LAYOUT}"
            )
        missing = [f"{s}/" for s in ("train", "query", "gallery") if not (self.root / s).is_dir()]
        if missing:
            raise DatasetLayoutError(
                f"{self.display_name}: '{self.root}' lacks {', '.join(missing)}. "
                f"Expected layout:\n{_LAYOUT}"
            )
        train = self._read_train()  # (path, camera label or None)
        test_labels = self.test_labels
        if test_labels == "auto":
            test_labels = "folders" if _has_subfolders(self.root / "query") else "names"
        if test_labels == "folders":
            test = self._read_test_folders()
        else:
            test = {s: self._read_test_names(s) for s in ("query", "gallery")}
        labels = {c for _, c in train if c is not None}
        labels |= {c for items in test.values() for _, _, c in items}
        cameras = _camera_numbering(labels)
        train_records = [
            ImageRecord(path, UNLABELLED, 0 if c is None else cameras[c]) for path, c in train
        ]
        source = {
            "names": f"camera from the file name, pattern '{self.camera_regex.pattern}'",
            "folders": "camera from its sub-folder",
            "single": "one camera",
        }[self.train_cameras]
        notes = [
            f"{len(train_records)} unlabelled training image(s) ({source}); query and gallery "
            f"labelled by {'identity folders' if test_labels == 'folders' else 'file names'}"
        ]
        splits: dict[str, list[ImageRecord]] = {}
        for split in ("query", "gallery"):
            records = [ImageRecord(path, pid, cameras[c]) for path, pid, c in test[split]]
            splits[split] = drop_unlabelled(records, self.display_name, f"{split}/", notes)
        distractors = sum(r.pid == 0 for r in splits["query"])
        if distractors:
            warnings.warn(
                f"{self.display_name}: {distractors} query image(s) with pid 0 (distractor) "
                "dropped: a distractor query has no true match",
                stacklevel=2,
            )
            notes.append(f"{distractors} distractor query image(s) dropped")
            splits["query"] = [r for r in splits["query"] if r.pid != 0]
        return ReIDDataset(
            self.name, self.root, train_records, splits["query"], splits["gallery"], notes
        )

    # ------------------------------------------------------------------ training split
    def _read_train(self) -> list[tuple[str, str | None]]:
        folder = self.root / "train"
        if self.train_cameras == "folders":
            with os.scandir(folder) as it:
                cameras = sorted(e.name for e in it if e.is_dir())
            loose = list_images(folder)
            if loose:
                raise DatasetError(
                    f"{self.display_name}: train_cameras='folders' wants every training image "
                    f"in a camera sub-folder of '{folder}', but {len(loose)} image(s) lie in it "
                    f"directly: {format_examples(loose)}"
                )
            return [
                (str(folder / camera / name), _camera_label(camera))
                for camera in cameras
                for name in list_images(folder / camera)
            ]
        names = list_images(folder)
        if not names and _has_subfolders(folder):
            raise DatasetError(
                f"{self.display_name}: '{folder}' holds sub-folders but no image directly; "
                "if each sub-folder is a camera, pass train_cameras='folders'"
            )
        if self.train_cameras == "single":
            return [(str(folder / name), None) for name in names]
        items: list[tuple[str, str | None]] = []
        unmatched: list[str] = []
        for name in names:
            m = self.camera_regex.search(name)
            if m is None or m.group(1) is None:
                unmatched.append(name)
                continue
            items.append((str(folder / name), _camera_label(m.group(1))))
        if unmatched:
            raise DatasetError(
                f"{self.display_name}: {len(unmatched)} training image name(s) in '{folder}' "
                f"hold no camera matching the pattern {self.camera_regex.pattern!r}: "
                f"{format_examples(unmatched)}. Pass camera_pattern= (a regex whose first group "
                "is the camera), train_cameras='folders' (one sub-folder per camera) or "
                "train_cameras='single' (every image camera 0)."
            )
        return items

    # ------------------------------------------------------------------ test splits
    def _read_test_names(self, split: str) -> list[tuple[str, int, str]]:
        folder = self.root / split
        items: list[tuple[str, int, str]] = []
        bad: list[str] = []
        for name in list_images(folder):
            m = _MARKET_NAME.match(name)
            if m is None:
                bad.append(name)
                continue
            items.append((str(folder / name), int(m.group(1)), _camera_label(m.group(2))))
        if bad:
            hint = (
                " (it holds sub-folders: with one per identity, pass test_labels='folders')"
                if _has_subfolders(folder)
                else ""
            )
            raise DatasetError(
                f"{self.display_name}: {len(bad)} file name(s) in '{folder}' are not Market-1501 "
                f"names '<pid>_c<camera>...' (e.g. '0001_c1s1_001051_00.jpg'): "
                f"{format_examples(bad)}. Rename them, or use one sub-folder per identity"
                f"{hint}."
            )
        return items

    def _read_test_folders(self) -> dict[str, list[tuple[str, int, str]]]:
        found = scan_identity_folders(
            self.root, ("query", "gallery"), self.camera_regex, self.display_name, hint=""
        )
        ids = _numbering({i for items in found.values() for _, i, _ in items}, start=1)
        return {
            split: [(path, ids[ident], _camera_label(cam)) for path, ident, cam in items]
            for split, items in found.items()
        }


def _camera_numbering(labels: set[str]) -> dict[str, int]:
    """Camera labels numbered 0, 1, ...: numbers in numeric order, then names in sorted order."""
    numbers = sorted((c for c in labels if c.isdigit()), key=int)
    ordered = numbers + sorted(c for c in labels if not c.isdigit())
    return {label: i for i, label in enumerate(ordered)}


def _camera_label(label: str) -> str:
    """A camera label with numbers written canonically (``c003`` and ``c3`` are one camera)."""
    return str(int(label)) if label.isdigit() else label


def _has_subfolders(folder: Path) -> bool:
    with os.scandir(folder) as it:
        return any(e.is_dir() for e in it)
