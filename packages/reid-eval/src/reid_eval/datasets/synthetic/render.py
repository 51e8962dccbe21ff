"""Drawing one person: :func:`_draw_person` paints a person's attributes (:mod:`.attributes`)
in a view (front, back or side) onto an image, part by part, far parts first.

Geometry is in body coordinates (:class:`_Pen`): x in person heights from the body axis, y in
person heights down from the top of the head. :func:`_pose` draws the per-image pose (lean, head
offset, stance, arm swing); each ``_draw_*`` function below paints one part. The random numbers
are drawn in a fixed order (the pose first, then one elbow jitter per arm, in the order the arms
are painted); changing that order changes every image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .attributes import RGB, Attributes

# Heights of the joints, in person heights below the top of the head.
_SHOULDER_Y = 0.2
_ELBOW_Y = 0.345
_HAND_Y = 0.49
_HIP_Y = 0.53
_KNEE_Y = 0.72
_ANKLE_Y = 0.935

# Limb widths, in person heights.
_ANKLE_WIDTH = 0.048
_ARM_WIDTH = 0.052
_WRIST_WIDTH = 0.04

#: How much narrower a body looks from the side.
_SIDE_NARROWING = 0.68

_EYE_COLOUR: RGB = (40, 34, 30)

#: Front view: the hair cap behind the face per hair style, as (y, x radius, y radius).
_HAIR_CAP_FRONT: dict[str, tuple[float, float, float]] = {
    "short": (0.058, 0.052, 0.046),
    "buzz": (0.066, 0.049, 0.056),
    "long": (0.06, 0.056, 0.05),
    "ponytail": (0.06, 0.052, 0.046),
    "bun": (0.06, 0.052, 0.046),
    "curly": (0.06, 0.064, 0.056),
}

# The head ellipse (centre height, x radius, y radius) of back and side views.
_HEAD_Y, _HEAD_RX, _HEAD_RY = 0.075, 0.047, 0.06


class _Pen:
    """Draws in body coordinates: x in person heights from the body axis, y from the head top.

    ``axis_x`` and ``head_top`` place the body axis and the top of the head in pixels,
    ``height_px`` is the person's height in pixels, and ``mirror`` flips x (walking direction).
    """

    def __init__(
        self,
        draw: ImageDraw.ImageDraw,
        axis_x: float,
        head_top: float,
        height_px: float,
        mirror: bool,
    ) -> None:
        self.draw = draw
        self.axis_x, self.head_top, self.height_px = axis_x, head_top, height_px
        self.x_sign = -1.0 if mirror else 1.0

    def point(self, x: float, y: float) -> tuple[float, float]:
        """Pixel coordinates of the body point ``(x, y)``."""
        return (
            self.axis_x + self.x_sign * x * self.height_px,
            self.head_top + y * self.height_px,
        )

    def poly(
        self, pts: Sequence[tuple[float, float]], fill: Any, draw: ImageDraw.ImageDraw | None = None
    ) -> None:
        (draw or self.draw).polygon([self.point(x, y) for x, y in pts], fill=fill)

    def ellipse(
        self,
        x: float,
        y: float,
        rx: float,
        ry: float,
        fill: Any,
        draw: ImageDraw.ImageDraw | None = None,
    ) -> None:
        px, py = self.point(x, y)
        ax, ay = abs(rx) * self.height_px, abs(ry) * self.height_px
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
        """A tapered segment from ``a`` (width ``wa``) to ``b`` (width ``wb``), round ends."""
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


def _shade(rgb: Sequence[int], factor: float = 1.0) -> RGB:
    """``rgb`` scaled by ``factor`` (darker below 1, lighter above), as an 8-bit colour."""
    return (
        int(min(255, rgb[0] * factor)),
        int(min(255, rgb[1] * factor)),
        int(min(255, rgb[2] * factor)),
    )


@dataclass(frozen=True)
class _Colours:
    """The fill colours of a person's skin, hair and garments."""

    skin: RGB
    hair: RGB
    upper: RGB
    lower: RGB
    shoes: RGB


def _colours(attrs: Attributes) -> _Colours:
    return _Colours(
        skin=_shade(attrs["head"]["skin"]),
        hair=_shade(attrs["head"]["hair_colour"]),
        upper=_shade(attrs["upper"]["colour"]),
        lower=_shade(attrs["lower"]["colour"]),
        shoes=_shade(attrs["shoes"]["colour"]),
    )


