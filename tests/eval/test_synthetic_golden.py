"""Golden digests of the synthetic generator's output (reid_eval.datasets.synthetic).

``test_same_seed_gives_identical_bytes`` compares two runs of the current code, so a change
that moves pixels (a refactor that draws random numbers in another order, say) would still pass
it. These tests compare with SHA-256 digests pinned from the generator as it was, for two small
configurations: the default one, and the earlier harder one (families of 4, occlusion 0.3,
noise 3, blur 0.25).

What is pinned, and why:

* ``rendered`` (always checked): every finished image *before JPEG encoding* (its file name,
  mode, size and raw RGB bytes, handed over by the internal ``generate._generate``) plus the
  content of ``synthetic.json`` without ``pillow_version`` and ``numpy_version``. It does not
  depend on the JPEG encoder, so it holds on any machine whose Pillow draws and resamples like
  the pinned one and whose NumPy gives the same random streams. When it differs and Pillow or
  NumPy is another version than the pinned one, the test skips (the difference may be the
  library's, not the generator's); with the pinned versions (constraints.txt) it fails.
* ``files`` (checked only with the pinned Pillow and libjpeg): the JPEG files
  ``make_synthetic_dataset`` writes, byte for byte, plus the same ``synthetic.json`` content.
  JPEG bytes, and the pixels decoded from them, depend on the libjpeg(-turbo) that Pillow was
  built with, so a digest of the files (or of the decoded pixels) cannot be pinned across
  machines; elsewhere this test skips.

A deliberate change of the drawing bumps ``GENERATOR_VERSION`` and re-pins the digests: run
``python tests/eval/test_synthetic_golden.py`` and copy its output here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import pytest
from PIL import Image, features

from reid_eval.datasets.synthetic import (
    METADATA_FILE,
    SPLIT_FOLDERS,
    SyntheticConfig,
    make_synthetic_dataset,
)
from reid_eval.datasets.synthetic.generate import _generate

#: The library versions the digests were computed with (constraints.txt).
PINNED_PILLOW = "13.0.0"
PINNED_NUMPY = "2.4.6"
PINNED_LIBJPEG_TURBO = "3.2.0"

#: metadata fields that name library versions, left out of the digests
VERSION_FIELDS = ("pillow_version", "numpy_version")

CASES: dict[str, tuple[int, SyntheticConfig]] = {
    "default": (0, SyntheticConfig(num_train_ids=6, num_test_ids=6, num_distractors=5, num_junk=3)),
    "earlier_harder": (
        1,
        SyntheticConfig(
            num_train_ids=6,
            num_test_ids=6,
            num_cameras=3,
            family_size=4,
            family_frac=1.0,
            images_per_camera=(1, 3),
            num_distractors=5,
            num_junk=3,
            occlusion_prob=0.3,
            noise_std=3.0,
            blur_prob=0.25,
        ),
    ),
}

#: case -> (rendered digest, file digest); computed with the flat synthetic.py before it became
#: a subpackage (reid-eval 0.3.0).
GOLDEN: dict[str, tuple[str, str]] = {
    "default": (
        "8b35173c3bd6b4c6ce095cf673f9328bd82f955cde537802a873ae78ba7c69df",
        "f351258d27eae0802a4571b612b9a501bc54cb458a2bcff0cd85ab8b3f3a9696",
    ),
    "earlier_harder": (
        "de0873161af88a170da3ff50829b35e3237a260e9c804eb3f46e80ec97f83c42",
        "47714f69112ab868e3a1e8ead258abb1861a93a225cb6c23565c8d354775b8c3",
    ),
}


def _digest(items: Iterable[tuple[str, bytes]]) -> str:
    """SHA-256 over (name, bytes) pairs sorted by name, each length-prefixed."""
    h = hashlib.sha256()
    for name, data in sorted(items):
        h.update(name.encode())
        h.update(b"\0")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _metadata_bytes(meta: dict[str, Any]) -> bytes:
    """``synthetic.json``'s content without the library versions, as the generator lays it out."""
    kept = {k: v for k, v in meta.items() if k not in VERSION_FIELDS}
    return json.dumps(kept, indent=1, sort_keys=True).encode()


def _rendered_digest(seed: int, config: SyntheticConfig) -> str:
    items: list[tuple[str, bytes]] = []

    def keep(folder: str, name: str, img: Image.Image) -> None:
        head = f"{img.mode} {img.size[0]}x{img.size[1]}\n".encode()
        items.append((f"{folder}/{name}", head + img.tobytes()))

    meta = _generate(seed, config, keep)
    return _digest([*items, (METADATA_FILE, _metadata_bytes(meta))])


def _files_digest(root: Path) -> str:
    meta = json.loads((root / METADATA_FILE).read_text(encoding="utf-8"))
    items = [
        (f"{folder}/{p.name}", p.read_bytes())
        for folder in SPLIT_FOLDERS
        for p in (root / folder).iterdir()
    ]
    return _digest([*items, (METADATA_FILE, _metadata_bytes(meta))])


def _versions() -> str:
    return f"Pillow {PIL.__version__}, NumPy {np.__version__}"


@pytest.mark.parametrize("case", list(CASES))
def test_rendered_images_and_metadata_match_the_golden_digest(case: str) -> None:
    seed, config = CASES[case]
    got = _rendered_digest(seed, config)
    if got == GOLDEN[case][0]:
        return
    if (PIL.__version__, np.__version__) != (PINNED_PILLOW, PINNED_NUMPY):
        pytest.skip(
            f"the rendered images differ from the golden digest, which was pinned with Pillow "
            f"{PINNED_PILLOW} and NumPy {PINNED_NUMPY}; this is {_versions()}, whose drawing or "
            "random streams may differ. Run with the versions of constraints.txt to check."
        )
    pytest.fail(
        f"{case}: the generator's images or metadata changed (digest {got}, pinned "
        f"{GOLDEN[case][0]}, {_versions()}). A refactor must keep every random draw and "
        "drawing step; a deliberate change bumps GENERATOR_VERSION and re-pins (module docstring)."
    )


@pytest.mark.parametrize("case", list(CASES))
def test_written_files_match_the_golden_digest(case: str, tmp_path: Path) -> None:
    libjpeg = features.version("libjpeg_turbo")
    if (PIL.__version__, libjpeg) != (PINNED_PILLOW, PINNED_LIBJPEG_TURBO):
        pytest.skip(
            f"JPEG bytes depend on the encoder: the file digest was pinned with Pillow "
            f"{PINNED_PILLOW} and libjpeg-turbo {PINNED_LIBJPEG_TURBO}, this is Pillow "
            f"{PIL.__version__} with libjpeg-turbo {libjpeg} (the rendered-image digest still "
            "applies)"
        )
    seed, config = CASES[case]
    root = make_synthetic_dataset(tmp_path / "data", seed=seed, config=config)
    assert _files_digest(root) == GOLDEN[case][1], (
        f"{case}: the written dataset changed although the encoder is the pinned one"
    )


if __name__ == "__main__":  # print the digests of the current code, to re-pin GOLDEN
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name, (seed, config) in CASES.items():
            root = make_synthetic_dataset(Path(tmp) / name, seed=seed, config=config)
            print(f'"{name}": ("{_rendered_digest(seed, config)}", "{_files_digest(root)}"),')
    print(f"# {_versions()}, libjpeg-turbo {features.version('libjpeg_turbo')}")
