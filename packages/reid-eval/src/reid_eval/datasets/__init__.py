"""Dataset layouts: Market-1501, MSMT17, VeRi-776, your own folders, and the synthetic dataset.

``load_dataset(name, root)`` returns a :class:`ReIDDataset` with ``.train``, ``.query`` and
``.gallery``: lists of :class:`ImageRecord` ``(path, pid, camid)`` with 0-based cameras.
"""

from __future__ import annotations

import os
from typing import Any

from .base import (
    DatasetError,
    DatasetLayoutError,
    ImageRecord,
    ReIDDataset,
    SplitStats,
)
from .folder import FolderDataset
from .market1501 import Market1501, SyntheticReID
from .msmt17 import MSMT17
from .synthetic import (
    SyntheticConfig,
    make_synthetic_dataset,
    synthetic_families,
    synthetic_mismatch,
)
from .veri776 import VeRi776

__all__ = [
    "DATASETS",
    "DatasetError",
    "DatasetLayoutError",
    "DatasetWithdrawnError",
    "FolderDataset",
    "ImageRecord",
    "MSMT17",
    "Market1501",
    "ReIDDataset",
    "SplitStats",
    "SyntheticConfig",
    "SyntheticReID",
    "VeRi776",
    "canonical_dataset_name",
    "dataset_names",
    "load_dataset",
    "make_synthetic_dataset",
    "synthetic_families",
    "synthetic_mismatch",
]

#: Registry of layouts by name.
DATASETS: dict[str, type] = {
    "market1501": Market1501,
    "msmt17": MSMT17,
    "veri776": VeRi776,
    "folder": FolderDataset,
    "synthetic": SyntheticReID,
}

_ALIASES = {"market": "market1501", "msmt": "msmt17", "veri": "veri776", "custom": "folder"}

_WITHDRAWN = {
    "dukemtmc": "DukeMTMC-reID",
    "dukemtmcreid": "DukeMTMC-reID",
    "duke": "DukeMTMC-reID",
}


class DatasetWithdrawnError(DatasetError):
    """The dataset was withdrawn by its creators; this toolkit does not load it."""


def _normalise(name: str) -> str:
    key = name.lower().replace("-", "").replace("_", "").replace(" ", "")
    return _ALIASES.get(key, key)


def canonical_dataset_name(name: str) -> str | None:
    """The :func:`load_dataset` layout ``name`` stands for (case, ``-``, ``_`` and the aliases
    ``market``, ``msmt``, ``veri``, ``custom`` accepted), or None for an unknown name."""
    key = _normalise(name)
    return key if key in DATASETS else None


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset` (aliases aside)."""
    return list(DATASETS)


def load_dataset(name: str, root: str | os.PathLike[str], **options: Any) -> ReIDDataset:
    """Load a dataset by layout name from the folder ``root``.

    Args:
        name: ``"market1501"``, ``"msmt17"``, ``"veri776"``, ``"folder"`` or ``"synthetic"``
            (case, ``-`` and ``_`` are ignored; ``"market"``, ``"msmt"``, ``"veri"`` also work).
        root: the dataset folder (or its parent, for the official archive folder names).
        **options: layout options, e.g. ``include_val=False`` (msmt17) or
            ``camera_pattern=...`` (folder).

    Returns:
        A :class:`ReIDDataset`.

    Raises:
        DatasetWithdrawnError: for DukeMTMC-reID.
        DatasetLayoutError: when ``root`` does not hold the layout (the message shows it).
        DatasetError: unparsable names, missing listed files, empty splits.
        ValueError: an unknown name.
    """
    key = _normalise(name)
    if key in _WITHDRAWN:
        raise DatasetWithdrawnError(
            f"{_WITHDRAWN[key]} was withdrawn by its creators in 2019 for ethical reasons (its "
            "people were recorded without informed consent) and this toolkit does not load it. "
            "Use market1501, msmt17 or veri776, or your own data with the 'folder' layout."
        )
    if key not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} "
            "(use 'folder' for your own data)"
        )
    return DATASETS[key](root, **options).load()
