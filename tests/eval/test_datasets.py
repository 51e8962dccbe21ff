"""Loaders of every layout on generated trees: names, junk/distractors, cameras, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from reid_eval.datasets import (
    MSMT17,
    DatasetError,
    DatasetLayoutError,
    DatasetWithdrawnError,
    FolderDataset,
    ImageRecord,
    load_dataset,
)
from tests.helpers import write_images


def _names(records: list[ImageRecord]) -> list[str]:
    return [Path(r.path).name for r in records]


# ---------------------------------------------------------------- Market-1501
def test_market_splits_junk_distractors_and_cameras(market_tree: Path) -> None:
    ds = load_dataset("market1501", market_tree)
    assert ds.name == "market1501"
    assert [(r.pid, r.camid) for r in ds.train] == [(2, 0), (2, 1), (7, 2), (7, 5)]
    assert [(r.pid, r.camid) for r in ds.query] == [(1, 0), (3, 4)]
    # junk (-1) dropped, distractors (0) kept, Thumbs.db ignored; sorted by name
    assert _names(ds.gallery) == [
        "0000_c1s1_000151_01.jpg",
        "0000_c6s2_000771_04.jpg",
        "0001_c1s1_001101_02.jpg",
        "0001_c2s1_000301_01.jpg",
        "0003_c4s1_002301_01.jpg",
    ]
    assert [r.pid for r in ds.gallery] == [0, 0, 1, 1, 3]
    assert [r.camid for r in ds.gallery] == [0, 5, 0, 1, 3]
    assert all(Path(r.path).is_file() for r in ds.train + ds.query + ds.gallery)
    assert any("junk" in n for n in ds.notes)


def test_market_records_unpack_like_tuples(market_tree: Path) -> None:
    path, pid, camid = load_dataset("market", market_tree).query[0]
    assert (Path(path).name, pid, camid) == ("0001_c1s1_001051_00.jpg", 1, 0)


def test_market_finds_the_official_subfolder(market_tree: Path, tmp_path: Path) -> None:
    parent = tmp_path / "downloads"
    parent.mkdir()
    market_tree.rename(parent / "Market-1501-v15.09.15")
    ds = load_dataset("Market-1501", parent)
    assert ds.root == parent / "Market-1501-v15.09.15"
    assert ds.stats("train").num_images == 4


def test_market_summary_counts(market_tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = load_dataset("market1501", market_tree).summary()
    assert capsys.readouterr().out.strip() == text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[3:6]}
    assert rows == {"train": ["4", "2", "4"], "query": ["2", "2", "2"], "gallery": ["5", "3", "4"]}


def test_market_missing_folder_names_the_layout(market_tree: Path) -> None:
    (market_tree / "query").rename(market_tree / "queries")
    with pytest.raises(DatasetLayoutError, match=r"missing there: query") as e:
        load_dataset("market1501", market_tree)
    assert "bounding_box_train/0002_c1s1_000451_03.jpg" in str(e.value)


def test_market_root_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        load_dataset("market1501", tmp_path / "nowhere")


def test_market_unparsable_names_are_listed(market_tree: Path) -> None:
    write_images(market_tree / "query", [f"person{i}.jpg" for i in range(7)])
    with pytest.raises(DatasetError, match=r"7 file name\(s\)") as e:
        load_dataset("market1501", market_tree)
    msg = str(e.value)
    assert "'person0.jpg'" in msg and "and 2 more" in msg and "0002_c1s1_000451_03.jpg" in msg


def test_market_empty_split_is_an_error(market_tree: Path) -> None:
    for f in (market_tree / "query").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match="query split .* is empty"):
        load_dataset("market1501", market_tree)


def test_market_distractor_query_is_dropped_with_a_warning(market_tree: Path) -> None:
    write_images(market_tree / "query", ["0000_c2s1_000001_00.jpg"])
    with pytest.warns(UserWarning, match="distractor"):
        ds = load_dataset("market1501", market_tree)
    assert [r.pid for r in ds.query] == [1, 3]


def test_market_query_and_gallery_from_different_datasets(market_tree: Path) -> None:
    for f in (market_tree / "query").iterdir():
        f.unlink()
    write_images(market_tree / "query", ["0999_c1s1_000001_00.jpg"])
    with pytest.raises(DatasetError, match="no query identity appears in the gallery"):
        load_dataset("market1501", market_tree)


# ---------------------------------------------------------------- VeRi-776
def test_veri776_names_and_twenty_cameras(tmp_path: Path) -> None:
    root = tmp_path / "VeRi"
    write_images(root / "image_train", ["0001_c001_00016450_0.jpg", "0001_c020_00016570_0.jpg"])
    write_images(root / "image_query", ["0002_c002_00030600_0.jpg"])
    write_images(root / "image_test", ["0002_c003_00084280_0.jpg", "0002_c002_00030605_1.jpg"])
    ds = load_dataset("veri776", tmp_path)  # the VeRi/ sub-folder is found
    assert ds.root == root
    assert [(r.pid, r.camid) for r in ds.train] == [(1, 0), (1, 19)]
    assert [(r.pid, r.camid) for r in ds.query] == [(2, 1)]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(2, 1), (2, 2)]


def test_veri776_bad_name(tmp_path: Path) -> None:
    write_images(tmp_path / "image_train", ["0001_c001_00016450_0.jpg", "car.jpg"])
    write_images(tmp_path / "image_query", ["0002_c002_00030600_0.jpg"])
    write_images(tmp_path / "image_test", ["0002_c003_00084280_0.jpg"])
    with pytest.raises(DatasetError, match=r"0001_c001_00016450_0.jpg'\): 'car.jpg'"):
        load_dataset("veri", tmp_path)


# ---------------------------------------------------------------- MSMT17
def _msmt_tree(root: Path, train_dir: str = "train", test_dir: str = "test") -> Path:
    lists = {
        "list_train.txt": (
            train_dir,
            [
                ("0000/0000_000_01_0303morning_0015_0.jpg", 0),
                ("0000/0000_001_05_0303morning_0016_1.jpg", 0),
                ("0001/0001_000_15_0303noon_0001_0.jpg", 1),
            ],
        ),
        "list_val.txt": (train_dir, [("0002/0002_000_07_0303afternoon_0002_0.jpg", 2)]),
        "list_query.txt": (test_dir, [("0000/0000_000_03_0303morning_0008_0.jpg", 0)]),
        "list_gallery.txt": (
            test_dir,
            [
                ("0000/0000_001_02_0303morning_0010_0.jpg", 0),
                ("0003/0003_000_14_0303noon_0005_0.jpg", 3),
            ],
        ),
    }
    for list_name, (folder, entries) in lists.items():
        write_images(root / folder, [rel for rel, _ in entries])
        (root / list_name).write_text("".join(f"{rel} {pid}\n" for rel, pid in entries))
    return root


def test_msmt17_v1_train_plus_val_and_cameras(tmp_path: Path) -> None:
    _msmt_tree(tmp_path / "MSMT17_V1")
    ds = load_dataset("msmt17", tmp_path)
    assert ds.root == tmp_path / "MSMT17_V1"
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 0), (0, 4), (1, 14), (2, 6)]
    assert [(r.pid, r.camid) for r in ds.query] == [(0, 2)]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(0, 1), (3, 13)]
    assert (
        Path(ds.train[0].path)
        == tmp_path / "MSMT17_V1/train/0000/0000_000_01_0303morning_0015_0.jpg"
    )


def test_msmt17_without_val(tmp_path: Path) -> None:
    _msmt_tree(tmp_path)
    ds = MSMT17(tmp_path, include_val=False).load()
    assert [r.pid for r in ds.train] == [0, 0, 1]
    ds = load_dataset("msmt17", tmp_path, include_val=False)
    assert ds.stats("train").num_images == 3


def test_msmt17_v2_folder_names(tmp_path: Path) -> None:
    _msmt_tree(tmp_path / "MSMT17_V2", "mask_train_v2", "mask_test_v2")
    ds = load_dataset("msmt17", tmp_path)
    assert "mask_train_v2" in ds.train[0].path and "mask_test_v2" in ds.query[0].path


def test_msmt17_missing_listed_file(tmp_path: Path) -> None:
    root = _msmt_tree(tmp_path)
    (root / "test/0003/0003_000_14_0303noon_0005_0.jpg").unlink()
    with pytest.raises(
        DatasetError, match=r"1 image\(s\) listed in 'list_gallery.txt' do not exist"
    ):
        load_dataset("msmt17", root)


def test_msmt17_malformed_line(tmp_path: Path) -> None:
    root = _msmt_tree(tmp_path)
    with open(root / "list_query.txt", "a") as f:
        f.write("0000/broken.jpg\n")
    with pytest.raises(DatasetError, match=r"line 2: '0000/broken.jpg'"):
        load_dataset("msmt17", root)


def test_msmt17_lists_without_image_folders(tmp_path: Path) -> None:
    root = _msmt_tree(tmp_path, "images", "images_test")
    with pytest.raises(DatasetLayoutError, match="mask_train_v2"):
        load_dataset("msmt17", root)


def test_msmt17_no_lists(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=r"list_train\.txt.*Expected layout"):
        load_dataset("msmt17", tmp_path)


# ---------------------------------------------------------------- folder
def test_folder_identity_folders_with_camera_pattern(tmp_path: Path) -> None:
    write_images(
        tmp_path / "train", ["alice/cam1_001.jpg", "alice/cam3_002.jpg", "bob/cam2_001.png"]
    )
    write_images(tmp_path / "query", ["carol/cam1_007.jpg", "dave/cam2_001.jpg"])
    write_images(
        tmp_path / "gallery", ["carol/cam3_001.jpg", "dave/cam1_004.jpg", "erin/cam2_009.jpg"]
    )
    ds = load_dataset("folder", tmp_path)
    assert [(r.pid, r.camid) for r in ds.train] == [(1, 0), (1, 2), (2, 1)]
    # query and gallery share one numbering: carol=1, dave=2, erin=3
    assert [(r.pid, r.camid) for r in ds.query] == [(1, 0), (2, 1)]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(1, 2), (2, 0), (3, 1)]


def test_folder_numeric_identities_keep_their_value(tmp_path: Path) -> None:
    write_images(tmp_path / "train", ["17/x_c1.jpg"])
    write_images(tmp_path / "query", ["5/a_c1.jpg"])
    write_images(tmp_path / "gallery", ["5/b_c2.jpg", "0/d_c1.jpg"])
    ds = FolderDataset(tmp_path, camera_pattern=r"_c(\d+)").load()
    assert [r.pid for r in ds.train] == [17]
    assert sorted(r.pid for r in ds.gallery) == [0, 5]


def test_folder_name_without_camera(tmp_path: Path) -> None:
    write_images(tmp_path / "train", ["a/c1_1.jpg"])
    write_images(tmp_path / "query", ["b/c1_1.jpg"])
    write_images(tmp_path / "gallery", ["b/photo.jpg"])
    with pytest.raises(DatasetError, match=r"gallery/b/photo.jpg.*camera_pattern"):
        load_dataset("folder", tmp_path)


def test_folder_bad_pattern(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="capture group"):
        FolderDataset(tmp_path, camera_pattern=r"c\d+")


def test_folder_csv_layout(tmp_path: Path) -> None:
    write_images(tmp_path / "img", ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    (tmp_path / "train.csv").write_text("path,pid,camid\nimg/a.jpg,4,0\nimg/b.jpg,-1,1\n")
    (tmp_path / "query.csv").write_text("path,pid,camid\nimg/c.jpg,9,2\n")
    (tmp_path / "gallery.csv").write_text("path,pid,camid\nimg/d.jpg,9,1\n")
    ds = load_dataset("folder", tmp_path)
    # pid -1 in train.csv: kept as unlabelled (tests/eval/test_own_datasets.py)
    assert [(Path(r.path).name, r.pid, r.camid) for r in ds.train] == [
        ("a.jpg", 4, 0),
        ("b.jpg", -1, 1),
    ]
    assert [(r.pid, r.camid) for r in ds.query + ds.gallery] == [(9, 2), (9, 1)]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("file,id,cam\nimg/a.jpg,1,0\n", "header 'path,pid,camid'"),
        ("path,pid,camid\nimg/a.jpg,one,0\n", "line 2"),
        ("path,pid,camid\nimg/a.jpg,1,-3\n", "0-based integer camid"),
        ("path,pid,camid\nimg/zzz.jpg,1,0\n", r"do not exist: '.*zzz.jpg'"),
    ],
)
def test_folder_csv_errors(tmp_path: Path, content: str, match: str) -> None:
    write_images(tmp_path / "img", ["a.jpg", "c.jpg"])
    (tmp_path / "train.csv").write_text(content)
    (tmp_path / "query.csv").write_text("path,pid,camid\nimg/c.jpg,1,0\n")
    (tmp_path / "gallery.csv").write_text("path,pid,camid\nimg/a.jpg,1,1\n")
    with pytest.raises(DatasetError, match=match):
        load_dataset("folder", tmp_path)


def test_folder_missing_layout(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"lacks query/, gallery/"):
        load_dataset("folder", tmp_path)


# ---------------------------------------------------------------- registry
def test_dukemtmc_is_refused_with_the_reason(tmp_path: Path) -> None:
    for name in ("dukemtmc", "DukeMTMC-reID", "duke"):
        with pytest.raises(DatasetWithdrawnError, match="withdrawn .* ethical"):
            load_dataset(name, tmp_path)


def test_unknown_dataset_lists_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'cuhk03'; choose one of market1501"):
        load_dataset("cuhk03", tmp_path)
