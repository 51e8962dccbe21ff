"""Build hook (hatchling): ship the repository's training configs in the wheel.

The configs live at the repository root (``configs/`` with ``configs/_base/``), outside this
project. They are force-included as ``reid_train/configs`` in the wheel, and as ``configs/`` in
the sdist so that a wheel built from the sdist finds them there (a static ``force-include`` of
``../../configs`` would fail in that case: hatchling refuses a forced path that does not exist).
Editable installs get nothing: ``reid_train.config.find_config`` then reads ``./configs``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: Where the configs go, per build target.
TARGETS = {"wheel": "reid_train/configs", "sdist": "configs"}


def configs_include(root: str | Path, target: str, version: str) -> dict[str, str]:
    """The ``force_include`` mapping (source folder -> path in the archive) for ``target``
    (``wheel`` or ``sdist``) and ``version`` (``standard``, ``editable``) built in ``root``."""
    if version == "editable" or target not in TARGETS:
        return {}
    root = Path(root).resolve()
    shipped, checkout = root / "configs", root.parent.parent / "configs"  # sdist, repository
    source = shipped if shipped.is_dir() else checkout
    if not (source / "_base").is_dir():
        raise FileNotFoundError(
            f"the training configs were not found: neither '{shipped}' (an sdist) nor "
            f"'{checkout}' (a checkout of the repository) holds configs/_base/"
        )
    return {str(source): TARGETS[target]}


class ConfigsBuildHook(BuildHookInterface):
    """Adds :func:`configs_include` to the build's ``force_include``."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        build_data["force_include"].update(configs_include(self.root, self.target_name, version))