@dataclass(frozen=True)
class _Pose:
    """One drawing's body geometry, in body coordinates; index 0 of the pairs is the far limb
    in a side view and the image-left limb (before mirroring) otherwise."""

    view: str
    body_width: float  # the build's width, narrowed in side views
    shoulder_half_width: float
    waist_half_width: float
    lean: float  # shift of the shoulders
    head_x: float
    hip_x: tuple[float, float]
    ankle_x: tuple[float, float]
    shoulder_x: tuple[float, float]
    hand_x: tuple[float, float]
    leg_width: float  # at the hip
    bag_side: float  # +1 or -1: the image side (before mirroring) of a side bag; 0 without bag


def _pose(attrs: Attributes, rng: np.random.Generator, view: str) -> _Pose:
    """The stance of one image. Draws, in this order: lean, head offset, then either the side
    view's stride phase or the front/back view's stance spread, two ankle jitters, arm spread
    and two hand jitters."""
    side = view == "side"
    body_width = attrs["build"]["width"] * (_SIDE_NARROWING if side else 1.0)
    shoulder_half_width = 0.125 * body_width
    lean = float(rng.normal(0, 0.008))
    head_x = lean + (0.012 if side else 0.0) + float(rng.normal(0, 0.004))
    if side:
        stride = float(rng.uniform(-1, 1))
        ankle_x = (-stride * 0.12, stride * 0.12)
        hand_x = (stride * 0.11, -stride * 0.11)
        shoulder_x = (0.0, 0.0)
        hip_x = (0.0, 0.0)
    else:
        spread = float(rng.uniform(0.0, 0.025))
        ankle_x = (
            -0.055 * body_width - spread + float(rng.normal(0, 0.006)),
            0.055 * body_width + spread + float(rng.normal(0, 0.006)),
        )
        arm_spread = float(rng.uniform(0.005, 0.03))
        hand_x = (
            -shoulder_half_width - arm_spread + float(rng.normal(0, 0.008)),
            shoulder_half_width + arm_spread + float(rng.normal(0, 0.008)),
        )
        shoulder_x = (-shoulder_half_width + 0.018, shoulder_half_width - 0.018)
        hip_x = (-0.052 * body_width, 0.052 * body_width)
    bag = attrs["bag"]
    bag_side = 0.0
    if bag["type"] != "none":
        s = 1.0 if bag["side"] == "left" else -1.0
        bag_side = s if view == "front" else -s
    return _Pose(
        view=view,
        body_width=body_width,
        shoulder_half_width=shoulder_half_width,
        waist_half_width=0.1 * body_width,
        lean=lean,
        head_x=head_x,
        hip_x=hip_x,
        ankle_x=ankle_x,
        shoulder_x=shoulder_x,
        hand_x=hand_x,
        leg_width=0.075 * body_width / (_SIDE_NARROWING if side else 1.0) * 0.95,
        bag_side=bag_side,
    )


def _texture(attrs: Attributes, view: str, pen: _Pen, h: int, w: int) -> Image.Image | None:
    """The upper-clothing pattern over the whole canvas, or None for a plain garment."""
    up = attrs["upper"]
    tex = up["texture"]
    if tex == "plain" or (tex in ("logo", "jacket") and view != "front"):
        return None
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    u = (xx - pen.axis_x) * pen.x_sign / pen.height_px  # body x of every pixel
    v = (yy - pen.head_top) / pen.height_px  # body y of every pixel
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


def _draw_behind_body(pen: _Pen, pose: _Pose, attrs: Attributes, colours: _Colours) -> None:
    """What the body hides: a backpack and long hair seen from the front, a shoulder bag on the
    far side in a side view."""
    bag = attrs["bag"]
    sw = pose.shoulder_half_width
    if bag["type"] == "backpack" and pose.view == "front":
        pen.rect(-sw - 0.018, 0.2, sw + 0.018, 0.45, _shade(bag["colour"], 0.9))
    if pose.view == "front" and attrs["head"]["hair_style"] == "long":
        hx = pose.head_x
        pen.poly(
            [(hx - 0.058, 0.05), (hx + 0.058, 0.05), (hx + 0.068, 0.25), (hx - 0.068, 0.25)],
            colours.hair,
        )
    if bag["type"] == "shoulder" and pose.view == "side" and bag["side"] == "right":
        pen.rect(-0.05, 0.43, 0.05, 0.55, _shade(bag["colour"]))


