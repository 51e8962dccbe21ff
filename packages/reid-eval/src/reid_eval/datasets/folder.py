"""A user's own data: one sub-folder per identity, or CSV files ``path,pid,camid``."""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections.abc import Sequence
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

__all__ = ["FolderDataset", "DEFAULT_CAMERA_PATTERN"]

#: Finds the camera in names such as ``0001_c3s1_0001.jpg``, ``c2_0001.jpg``, ``img-cam4.png``.
DEFAULT_CAMERA_PATTERN = r"(?:^|[_\-.])c(?:am)?(\d+)"

_SPLITS = ("train", "query", "gallery")

_LAYOUT = """  either identity folders, the camera read from each file name by a pattern:
    ROOT/train/<identity>/<image>   ROOT/query/<identity>/<image>   ROOT/gallery/<identity>/<image>
  or one CSV per split with the header 'path,pid,camid' (paths relative to ROOT, camid 0-based):
    ROOT/train.csv    ROOT/query.csv    ROOT/gallery.csv"""


class FolderDataset:
    """Your own data, in one of two layouts.

    Identity folders (``ROOT/{train,query,gallery}/<identity>/<image>``): the identity is the
    folder name (numeric names are used as pids; other names are numbered 1, 2, ... in sorted
    order, query and gallery sharing one numbering so that equal names match; a gallery folder
    named ``0`` holds distractors). The camera is read from each file name with
    ``camera_pattern``, a regular expression whose first group is the camera label; labels are
    numbered 0, 1, ... in sorted order (numerically when they are numbers), over all splits.

    CSV files (``ROOT/{train,query,gallery}.csv``, header ``path,pid,camid``): paths relative to
    ``ROOT`` (or absolute), integer pids, 0-based integer camids. A pid of -1 marks an image
    without identity: kept in ``train.csv`` as unlabelled (unsupervised training uses it; the
    ground-truth labels and the pseudo-label quality leave it out), dropped with a warning from
    ``query.csv`` / ``gallery.csv`` (an image without identity cannot be scored). The CSV layout
    is used when all three files exist; ``layout="csv"`` / ``"folders"`` forces one. For a
    training split without any identity, see also the ``unlabelled`` layout
    (:class:`~reid_eval.datasets.UnlabelledFolder`).

    Every image must exist and every name must match the pattern; offenders are listed.
    """

    name = "folder"
    display_name = "folder dataset"

    def __init__(
        self,
        root: str | os.PathLike[str],
        camera_pattern: str = DEFAULT_CAMERA_PATTERN,
        layout: str = "auto",
    ) -> None:
        if layout not in ("auto", "csv", "folders"):
            raise ValueError(f"layout must be 'auto', 'csv' or 'folders', got {layout!r}")
        self.camera_regex = camera_regex(camera_pattern)
        self.root = Path(root).expanduser()
        self.layout = layout

    def load(self) -> ReIDDataset:
        """Read the data (see the class docstring)."""
        if not self.root.is_dir():
            raise DatasetLayoutError(
                f"folder dataset: data root '{self.root}' does not exist or is not a folder. "
                f"Expected layout:\n{_LAYOUT}"
            )
        has_csv = all((self.root / f"{s}.csv").is_file() for s in _SPLITS)
        has_dirs = all((self.root / s).is_dir() for s in _SPLITS)
        use_csv = self.layout == "csv" or (self.layout == "auto" and has_csv)
        if (use_csv and not has_csv) or (not use_csv and not has_dirs):
            wanted = [f"{s}.csv" for s in _SPLITS] if use_csv else [f"{s}/" for s in _SPLITS]
            missing = [w for w in wanted if not (self.root / w.rstrip("/")).exists()]
            raise DatasetLayoutError(
                f"folder dataset: '{self.root}' lacks {', '.join(missing)}. "
                f"Expected layout:\n{_LAYOUT}"
            )
        if use_csv:
            splits = {s: _read_csv(self.root / f"{s}.csv", self.root) for s in _SPLITS}
            notes = ["read from train.csv, query.csv, gallery.csv"]
            unlabelled = sum(r.pid == UNLABELLED for r in splits["train"])
            if unlabelled:
                notes.append(f"{unlabelled} unlabelled training image(s) (pid -1) kept")
            for split in ("query", "gallery"):
                splits[split] = drop_unlabelled(
                    splits[split], self.display_name, f"{split}.csv", notes
                )
        else:
            splits = self._read_folders()
            notes = [f"identity folders; camera pattern {self.camera_regex.pattern!r}"]
        return ReIDDataset(
            self.name, self.root, splits["train"], splits["query"], splits["gallery"], notes
        )

    def _read_folders(self) -> dict[str, list[ImageRecord]]:
        found = scan_identity_folders(self.root, _SPLITS, self.camera_regex, self.display_name)
        cameras = _numbering({c for items in found.values() for _, _, c in items}, start=0)
        train_ids = _numbering({i for _, i, _ in found["train"]}, start=1)
        test_ids = _numbering({i for s in ("query", "gallery") for _, i, _ in found[s]}, start=1)
        return {
            split: [
                ImageRecord(
                    path, (train_ids if split == "train" else test_ids)[ident], cameras[cam]
                )
                for path, ident, cam in items
            ]
            for split, items in found.items()
        }


