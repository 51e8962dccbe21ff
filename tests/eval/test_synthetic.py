"""Tests of the synthetic re-ID dataset generator (reid_eval.datasets.synthetic)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from reid_eval.datasets.synthetic import (
    GENERATOR_VERSION,
    METADATA_FILE,
    SPLIT_FOLDERS,
    SyntheticConfig,
    _Namer,
    make_synthetic_dataset,
)

NAME_RE = re.compile(r"^(-1|\d+)_c(\d)s(\d+)_(\d+)_(\d+)\.jpg$")

# cameras_per_id keeps its default (2, 4): its upper bound is clipped to num_cameras = 3.
TINY = SyntheticConfig(
    num_train_ids=8,
    num_test_ids=8,
    num_cameras=3,
    family_size=4,
    family_frac=1.0,
    images_per_camera=(1, 3),
    num_distractors=6,
    num_junk=3,
    occlusion_prob=0.3,
    noise_std=3.0,
    blur_prob=0.25,
)


def _files(root: Path) -> dict[str, bytes]:
    """``folder/name`` -> bytes for every image of the dataset."""
    return {
        f"{folder}/{p.name}": p.read_bytes()
        for folder in SPLIT_FOLDERS
        for p in sorted((root / folder).iterdir())
    }


def _parse(name: str) -> tuple[int, int]:
    m = NAME_RE.match(name)
    assert m is not None, name
    return int(m.group(1)), int(m.group(2))


def _records(root: Path) -> dict[str, list[tuple[int, int, str]]]:
    """folder -> [(pid, camera, name)] parsed from the file names."""
    out: dict[str, list[tuple[int, int, str]]] = {}
    for folder in SPLIT_FOLDERS:
        out[folder] = [(*_parse(p.name), p.name) for p in sorted((root / folder).iterdir())]
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("synthetic") / "data"
    root = make_synthetic_dataset(out, seed=0, config=TINY)
    assert root == out
    meta = json.loads((root / METADATA_FILE).read_text(encoding="utf-8"))
    return root, meta


# ------------------------------------------------------------------------------------------
# determinism
# ------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(tiny: tuple[Path, dict[str, Any]], tmp_path: Path):
    root, _ = tiny
    again = make_synthetic_dataset(tmp_path / "again", seed=0, config=TINY)
    first, second = _files(root), _files(again)
    assert sorted(first) == sorted(second)
    assert len(first) > 60
    for key in first:
        assert first[key] == second[key], key
    assert (root / METADATA_FILE).read_bytes() == (again / METADATA_FILE).read_bytes()


def test_other_seed_gives_other_images(tiny: tuple[Path, dict[str, Any]], tmp_path: Path):
    root, _ = tiny
    other = make_synthetic_dataset(tmp_path / "other", seed=1, config=TINY)
    digests = {hashlib.sha256(b).hexdigest() for b in _files(root).values()}
    other_digests = {hashlib.sha256(b).hexdigest() for b in _files(other).values()}
    assert digests.isdisjoint(other_digests)
    assert sorted(_files(root)) != sorted(_files(other))


def test_train_images_do_not_depend_on_test_side(tiny: tuple[Path, dict[str, Any]], tmp_path: Path):
    root, _ = tiny
    cfg = SyntheticConfig(
        **{**TINY.to_dict(), "num_test_ids": 3, "num_distractors": 2, "num_junk": 0}
    )
    small = make_synthetic_dataset(tmp_path / "small", seed=0, config=cfg)
    train = {k: v for k, v in _files(root).items() if k.startswith("bounding_box_train/")}
    train_small = {k: v for k, v in _files(small).items() if k.startswith("bounding_box_train/")}
    assert len(train) > 20
    assert train == train_small
    assert len(_files(small)) < len(_files(root))


# ------------------------------------------------------------------------------------------
# layout and split invariants
# ------------------------------------------------------------------------------------------


def test_file_names_sizes_and_cameras(tiny: tuple[Path, dict[str, Any]]):
    root, meta = tiny
    names = [p.name for folder in SPLIT_FOLDERS for p in (root / folder).iterdir()]
    assert len(names) == len(set(names))
    assert all(NAME_RE.match(n) for n in names)
    assert sorted(p.name for p in root.iterdir()) == sorted([*SPLIT_FOLDERS, METADATA_FILE])
    cams = {cam for recs in _records(root).values() for _, cam, _ in recs}
    assert cams == {1, 2, 3}
    for folder in SPLIT_FOLDERS:
        for p in sorted((root / folder).iterdir())[:40]:
            with Image.open(p) as im:
                assert im.format == "JPEG"
                assert im.mode == "RGB"
                assert im.size == (TINY.width, TINY.height)
    assert {r["file"] for r in meta["images"]} == {
        f"{f}/{p.name}" for f in SPLIT_FOLDERS for p in (root / f).iterdir()
    }


def test_split_invariants(tiny: tuple[Path, dict[str, Any]]):
    root, meta = tiny
    recs = _records(root)
    train = recs["bounding_box_train"]
    query = recs["query"]
    gallery = recs["bounding_box_test"]
    train_pids = {p for p, _, _ in train}
    query_pids = {p for p, _, _ in query}
    gallery_pids = {p for p, _, _ in gallery if p > 0}

    assert train_pids == set(range(1, 9))
    assert query_pids == set(range(9, 17))
    assert train_pids.isdisjoint(query_pids | gallery_pids)
    assert query_pids <= gallery_pids
    assert gallery_pids == query_pids

    # distractors and junk: gallery only, as many as configured
    assert all(p > 0 for p, _, _ in train + query)
    assert sum(p == 0 for p, _, _ in gallery) == TINY.num_distractors
    assert sum(p == -1 for p, _, _ in gallery) == TINY.num_junk

    # exactly one query per (test pid, camera it appears in)
    per_pid_cams: dict[int, set[int]] = defaultdict(set)
    for p, c, _ in query + gallery:
        if p > 0:
            per_pid_cams[p].add(c)
    query_count = Counter((p, c) for p, c, _ in query)
    assert set(query_count.values()) == {1}
    assert set(query_count) == {(p, c) for p, cams in per_pid_cams.items() for c in cams}

    # every query has a true match in another camera
    gallery_pairs = {(p, c) for p, c, _ in gallery}
    for p, c, name in query:
        assert any(gp == p and gc != c for gp, gc in gallery_pairs), name

    # every identity is seen by >= 2 cameras (cameras_per_id upper bound clipped to 3)
    train_cams: dict[int, set[int]] = defaultdict(set)
    for p, c, _ in train:
        train_cams[p].add(c)
    assert all(2 <= len(c) <= 3 for c in train_cams.values())
    assert all(2 <= len(c) <= 3 for c in per_pid_cams.values())

    counts = meta["counts"]
    assert counts["bounding_box_train"] == len(train)
    assert counts["query"] == len(query)
    assert counts["bounding_box_test"] == len(gallery)
    assert counts["distractors"] == TINY.num_distractors
    assert counts["junk"] == TINY.num_junk


def test_metadata(tiny: tuple[Path, dict[str, Any]]):
    root, meta = tiny
    assert meta["generator"] == GENERATOR_VERSION
    assert meta["seed"] == 0
    assert meta["config"] == TINY.to_dict()
    assert SyntheticConfig(**meta["config"]) == TINY
    assert len(meta["cameras"]) == 3
    idents = meta["identities"]
    assert [i["pid"] for i in idents] == list(range(1, 17))
    recs = _records(root)
    for ident in idents:
        files = [(c, n) for f in SPLIT_FOLDERS for p, c, n in recs[f] if p == ident["pid"]]
        assert sorted({c for c, _ in files}) == ident["cameras"]
        per_cam = Counter(c for c, _ in files)
        assert {str(c): n for c, n in per_cam.items()} == ident["images_per_camera"]
    kinds = Counter(r["kind"] for r in meta["images"])
    assert kinds["identity"] == sum(meta["counts"][f] for f in SPLIT_FOLDERS) - 9
    assert sum(v for k, v in kinds.items() if k.startswith("distractor-")) == 6
    assert sum(v for k, v in kinds.items() if k.startswith("junk-")) == 3
    views = Counter(r["view"] for r in meta["images"] if r["kind"] == "identity")
    assert set(views) == {"front", "back", "side"}


def test_pid_naming_beyond_four_digits():
    namer = _Namer()
    assert namer.name(12345, 3, 2, 1234, 1) == "12345_c3s2_001234_01.jpg"
    assert namer.name(-1, 3, 2, 1234, 1) == "-1_c3s2_001234_01.jpg"
    assert namer.name(0, 1, 1, 7, 2) == "0000_c1s1_000007_02.jpg"
    assert namer.name(0, 1, 1, 7, 2) == "0000_c1s1_000008_02.jpg"  # a clash moves the frame


# ------------------------------------------------------------------------------------------
# families
# ------------------------------------------------------------------------------------------


def test_families_share_most_parts_and_differ_in_one(tiny: tuple[Path, dict[str, Any]]):
    _, meta = tiny
    families: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ident in meta["identities"]:
        families[ident["family"]].append(ident)
    assert len(families) == 4
    assert all(len(m) == TINY.family_size for m in families.values())
    groups = list(meta["identities"][0]["attributes"])
    assert len(groups) == 7
    part_group = {
        "hair": "head",
        "hat": "hat",
        "upper_texture": "upper",
        "lower": "lower",
        "shoes": "shoes",
        "bag": "bag",
    }
    for members in families.values():
        assert len({m["split"] for m in members}) == 1
        base = members[0]
        assert base["varied_part"] is None
        for m in members[1:]:
            changed = [g for g in groups if m["attributes"][g] != base["attributes"][g]]
            assert changed == [part_group[m["varied_part"]]]
        for a, b in itertools.combinations(members, 2):
            same = sum(a["attributes"][g] == b["attributes"][g] for g in groups)
            assert 5 <= same <= 6
        # the global colours are shared by the whole family
        assert len({tuple(m["attributes"]["upper"]["colour"]) for m in members}) == 1
    # different families do not share their global colours
    uppers = {tuple(ms[0]["attributes"]["upper"]["colour"]) for ms in families.values()}
    assert len(uppers) == 4


# ------------------------------------------------------------------------------------------
# not noise: identity is visible in the pixels
# ------------------------------------------------------------------------------------------


def _stripe_descriptor(path: Path) -> np.ndarray:
    """Mean colour of 8 horizontal stripes of the central columns (a classic re-ID baseline)."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.float64)
    h, w = a.shape[:2]
    a = a[int(0.05 * h) : int(0.97 * h), int(0.3 * w) : int(0.7 * w)]
    return np.concatenate([s.reshape(-1, 3).mean(0) for s in np.array_split(a, 8, 0)]) / 255


