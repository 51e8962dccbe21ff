"""Helpers shared by the tests."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

from PIL import Image


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 16), (120, 60, 30)).save(buf, format="JPEG")
    return buf.getvalue()


_JPEG = _jpeg_bytes()


def write_images(folder: Path, names: Iterable[str]) -> list[Path]:
    """Create ``folder`` and a small valid JPEG for each relative name in it."""
    paths = []
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_JPEG)
        paths.append(path)
    return paths