def _draw_leg(pen: _Pen, pose: _Pose, attrs: Attributes, colours: _Colours, i: int) -> None:
    """Leg ``i``: trousers, or bare skin under shorts or a skirt; then the shoe."""
    lower_type = attrs["lower"]["type"]
    side = pose.view == "side"
    hip_x, ankle_x, leg_w = pose.hip_x[i], pose.ankle_x[i], pose.leg_width
    knee = ((hip_x + ankle_x) / 2 + (0.015 if side else 0.0), _KNEE_Y)
    hip, ankle = (hip_x, _HIP_Y), (ankle_x, _ANKLE_Y)
    if lower_type == "trousers":
        pen.limb(hip, knee, leg_w, leg_w * 0.82, colours.lower)
        pen.limb(knee, ankle, leg_w * 0.82, _ANKLE_WIDTH, colours.lower)
    else:
        pen.limb(hip, knee, leg_w * 0.8, leg_w * 0.7, colours.skin)
        pen.limb(knee, ankle, leg_w * 0.7, _ANKLE_WIDTH * 0.8, colours.skin)
        if lower_type == "shorts":
            hem = (hip[0] + (knee[0] - hip[0]) * 0.7, _HIP_Y + (_KNEE_Y - _HIP_Y) * 0.7)
            pen.limb(hip, hem, leg_w * 1.05, leg_w * 0.95, colours.lower)
    toe = 0.02 if side else 0.0
    pen.ellipse(ankle_x + toe, 0.958, 0.042 if side else 0.033, 0.022, colours.shoes)


def _draw_waist(pen: _Pen, pose: _Pose, attrs: Attributes, colours: _Colours) -> None:
    """The skirt, or the waistband joining the legs of trousers or shorts."""
    ww = pose.waist_half_width
    if attrs["lower"]["type"] == "skirt":
        pen.poly([(-ww, 0.5), (ww, 0.5), (ww + 0.055, 0.72), (-ww - 0.055, 0.72)], colours.lower)
    else:
        pen.poly([(-ww, 0.5), (ww, 0.5), (ww + 0.004, 0.6), (-ww - 0.004, 0.6)], colours.lower)


def _draw_handbag(pen: _Pen, hand: tuple[float, float], colour: RGB) -> None:
    pen.limb((hand[0], hand[1] + 0.01), (hand[0], hand[1] + 0.04), 0.008, 0.008, colour)
    pen.rect(hand[0] - 0.04, hand[1] + 0.035, hand[0] + 0.04, hand[1] + 0.11, colour)


def _draw_arm(
    pen: _Pen,
    pose: _Pose,
    attrs: Attributes,
    colours: _Colours,
    rng: np.random.Generator,
    i: int,
) -> None:
    """Arm ``i`` (long or short sleeve, hand) and a hand bag carried on that side; draws the
    elbow's jitter from ``rng``."""
    bag = attrs["bag"]
    shoulder_x, hand_x = pose.shoulder_x[i], pose.hand_x[i]
    elbow = ((shoulder_x + hand_x) / 2 + float(rng.normal(0, 0.006)), _ELBOW_Y)
    shoulder, hand = (shoulder_x, _SHOULDER_Y), (hand_x, _HAND_Y)
    sleeve = colours.upper
    if attrs["upper"]["sleeves"] == "long":
        pen.limb(shoulder, elbow, _ARM_WIDTH, _ARM_WIDTH * 0.9, sleeve)
        pen.limb(elbow, hand, _ARM_WIDTH * 0.9, _WRIST_WIDTH, sleeve)
    else:
        pen.limb(elbow, hand, _ARM_WIDTH * 0.75, _WRIST_WIDTH * 0.8, colours.skin)
        pen.limb(shoulder, elbow, _ARM_WIDTH * 1.05, _ARM_WIDTH, sleeve)
    pen.ellipse(hand[0], hand[1] + 0.012, 0.022, 0.026, colours.skin)
    if bag["type"] == "handbag" and ((hand_x > 0) == (pose.bag_side > 0) or pose.view == "side"):
        _draw_handbag(pen, hand, _shade(bag["colour"]))


