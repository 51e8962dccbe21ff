"""The dataset: the identity plan (families, cameras, images per camera), Market-1501 file names,
the images of identities, distractors and junk in the order they are drawn,
:func:`make_synthetic_dataset` (which writes them and ``synthetic.json``), and the readers of a
generated dataset's metadata: :func:`synthetic_families` and :func:`synthetic_mismatch`.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from PIL import __version__ as _PILLOW_VERSION

from .attributes import _MUTABLE_PARTS, Attributes, _draw_attributes, _make_family, _mutate
from .cameras import _Camera, _make_cameras
from .config import (
    _ROLE_DISTRACTOR,
    _ROLE_FAMILY,
    _ROLE_IMAGE,
    _ROLE_JUNK,
    _ROLE_TRACK,
    _SPLIT_CODE,
    GENERATOR_VERSION,
    METADATA_FILE,
    SPLIT_FOLDERS,
    SyntheticConfig,
    _is_int,
    _rng,
)
from .scene import _finish, _save, _scene

#: Receives every finished image as ``save(folder, file_name, image)``, in generation order.
_SaveImage = Callable[[str, str, Image.Image], None]


@dataclass
class _Identity:
    """One identity of the plan: its family, its attributes, and its cameras with the number
    of images in each."""

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
    """The train identities, then the test identities, drawn family by family."""
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


class _Writer:
    """Hands finished images to ``save`` and keeps the per-image records and folder counts."""

    def __init__(self, save: _SaveImage) -> None:
        self.save = save
        self.namer = _Namer()
        self.images: list[dict[str, Any]] = []
        self.counts = dict.fromkeys(SPLIT_FOLDERS, 0)

    def emit(
        self,
        folder: str,
        img: Image.Image,
        name: str,
        pid: int,
        cam: int,
        kind: str,
        info: dict[str, Any],
    ) -> None:
        self.save(folder, name, img)
        self.counts[folder] += 1
        self.images.append(
            {
                "file": f"{folder}/{name}",
                "pid": pid,
                "camera": cam,
                "kind": kind,
                "view": info.get("view"),
                "occluder": info.get("occluder"),
            }
        )


def _identity_images(
    writer: _Writer,
    seed: int,
    cfg: SyntheticConfig,
    cams: list[_Camera],
    idents: list[_Identity],
) -> None:
    """Every identity's images: train images, and for a test identity one query per camera."""
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
                writer.emit(
                    folder,
                    img,
                    writer.namer.name(ident.pid, cam, seq, frame, box),
                    ident.pid,
                    cam,
                    "identity",
                    info,
                )


def _distractor_images(
    writer: _Writer,
    seed: int,
    cfg: SyntheticConfig,
    cams: list[_Camera],
    test_ids: list[_Identity],
) -> dict[str, int]:
    """The pid 0 gallery images: look-alikes of test identities, partial bodies and fresh
    people; returns how many of each kind."""
    n_look = int(round(cfg.num_distractors * cfg.lookalike_frac))
    n_part = int(round(cfg.num_distractors * cfg.partial_frac))
    kinds: dict[str, int] = {"fresh": 0, "lookalike": 0, "partial": 0}
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
        kinds[kind] += 1
        occ = bool(rng.random() < cfg.occlusion_prob)
        scene, info = _scene(
            rng, cfg, cams[cam - 1], attrs, occlude=occ, scale_mul=scale_mul, anchor=anchor
        )
        img = _finish(rng, cfg, cams[cam - 1], scene)
        name = writer.namer.name(
            0, cam, int(rng.integers(1, 7)), int(rng.integers(1, 900_000)), int(rng.integers(1, 9))
        )
        writer.emit("bounding_box_test", img, name, 0, cam, f"distractor-{kind}", info)
    return kinds


def _junk_images(
    writer: _Writer, seed: int, cfg: SyntheticConfig, cams: list[_Camera]
) -> dict[str, int]:
    """The pid -1 gallery images (bad detections), kinds in turn: background, tiny, fragment;
    returns how many of each kind."""
    kinds: dict[str, int] = {"background": 0, "tiny": 0, "fragment": 0}
    for j in range(cfg.num_junk):
        rng = _rng(seed, _ROLE_JUNK, j)
        cam = int(rng.integers(1, cfg.num_cameras + 1))
        kind = ("background", "tiny", "fragment")[j % 3]
        kinds[kind] += 1
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
        name = writer.namer.name(
            -1, cam, int(rng.integers(1, 7)), int(rng.integers(1, 900_000)), int(rng.integers(1, 9))
        )
        writer.emit("bounding_box_test", img, name, -1, cam, f"junk-{kind}", info)
    return kinds


def _metadata(
    seed: int,
    cfg: SyntheticConfig,
    cams: list[_Camera],
    idents: list[_Identity],
    writer: _Writer,
    distractor_kinds: dict[str, int],
    junk_kinds: dict[str, int],
) -> dict[str, Any]:
    """The content of ``synthetic.json``."""
    return {
        "generator": GENERATOR_VERSION,
        "pillow_version": _PILLOW_VERSION,
        "numpy_version": np.__version__,
        "seed": seed,
        "config": cfg.to_dict(),
        "counts": {
            **writer.counts,
            "train_ids": cfg.num_train_ids,
            "test_ids": cfg.num_test_ids,
            "families": len({i.family for i in idents}),
            "distractors": cfg.num_distractors,
            "junk": cfg.num_junk,
            "distractor_kinds": distractor_kinds,
            "junk_kinds": junk_kinds,
            "occluded_images": sum(r["occluder"] is not None for r in writer.images),
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
        "images": sorted(writer.images, key=lambda r: r["file"]),
    }


def _generate(seed: int, cfg: SyntheticConfig, save: _SaveImage) -> dict[str, Any]:
    """Draw the whole dataset: hand every finished image, before JPEG encoding, to
    ``save(folder, file_name, image)`` (identities, then distractors, then junk) and return the
    metadata. :func:`make_synthetic_dataset` writes the images as JPEG files; the golden test
    (tests/eval/test_synthetic_golden.py) hashes them as they are."""
    cams = _make_cameras(seed, cfg.num_cameras)
    idents = _identities(seed, cfg)
    writer = _Writer(save)
    _identity_images(writer, seed, cfg, cams, idents)
    test_ids = [i for i in idents if i.split == "test"]
    distractor_kinds = _distractor_images(writer, seed, cfg, cams, test_ids)
    junk_kinds = _junk_images(writer, seed, cfg, cams)
    return _metadata(seed, cfg, cams, idents, writer, distractor_kinds, junk_kinds)


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

    def save(folder: str, name: str, img: Image.Image) -> None:
        _save(img, out / folder / name, cfg.jpeg_quality)

    meta = _generate(seed, cfg, save)
    (out / METADATA_FILE).write_text(
        json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    return out


def synthetic_families(root: str | os.PathLike[str]) -> dict[int, int]:
    """The family of every identity of a generated dataset: ``{pid: family}``.

    Read from ``root/synthetic.json`` (its ``identities`` list, train and test splits). Members
    of a family are look-alikes: they differ in one part only (the docstring of
    :mod:`reid_eval.datasets.synthetic`).

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
