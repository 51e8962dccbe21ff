"""``--config NAME``: the YAML file of a config given by name, in the installed package's
``configs/`` (the repository's ``configs/``, shipped in the wheel; in an editable install from
a checkout, the checkout's ``configs/``) or ``./configs``.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from .schema import ConfigError

__all__ = ["PACKAGE_CONFIGS", "available_configs", "config_dirs", "find_config"]

#: The configs shipped with the package, ``reid_train/configs`` (the repository's ``configs/``,
#: put into the wheel).
PACKAGE_CONFIGS = Path(__file__).resolve().parents[1] / "configs"

_YAML = (".yaml", ".yml")


def _checkout_configs() -> Path | None:
    """The repository's ``configs/`` when this module runs from a checkout's
    ``packages/reid-train/src/`` (an editable install, which has no packaged copy)."""
    src = Path(__file__).resolve().parents[2]
    if src.name != "src" or src.parent.parent.name != "packages":
        return None
    folder = src.parents[2] / "configs"
    return folder if folder.is_dir() else None


def config_dirs() -> list[Path]:
    """Where :func:`find_config` looks for a config given by name: the installed package's
    ``configs/`` (in an editable install: the checkout's), then ``./configs``."""
    packaged = PACKAGE_CONFIGS if PACKAGE_CONFIGS.is_dir() else _checkout_configs()
    return [packaged or PACKAGE_CONFIGS, Path("configs")]


def find_config(name_or_path: str | os.PathLike[str]) -> Path:
    """The YAML file of ``--config``: an existing path as it is, or a config found by name.

    A name such as ``pplr_market1501`` (``.yaml`` optional, no folder) is looked up in
    :func:`config_dirs`: the installed package's ``configs/`` first, then ``./configs``.

    Raises:
        ConfigError: a bare name found nowhere (the message lists the available names and the
            closest ones).
        FileNotFoundError: a path (with a folder) that does not exist.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    text = str(name_or_path)
    if path.is_absolute() or len(path.parts) != 1 or "/" in text or os.sep in text:
        raise FileNotFoundError(f"config file '{path}' does not exist")
    stem = path.stem if path.suffix in _YAML else path.name
    for folder in config_dirs():
        for candidate in (folder / f"{stem}.yaml", folder / f"{stem}.yml"):
            if candidate.is_file():
                return candidate
    names = available_configs()
    close = difflib.get_close_matches(stem, names, n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    where = " or ".join(f"'{d}'" for d in config_dirs())
    raise ConfigError(
        f"--config {text!r} is neither a file nor the name of a config in {where}{hint}. "
        f"Available names: {', '.join(names) or 'none (no configs folder found)'}"
    )


def available_configs() -> list[str]:
    """The names :func:`find_config` accepts (the ``*.yaml`` of :func:`config_dirs`, bases
    aside), sorted."""
    return sorted(
        {p.stem for d in config_dirs() if d.is_dir() for p in d.iterdir() if p.suffix in _YAML}
    )
