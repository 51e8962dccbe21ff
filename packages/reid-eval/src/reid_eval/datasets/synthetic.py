"""Deterministic synthetic person re-ID dataset, written in the Market-1501 layout.

No real re-ID dataset can be downloaded everywhere, so the project draws one. It is the default
dataset of the demo and the fixture of the end-to-end tests, and it is built to be a real re-ID
problem rather than noise:

* **People made of parts.** Every identity is a body of parts: head (skin tone, hair colour and
  style), optional hat (cap, beanie), upper clothing (colour, sleeves, texture: plain, horizontal
  or vertical stripes, checks, chest logo, two-tone, open jacket), lower clothing (trousers,
  shorts or skirt), shoes, optional bag (backpack, shoulder bag or hand bag, on the left or the
  right) and a build (height, width).
* **Families of look-alikes.** Identities are drawn in families of ``family_size``: a family
  shares skin, build and the colours of upper and lower clothing, and each member differs from
  the family's first member in one part only (hair, hat, upper texture, lower garment, shoes or
  bag). Global colour statistics cannot tell family members apart; local part evidence can, which
  is what part-based label refinement is for. ``synthetic.json`` records every identity's family,
  its varied part and its attributes.
* **Cameras that disagree.** Each camera has its own colour cast, brightness, contrast and
  saturation, lighting gradient, background (wall and floor, tiles, street, park or shop fronts,
  with clutter), viewpoint (person scale and position, how often people are seen from the front,
  the back or the side), noise level and blur rate. Back views hide the face, the chest logo and
  the jacket opening and show the backpack; side views narrow the body.
* **Per-image nuisance.** Walking direction (horizontal flip), pose jitter (arm swing, stride,
  lean), bounding-box misalignment (shift, scale, sometimes cutting off head or feet), sensor
  noise, blur and, with ``occlusion_prob``, an occluder over a part of the body: a pole, a vehicle
  over the legs, a sign board, or another pedestrian in front.
* **Gallery clutter.** Distractors (pid 0) are people that are no identity: fresh attribute draws,
  look-alikes that copy a test identity and change one part, and partial bodies. Junk images
  (pid -1) are bad detections: mostly background, tiny far-away people, or zoomed fragments.

Splits follow Market-1501: ``bounding_box_train/`` holds the training identities, ``query/``
holds exactly one image per (test identity, camera it appears in), and ``bounding_box_test/``
holds the remaining test images plus distractors and junk. Every test identity has gallery images
in at least two cameras, so every query has a true match from another camera. Train and test
identities (and whole families) are disjoint.

The default :class:`SyntheticConfig` is the target of the project's synthetic proxy for
unsupervised re-ID (docs/benchmarks.md, "The synthetic proxy"): 100 + 100 identities, 30 % of
them in look-alike pairs, 3-5 images per camera in 2-4 of 6 cameras, occlusion 0.1, sensor
noise 1, blur 0.1, 200 distractors and 40 junk images. It writes about 1,190 training images,
300 queries and 1,120 gallery images of 64 x 128 pixels in about 15 s on one CPU core; time
grows linearly with the number of images. The earlier defaults were a harder setting: every
identity in a family of 4, 2-4 images per camera, occlusion 0.3, noise 3 and blur 0.25, i.e.
``SyntheticConfig(family_size=4, family_frac=1.0, images_per_camera=(2, 4),
occlusion_prob=0.3, noise_std=3.0, blur_prob=0.25)``. There a mean-colour-of-stripes baseline
reaches only about 10 % rank-1, and its top match is from the right family about half of the
time.

Generation is deterministic: the same ``seed`` and configuration give byte-identical files for a
given Pillow/libjpeg. Random streams are derived with :class:`numpy.random.SeedSequence` from
``(seed, role, split, identity, camera, image)``, so training images do not change when only the
test side of the configuration (``num_test_ids``, distractors, junk) changes.

Example::

    from reid_eval.datasets.synthetic import SyntheticConfig, make_synthetic_dataset
    root = make_synthetic_dataset("data/synthetic", seed=0)
    small = make_synthetic_dataset("/tmp/tiny", config=SyntheticConfig(num_train_ids=8,
                                   num_test_ids=8, num_cameras=3), overwrite=True)
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from PIL import __version__ as _PILLOW_VERSION

__all__ = [
    "GENERATOR_VERSION",
    "METADATA_FILE",
    "SPLIT_FOLDERS",
    "SyntheticConfig",
    "make_synthetic_dataset",
    "synthetic_families",
]

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

RGB = tuple[int, int, int]


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


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

    num_train_ids: int = 100
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


# --------------------------------------------------------------------------------------------
# Attributes: palettes, families, mutations
# --------------------------------------------------------------------------------------------

# name -> (RGB, weight for upper clothing, weight for lower clothing, weight for shoes)
_CLOTH: dict[str, tuple[RGB, float, float, float]] = {
    "black": ((28, 28, 32), 3.0, 4.0, 4.0),
    "charcoal": ((70, 70, 76), 1.5, 2.0, 1.0),
    "grey": ((128, 128, 132), 1.5, 1.5, 1.5),
    "light_grey": ((185, 185, 188), 1.0, 1.0, 1.0),
    "white": ((232, 232, 228), 2.5, 0.7, 3.0),
    "navy": ((30, 40, 92), 1.5, 2.0, 0.8),
    "denim": ((66, 96, 142), 0.6, 3.0, 0.0),
    "blue": ((40, 84, 175), 1.5, 0.8, 0.8),
    "sky": ((115, 165, 222), 1.0, 0.5, 0.0),
    "teal": ((20, 120, 122), 0.8, 0.3, 0.0),
    "green": ((40, 122, 52), 1.0, 0.4, 0.0),
    "olive": ((102, 110, 50), 0.8, 1.0, 0.3),
    "khaki": ((182, 165, 118), 0.6, 1.5, 0.0),
    "beige": ((215, 200, 165), 0.8, 1.0, 0.6),
    "brown": ((102, 66, 40), 0.8, 1.0, 2.0),
    "red": ((185, 30, 38), 1.5, 0.3, 1.0),
    "maroon": ((112, 26, 42), 0.8, 0.4, 0.0),
    "orange": ((222, 122, 32), 0.8, 0.2, 0.0),
    "yellow": ((228, 202, 52), 0.8, 0.2, 0.3),
    "pink": ((226, 142, 172), 0.8, 0.3, 0.3),
    "purple": ((102, 52, 132), 0.8, 0.2, 0.0),
}
_SKIN: tuple[RGB, ...] = (
    (252, 222, 196),
    (238, 198, 164),
    (222, 178, 140),
    (196, 144, 104),
    (158, 108, 74),
    (110, 74, 50),
)
_HAIR: dict[str, RGB] = {
    "black": (24, 21, 20),
    "dark_brown": (58, 40, 28),
    "brown": (108, 74, 44),
    "blonde": (206, 172, 102),
    "grey": (160, 158, 154),
    "auburn": (132, 56, 30),
}
_HAIR_WEIGHTS = (4.0, 3.0, 1.5, 1.0, 0.6, 0.6)
_HAIR_STYLES = ("short", "long", "buzz", "ponytail", "bun", "curly")
_HAIR_STYLE_WEIGHTS = (3.0, 2.0, 1.0, 1.0, 0.7, 0.8)
_TEXTURES = ("plain", "h_stripes", "v_stripes", "checks", "logo", "two_tone", "jacket")
_TEXTURE_WEIGHTS = (3.0, 1.2, 0.8, 0.8, 1.0, 0.8, 1.0)
_LOWER_TYPES = ("trousers", "shorts", "skirt")
_LOWER_WEIGHTS = (6.0, 1.5, 1.2)
_HAT_TYPES = ("none", "cap", "beanie")
_HAT_WEIGHTS = (6.0, 1.5, 1.0)
_BAG_TYPES = ("none", "backpack", "shoulder", "handbag")
_BAG_WEIGHTS = (4.0, 2.5, 1.5, 1.0)

#: The parts a family member may change, and the attribute group each one lives in.
_MUTABLE_PARTS: dict[str, str] = {
    "hair": "head",
    "hat": "hat",
    "upper_texture": "upper",
    "lower": "lower",
    "shoes": "shoes",
    "bag": "bag",
}
_PART_GROUPS = ("head", "hat", "upper", "lower", "shoes", "bag", "build")

Attributes = dict[str, dict[str, Any]]


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream for ``(seed, *key)``."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=key))


def _choice(rng: np.random.Generator, items: Sequence[str], weights: Sequence[float]) -> str:
    w = np.asarray(weights, dtype=float)
    return items[int(rng.choice(len(items), p=w / w.sum()))]


def _jitter(rng: np.random.Generator, rgb: Sequence[int], sd: float = 7.0) -> list[int]:
    out = np.clip(np.asarray(rgb, dtype=float) + rng.normal(0.0, sd, 3), 0, 255)
    return [int(round(v)) for v in out]


def _dist(a: Sequence[int], b: Sequence[int]) -> float:
    return float(np.linalg.norm(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)))


def _pick_cloth(
    rng: np.random.Generator,
    column: int,
    *,
    far_from: Sequence[Sequence[int]] = (),
    min_dist: float = 0.0,
) -> tuple[str, list[int]]:
    """A clothing colour (name, jittered RGB) drawn by the weights in ``column`` (1..3)."""
    names = [n for n, v in _CLOTH.items() if v[column] > 0]
    ok = [n for n in names if all(_dist(_CLOTH[n][0], f) >= min_dist for f in far_from)]
    names = ok or names
    name = _choice(rng, names, [_CLOTH[n][column] for n in names])
    return name, _jitter(rng, _CLOTH[name][0])


def _draw_head(rng: np.random.Generator) -> dict[str, Any]:
    hair = _choice(rng, list(_HAIR), _HAIR_WEIGHTS)
    return {
        "skin": _jitter(rng, _SKIN[int(rng.integers(len(_SKIN)))], 5.0),
        "hair_style": _choice(rng, _HAIR_STYLES, _HAIR_STYLE_WEIGHTS),
        "hair_colour_name": hair,
        "hair_colour": _jitter(rng, _HAIR[hair], 5.0),
    }


def _draw_hat(rng: np.random.Generator, exclude: str | None = None) -> dict[str, Any]:
    types = [t for t in _HAT_TYPES if t != exclude]
    kind = _choice(rng, types, [_HAT_WEIGHTS[_HAT_TYPES.index(t)] for t in types])
    if kind == "none":
        return {"type": "none", "colour_name": None, "colour": None}
    name, rgb = _pick_cloth(rng, 1)
    return {"type": kind, "colour_name": name, "colour": rgb}


def _draw_bag(rng: np.random.Generator, exclude: str | None = None) -> dict[str, Any]:
    types = [t for t in _BAG_TYPES if t != exclude]
    kind = _choice(rng, types, [_BAG_WEIGHTS[_BAG_TYPES.index(t)] for t in types])
    if kind == "none":
        return {"type": "none", "side": None, "colour_name": None, "colour": None}
    name, rgb = _pick_cloth(rng, 3 if kind == "handbag" else 1)
    return {
        "type": kind,
        "side": "left" if rng.random() < 0.5 else "right",
        "colour_name": name,
        "colour": rgb,
    }


def _draw_attributes(rng: np.random.Generator) -> Attributes:
    """A random person (the first member of a family, or a distractor)."""
    upper_name, upper = _pick_cloth(rng, 1)
    sec_name, sec = _pick_cloth(rng, 1, far_from=[upper], min_dist=110.0)
    lower_name, lower = _pick_cloth(rng, 2)
    shoes_name, shoes = _pick_cloth(rng, 3)
    return {
        "head": _draw_head(rng),
        "hat": _draw_hat(rng),
        "upper": {
            "colour_name": upper_name,
            "colour": upper,
            "texture": _choice(rng, _TEXTURES, _TEXTURE_WEIGHTS),
            "secondary_name": sec_name,
            "secondary": sec,
            "sleeves": "short" if rng.random() < 0.35 else "long",
        },
        "lower": {
            "type": _choice(rng, _LOWER_TYPES, _LOWER_WEIGHTS),
            "colour_name": lower_name,
            "colour": lower,
        },
        "shoes": {"colour_name": shoes_name, "colour": shoes},
        "bag": _draw_bag(rng),
        "build": {
            "height": round(float(rng.uniform(0.93, 1.05)), 3),
            "width": round(float(rng.uniform(0.88, 1.14)), 3),
        },
    }


def _mutate(rng: np.random.Generator, base: Attributes, part: str) -> Attributes:
    """A copy of ``base`` that differs visibly in ``part`` (a key of ``_MUTABLE_PARTS``)."""
    out = json.loads(json.dumps(base))  # deep copy of plain data
    if part == "hair":
        head = out["head"]
        styles = [s for s in _HAIR_STYLES if s != head["hair_style"]]
        head["hair_style"] = _choice(
            rng, styles, [_HAIR_STYLE_WEIGHTS[_HAIR_STYLES.index(s)] for s in styles]
        )
        if rng.random() < 0.5:
            names = [n for n in _HAIR if _dist(_HAIR[n], _HAIR[head["hair_colour_name"]]) > 60]
            head["hair_colour_name"] = names[int(rng.integers(len(names)))]
            head["hair_colour"] = _jitter(rng, _HAIR[head["hair_colour_name"]], 5.0)
    elif part == "hat":
        out["hat"] = _draw_hat(rng, exclude=base["hat"]["type"])
    elif part == "upper_texture":
        up = out["upper"]
        tex = [t for t in _TEXTURES if t != up["texture"]]
        up["texture"] = _choice(rng, tex, [_TEXTURE_WEIGHTS[_TEXTURES.index(t)] for t in tex])
        if rng.random() < 0.5 or _dist(up["secondary"], up["colour"]) < 110:
            up["secondary_name"], up["secondary"] = _pick_cloth(
                rng, 1, far_from=[up["colour"], base["upper"]["secondary"]], min_dist=110.0
            )
    elif part == "lower":
        low = out["lower"]
        if rng.random() < 0.5:
            types = [t for t in _LOWER_TYPES if t != low["type"]]
            low["type"] = types[int(rng.integers(len(types)))]
        else:
            low["colour_name"], low["colour"] = _pick_cloth(
                rng, 2, far_from=[low["colour"]], min_dist=90.0
            )
    elif part == "shoes":
        out["shoes"]["colour_name"], out["shoes"]["colour"] = _pick_cloth(
            rng, 3, far_from=[base["shoes"]["colour"]], min_dist=100.0
        )
    elif part == "bag":
        bag = base["bag"]
        if bag["type"] != "none" and rng.random() < 0.5:
            # same kind of bag, other colour or other side
            new = dict(bag)
            if rng.random() < 0.5:
                new["colour_name"], new["colour"] = _pick_cloth(
                    rng, 1, far_from=[bag["colour"]], min_dist=100.0
                )
            else:
                new["side"] = "left" if bag["side"] == "right" else "right"
            out["bag"] = new
        else:
            out["bag"] = _draw_bag(rng, exclude=bag["type"])
    else:  # pragma: no cover - internal misuse
        raise KeyError(part)
    return out


def _make_family(rng: np.random.Generator, size: int) -> list[tuple[str | None, Attributes]]:
    """``size`` distinct identities: a base and one-part variants of it."""
    base = _draw_attributes(rng)
    order = [str(p) for p in rng.permutation(list(_MUTABLE_PARTS))]
    members: list[tuple[str | None, Attributes]] = [(None, base)]
    for m in range(1, size):
        part = order[(m - 1) % len(order)]
        for _ in range(50):
            cand = _mutate(rng, base, part)
            if all(cand != other for _, other in members):
                break
        members.append((part, cand))
    return members


# --------------------------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------------------------

_BG_STYLES = ("wall_floor", "tiles", "street", "park", "shops")


@dataclass
class _Camera:
    index: int  # 1-based
    gain: np.ndarray
    brightness: float
    contrast: float
    saturation: float
    light_grad: float
    bg_style: str
    wall: np.ndarray
    floor: np.ndarray
    accent: np.ndarray
    horizon: float
    period: float
    clutter: list[tuple[float, float, float, float, RGB]]
    scale: float
    y_shift: float
    view_p: tuple[float, float, float]  # front, back, side
    blur_factor: float
    noise_factor: float


def _muted(rng: np.random.Generator, lo: float, hi: float, sat: float) -> np.ndarray:
    grey = rng.uniform(lo, hi)
    tint = rng.normal(0.0, sat, 3)
    return np.clip(grey + tint, 0, 255)


def _make_cameras(seed: int, n: int) -> list[_Camera]:
    styles = [str(s) for s in _rng(seed, _ROLE_CAMERA, 0).permutation(_BG_STYLES)]
    views = [(0.6, 0.25, 0.15), (0.25, 0.6, 0.15), (0.3, 0.3, 0.4)]
    cams = []
    for c in range(1, n + 1):
        rng = _rng(seed, _ROLE_CAMERA, c)
        style = styles[(c - 1) % len(styles)]
        gain = 1.0 + rng.uniform(-0.13, 0.13, 3)
        gain /= gain.mean()
        wall = _muted(rng, 70, 200, 22)
        floor = _muted(rng, 60, 170, 12)
        accent = _muted(rng, 30, 220, 35)
        if style == "park":
            floor = np.array([70.0, 120.0, 55.0]) + rng.normal(0, 12, 3)
            wall = np.array([50.0, 90.0, 45.0]) + rng.normal(0, 12, 3)
        elif style == "street":
            floor = _muted(rng, 80, 120, 4)
        clutter = []
        for _ in range(int(rng.integers(2, 6))):
            clutter.append(
                (
                    float(rng.uniform(-0.2, 1.0)),
                    float(rng.uniform(0.05, 0.75)),
                    float(rng.uniform(0.08, 0.35)),
                    float(rng.uniform(0.06, 0.3)),
                    tuple(int(v) for v in _muted(rng, 40, 200, 30)),
                )
            )
        v = views[int(rng.integers(len(views)))]
        cams.append(
            _Camera(
                index=c,
                gain=gain,
                brightness=float(rng.uniform(0.8, 1.12)),
                contrast=float(rng.uniform(0.8, 1.1)),
                saturation=float(rng.uniform(0.7, 1.12)),
                light_grad=float(rng.uniform(-0.3, 0.3)),
                bg_style=style,
                wall=wall,
                floor=floor,
                accent=accent,
                horizon=float(rng.uniform(0.45, 0.8)),
                period=float(rng.uniform(0.2, 0.45)),
                clutter=clutter,
                scale=float(rng.uniform(0.78, 0.9)),
                y_shift=float(rng.uniform(-0.03, 0.03)),
                view_p=v,
                blur_factor=float(rng.uniform(0.3, 1.7)),
                noise_factor=float(rng.uniform(0.5, 1.5)),
            )
        )
    return cams


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    small = rng.normal(0.0, 1.0, (h // cell + 2, w // cell + 2)).astype(np.float32)
    img = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def _background(rng: np.random.Generator, cam: _Camera, h: int, w: int) -> Image.Image:
    """The camera's scene behind the person, with a per-image offset (RGB, ``w`` x ``h``)."""
    yy = (np.arange(h, dtype=np.float32) / h)[:, None]
    xx = (np.arange(w, dtype=np.float32) / w)[None, :]
    dx = float(rng.uniform(0, 1))
    horizon = cam.horizon + float(rng.normal(0, 0.03))
    is_floor = np.broadcast_to(yy > horizon, (h, w))
    img = np.where(is_floor[..., None], cam.floor, cam.wall).astype(np.float32)
    x = xx + dx
    if cam.bg_style == "wall_floor":
        line = ((x / cam.period) % 1.0) < 0.07
        img[line & ~is_floor] = cam.accent
        img *= (0.85 + 0.3 * yy)[..., None]
    elif cam.bg_style == "tiles":
        gx = ((x / (cam.period * 0.6)) % 1.0) < 0.06
        gy = (((yy - horizon) / 0.07) % 1.0) < 0.08
        img[(gx | gy) & is_floor] = cam.accent
        img *= (1.05 - 0.2 * yy)[..., None]
    elif cam.bg_style == "street":
        win = (((x / (cam.period * 0.5)) % 1.0) < 0.55) & (((yy / 0.12) % 1.0) < 0.5)
        img[win & ~is_floor] = cam.accent * 0.6
        lane = np.broadcast_to(np.abs(yy - (horizon + 0.12)) < 0.012, (h, w)) & (
            ((x / 0.35) % 1.0) < 0.6
        )
        img[lane] = (215, 210, 190)
    elif cam.bg_style == "park":
        img += 18.0 * _smooth_noise(rng, h, w, 6)[..., None]
        trunk = ((x / cam.period) % 1.0) < 0.06
        img[trunk & ~is_floor] = (70, 50, 35)
    else:  # shops
        band = np.broadcast_to((yy > horizon - 0.35) & (yy < horizon - 0.05), (h, w))
        shop = (x / cam.period) % 1.0
        img[band & (shop < 0.45)] = cam.accent
        img[band & (shop > 0.5) & (shop < 0.95)] = cam.accent[::-1]
    img += 9.0 * _smooth_noise(rng, h, w, 12)[..., None]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    shift = float(rng.normal(0, 0.15))
    for cx, cy, cw, ch, col in cam.clutter:
        if rng.random() < 0.25:
            continue
        x0 = (cx + shift) * w
        y0 = cy * h
        draw.rectangle([x0, y0, x0 + cw * w, y0 + ch * h], fill=col)
    return pil