def _draw_torso(
    img: Image.Image, pen: _Pen, pose: _Pose, attrs: Attributes, colours: _Colours
) -> None:
    """The upper garment, plain or with its texture pasted through the torso's shape."""
    sw, ww, lean = pose.shoulder_half_width, pose.waist_half_width, pose.lean
    pts = [
        (-sw + lean, 0.19),
        (-sw * 0.8 + lean, 0.162),
        (sw * 0.8 + lean, 0.162),
        (sw + lean, 0.19),
        (ww, 0.54),
        (-ww, 0.54),
    ]
    tex = _texture(attrs, pose.view, pen, img.height, img.width)
    if tex is None:
        pen.poly(pts, colours.upper)
    else:
        mask = Image.new("L", img.size, 0)
        pen.poly(pts, 255, ImageDraw.Draw(mask))
        img.paste(tex, (0, 0), mask)


def _draw_backpack_on_torso(pen: _Pen, pose: _Pose, bag: dict[str, Any]) -> None:
    """A backpack over the torso: its back and pocket from behind, its edge from the side."""
    if bag["type"] != "backpack":
        return
    colour = _shade(bag["colour"])
    sw = pose.shoulder_half_width
    if pose.view == "back":
        pen.poly([(-0.1, 0.2), (0.1, 0.2), (0.105, 0.46), (-0.105, 0.46)], colour)
        pen.rect(-0.07, 0.36, 0.07, 0.42, _shade(bag["colour"], 0.75))
    elif pose.view == "side":
        pen.poly(
            [(-sw - 0.02, 0.2), (-sw + 0.035, 0.19), (-sw + 0.035, 0.46), (-sw - 0.03, 0.46)],
            colour,
        )


def _draw_straps_and_shoulder_bag(pen: _Pen, pose: _Pose, bag: dict[str, Any]) -> None:
    """Backpack straps over the chest (front, side) and a shoulder bag with its strap."""
    view, lean, ww = pose.view, pose.lean, pose.waist_half_width
    if bag["type"] == "backpack" and view in ("front", "side"):
        strap = _shade(bag["colour"], 0.8)
        for s in (-1.0, 1.0) if view == "front" else (0.0,):
            pen.limb((s * 0.07 + lean, 0.168), (s * 0.085, 0.36), 0.024, 0.022, strap)
    if bag["type"] == "shoulder" and not (view == "side" and bag["side"] == "right"):
        colour = _shade(bag["colour"])
        bx = pose.bag_side if view != "side" else 0.0
        pen.limb(
            (-bx * 0.08 + lean, 0.17),
            (bx * (ww + 0.02), 0.45),
            0.014,
            0.014,
            _shade(bag["colour"], 0.7),
        )
        x0 = bx * (ww + 0.01) if view != "side" else -0.04
        pen.rect(x0 - 0.042, 0.43, x0 + 0.042, 0.54, colour)


def _draw_head_front(pen: _Pen, hx: float, style: str, colours: _Colours) -> None:
    cap_y, cap_rx, cap_ry = _HAIR_CAP_FRONT[style]
    pen.ellipse(hx, cap_y, cap_rx, cap_ry, colours.hair)
    face_y = 0.088 if style != "buzz" else 0.082
    pen.ellipse(hx, face_y, _HEAD_RX * 0.9, _HEAD_RY * 0.78, colours.skin)
    pen.ellipse(hx - 0.017, 0.082, 0.006, 0.005, _EYE_COLOUR)
    pen.ellipse(hx + 0.017, 0.082, 0.006, 0.005, _EYE_COLOUR)
    if style == "bun":
        pen.ellipse(hx, 0.006, 0.026, 0.022, colours.hair)


def _draw_head_back(pen: _Pen, hx: float, style: str, colours: _Colours) -> None:
    hair = colours.hair
    if style == "buzz":
        pen.ellipse(hx, _HEAD_Y, _HEAD_RX, _HEAD_RY, colours.skin)
        pen.ellipse(hx, _HEAD_Y - 0.012, _HEAD_RX, _HEAD_RY * 0.8, hair)
    else:
        pen.ellipse(hx, _HEAD_Y, _HEAD_RX * (1.25 if style == "curly" else 1.05), _HEAD_RY, hair)
    if style == "long":
        pen.poly(
            [(hx - 0.058, 0.07), (hx + 0.058, 0.07), (hx + 0.066, 0.26), (hx - 0.066, 0.26)],
            hair,
        )
    elif style == "ponytail":
        pen.limb((hx, 0.08), (hx, 0.2), 0.03, 0.018, hair)
    elif style == "bun":
        pen.ellipse(hx, 0.02, 0.028, 0.024, hair)


