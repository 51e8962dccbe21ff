"""MSMT17 (Wei et al., CVPR 2018) in its list-file layout, versions V1 and V2."""

from __future__ import annotations

import os
from pathlib import Path

from .base import (
    DatasetError,
    DatasetLayoutError,
    ImageRecord,
    ReIDDataset,
    format_examples,
)

__all__ = ["MSMT17"]

_LAYOUT = """  ROOT/list_train.txt  ROOT/list_val.txt  ROOT/list_query.txt  ROOT/list_gallery.txt
  ROOT/train/0000/0000_000_01_0303morning_0015_0.jpg ...  (V1; V2: mask_train_v2/)
  ROOT/test/0000/0000_000_01_0303morning_0008_0.jpg ...   (V1; V2: mask_test_v2/)
  each list line: '<path relative to train/ or test/> <pid>'
  ROOT may also contain the folder MSMT17_V1/, MSMT17_V2/ or MSMT17/ holding these."""

# (train folder, test folder) of each release, in the order they are looked for.
_IMAGE_DIRS = (("train", "test"), ("mask_train_v2", "mask_test_v2"))
_LISTS = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")


class MSMT17:
    """MSMT17, V1 or V2, read from its list files.

    Layout (``root`` may be the dataset folder or its parent holding ``MSMT17_V1/``,
    ``MSMT17_V2/`` or ``MSMT17/``)::

        list_train.txt list_val.txt list_query.txt list_gallery.txt
        train/ test/                    (V1)  or  mask_train_v2/ mask_test_v2/  (V2)

    Each list line is ``<relative path> <pid>``, e.g. ``0000/0000_000_01_0303morning_0015_0.jpg 0``;
    the third ``_`` field of the file name is the 1-based camera (01..15 → ``camid`` 0..14).

    Official statistics: 4,101 identities (1,041 train, 3,060 test) from 15 cameras; 32,621
    training images (30,248 in ``list_train`` + 2,373 in ``list_val``); 11,659 queries; 82,161
    gallery images.

    As in SpCL/PPLR and torchreid's statistics, the training split is ``list_train`` +
    ``list_val`` (``include_val=False``: ``list_train`` alone). Every listed file must exist.
    """

    name = "msmt17"
    display_name = "MSMT17"
    subfolders = (
        "MSMT17_V1",
        "MSMT17_V2",
        "MSMT17",
        "msmt17",
        "msmt17/MSMT17_V1",
        "msmt17/MSMT17_V2",
    )

    def __init__(self, root: str | os.PathLike[str], include_val: bool = True) -> None:
        self.root = Path(root)
        self.include_val = include_val

    def _find(self) -> tuple[Path, Path, Path]:
        base = Path(self.root).expanduser()
        if not base.is_dir():
            raise DatasetLayoutError(
                f"MSMT17: data root '{base}' does not exist or is not a folder. "
                f"Expected layout:\n{_LAYOUT}"
            )
        for folder in (base, *(base / s for s in self.subfolders)):
            if not all((folder / f).is_file() for f in _LISTS):
                continue
            for train_dir, test_dir in _IMAGE_DIRS:
                if (folder / train_dir).is_dir() and (folder / test_dir).is_dir():
                    return folder, folder / train_dir, folder / test_dir
            raise DatasetLayoutError(
                f"MSMT17: list files found in '{folder}' but not the image folders beside them "
                f"(train/ and test/ for V1, mask_train_v2/ and mask_test_v2/ for V2). "
                f"Expected layout:\n{_LAYOUT}"
            )
        missing = [f for f in _LISTS if not (base / f).is_file()]
        raise DatasetLayoutError(
            f"MSMT17: list files not found under '{base}' or its sub-folders "
            f"{', '.join(self.subfolders)} (missing in the root: {', '.join(missing)}). "
            f"Expected layout:\n{_LAYOUT}"
        )

    def load(self) -> ReIDDataset:
        """Read the list files and return the dataset (see the class docstring)."""
        base, train_dir, test_dir = self._find()
        train = _read_list(base / "list_train.txt", train_dir)
        if self.include_val:
            train += _read_list(base / "list_val.txt", train_dir)
        query = _read_list(base / "list_query.txt", test_dir)
        gallery = _read_list(base / "list_gallery.txt", test_dir)
        notes = [f"images from {train_dir.name}/ and {test_dir.name}/"]
        if self.include_val:
            notes.append("training split = list_train + list_val")
        return ReIDDataset(self.name, base, train, query, gallery, notes)


def _read_list(list_file: Path, image_dir: Path) -> list[ImageRecord]:
    """Parse one MSMT17 list file; every listed image must exist under ``image_dir``."""
    records: list[ImageRecord] = []
    bad: list[str] = []
    missing: list[str] = []
    with open(list_file, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            fields = line.split()
            parsed = _parse_line(fields)
            if parsed is None:
                bad.append(f"line {number}: {line!r}")
                continue
            rel, pid, camid = parsed
            path = image_dir / rel
            if not path.is_file():
                missing.append(str(path))
                continue
            records.append(ImageRecord(str(path), pid, camid))
    if bad:
        raise DatasetError(
            f"MSMT17: {len(bad)} line(s) of '{list_file}' are not '<relative path> <pid>' with a "
            f"file name like '0000_000_01_0303morning_0015_0.jpg': {format_examples(bad)}"
        )
    if missing:
        raise DatasetError(
            f"MSMT17: {len(missing)} image(s) listed in '{list_file.name}' do not exist: "
            f"{format_examples(missing)}. Check that the image folder belongs to the same release "
            "as the list files and was fully extracted."
        )
    return records


def _parse_line(fields: list[str]) -> tuple[str, int, int] | None:
    if len(fields) != 2:
        return None
    rel, label = fields
    parts = os.path.basename(rel).split("_")
    try:
        pid = int(label)
        camera = int(parts[2])
    except (ValueError, IndexError):
        return None
    if pid < 0 or camera < 1:
        return None
    return rel, pid, camera - 1