def test_same_identity_is_closer_than_other_families(tiny: tuple[Path, dict[str, Any]]):
    root, meta = tiny
    family = {i["pid"]: i["family"] for i in meta["identities"]}
    recs = [r for r in meta["images"] if r["pid"] > 0]
    desc = {r["file"]: _stripe_descriptor(root / r["file"]) for r in recs}
    same_id, same_id_xcam, same_family, other, other_xcam = [], [], [], [], []
    for a, b in itertools.combinations(recs, 2):
        d = float(np.linalg.norm(desc[a["file"]] - desc[b["file"]]))
        cross = a["camera"] != b["camera"]
        if a["pid"] == b["pid"]:
            same_id.append(d)
            if cross:
                same_id_xcam.append(d)
        elif family[a["pid"]] == family[b["pid"]]:
            same_family.append(d)
        else:
            other.append(d)
            if cross:
                other_xcam.append(d)
    assert min(map(len, (same_id, same_id_xcam, same_family, other, other_xcam))) >= 20
    m_id, m_fam, m_other = np.mean(same_id), np.mean(same_family), np.mean(other)
    # identity is the strongest signal, then family, then the rest
    assert m_id < 0.85 * m_other
    assert m_id < m_fam < m_other
    # ... also across cameras, where casts, backgrounds and viewpoints differ
    assert np.mean(same_id_xcam) < 0.9 * np.mean(other_xcam)
    # and images are not all alike: different families are far apart in absolute terms
    assert m_other > 0.4


