"""Market-1501 (Zheng et al., ICCV 2015) and its file-name layout."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from .base import (
    ReIDDataset,
    name_parser,
    parse_folder,
    resolve_root,
)

__all__ = ["Market1501"]

_LAYOUT = """  ROOT/bounding_box_train/0002_c1s1_000451_03.jpg ...   (training images)
  ROOT/bounding_box_test/0000_c1s1_000151_01.jpg ...    (gallery; pid 0 = distractor, -1 = junk)
  ROOT/query/0001_c1s1_001051_00.jpg ...               (queries)
  ROOT may also contain the folder Market-1501-v15.09.15/ holding these three."""

_PATTERN = "'<pid>_c<camera>s<sequence>_<frame>_<box>.jpg' (e.g. '0002_c1s1_000451_03.jpg')"


class Market1501:
    """Market-1501.

    Layout (``root`` may be the dataset folder or its parent holding ``Market-1501-v15.09.15/``)::

        bounding_box_train/  0002_c1s1_000451_03.jpg   <pid>_c<cam>s<seq>_<frame>_<box>.jpg
        bounding_box_test/   gallery; pid 0000 = distractor, pid -1 = junk
        query/

    Official statistics: 1,501 identities (751 train, 750 test) from 6 cameras; 12,936 training
    images; 3,368 queries; 15,913 gallery images after the 2,798 junk images are dropped (the
    3,819 distractors with pid 0 stay).

    Conventions: junk images (pid -1) are dropped from every split; distractors (pid 0) are kept
    in the gallery and dropped, with a warning, from the query split (they have no true match).
    Cameras ``c1..c6`` become ``camid`` 0..5. The project's synthetic dataset uses this layout.
    """

    name = "market1501"
    display_name = "Market-1501"
    subfolders = ("Market-1501-v15.09.15", "market1501", "market1501/Market-1501-v15.09.15")
    splits = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    regex = r"^(-1|\d+)_c(\d+)"
    pattern = _PATTERN
    layout = _LAYOUT

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def load(self) -> ReIDDataset:
        """Scan the three folders and return the dataset (see the class docstring)."""
        base = resolve_root(
            self.root, list(self.splits.values()), self.subfolders, self.display_name, self.layout
        )
        parse = name_parser(self.regex)
        parts = {
            split: parse_folder(base / folder, parse, self.pattern, self.display_name)
            for split, folder in self.splits.items()
        }
        notes: list[str] = []
        for split, records in parts.items():
            junk = sum(r.pid == -1 for r in records)
            if junk:
                notes.append(f"{junk} junk image(s) (pid -1) dropped from {split}")
        train = [r for r in parts["train"] if r.pid != -1]
        gallery = [r for r in parts["gallery"] if r.pid != -1]
        query = [r for r in parts["query"] if r.pid != -1]
        distractor_queries = sum(r.pid == 0 for r in query)
        if distractor_queries:
            warnings.warn(
                f"{self.display_name}: {distractor_queries} query image(s) with pid 0 "
                "(distractor) dropped: a distractor query has no true match",
                stacklevel=2,
            )
            notes.append(f"{distractor_queries} distractor query image(s) dropped")
            query = [r for r in query if r.pid != 0]
        return ReIDDataset(self.name, base, train, query, gallery, notes)


class SyntheticReID(Market1501):
    """The project's generated dataset (:func:`reid_eval.datasets.make_synthetic_dataset`).

    It is written in the Market-1501 layout and read by the Market-1501 loader; this class only
    gives it its own name in summaries and logs. Its statistics depend on the generator's
    configuration (``synthetic.json`` in the folder records them).
    """

    name = "synthetic"
    display_name = "synthetic re-ID dataset"
    subfolders = ()
