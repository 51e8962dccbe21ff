"""Records, the dataset container and the shared parsing/validation helpers of every layout."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TextIO

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "DatasetLayoutError",
    "ImageRecord",
    "ReIDDataset",
    "SplitStats",
    "UNLABELLED",
]

#: File extensions treated as images when a folder is scanned (compared in lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

_MAX_LISTED = 5

#: The pid of an image without identity: a training image of an unlabelled split (kept: the
#: unsupervised methods never read identities), or junk (dropped from evaluation splits).
UNLABELLED = -1


class DatasetError(ValueError):
    """A dataset could not be loaded: wrong layout, unparsable names, empty split, ..."""


class DatasetLayoutError(DatasetError, FileNotFoundError):
    """The folder given as a dataset root does not hold the expected layout."""


class ImageRecord(NamedTuple):
    """One image of a re-ID split.

    Attributes:
        path: path of the image file, as a string.
        pid: identity label. Test splits keep the dataset's labels (0 = distractor where the
            dataset has them); training splits keep the raw labels too (unsupervised methods never
            read them; they serve pseudo-label quality reports only), and -1
            (:data:`UNLABELLED`) for an image without identity (the ``unlabelled`` layout, or
            a CSV row of ``folder``).
        camid: 0-based camera index.
    """

    path: str
    pid: int
    camid: int


class SplitStats(NamedTuple):
    """Counts of one split: images, distinct identities (pid -1, no identity, not counted),
    distinct cameras."""

    num_images: int
    num_ids: int
    num_cameras: int


def split_stats(records: Sequence[ImageRecord]) -> SplitStats:
    """Count images, identities and cameras of a list of records."""
    ids = {r.pid for r in records if r.pid != UNLABELLED}
    return SplitStats(len(records), len(ids), len({r.camid for r in records}))


@dataclass
class ReIDDataset:
    """A loaded re-ID dataset: three lists of :class:`ImageRecord`.

    Attributes:
        name: registry name of the layout (``"market1501"``, ...).
        root: the folder the images were found in (after sub-folder resolution).
        train: training images (their pids are for reporting only in unsupervised training;
            -1 for an image without identity).
        query: query images.
        gallery: gallery images (distractors with pid 0 included where the dataset has them).
    """

    name: str
    root: Path
    train: list[ImageRecord]
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for split in ("train", "query", "gallery"):
            if not getattr(self, split):
                raise DatasetError(
                    f"{self.name}: the {split} split under '{self.root}' is empty; "
                    "check that the image folders hold images and that the right root was given"
                )
        if not {r.pid for r in self.query} & {r.pid for r in self.gallery}:
            raise DatasetError(
                f"{self.name}: no query identity appears in the gallery; query and gallery "
                "folders probably come from different datasets or splits"
            )

    def stats(self, split: str) -> SplitStats:
        """Images / identities / cameras of ``split`` (``"train"``, ``"query"``, ``"gallery"``)."""
        if split not in ("train", "query", "gallery"):
            raise ValueError(f"split must be 'train', 'query' or 'gallery', got {split!r}")
        return split_stats(getattr(self, split))

    @property
    def num_train_pids(self) -> int:
        """Number of distinct identities in the training split (0 for an unlabelled one)."""
        return self.stats("train").num_ids

    @property
    def num_cameras(self) -> int:
        """Number of distinct cameras over all splits."""
        return len({r.camid for split in (self.train, self.query, self.gallery) for r in split})

    def summary(self, file: TextIO | None = None) -> str:
        """Print (to ``file``, default stdout) and return a table of images / ids / cameras."""
        lines = [
            f"Dataset {self.name} ({self.root})",
            f"  {'split':<8} {'images':>8} {'ids':>7} {'cameras':>8}",
            "  " + "-" * 34,
        ]
        for split in ("train", "query", "gallery"):
            s = self.stats(split)
            lines.append(f"  {split:<8} {s.num_images:>8} {s.num_ids:>7} {s.num_cameras:>8}")
        lines.extend(f"  note: {n}" for n in self.notes)
        text = "\n".join(lines)
        print(text, file=file if file is not None else sys.stdout)
        return text


def is_image_file(name: str) -> bool:
    """True when ``name`` has one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: Path) -> list[str]:
    """Sorted file names of the images directly inside ``folder``."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_file() and is_image_file(e.name))


def resolve_root(
    root: str | os.PathLike[str],
    required: Sequence[str],
    candidates: Iterable[str],
    dataset: str,
    layout: str,
) -> Path:
    """Find the folder holding every entry of ``required`` among ``root`` and its sub-folders.

    Args:
        root: the path the user gave.
        required: names (folders or files) that must all exist in the dataset folder.
        candidates: relative sub-folders of ``root`` to try after ``root`` itself, in order.
        dataset: the dataset's display name, for the error.
        layout: a description of the expected layout, for the error.

    Raises:
        DatasetLayoutError: naming what is missing and the expected layout.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DatasetLayoutError(
            f"{dataset}: data root '{base}' does not exist or is not a folder. "
            f"Expected layout:\n{layout}"
        )
    tried = [base, *(base / c for c in candidates)]
    for folder in tried:
        if all((folder / r).exists() for r in required):
            return folder
    missing = [r for r in required if not (base / r).exists()]
    tried_text = ", ".join(f"'{t}'" for t in tried)
    raise DatasetLayoutError(
        f"{dataset}: expected layout not found under '{base}' (missing there: "
        f"{', '.join(missing)}; also tried {tried_text}). Expected layout:\n{layout}"
    )


def require_dir(folder: Path, dataset: str, layout: str) -> Path:
    """Return ``folder`` or raise :class:`DatasetLayoutError` naming it and the layout."""
    if not folder.is_dir():
        raise DatasetLayoutError(
            f"{dataset}: folder '{folder}' is missing. Expected layout:\n{layout}"
        )
    return folder


def parse_folder(
    folder: Path,
    parse: Callable[[str], tuple[int, int] | None],
    pattern_text: str,
    dataset: str,
) -> list[ImageRecord]:
    """Turn every image of ``folder`` into a record with ``parse(name) -> (pid, camid)``.

    ``parse`` returns ``None`` for a name it cannot read; all such names are collected and
    reported together (the first few by name) with the expected ``pattern_text``.
    """
    records: list[ImageRecord] = []
    bad: list[str] = []
    for name in list_images(folder):
        parsed = parse(name)
        if parsed is None:
            bad.append(name)
            continue
        pid, camid = parsed
        records.append(ImageRecord(str(folder / name), pid, camid))
    if bad:
        raise DatasetError(
            f"{dataset}: {len(bad)} file name(s) in '{folder}' do not follow the expected pattern "
            f"{pattern_text}: {format_examples(bad)}. Rename or remove them (or use the 'folder' "
            "layout with a CSV for data named differently)."
        )
    return records


def format_examples(items: Sequence[str], limit: int = _MAX_LISTED) -> str:
    """``'a', 'b', 'c' and 7 more`` — the first few items of a list, for error messages."""
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def name_parser(regex: str) -> Callable[[str], tuple[int, int] | None]:
    """A parser of ``<pid>_c<camera>...`` names: ``regex`` has groups (pid, 1-based camera).

    Returns ``(pid, camera - 1)``, or ``None`` when the name does not match or the camera is 0.
    """
    compiled = re.compile(regex)

    def parse(name: str) -> tuple[int, int] | None:
        m = compiled.match(name)
        if m is None:
            return None
        pid, cam = int(m.group(1)), int(m.group(2))
        if cam < 1 or pid < -1:
            return None
        return pid, cam - 1

    return parse