def _draw_head_side(pen: _Pen, hx: float, style: str, colours: _Colours) -> None:
    """The head in profile, facing +x."""
    hair = colours.hair
    if style == "long":
        pen.poly([(hx - 0.05, 0.05), (hx + 0.0, 0.05), (hx - 0.02, 0.25), (hx - 0.075, 0.24)], hair)
    pen.ellipse(hx, _HEAD_Y, _HEAD_RX, _HEAD_RY, colours.skin)
    pen.ellipse(
        hx - 0.012,
        _HEAD_Y - 0.012,
        _HEAD_RX * (1.2 if style == "curly" else 0.95),
        _HEAD_RY * (0.8 if style != "buzz" else 0.7),
        hair,
    )
    pen.ellipse(hx + 0.028, 0.075, 0.005, 0.005, _EYE_COLOUR)
    if style == "ponytail":
        pen.limb((hx - 0.04, 0.05), (hx - 0.09, 0.14), 0.026, 0.016, hair)
    elif style == "bun":
        pen.ellipse(hx - 0.045, 0.03, 0.025, 0.022, hair)


def _draw_neck_and_head(pen: _Pen, pose: _Pose, attrs: Attributes, colours: _Colours) -> None:
    hx = pose.head_x
    pen.rect(hx - 0.02, 0.12, hx + 0.02, 0.17, colours.skin)
    style = attrs["head"]["hair_style"]
    if pose.view == "front":
        _draw_head_front(pen, hx, style, colours)
    elif pose.view == "back":
        _draw_head_back(pen, hx, style, colours)
    else:
        _draw_head_side(pen, hx, style, colours)


def _draw_headwear(pen: _Pen, pose: _Pose, hat: dict[str, Any]) -> None:
    """A cap (with its peak in front and side views) or a beanie, if the person wears one."""
    if hat["type"] == "none":
        return
    hx = pose.head_x
    colour = _shade(hat["colour"])
    if hat["type"] == "cap":
        pen.ellipse(hx, 0.035, 0.054, 0.034, colour)
        pen.rect(hx - 0.054, 0.035, hx + 0.054, 0.045, colour)
        if pose.view == "front":
            pen.ellipse(hx, 0.05, 0.05, 0.012, _shade(hat["colour"], 0.75))
        elif pose.view == "side":
            pen.poly(
                [
                    (hx + 0.02, 0.04),
                    (hx + 0.09, 0.045),
                    (hx + 0.085, 0.055),
                    (hx + 0.02, 0.054),
                ],
                _shade(hat["colour"], 0.75),
            )
    else:  # beanie
        pen.ellipse(hx, 0.04, 0.055, 0.045, colour)
        pen.rect(hx - 0.056, 0.04, hx + 0.056, 0.062, _shade(hat["colour"], 0.8))


def _draw_person(
    img: Image.Image,
    attrs: Attributes,
    rng: np.random.Generator,
    *,
    axis_x: float,
    head_top: float,
    height_px: float,
    mirror: bool,
    view: str,
) -> None:
    """Draw one person ``height_px`` pixels tall, body axis at x = ``axis_x`` and top of the
    head at y = ``head_top``, onto ``img``; far parts first."""
    pen = _Pen(ImageDraw.Draw(img), axis_x, head_top, height_px, mirror)
    colours = _colours(attrs)
    pose = _pose(attrs, rng, view)
    _draw_behind_body(pen, pose, attrs, colours)
    _draw_leg(pen, pose, attrs, colours, 0)  # far leg first
    _draw_leg(pen, pose, attrs, colours, 1)
    _draw_waist(pen, pose, attrs, colours)
    if view == "side":
        _draw_arm(pen, pose, attrs, colours, rng, 1)  # far arm behind the torso
    _draw_torso(img, pen, pose, attrs, colours)
    _draw_backpack_on_torso(pen, pose, attrs["bag"])
    _draw_arm(pen, pose, attrs, colours, rng, 0)
    if view != "side":
        _draw_arm(pen, pose, attrs, colours, rng, 1)
    _draw_straps_and_shoulder_bag(pen, pose, attrs["bag"])
    _draw_neck_and_head(pen, pose, attrs, colours)
    _draw_headwear(pen, pose, attrs["hat"])