# --------------------------------------------------------------------------------------------
# Drawing people
# --------------------------------------------------------------------------------------------


class _Pen:
    """Draws in body coordinates: x in person heights from the body axis, y from the head top."""

    def __init__(
        self, draw: ImageDraw.ImageDraw, cx: float, y0: float, hp: float, mirror: bool
    ) -> None:
        self.draw, self.cx, self.y0, self.hp = draw, cx, y0, hp
        self.sx = -1.0 if mirror else 1.0

    def p(self, x: float, y: float) -> tuple[float, float]:
        return (self.cx + self.sx * x * self.hp, self.y0 + y * self.hp)

    def poly(
        self, pts: Sequence[tuple[float, float]], fill: Any, draw: ImageDraw.ImageDraw | None = None
    ) -> None:
        (draw or self.draw).polygon([self.p(x, y) for x, y in pts], fill=fill)

    def ellipse(
        self,
        x: float,
        y: float,
        rx: float,
        ry: float,
        fill: Any,
        draw: ImageDraw.ImageDraw | None = None,
    ) -> None:
        px, py = self.p(x, y)
        ax, ay = abs(rx) * self.hp, abs(ry) * self.hp
        (draw or self.draw).ellipse([px - ax, py - ay, px + ax, py + ay], fill=fill)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: Any) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], fill)

    def limb(
        self,
        a: tuple[float, float],
        b: tuple[float, float],
        wa: float,
        wb: float,
        fill: Any,
        draw: ImageDraw.ImageDraw | None = None,
    ) -> None:
        dx, dy = b[0] - a[0], b[1] - a[1]
        n = math.hypot(dx, dy) or 1.0
        nx, ny = -dy / n, dx / n
        pts = [
            (a[0] + nx * wa / 2, a[1] + ny * wa / 2),
            (b[0] + nx * wb / 2, b[1] + ny * wb / 2),
            (b[0] - nx * wb / 2, b[1] - ny * wb / 2),
            (a[0] - nx * wa / 2, a[1] - ny * wa / 2),
        ]
        self.poly(pts, fill, draw)
        self.ellipse(a[0], a[1], wa / 2, wa / 2, fill, draw)
        self.ellipse(b[0], b[1], wb / 2, wb / 2, fill, draw)


