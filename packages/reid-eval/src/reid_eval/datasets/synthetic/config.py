"""What fixes the synthetic dataset: :class:`SyntheticConfig` and its validation, the file layout
(``SPLIT_FOLDERS``, ``METADATA_FILE``), the generator version, and how random streams are keyed.

Every random number of the generator comes from a stream ``_rng(seed, role, ...)``; the role
numbers below are part of the output's definition and never change.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Version of the drawing procedure; bump it whenever the same seed would give other images.
GENERATOR_VERSION = "reid-synthetic-1.0"

#: The metadata file written next to the image folders.
METADATA_FILE = "synthetic.json"

#: The three Market-1501 image folders, in the order train, query, gallery.
SPLIT_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")

# Roles of random streams (part of every SeedSequence spawn key; never change these numbers).
_ROLE_CAMERA = 1
_ROLE_FAMILY = 2
_ROLE_TRACK = 3
_ROLE_IMAGE = 4
_ROLE_DISTRACTOR = 5
_ROLE_JUNK = 6
_SPLIT_CODE = {"train": 0, "test": 1}


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream for ``(seed, *key)``."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=key))


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, (float, np.floating)) and math.isfinite(value))


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and difficulty of the synthetic dataset. Every field has a default.

    Attributes:
        num_train_ids: training identities (pids ``1..num_train_ids``).
        num_test_ids: test identities (pids ``num_train_ids + 1 ..``).
        num_cameras: cameras, 2..9 (Market-1501 file names hold one camera digit).
        height: image height in pixels.
        width: image width in pixels.
        family_size: identities per family; a family shares its global colours and its members
            differ from the first member in one part. 1 disables families.
        family_frac: fraction of the identities (of each split) that belong to families of
            ``family_size``; the others are families of one, with no look-alike. 1.0 puts
            every identity in a family.
        images_per_camera: inclusive range of images per (identity, camera). Test identities get
            at least 2 images in at least 2 of their cameras so every query has a cross-camera
            gallery match.
        cameras_per_id: inclusive range of cameras an identity appears in; the lower bound is at
            least 2, the upper bound is clipped to ``num_cameras``.
        num_distractors: pid 0 images in the gallery.
        num_junk: pid -1 images in the gallery.
        occlusion_prob: probability that an image gets an occluder.
        jpeg_quality: JPEG quality, 1..100.
        noise_std: mean standard deviation of the Gaussian sensor noise (0..255 scale); each
            camera scales it by 0.5..1.5.
        blur_prob: mean probability that an image is blurred; each camera scales it.
        lookalike_frac: fraction of distractors that copy a test identity and change one part.
        partial_frac: fraction of distractors that show only the upper or lower half of a body.
        render_scale: supersampling factor (draw at ``render_scale`` times the size, then
            downsample), 1..4.
    """

    num_train_ids: int = 200
    num_test_ids: int = 100
    num_cameras: int = 6
    height: int = 128
    width: int = 64
    family_size: int = 2
    family_frac: float = 0.3
    images_per_camera: tuple[int, int] = (3, 5)
    cameras_per_id: tuple[int, int] = (2, 4)
    num_distractors: int = 200
    num_junk: int = 40
    occlusion_prob: float = 0.1
    jpeg_quality: int = 95
    noise_std: float = 1.0
    blur_prob: float = 0.1
    lookalike_frac: float = 0.3
    partial_frac: float = 0.2
    render_scale: int = 2

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> ValueError:
            return ValueError(
                f"SyntheticConfig.{name} must be {allowed}, got {getattr(self, name)!r}"
            )

        def check_int(name: str, lo: int, hi: int) -> None:
            value = getattr(self, name)
            if not _is_int(value) or not lo <= value <= hi:
                raise bad(name, f"an integer in [{lo}, {hi}]")
            object.__setattr__(self, name, int(value))

        def check_real(name: str, lo: float, hi: float) -> None:
            value = getattr(self, name)
            if not _is_real(value) or not lo <= value <= hi:
                raise bad(name, f"a number in [{lo}, {hi}]")
            object.__setattr__(self, name, float(value))

        def check_pair(name: str, lo: int, hi: int) -> None:
            value = getattr(self, name)
            allowed = f"a pair (low, high) of integers with {lo} <= low <= high <= {hi}"
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise bad(name, allowed)
            a, b = value
            if not (_is_int(a) and _is_int(b) and lo <= a <= b <= hi):
                raise bad(name, allowed)
            object.__setattr__(self, name, (int(a), int(b)))

        check_int("num_train_ids", 1, 1_000_000)
        check_int("num_test_ids", 1, 1_000_000)
        check_int("num_cameras", 2, 9)
        check_int("height", 32, 2048)
        check_int("width", 16, 2048)
        check_int("family_size", 1, 64)
        check_pair("images_per_camera", 1, 1000)
        check_pair("cameras_per_id", 2, 1000)
        if self.cameras_per_id[0] > self.num_cameras:
            raise bad(
                "cameras_per_id",
                f"a pair whose low bound is <= num_cameras ({self.num_cameras}) and >= 2",
            )
        check_int("num_distractors", 0, 10_000_000)
        check_int("num_junk", 0, 10_000_000)
        check_real("occlusion_prob", 0.0, 1.0)
        check_int("jpeg_quality", 1, 100)
        check_real("noise_std", 0.0, 50.0)
        check_real("blur_prob", 0.0, 1.0)
        check_real("lookalike_frac", 0.0, 1.0)
        check_real("family_frac", 0.0, 1.0)
        check_real("partial_frac", 0.0, 1.0)
        if self.lookalike_frac + self.partial_frac > 1.0:
            raise bad("partial_frac", f"at most 1 - lookalike_frac = {1 - self.lookalike_frac}")
        check_int("render_scale", 1, 4)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-friendly dict (pairs become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
