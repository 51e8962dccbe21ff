"""The cameras: each camera's colour response, lighting, viewpoint, noise and blur
(:class:`_Camera`, drawn once per seed by :func:`_make_cameras`), and the scene behind the person
(:func:`_background`: wall and floor, tiles, street, park or shop fronts, with clutter).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .attributes import RGB
from .config import _ROLE_CAMERA, _rng

_BG_STYLES = ("wall_floor", "tiles", "street", "park", "shops")


@dataclass
class _Camera:
    """One camera's look, drawn once per seed: colour response, lighting, background, where
    and how people appear, blur and noise."""

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