def _c(rgb: Sequence[int], f: float = 1.0) -> RGB:
    return (int(min(255, rgb[0] * f)), int(min(255, rgb[1] * f)), int(min(255, rgb[2] * f)))


def _texture(attrs: Attributes, view: str, pen: _Pen, h: int, w: int) -> Image.Image | None:
    """The upper-clothing pattern over the whole canvas, or None for a plain garment."""
    up = attrs["upper"]
    tex = up["texture"]
    if tex == "plain" or (tex in ("logo", "jacket") and view != "front"):
        return None
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    u = (xx - pen.cx) * pen.sx / pen.hp
    v = (yy - pen.y0) / pen.hp
    if tex == "h_stripes":
        m = ((v / 0.05) % 1.0) < 0.5
    elif tex == "v_stripes":
        m = (((u + 1.0) / 0.045) % 1.0) < 0.5
    elif tex == "checks":
        m = (((v / 0.065) % 1.0) < 0.5) ^ ((((u + 1.0) / 0.065) % 1.0) < 0.5)
    elif tex == "two_tone":
        m = (v > 0.33) & (u > -1.0)
    elif tex == "jacket":
        m = (np.abs(u) < 0.035) & (v > 0.0)
    else:  # logo
        m = ((u / 0.045) ** 2 + ((v - 0.28) / 0.04) ** 2) < 1.0
    m = np.broadcast_to(m, (h, w))
    arr = np.empty((h, w, 3), dtype=np.uint8)
    arr[...] = np.asarray(up["colour"], dtype=np.uint8)
    arr[m] = np.asarray(up["secondary"], dtype=np.uint8)
    return Image.fromarray(arr)


