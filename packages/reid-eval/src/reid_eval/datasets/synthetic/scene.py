"""One image from background to file: the scene (a camera's background, a person placed in a
possibly misaligned box, an optional occluder: pole, vehicle, sign board or another pedestrian),
then finishing (downsampling, the camera's colour response, blur, sensor noise) and the JPEG
file.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .attributes import Attributes, _draw_attributes
from .cameras import _background, _Camera
from .config import SyntheticConfig
from .render import _draw_person, _shade


def _pick_view(rng: np.random.Generator, cam: _Camera) -> str:
    return ("front", "back", "side")[int(rng.choice(3, p=np.asarray(cam.view_p)))]


def _draw_occluder(
    rng: np.random.Generator,
    img: Image.Image,
    *,
    axis_x: float,
    head_top: float,
    height_px: float,
) -> str:
    """Draw an occluder over part of the person; returns its kind."""
    w, h = img.size
    draw = ImageDraw.Draw(img)
    kind = ("pole", "vehicle", "board", "person")[int(rng.choice(4, p=[0.25, 0.3, 0.2, 0.25]))]
    if kind == "pole":
        pole_w = float(rng.uniform(0.05, 0.11)) * height_px
        pole_x = axis_x + float(rng.normal(0, 0.08)) * height_px
        col = ((95, 95, 100), (150, 150, 152), (55, 90, 60), (205, 170, 40))[int(rng.integers(4))]
        draw.rectangle([pole_x - pole_w / 2, -1, pole_x + pole_w / 2, h + 1], fill=col)
        draw.rectangle([pole_x - pole_w / 2, -1, pole_x - pole_w / 6, h + 1], fill=_shade(col, 1.2))
    elif kind == "vehicle":
        top = head_top + float(rng.uniform(0.5, 0.72)) * height_px
        col = tuple(int(v) for v in rng.integers(20, 235, 3))
        x0 = -0.2 * w + float(rng.normal(0, 0.15)) * w
        draw.rounded_rectangle(
            [x0, top, x0 + 1.5 * w, h + height_px * 0.2], radius=0.08 * height_px, fill=col
        )
        draw.rectangle(
            [x0 + 0.1 * w, top + 0.04 * height_px, x0 + 1.4 * w, top + 0.12 * height_px],
            fill=_shade(col, 0.45),
        )
    elif kind == "board":
        side = 1.0 if rng.random() < 0.5 else -1.0
        top = head_top + float(rng.uniform(0.12, 0.35)) * height_px
        board_h = float(rng.uniform(0.18, 0.3)) * height_px
        edge = axis_x + side * float(rng.uniform(-0.05, 0.08)) * height_px
        far = w + 5 if side < 0 else -5
        col = tuple(int(v) for v in rng.integers(30, 240, 3))
        draw.rectangle([min(edge, far), top, max(edge, far), top + board_h], fill=col)
        draw.rectangle(
            [min(edge, far), top + board_h * 0.3, max(edge, far), top + board_h * 0.45],
            fill=_shade(col, 0.6),
        )
    else:  # another pedestrian passing in front
        other = _draw_attributes(rng)
        side = 1.0 if rng.random() < 0.5 else -1.0
        other_height = height_px * float(rng.uniform(1.0, 1.25))
        other_x = axis_x + side * float(rng.uniform(0.2, 0.32)) * height_px
        _draw_person(
            img,
            other,
            rng,
            axis_x=other_x,
            head_top=head_top + float(rng.normal(0, 0.04)) * height_px,
            height_px=other_height,
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
    height_px = (
        h * cam.scale * attrs["build"]["height"] * scale_mul * float(rng.uniform(0.93, 1.06))
    )
    misaligned = rng.random() < 0.12  # a badly aligned box now and then
    box_sd = 0.09 if misaligned else 0.035
    axis_x = (
        w * (0.5 if cx_frac is None else cx_frac)
        + float(np.clip(rng.normal(0, box_sd), -0.25, 0.25)) * w
    )
    if y_frac is not None:
        top = y_frac * h
    elif anchor == "head":
        top = 0.03 * h
    elif anchor == "feet":
        top = 0.99 * h - height_px
    else:
        top = (h - height_px) / 2
    head_top = top + cam.y_shift * h + float(np.clip(rng.normal(0, box_sd * 0.8), -0.15, 0.15)) * h
    view = _pick_view(rng, cam)
    mirror = bool(rng.random() < 0.5)
    _draw_person(
        img,
        attrs,
        rng,
        axis_x=axis_x,
        head_top=head_top,
        height_px=height_px,
        mirror=mirror,
        view=view,
    )
    info["view"] = view
    if occlude:
        info["occluder"] = _draw_occluder(
            rng, img, axis_x=axis_x, head_top=head_top, height_px=height_px
        )
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


def _save(img: Image.Image, path: pathlib.Path, quality: int) -> None:
    """Write a finished image as the dataset's JPEG file."""
    img.save(path, format="JPEG", quality=quality, optimize=False)
