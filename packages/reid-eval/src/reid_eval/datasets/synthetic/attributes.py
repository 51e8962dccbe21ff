"""The people: colour palettes and weights, random attribute draws (head, hat, clothing, shoes,
bag, build), families of look-alikes and the one-part mutations that tell members apart.

Attributes are plain JSON data (``Attributes``: part group -> fields); ``synthetic.json`` records
them per identity, and :mod:`.render` draws them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

#: An 8-bit colour.
RGB = tuple[int, int, int]

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
#: The attribute groups of a person, in the order of ``Attributes``.
_PART_GROUPS = ("head", "hat", "upper", "lower", "shoes", "bag", "build")

#: A person: part group (``_PART_GROUPS``) -> its fields (colours, type, side, ...).
Attributes = dict[str, dict[str, Any]]


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