def _draw_person(
    img: Image.Image,
    attrs: Attributes,
    rng: np.random.Generator,
    *,
    cx: float,
    y0: float,
    hp: float,
    mirror: bool,
    view: str,
) -> None:
    """Draw one person of height ``hp`` pixels with head top at ``y0`` onto ``img``."""
    draw = ImageDraw.Draw(img)
    pen = _Pen(draw, cx, y0, hp, mirror)
    head, hat, up, low, bag = (
        attrs["head"],
        attrs["hat"],
        attrs["upper"],
        attrs["lower"],
        attrs["bag"],
    )
    skin, hair = _c(head["skin"]), _c(head["hair_colour"])
    upper, lower, shoes = _c(up["colour"]), _c(low["colour"]), _c(attrs["shoes"]["colour"])
    bw = attrs["build"]["width"] * (0.68 if view == "side" else 1.0)
    sw, ww = 0.125 * bw, 0.1 * bw  # half widths at shoulders and waist
    lean = float(rng.normal(0, 0.008))
    hx = lean + (0.012 if view == "side" else 0.0) + float(rng.normal(0, 0.004))

    # limbs: joints in body coordinates
    if view == "side":
        phase = float(rng.uniform(-1, 1))
        legs = [(-phase * 0.12, 0.0), (phase * 0.12, 0.0)]  # (ankle x, knee offset)
        arms = [(phase * 0.11, 0.0), (-phase * 0.11, 0.0)]  # (hand x, -)
        shoulder_x = [0.0, 0.0]
        hip_x = [0.0, 0.0]
    else:
        spread = float(rng.uniform(0.0, 0.025))
        legs = [
            (-0.055 * bw - spread + float(rng.normal(0, 0.006)), 0.0),
            (0.055 * bw + spread + float(rng.normal(0, 0.006)), 0.0),
        ]
        out = float(rng.uniform(0.005, 0.03))
        arms = [
            (-sw - out + float(rng.normal(0, 0.008)), 0.0),
            (sw + out + float(rng.normal(0, 0.008)), 0.0),
        ]
        shoulder_x = [-sw + 0.018, sw - 0.018]
        hip_x = [-0.052 * bw, 0.052 * bw]
    ankle_y = 0.935
    leg_w, ankle_w = 0.075 * bw / (0.68 if view == "side" else 1.0) * 0.95, 0.048
    arm_w, wrist_w = 0.052, 0.04

    # bag side in image coordinates (+x = image right before mirroring)
    bag_x = 0.0
    if bag["type"] != "none":
        s = 1.0 if bag["side"] == "left" else -1.0
        bag_x = s if view == "front" else -s

    def draw_leg(i: int) -> None:
        hx_, (ax, _) = hip_x[i], legs[i]
        knee = ((hx_ + ax) / 2 + (0.015 if view == "side" else 0.0), 0.72)
        hip, ankle = (hx_, 0.53), (ax, ankle_y)
        if low["type"] == "trousers":
            pen.limb(hip, knee, leg_w, leg_w * 0.82, lower)
            pen.limb(knee, ankle, leg_w * 0.82, ankle_w, lower)
        else:
            pen.limb(hip, knee, leg_w * 0.8, leg_w * 0.7, skin)
            pen.limb(knee, ankle, leg_w * 0.7, ankle_w * 0.8, skin)
            if low["type"] == "shorts":
                mid = (hip[0] + (knee[0] - hip[0]) * 0.7, 0.53 + (0.72 - 0.53) * 0.7)
                pen.limb(hip, mid, leg_w * 1.05, leg_w * 0.95, lower)
        fwd = 0.02 if view == "side" else 0.0
        pen.ellipse(ax + fwd, 0.958, 0.042 if view == "side" else 0.033, 0.022, shoes)

    def draw_arm(i: int) -> None:
        sx_ = shoulder_x[i]
        hand_x = arms[i][0]
        elbow = ((sx_ + hand_x) / 2 + float(rng.normal(0, 0.006)), 0.345)
        shoulder, hand = (sx_, 0.2), (hand_x, 0.49)
        sleeve = upper
        if up["sleeves"] == "long":
            pen.limb(shoulder, elbow, arm_w, arm_w * 0.9, sleeve)
            pen.limb(elbow, hand, arm_w * 0.9, wrist_w, sleeve)
        else:
            pen.limb(elbow, hand, arm_w * 0.75, wrist_w * 0.8, skin)
            pen.limb(shoulder, elbow, arm_w * 1.05, arm_w, sleeve)
        pen.ellipse(hand[0], hand[1] + 0.012, 0.022, 0.026, skin)
        if bag["type"] == "handbag" and ((hand_x > 0) == (bag_x > 0) or view == "side"):
            bc = _c(bag["colour"])
            pen.limb((hand[0], hand[1] + 0.01), (hand[0], hand[1] + 0.04), 0.008, 0.008, bc)
            pen.rect(hand[0] - 0.04, hand[1] + 0.035, hand[0] + 0.04, hand[1] + 0.11, bc)

    def draw_torso() -> None:
        pts = [
            (-sw + lean, 0.19),
            (-sw * 0.8 + lean, 0.162),
            (sw * 0.8 + lean, 0.162),
            (sw + lean, 0.19),
            (ww, 0.54),
            (-ww, 0.54),
        ]
        tex = _texture(attrs, view, pen, img.height, img.width)
        if tex is None:
            pen.poly(pts, upper)
        else:
            mask = Image.new("L", img.size, 0)
            pen.poly(pts, 255, ImageDraw.Draw(mask))
            img.paste(tex, (0, 0), mask)

    def draw_long_hair_back() -> None:
        if head["hair_style"] == "long":
            pen.poly(
                [(hx - 0.058, 0.05), (hx + 0.058, 0.05), (hx + 0.068, 0.25), (hx - 0.068, 0.25)],
                hair,
            )

    # backpack peeking out behind (front view) is drawn first
    if bag["type"] == "backpack" and view == "front":
        bc = _c(bag["colour"], 0.9)
        pen.rect(-sw - 0.018, 0.2, sw + 0.018, 0.45, bc)
    if view == "front":
        draw_long_hair_back()
    if bag["type"] == "shoulder" and view == "side" and bag["side"] == "right":
        pen.rect(-0.05, 0.43, 0.05, 0.55, _c(bag["colour"]))

    # legs: far leg first
    draw_leg(0)
    draw_leg(1)
    if low["type"] == "skirt":
        pen.poly([(-ww, 0.5), (ww, 0.5), (ww + 0.055, 0.72), (-ww - 0.055, 0.72)], lower)
    else:
        pen.poly([(-ww, 0.5), (ww, 0.5), (ww + 0.004, 0.6), (-ww - 0.004, 0.6)], lower)
    if view == "side":
        draw_arm(1)  # far arm behind the torso
    draw_torso()
    if bag["type"] == "backpack":
        bc = _c(bag["colour"])
        if view == "back":
            pen.poly([(-0.1, 0.2), (0.1, 0.2), (0.105, 0.46), (-0.105, 0.46)], bc)
            pen.rect(-0.07, 0.36, 0.07, 0.42, _c(bag["colour"], 0.75))
        elif view == "side":
            pen.poly(
                [(-sw - 0.02, 0.2), (-sw + 0.035, 0.19), (-sw + 0.035, 0.46), (-sw - 0.03, 0.46)],
                bc,
            )
    if view == "side":
        draw_arm(0)
    else:
        draw_arm(0)
        draw_arm(1)
    if bag["type"] == "backpack" and view in ("front", "side"):
        bc = _c(bag["colour"], 0.8)
        for s in (-1.0, 1.0) if view == "front" else (0.0,):
            pen.limb((s * 0.07 + lean, 0.168), (s * 0.085, 0.36), 0.024, 0.022, bc)
    if bag["type"] == "shoulder" and not (view == "side" and bag["side"] == "right"):
        bc = _c(bag["colour"])
        bx = bag_x if view != "side" else 0.0
        pen.limb(
            (-bx * 0.08 + lean, 0.17),
            (bx * (ww + 0.02), 0.45),
            0.014,
            0.014,
            _c(bag["colour"], 0.7),
        )
        x0 = bx * (ww + 0.01) if view != "side" else -0.04
        pen.rect(x0 - 0.042, 0.43, x0 + 0.042, 0.54, bc)

    # neck, head, hair, hat
    pen.rect(hx - 0.02, 0.12, hx + 0.02, 0.17, skin)
    style = head["hair_style"]
    hy, rx, ry = 0.075, 0.047, 0.06
    if view == "front":
        cap = {
            "short": (0.058, 0.052, 0.046),
            "buzz": (0.066, 0.049, 0.056),
            "long": (0.06, 0.056, 0.05),
            "ponytail": (0.06, 0.052, 0.046),
            "bun": (0.06, 0.052, 0.046),
            "curly": (0.06, 0.064, 0.056),
        }[style]
        pen.ellipse(hx, cap[0], cap[1], cap[2], hair)
        face_top = 0.088 if style != "buzz" else 0.082
        pen.ellipse(hx, face_top, rx * 0.9, ry * 0.78, skin)
        eye = (40, 34, 30)
        pen.ellipse(hx - 0.017, 0.082, 0.006, 0.005, eye)
        pen.ellipse(hx + 0.017, 0.082, 0.006, 0.005, eye)
        if style == "bun":
            pen.ellipse(hx, 0.006, 0.026, 0.022, hair)
    elif view == "back":
        if style == "buzz":
            pen.ellipse(hx, hy, rx, ry, skin)
            pen.ellipse(hx, hy - 0.012, rx, ry * 0.8, hair)
        else:
            pen.ellipse(hx, hy, rx * (1.25 if style == "curly" else 1.05), ry, hair)
        if style == "long":
            pen.poly(
                [(hx - 0.058, 0.07), (hx + 0.058, 0.07), (hx + 0.066, 0.26), (hx - 0.066, 0.26)],
                hair,
            )
        elif style == "ponytail":
            pen.limb((hx, 0.08), (hx, 0.2), 0.03, 0.018, hair)
        elif style == "bun":
            pen.ellipse(hx, 0.02, 0.028, 0.024, hair)
    else:  # side, facing +x
        if style == "long":
            pen.poly(
                [(hx - 0.05, 0.05), (hx + 0.0, 0.05), (hx - 0.02, 0.25), (hx - 0.075, 0.24)], hair
            )
        pen.ellipse(hx, hy, rx, ry, skin)
        pen.ellipse(
            hx - 0.012,
            hy - 0.012,
            rx * (1.2 if style == "curly" else 0.95),
            ry * (0.8 if style != "buzz" else 0.7),
            hair,
        )
        pen.ellipse(hx + 0.028, 0.075, 0.005, 0.005, (40, 34, 30))
        if style == "ponytail":
            pen.limb((hx - 0.04, 0.05), (hx - 0.09, 0.14), 0.026, 0.016, hair)
        elif style == "bun":
            pen.ellipse(hx - 0.045, 0.03, 0.025, 0.022, hair)
    if hat["type"] != "none":
        hc = _c(hat["colour"])
        if hat["type"] == "cap":
            pen.ellipse(hx, 0.035, 0.054, 0.034, hc)
            pen.rect(hx - 0.054, 0.035, hx + 0.054, 0.045, hc)
            if view == "front":
                pen.ellipse(hx, 0.05, 0.05, 0.012, _c(hat["colour"], 0.75))
            elif view == "side":
                pen.poly(
                    [
                        (hx + 0.02, 0.04),
                        (hx + 0.09, 0.045),
                        (hx + 0.085, 0.055),
                        (hx + 0.02, 0.054),
                    ],
                    _c(hat["colour"], 0.75),
                )
        else:  # beanie
            pen.ellipse(hx, 0.04, 0.055, 0.045, hc)
            pen.rect(hx - 0.056, 0.04, hx + 0.056, 0.062, _c(hat["colour"], 0.8))