def camera_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled; it must hold one capture group, the camera (a ValueError says so)."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"camera_pattern {pattern!r} is not a valid regex: {e}") from e
    if regex.groups < 1:
        raise ValueError(
            f"camera_pattern {pattern!r} needs one capture group holding the camera, "
            r"e.g. r'_c(\d+)'"
        )
    return regex


def scan_identity_folders(
    root: Path,
    splits: Sequence[str],
    camera_regex: re.Pattern[str],
    dataset: str,
    hint: str = " or use CSV files",
) -> dict[str, list[tuple[str, str, str]]]:
    """``(path, identity folder name, camera label)`` of every image of
    ``root/<split>/<identity>/``, the camera read from the file name by ``camera_regex``
    (first group); names without a camera are reported together (``hint`` ends the message)."""
    found: dict[str, list[tuple[str, str, str]]] = {}
    unmatched: list[str] = []
    for split in splits:
        items = []
        split_dir = root / split
        with os.scandir(split_dir) as it:
            identities = sorted(e.name for e in it if e.is_dir())
        for identity in identities:
            for name in list_images(split_dir / identity):
                m = camera_regex.search(name)
                if m is None or m.group(1) is None:
                    unmatched.append(f"{split}/{identity}/{name}")
                    continue
                items.append((str(split_dir / identity / name), identity, m.group(1)))
        found[split] = items
    if unmatched:
        raise DatasetError(
            f"{dataset}: {len(unmatched)} file name(s) hold no camera matching the "
            f"pattern {camera_regex.pattern!r}: {format_examples(unmatched)}. Pass "
            f"camera_pattern= (a regex whose first group is the camera){hint}."
        )
    return found


def drop_unlabelled(
    records: list[ImageRecord], dataset: str, source: str, notes: list[str]
) -> list[ImageRecord]:
    """``records`` of a query or gallery split without those of pid -1, with a warning (and a
    note appended to ``notes``) that says how many and why; ``source`` names the split's file or
    folder."""
    kept = [r for r in records if r.pid != UNLABELLED]
    dropped = len(records) - len(kept)
    if dropped:
        warnings.warn(
            f"{dataset}: {dropped} image(s) with pid -1 (no identity) dropped from {source}: an "
            "evaluation image needs its identity to be scored (give it one, or leave it out)",
            stacklevel=3,
        )
        notes.append(f"{dropped} image(s) with pid -1 dropped from {source}")
    return kept


def _numbering(labels: set[str], start: int) -> dict[str, int]:
    """Map labels to integers: numeric labels keep their value when ``start`` is 1 (pids);
    otherwise (and for non-numeric labels) sorted labels are numbered from ``start``."""
    if labels and all(label.lstrip("-").isdigit() for label in labels):
        ordered = sorted(labels, key=int)
        if start == 1:
            return {label: int(label) for label in ordered}
    else:
        ordered = sorted(labels)
    return {label: i for i, label in enumerate(ordered, start=start)}


def _read_csv(csv_file: Path, root: Path) -> list[ImageRecord]:
    records: list[ImageRecord] = []
    bad: list[str] = []
    missing: list[str] = []
    with open(csv_file, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        if header[:3] != ["path", "pid", "camid"]:
            raise DatasetError(
                f"folder dataset: '{csv_file}' must start with the header 'path,pid,camid', "
                f"found {','.join(header) or 'nothing'}"
            )
        for number, row in enumerate(reader, start=2):
            try:
                pid, camid = int(row["pid"]), int(row["camid"])
            except (TypeError, ValueError):
                bad.append(f"line {number}: {row}")
                continue
            if pid < -1 or camid < 0 or not row["path"]:
                bad.append(f"line {number}: {row}")
                continue
            path = root / row["path"]
            if not path.is_file():
                missing.append(str(path))
                continue
            records.append(ImageRecord(str(path), pid, camid))
    if bad:
        raise DatasetError(
            f"folder dataset: {len(bad)} row(s) of '{csv_file}' are not 'path,pid,camid' with an "
            f"integer pid >= -1 and a 0-based integer camid: {format_examples(bad)}"
        )
    if missing:
        raise DatasetError(
            f"folder dataset: {len(missing)} image(s) listed in '{csv_file.name}' do not exist: "
            f"{format_examples(missing)} (paths are relative to '{root}')"
        )
    return records