# ------------------------------------------------------------------------------------------
# errors and overwrite
# ------------------------------------------------------------------------------------------

SMALL = SyntheticConfig(
    num_train_ids=2,
    num_test_ids=2,
    num_cameras=2,
    family_size=2,
    images_per_camera=(1, 2),
    num_distractors=1,
    num_junk=1,
)


def test_non_empty_dir_needs_overwrite(tmp_path: Path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        make_synthetic_dataset(out, seed=0, config=SMALL)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    root = make_synthetic_dataset(out, seed=0, config=SMALL, overwrite=True)
    first = _files(root)
    counts = json.loads((root / METADATA_FILE).read_text(encoding="utf-8"))["counts"]
    assert len(first) == sum(counts[f] for f in SPLIT_FOLDERS) >= 6
    assert (out / "notes.txt").read_text() == "mine"

    # a second run refuses, then overwrites: stale images go, the user's file stays
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_synthetic_dataset(out, seed=1, config=SMALL)
    (out / "query" / "9999_c1s1_000001_01.jpg").write_bytes(b"stale")
    make_synthetic_dataset(out, seed=0, config=SMALL, overwrite=True)
    assert _files(out) == first
    assert (out / "notes.txt").read_text() == "mine"


def test_empty_or_missing_dir_is_fine(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    root = make_synthetic_dataset(tmp_path / "empty", config=SMALL)
    assert sum(1 for _ in (root / "query").iterdir()) >= 4
    nested = make_synthetic_dataset(str(tmp_path / "a" / "b"), config=SMALL)
    assert nested == tmp_path / "a" / "b"
    assert _files(nested) == _files(root)


def test_file_as_out_dir_is_rejected(tmp_path: Path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(NotADirectoryError):
        make_synthetic_dataset(target, config=SMALL, overwrite=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_train_ids", 0),
        ("num_test_ids", -3),
        ("num_cameras", 1),
        ("num_cameras", 10),
        ("num_cameras", True),
        ("height", "128"),
        ("width", 4),
        ("family_size", 0),
        ("images_per_camera", (3, 2)),
        ("images_per_camera", (0, 2)),
        ("images_per_camera", (2,)),
        ("cameras_per_id", (1, 3)),
        ("cameras_per_id", (7, 8)),
        ("num_distractors", -1),
        ("num_junk", 2.5),
        ("occlusion_prob", 1.5),
        ("occlusion_prob", float("nan")),
        ("jpeg_quality", 0),
        ("jpeg_quality", 101),
        ("noise_std", -1.0),
        ("blur_prob", 2),
        ("render_scale", 0),
    ],
)
def test_invalid_config_names_the_field(field: str, value: Any):
    with pytest.raises(ValueError, match=rf"SyntheticConfig\.{field} must be") as info:
        SyntheticConfig(**{field: value})
    assert repr(value) in str(info.value)


def test_valid_config_normalises_pairs():
    cfg = SyntheticConfig(images_per_camera=[1, 5], cameras_per_id=[2, 9], num_cameras=9)
    assert cfg.images_per_camera == (1, 5)
    assert cfg.cameras_per_id == (2, 9)
    assert cfg.to_dict()["images_per_camera"] == [1, 5]


def test_invalid_seed(tmp_path: Path):
    with pytest.raises(ValueError, match="seed"):
        make_synthetic_dataset(tmp_path / "x", seed=-1, config=SMALL)
    assert not (tmp_path / "x").exists()


def test_family_frac_keeps_look_alikes_for_a_fraction_of_identities(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, family_size=2, family_frac=0.5)
    root = make_synthetic_dataset(tmp_path / "frac", seed=0, config=cfg)
    meta = json.loads((root / "synthetic.json").read_text())
    train = [i for i in meta["identities"] if i["split"] == "train"]
    sizes: dict[int, int] = {}
    for ident in train:
        sizes[ident["family"]] = sizes.get(ident["family"], 0) + 1
    grouped = round(0.5 * TINY.num_train_ids)
    assert sum(s for s in sizes.values() if s == 2) == grouped - grouped % 2
    assert sum(1 for s in sizes.values() if s == 1) == TINY.num_train_ids - grouped + grouped % 2
    # family_frac=1.0 draws exactly what the generator drew before the option: the families of
    # a fixed seed match a run of the earlier code (their identities' family numbers and pids).
    whole = make_synthetic_dataset(tmp_path / "whole", seed=0, config=TINY)
    again = make_synthetic_dataset(
        tmp_path / "again", seed=0, config=dataclasses.replace(TINY, family_frac=1.0)
    )
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        names = sorted(p.name for p in (whole / sub).iterdir())
        assert names == sorted(p.name for p in (again / sub).iterdir())
        assert all((whole / sub / n).read_bytes() == (again / sub / n).read_bytes() for n in names)


def test_reuse_accepts_a_dataset_written_before_a_new_default_field(tmp_path: Path) -> None:
    from reid_eval.datasets import synthetic_mismatch

    root = make_synthetic_dataset(tmp_path / "old", seed=0, config=TINY)
    meta = json.loads((root / METADATA_FILE).read_text())
    assert synthetic_mismatch(root, 0, TINY) is None
    del meta["config"]["family_frac"]  # as written before the field existed: it drew 1.0
    (root / METADATA_FILE).write_text(json.dumps(meta))
    assert synthetic_mismatch(root, 0, TINY) is None
    differs = synthetic_mismatch(root, 0, dataclasses.replace(TINY, family_frac=0.5))
    assert differs == "family_frac: 1.0 -> 0.5"
    # the current default (0.3) is not what an older file without the field stands for
    assert "family_frac: 1.0 -> 0.3" in synthetic_mismatch(root, 0, SyntheticConfig())
    assert synthetic_mismatch(root, 1, TINY) == "seed: 0 -> 1"
    assert "does not exist" in synthetic_mismatch(tmp_path / "none", 0, TINY)