# --------------------------------------------------------------------------------------------
# Scenes and images
# --------------------------------------------------------------------------------------------


def _pick_view(rng: np.random.Generator, cam: _Camera) -> str:
    return ("front", "back", "side")[int(rng.choice(3, p=np.asarray(cam.view_p)))]


def _draw_occluder(
    rng: np.random.Generator, img: Image.Image, *, cx: float, y0: float, hp: float
) -> str:
    """Draw an occluder over part of the person; returns its kind."""
    w, h = img.size
    draw = ImageDraw.Draw(img)
    kind = ("pole", "vehicle", "board", "person")[int(rng.choice(4, p=[0.25, 0.3, 0.2, 0.25]))]
    if kind == "pole":
        pw = float(rng.uniform(0.05, 0.11)) * hp
        px = cx + float(rng.normal(0, 0.08)) * hp
        col = ((95, 95, 100), (150, 150, 152), (55, 90, 60), (205, 170, 40))[int(rng.integers(4))]
        draw.rectangle([px - pw / 2, -1, px + pw / 2, h + 1], fill=col)
        draw.rectangle([px - pw / 2, -1, px - pw / 6, h + 1], fill=_c(col, 1.2))
    elif kind == "vehicle":
        top = y0 + float(rng.uniform(0.5, 0.72)) * hp
        col = tuple(int(v) for v in rng.integers(20, 235, 3))
        x0 = -0.2 * w + float(rng.normal(0, 0.15)) * w
        draw.rounded_rectangle([x0, top, x0 + 1.5 * w, h + hp * 0.2], radius=0.08 * hp, fill=col)
        draw.rectangle(
            [x0 + 0.1 * w, top + 0.04 * hp, x0 + 1.4 * w, top + 0.12 * hp], fill=_c(col, 0.45)
        )
    elif kind == "board":
        side = 1.0 if rng.random() < 0.5 else -1.0
        top = y0 + float(rng.uniform(0.12, 0.35)) * hp
        bh = float(rng.uniform(0.18, 0.3)) * hp
        edge = cx + side * float(rng.uniform(-0.05, 0.08)) * hp
        far = w + 5 if side < 0 else -5
        col = tuple(int(v) for v in rng.integers(30, 240, 3))
        draw.rectangle([min(edge, far), top, max(edge, far), top + bh], fill=col)
        draw.rectangle(
            [min(edge, far), top + bh * 0.3, max(edge, far), top + bh * 0.45], fill=_c(col, 0.6)
        )
    else:  # another pedestrian passing in front
        other = _draw_attributes(rng)
        side = 1.0 if rng.random() < 0.5 else -1.0
        hp2 = hp * float(rng.uniform(1.0, 1.25))
        cx2 = cx + side * float(rng.uniform(0.2, 0.32)) * hp
        _draw_person(
            img,
            other,
            rng,
            cx=cx2,
            y0=y0 + float(rng.normal(0, 0.04)) * hp,
            hp=hp2,
            mirror=rng.random() < 0.5,
            view=("front", "back", "side")[int(rng.integers(3))],
        )
    return kind


