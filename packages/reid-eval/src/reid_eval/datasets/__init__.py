"""Dataset layouts: Market-1501, MSMT17, VeRi-776, your own folders (labelled, or unlabelled
training images), and the synthetic dataset; :func:`register_dataset` adds one.

``load_dataset(name, root)`` returns a :class:`ReIDDataset` with ``.train``, ``.query`` and
``.gallery``: lists of :class:`ImageRecord` ``(path, pid, camid)`` with 0-based cameras.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from .base import (
    UNLABELLED,
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
from .unlabelled import UnlabelledFolder
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
    "UNLABELLED",
    "UnlabelledFolder",
    "VeRi776",
    "canonical_dataset_name",
    "dataset_names",
    "load_dataset",
    "make_synthetic_dataset",
    "register_dataset",
    "synthetic_families",
    "synthetic_mismatch",
]

#: Registry of layouts by name: a loader ``(root, **options)`` returning a :class:`ReIDDataset`,
#: or a class like the built-in ones whose instance's ``load()`` returns one.
DATASETS: dict[str, Callable[..., Any]] = {
    "market1501": Market1501,
    "msmt17": MSMT17,
    "veri776": VeRi776,
    "folder": FolderDataset,
    "unlabelled": UnlabelledFolder,
    "synthetic": SyntheticReID,
}

_BUILTIN = frozenset(DATASETS)

_ALIASES = {
    "market": "market1501",
    "msmt": "msmt17",
    "veri": "veri776",
    "custom": "folder",
    "unlabeled": "unlabelled",
}

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
    ``market``, ``msmt``, ``veri``, ``custom``, ``unlabeled`` accepted), or None for an unknown
    name."""
    key = _normalise(name)
    return key if key in DATASETS else None


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset` (aliases aside), the registered ones included."""
    return list(DATASETS)


def register_dataset(name: str, loader: Callable[..., Any], *, replace: bool = False) -> str:
    """Add a layout of your own: ``load_dataset(name, root, **options)`` then calls
    ``loader(root, **options)``, and :func:`dataset_names` lists it.

    Example::

        def load_my_cameras(root, day="monday"):
            ...                                    # scan root, build ImageRecord lists
            return ReIDDataset("mycameras", Path(root), train, query, gallery)

        register_dataset("mycameras", load_my_cameras)
        ds = load_dataset("mycameras", "/data/cams", day="tuesday")

    Args:
        name: letters and digits (``-`` and ``_`` allowed; like every layout name it is matched
            ignoring case, ``-`` and ``_``).
        loader: called as ``loader(root, **options)``; it returns a :class:`ReIDDataset`, or an
            object whose ``load()`` returns one (a class like :class:`FolderDataset`).
        replace: allow replacing a layout registered earlier by this function (e.g. a notebook
            cell run twice); the built-in names can never be replaced.

    Returns:
        The registered name, as :func:`dataset_names` lists it.

    Raises:
        TypeError: ``loader`` is not callable or ``name`` not a string.
        ValueError: ``name`` is empty or holds other characters, or is taken (by a built-in
            layout, an alias, a withdrawn dataset, or, without ``replace``, an earlier
            registration).

    The registry lives in the process: a training run started from the shell (``reid-train``)
    knows a registered layout only when the registration runs in that process, e.g. in a script
    that calls :func:`reid_train.engine.train`.
    """
    if not isinstance(name, str):
        raise TypeError(f"a dataset name must be a string, got {type(name).__name__}")
    if not callable(loader):
        raise TypeError(
            f"the loader of dataset {name!r} must be callable (a function or class taking "
            f"(root, **options)), got {type(loader).__name__} {loader!r}"
        )
    key = _normalise(name)
    if not re.fullmatch(r"[a-z0-9]+", key):
        raise ValueError(
            f"dataset name {name!r} must hold letters and digits (with '-' or '_' if you like)"
        )
    if key in _BUILTIN or key in _ALIASES or key in _WITHDRAWN:
        taken = (
            f"the withdrawn dataset {_WITHDRAWN[key]}"
            if key in _WITHDRAWN
            else f"the built-in layout '{_normalise(key)}'"
        )
        raise ValueError(
            f"dataset name {name!r} is already taken by {taken}; choose another name "
            f"(taken: {', '.join(dataset_names())} and their aliases)"
        )
    if key in DATASETS and not replace:
        raise ValueError(
            f"dataset name {name!r} is already registered (loader {DATASETS[key]!r}); pass "
            "replace=True to replace it, or choose another name"
        )
    DATASETS[key] = loader
    return key


def load_dataset(name: str, root: str | os.PathLike[str], **options: Any) -> ReIDDataset:
    """Load a dataset by layout name from the folder ``root``.

    Args:
        name: ``"market1501"``, ``"msmt17"``, ``"veri776"``, ``"folder"``, ``"unlabelled"``,
            ``"synthetic"`` or a name added by :func:`register_dataset` (case, ``-`` and ``_``
            are ignored; ``"market"``, ``"msmt"``, ``"veri"``, ``"unlabeled"`` also work).
        root: the dataset folder (or its parent, for the official archive folder names).
        **options: layout options, e.g. ``include_val=False`` (msmt17),
            ``camera_pattern=...`` (folder, unlabelled) or ``train_cameras="folders"``
            (unlabelled).

    Returns:
        A :class:`ReIDDataset`.

    Raises:
        DatasetWithdrawnError: for DukeMTMC-reID.
        DatasetLayoutError: when ``root`` does not hold the layout (the message shows it).
        DatasetError: unparsable names, missing listed files, empty splits.
        ValueError: an unknown name.
        TypeError: a registered loader returned something else than a :class:`ReIDDataset`.
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
            "(use 'folder' or 'unlabelled' for your own data)"
        )
    loaded = DATASETS[key](root, **options)
    if not isinstance(loaded, ReIDDataset) and callable(getattr(loaded, "load", None)):
        loaded = loaded.load()
    if not isinstance(loaded, ReIDDataset):
        raise TypeError(
            f"the loader of dataset {key!r} ({DATASETS[key]!r}) returned "
            f"{type(loaded).__name__}, not a ReIDDataset (or an object whose load() returns one)"
        )
    return loaded