def _scene(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    cam: _Camera,
    attrs: Attributes | None,
    *,
    occlude: bool,
    scale_mul: float = 1.0,
    cx_frac: float | None = None,
    y_frac: float | None = None,
    anchor: str = "center",
) -> tuple[Image.Image, dict[str, Any]]:
    """Background plus a person at render resolution.

    ``cx_frac`` places the body axis (fraction of the width); ``y_frac`` the head top (fraction
    of the height); otherwise ``anchor`` does: ``"center"``, ``"head"`` (head at the top edge)
    or ``"feet"`` (feet at the bottom edge, for partial bodies drawn larger than the box).
    """
    s = cfg.render_scale
    h, w = cfg.height * s, cfg.width * s
    img = _background(rng, cam, h, w)
    info: dict[str, Any] = {"view": None, "occluder": None}
    if attrs is None:
        return img, info
    hp = h * cam.scale * attrs["build"]["height"] * scale_mul * float(rng.uniform(0.93, 1.06))
    big = rng.random() < 0.12  # a badly aligned box now and then
    sd = 0.09 if big else 0.035
    cx = (
        w * (0.5 if cx_frac is None else cx_frac)
        + float(np.clip(rng.normal(0, sd), -0.25, 0.25)) * w
    )
    if y_frac is not None:
        top = y_frac * h
    elif anchor == "head":
        top = 0.03 * h
    elif anchor == "feet":
        top = 0.99 * h - hp
    else:
        top = (h - hp) / 2
    y0 = top + cam.y_shift * h + float(np.clip(rng.normal(0, sd * 0.8), -0.15, 0.15)) * h
    view = _pick_view(rng, cam)
    mirror = bool(rng.random() < 0.5)
    _draw_person(img, attrs, rng, cx=cx, y0=y0, hp=hp, mirror=mirror, view=view)
    info["view"] = view
    if occlude:
        info["occluder"] = _draw_occluder(rng, img, cx=cx, y0=y0, hp=hp)
    return img, info


def _finish(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    cam: _Camera,
    img: Image.Image,
    *,
    extra_blur: float = 0.0,
) -> Image.Image:
    """Downsampling, camera response, blur and noise; returns the final RGB image."""
    if img.size != (cfg.width, cfg.height):
        img = img.resize((cfg.width, cfg.height), Image.Resampling.BOX)
    arr = np.asarray(img, dtype=np.float32)
    xx = np.linspace(-0.5, 0.5, cfg.width, dtype=np.float32)[None, :, None]
    gain = (cam.gain * (cam.brightness * float(rng.normal(1.0, 0.06)))).astype(np.float32)
    arr = arr * gain * (1.0 + cam.light_grad * xx)
    grey = arr.mean(axis=2, keepdims=True)
    arr = grey + (arr - grey) * np.float32(cam.saturation)
    arr = (arr - 128.0) * np.float32(cam.contrast) + 128.0
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    p_blur = min(1.0, cfg.blur_prob * cam.blur_factor)
    radius = extra_blur
    if rng.random() < p_blur:
        radius += float(rng.uniform(0.4, 1.2))
    if radius > 0:
        out = out.filter(ImageFilter.GaussianBlur(radius))
    sigma = cfg.noise_std * cam.noise_factor * float(rng.uniform(0.5, 1.3))
    if sigma > 0:
        a = np.asarray(out, dtype=np.float32) + rng.normal(0.0, sigma, (cfg.height, cfg.width, 3))
        out = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
    return out


# --------------------------------------------------------------------------------------------
# Dataset plan and writing
# --------------------------------------------------------------------------------------------


@dataclass
class _Identity:
    pid: int
    split: str
    local: int  # index within its split
    family: int  # global family number
    member: int
    varied_part: str | None
    attrs: Attributes
    cameras: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)


def _identities(seed: int, cfg: SyntheticConfig) -> list[_Identity]:
    out: list[_Identity] = []
    family_offset = 0
    for split, n, pid0 in (
        ("train", cfg.num_train_ids, 1),
        ("test", cfg.num_test_ids, cfg.num_train_ids + 1),
    ):
        # The first `grouped` identities form families of family_size, the rest families of one.
        grouped = n if cfg.family_frac >= 1.0 else int(round(cfg.family_frac * n))
        n_groups = -(-grouped // cfg.family_size)
        n_fam = n_groups + (n - grouped)
        for f in range(n_fam):
            if f < n_groups:
                start = f * cfg.family_size
                size = min(cfg.family_size, grouped - start)
            else:
                start, size = grouped + (f - n_groups), 1
            rng = _rng(seed, _ROLE_FAMILY, _SPLIT_CODE[split], f)
            # always draw a full family so that a shorter last family keeps its members' looks
            members = _make_family(rng, cfg.family_size)[:size]
            for m, (part, attrs) in enumerate(members):
                local = start + m
                ident = _Identity(pid0 + local, split, local, family_offset + f, m, part, attrs)
                trng = _rng(seed, _ROLE_TRACK, _SPLIT_CODE[split], local)
                hi = min(cfg.cameras_per_id[1], cfg.num_cameras)
                k = int(trng.integers(cfg.cameras_per_id[0], hi + 1))
                cams = sorted(int(c) + 1 for c in trng.choice(cfg.num_cameras, k, replace=False))
                lo_i, hi_i = cfg.images_per_camera
                counts = [int(c) for c in trng.integers(lo_i, hi_i + 1, size=k)]
                if split == "test":  # >= 2 images in >= 2 cameras: cross-camera gallery match
                    order = sorted(range(k), key=lambda i: (-counts[i], i))
                    for i in order[:2]:
                        counts[i] = max(counts[i], 2)
                ident.cameras, ident.counts = cams, counts
                out.append(ident)
        family_offset += n_fam
    return out


class _Namer:
    """Market-1501 file names, unique across the dataset."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def name(self, pid: int, cam: int, seq: int, frame: int, box: int) -> str:
        pid_s = "-1" if pid == -1 else f"{pid:04d}"
        while True:
            name = f"{pid_s}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg"
            if name not in self.used:
                self.used.add(name)
                return name
            frame += 1


def _save(img: Image.Image, path: pathlib.Path, quality: int) -> None:
    img.save(path, format="JPEG", quality=quality, optimize=False)


def _prepare_out_dir(out: pathlib.Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out} exists and is not empty; refusing to write the synthetic dataset over "
                "it. Pass overwrite=True (command line: --overwrite) to replace a previously "
                "generated dataset there, or choose an empty or new folder."
            )
        for name in SPLIT_FOLDERS:
            target = out / name
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target)
        meta = out / METADATA_FILE
        if meta.is_file() or meta.is_symlink():
            meta.unlink()
    out.mkdir(parents=True, exist_ok=True)
    for name in SPLIT_FOLDERS:
        (out / name).mkdir()


def make_synthetic_dataset(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    config: SyntheticConfig | None = None,
    *,
    overwrite: bool = False,
) -> pathlib.Path:
    """Generate the synthetic re-ID dataset in the Market-1501 layout.

    Writes ``out_dir/bounding_box_train/``, ``out_dir/query/``, ``out_dir/bounding_box_test/``
    (file names ``{pid:04d}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg``, pid 0 = distractor,
    pid -1 = junk) and ``out_dir/synthetic.json`` (generator version, seed, configuration,
    counts, and per identity its split, family, varied part, cameras and attributes; per image
    its view and occluder).

    Args:
        out_dir: output folder; created if missing.
        seed: non-negative integer; the same seed and config give byte-identical files.
        config: sizes and difficulty; ``SyntheticConfig()`` when None.
        overwrite: allow a non-empty ``out_dir``; only the three image folders and
            ``synthetic.json`` are removed before writing, nothing else in the folder.

    Returns:
        The output folder as a :class:`pathlib.Path`.

    Raises:
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is False.
        NotADirectoryError: ``out_dir`` is a file.
        ValueError: ``seed`` is not a non-negative integer.
    """
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    cfg = config if config is not None else SyntheticConfig()
    if not isinstance(cfg, SyntheticConfig):
        raise TypeError(f"config must be a SyntheticConfig or None, got {type(cfg).__name__}")
    out = pathlib.Path(out_dir)
    _prepare_out_dir(out, overwrite)

    cams = _make_cameras(seed, cfg.num_cameras)
    idents = _identities(seed, cfg)
    namer = _Namer()
    images: list[dict[str, Any]] = []
    counts = dict.fromkeys(SPLIT_FOLDERS, 0)

    def emit(
        folder: str,
        img: Image.Image,
        name: str,
        pid: int,
        cam: int,
        kind: str,
        info: dict[str, Any],
    ) -> None:
        _save(img, out / folder / name, cfg.jpeg_quality)
        counts[folder] += 1
        images.append(
            {
                "file": f"{folder}/{name}",
                "pid": pid,
                "camera": cam,
                "kind": kind,
                "view": info.get("view"),
                "occluder": info.get("occluder"),
            }
        )

    for ident in idents:
        code = _SPLIT_CODE[ident.split]
        trng = _rng(seed, _ROLE_TRACK, code, ident.local, 1)
        for cam, n in zip(ident.cameras, ident.counts, strict=True):
            seq = int(trng.integers(1, 7))
            frame = int(trng.integers(1, 600_000))
            query_k = int(trng.integers(n)) if ident.split == "test" else -1
            for k in range(n):
                frame += int(trng.integers(8, 300))
                box = int(trng.integers(1, 9))
                irng = _rng(seed, _ROLE_IMAGE, code, ident.local, cam, k)
                occ = bool(irng.random() < cfg.occlusion_prob)
                scene, info = _scene(irng, cfg, cams[cam - 1], ident.attrs, occlude=occ)
                img = _finish(irng, cfg, cams[cam - 1], scene)
                if ident.split == "train":
                    folder = "bounding_box_train"
                else:
                    folder = "query" if k == query_k else "bounding_box_test"
                emit(
                    folder,
                    img,
                    namer.name(ident.pid, cam, seq, frame, box),
                    ident.pid,
                    cam,
                    "identity",
                    info,
                )

    test_ids = [i for i in idents if i.split == "test"]
    n_look = int(round(cfg.num_distractors * cfg.lookalike_frac))
    n_part = int(round(cfg.num_distractors * cfg.partial_frac))
    distractor_kinds: dict[str, int] = {"fresh": 0, "lookalike": 0, "partial": 0}
    for d in range(cfg.num_distractors):
        rng = _rng(seed, _ROLE_DISTRACTOR, d)
        cam = int(rng.integers(1, cfg.num_cameras + 1))
        scale_mul, anchor = 1.0, "center"
        if d < n_look:
            kind = "lookalike"
            src = test_ids[int(rng.integers(len(test_ids)))]
            part = str(rng.choice(list(_MUTABLE_PARTS)))
            attrs = _mutate(rng, src.attrs, part)
        else:
            kind = "partial" if d < n_look + n_part else "fresh"
            attrs = _draw_attributes(rng)
            if kind == "partial":  # the box holds only the upper or the lower body
                scale_mul = float(rng.uniform(1.6, 2.0))
                anchor = "head" if rng.random() < 0.5 else "feet"
        distractor_kinds[kind] += 1
        occ = bool(rng.random() < cfg.occlusion_prob)
        scene, info = _scene(
            rng, cfg, cams[cam - 1], attrs, occlude=occ, scale_mul=scale_mul, anchor=anchor
        )
        img = _finish(rng, cfg, cams[cam - 1], scene)
        name = namer.name(
            0, cam, int(rng.integers(1, 7)), int(rng.integers(1, 900_000)), int(rng.integers(1, 9))
        )
        emit("bounding_box_test", img, name, 0, cam, f"distractor-{kind}", info)

    junk_kinds: dict[str, int] = {"background": 0, "tiny": 0, "fragment": 0}
    for j in range(cfg.num_junk):
        rng = _rng(seed, _ROLE_JUNK, j)
        cam = int(rng.integers(1, cfg.num_cameras + 1))
        kind = ("background", "tiny", "fragment")[j % 3]
        junk_kinds[kind] += 1
        attrs = _draw_attributes(rng)
        blur = 0.0
        if kind == "background":  # a person barely entering the box at one edge
            edge = -float(rng.uniform(0.0, 0.1))
            edge = edge if rng.random() < 0.5 else 1.0 - edge
            scene, info = _scene(rng, cfg, cams[cam - 1], attrs, occlude=False, cx_frac=edge)
        elif kind == "tiny":  # a far-away person in a corner of a loose box
            scene, info = _scene(
                rng,
                cfg,
                cams[cam - 1],
                attrs,
                occlude=False,
                scale_mul=float(rng.uniform(0.2, 0.35)),
                cx_frac=float(rng.uniform(0.15, 0.85)),
                y_frac=float(rng.uniform(0.05, 0.7)),
            )
            blur = float(rng.uniform(0.0, 0.8))
        else:  # a zoomed fragment of a body
            scene, info = _scene(
                rng,
                cfg,
                cams[cam - 1],
                attrs,
                occlude=False,
                scale_mul=float(rng.uniform(2.2, 3.5)),
                y_frac=-float(rng.uniform(0.2, 1.6)),
            )
            blur = float(rng.uniform(0.0, 1.5))
        img = _finish(rng, cfg, cams[cam - 1], scene, extra_blur=blur)
        name = namer.name(
            -1, cam, int(rng.integers(1, 7)), int(rng.integers(1, 900_000)), int(rng.integers(1, 9))
        )
        emit("bounding_box_test", img, name, -1, cam, f"junk-{kind}", info)

    meta = {
        "generator": GENERATOR_VERSION,
        "pillow_version": _PILLOW_VERSION,
        "numpy_version": np.__version__,
        "seed": seed,
        "config": cfg.to_dict(),
        "counts": {
            **counts,
            "train_ids": cfg.num_train_ids,
            "test_ids": cfg.num_test_ids,
            "families": len({i.family for i in idents}),
            "distractors": cfg.num_distractors,
            "junk": cfg.num_junk,
            "distractor_kinds": distractor_kinds,
            "junk_kinds": junk_kinds,
            "occluded_images": sum(r["occluder"] is not None for r in images),
        },
        "cameras": [
            {
                "camera": c.index,
                "background": c.bg_style,
                "view_probs": {"front": c.view_p[0], "back": c.view_p[1], "side": c.view_p[2]},
                "gain": [round(float(g), 4) for g in c.gain],
                "brightness": round(c.brightness, 4),
                "person_scale": round(c.scale, 4),
            }
            for c in cams
        ],
        "identities": [
            {
                "pid": i.pid,
                "split": i.split,
                "family": i.family,
                "family_member": i.member,
                "varied_part": i.varied_part,
                "cameras": i.cameras,
                "images_per_camera": dict(zip((str(c) for c in i.cameras), i.counts, strict=True)),
                "attributes": i.attrs,
            }
            for i in idents
        ],
        "images": sorted(images, key=lambda r: r["file"]),
    }
    (out / METADATA_FILE).write_text(
        json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    return out


def synthetic_families(root: str | os.PathLike[str]) -> dict[int, int]:
    """The family of every identity of a generated dataset: ``{pid: family}``.

    Read from ``root/synthetic.json`` (its ``identities`` list, train and test splits). Members
    of a family are look-alikes: they differ in one part only (the module docstring).

    Raises:
        FileNotFoundError: ``root`` holds no ``synthetic.json`` (not a synthetic dataset).
        ValueError: the file is not the generator's metadata (no ``identities`` with ``pid``
            and ``family``).
    """
    path = pathlib.Path(root) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"'{path}' does not exist: '{root}' is not a synthetic dataset root (families of "
            f"look-alikes are recorded only there); generate one with 'reid-eval make-synthetic "
            f"{root} --seed 0'"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        return {int(i["pid"]): int(i["family"]) for i in meta["identities"]}
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"'{path}' is not the synthetic generator's metadata (it needs an 'identities' list "
            f"of entries with 'pid' and 'family'; {type(e).__name__}: {e}); regenerate the "
            f"dataset with 'reid-eval make-synthetic {root} --overwrite'"
        ) from None


#: Fields added to :class:`SyntheticConfig` after datasets were first written, with the value
#: that reproduces what the generator drew before the field existed (the value an older
#: ``synthetic.json`` without the field stands for).
_VALUE_BEFORE_FIELD: dict[str, Any] = {"family_frac": 1.0}


def synthetic_mismatch(
    root: str | os.PathLike[str], seed: int, config: SyntheticConfig | None = None
) -> str | None:
    """How the dataset at ``root`` differs from ``make_synthetic_dataset(root, seed, config)``.

    ``None`` when ``root/synthetic.json`` records this seed and configuration (the images there
    are what the call would write); otherwise a one-line description: a missing or unreadable
    metadata file, or the differing seed and fields as ``name: stored -> wanted``. Metadata
    written before a field existed counts as that field's earlier behaviour (``family_frac``:
    1.0), whatever its default is now.
    """
    config = config or SyntheticConfig()
    path = pathlib.Path(root) / METADATA_FILE
    if not path.is_file():
        return f"'{path}' does not exist (not a generated synthetic dataset)"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"'{path}' is unreadable ({type(e).__name__}: {e})"
    stored = meta.get("config") if isinstance(meta, dict) else None
    if not isinstance(stored, dict):
        return f"'{path}' holds no generator configuration"
    wanted = json.loads(json.dumps(config.to_dict()))
    stored = {**_VALUE_BEFORE_FIELD, **stored}
    diffs = [f"seed: {meta.get('seed')!r} -> {seed!r}"] if meta.get("seed") != seed else []
    diffs += [f"{k}: {stored.get(k)!r} -> {v!r}" for k, v in wanted.items() if stored.get(k) != v]
    return "; ".join(diffs) or None
