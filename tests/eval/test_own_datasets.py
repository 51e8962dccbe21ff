"""One's own data: the unlabelled layout, CSV rows without identity, and register_dataset."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import reid_eval.datasets as datasets_module
from reid_eval.datasets import (
    UNLABELLED,
    DatasetError,
    DatasetLayoutError,
    FolderDataset,
    ImageRecord,
    ReIDDataset,
    UnlabelledFolder,
    canonical_dataset_name,
    dataset_names,
    load_dataset,
    register_dataset,
)


def _images(folder: Path, names: list[str], seed: int = 0) -> None:
    """Small generated PNG/JPEG images (random colours) at ``folder/<name>``."""
    rng = np.random.default_rng(seed)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(16, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)


def _rows(records: list[ImageRecord], root: Path) -> list[tuple[str, int, int]]:
    return [(Path(r.path).relative_to(root).as_posix(), r.pid, r.camid) for r in records]


def _market_test_splits(root: Path) -> None:
    _images(root / "query", ["0001_c1s1_000101_00.jpg", "0002_c3s1_000201_00.jpg"])
    _images(
        root / "gallery",
        [
            "0001_c2s1_000102_01.jpg",
            "0002_c1s1_000202_01.jpg",
            "0000_c2s1_000001_01.jpg",  # distractor: kept
            "-1_c1s1_000002_01.jpg",  # junk: dropped with a warning
            "-1_c3s1_000003_01.jpg",
        ],
    )


# ---------------------------------------------------------------- the unlabelled layout
def test_unlabelled_cameras_from_names(tmp_path: Path) -> None:
    _images(tmp_path / "train", ["cam1_000001.jpg", "x_c3.png", "0005_c2s1_000451_03.jpg"])
    _market_test_splits(tmp_path)
    with pytest.warns(UserWarning, match=r"2 image\(s\) with pid -1 .* dropped from gallery/"):
        ds = load_dataset("unlabelled", tmp_path)
    assert ds.name == "unlabelled"
    # every training image is unlabelled, whatever its name says; cameras 1, 2, 3 -> 0, 1, 2
    assert _rows(ds.train, tmp_path) == [
        ("train/0005_c2s1_000451_03.jpg", UNLABELLED, 1),
        ("train/cam1_000001.jpg", UNLABELLED, 0),
        ("train/x_c3.png", UNLABELLED, 2),
    ]
    assert _rows(ds.query, tmp_path) == [
        ("query/0001_c1s1_000101_00.jpg", 1, 0),
        ("query/0002_c3s1_000201_00.jpg", 2, 2),
    ]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(0, 1), (1, 1), (2, 0)]
    assert ds.stats("train") == (3, 0, 3) and ds.num_train_pids == 0
    assert ds.stats("gallery") == (3, 3, 2)
    assert any("2 image(s) with pid -1 dropped from gallery/" in n for n in ds.notes)
    for record in ds.train + ds.query + ds.gallery:  # real images
        with Image.open(record.path) as image:
            assert image.size == (8, 16)


def test_unlabelled_camera_folders_and_identity_folders(tmp_path: Path) -> None:
    _images(tmp_path / "train" / "lobby", ["a.jpg", "b.jpg"])
    _images(tmp_path / "train" / "2", ["c.jpg"])
    _images(tmp_path / "train" / "street", ["d.jpg"])
    _images(tmp_path / "query", ["alice/cam2_001.jpg", "bob/cam1_001.jpg"])
    _images(tmp_path / "gallery", ["alice/cam1_007.jpg", "bob/cam2_004.jpg", "carol/cam2_1.jpg"])
    ds = UnlabelledFolder(tmp_path, train_cameras="folders").load()  # test_labels="auto"
    # cameras over all splits: numbers first (1, 2), then names (lobby, street)
    assert _rows(ds.train, tmp_path) == [
        ("train/2/c.jpg", -1, 1),
        ("train/lobby/a.jpg", -1, 2),
        ("train/lobby/b.jpg", -1, 2),
        ("train/street/d.jpg", -1, 3),
    ]
    # identities numbered over query and gallery together: alice=1, bob=2, carol=3
    assert [(r.pid, r.camid) for r in ds.query] == [(1, 1), (2, 0)]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(1, 0), (2, 1), (3, 1)]
    assert "camera from its sub-folder" in ds.notes[0] and "identity folders" in ds.notes[0]


def test_unlabelled_single_camera_takes_any_name(tmp_path: Path) -> None:
    _images(tmp_path / "train", ["IMG_0001.jpg", "IMG_0002.jpg", "frame.png"])
    _images(tmp_path / "query", ["0003_c1_1.jpg"])
    _images(tmp_path / "gallery", ["0003_c2_5.jpg", "0004_c1_6.jpg"])
    ds = load_dataset("Unlabeled", tmp_path, train_cameras="single")  # alias, any case
    assert [(r.pid, r.camid) for r in ds.train] == [(-1, 0)] * 3
    assert [(r.pid, r.camid) for r in ds.gallery] == [(3, 1), (4, 0)]
    text = ds.summary(file=io.StringIO())
    assert text.splitlines()[3].split() == ["train", "3", "0", "1"]


def test_unlabelled_distractor_query_is_dropped(tmp_path: Path) -> None:
    _images(tmp_path / "train", ["c1_1.jpg"])
    _images(tmp_path / "query", ["0000_c1_1.jpg", "0001_c1_2.jpg", "-1_c1_3.jpg"])
    _images(tmp_path / "gallery", ["0001_c2_1.jpg"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset("unlabelled", tmp_path)
    messages = [str(w.message) for w in caught]
    assert any("1 image(s) with pid -1 (no identity) dropped from query/" in m for m in messages)
    assert any("1 query image(s) with pid 0 (distractor) dropped" in m for m in messages)
    assert [r.pid for r in ds.query] == [1]


@pytest.mark.parametrize(
    ("train", "options", "error", "match"),
    [
        (["holiday.jpg", "c2_1.jpg"], {}, DatasetError, r"1 training image.*'holiday.jpg'.*single"),
        (["cam1/a.jpg", "b_c1.jpg"], {"train_cameras": "folders"}, DatasetError, r"'b_c1.jpg'"),
        (["cam1/a.jpg"], {}, DatasetError, r"sub-folders but no image.*train_cameras='folders'"),
        ([], {}, DatasetError, "the train split .* is empty"),
        (["c1_1.jpg"], {"train_cameras": "cams"}, ValueError, "train_cameras must be one of"),
        (["c1_1.jpg"], {"test_labels": "csv"}, ValueError, "test_labels must be one of"),
        (["c1_1.jpg"], {"camera_pattern": r"c\d"}, ValueError, "capture group"),
    ],
)
def test_unlabelled_refusals(
    tmp_path: Path, train: list[str], options: dict, error: type, match: str
) -> None:
    (tmp_path / "train").mkdir()
    _images(tmp_path / "train", train)
    _images(tmp_path / "query", ["0001_c1_1.jpg"])
    _images(tmp_path / "gallery", ["0001_c2_1.jpg"])
    with pytest.raises(error, match=match):
        load_dataset("unlabelled", tmp_path, **options)


def test_unlabelled_layout_errors_show_the_tree(tmp_path: Path) -> None:
    _images(tmp_path / "train", ["c1_1.jpg"])
    with pytest.raises(DatasetLayoutError, match=r"lacks query/, gallery/") as e:
        load_dataset("unlabelled", tmp_path)
    assert "ROOT/train/<camera>/<image>" in str(e.value)
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        load_dataset("unlabelled", tmp_path / "nowhere")


def test_unlabelled_test_names_that_are_not_market(tmp_path: Path) -> None:
    _images(tmp_path / "train", ["c1_1.jpg"])
    _images(tmp_path / "query", ["alice.jpg"])
    _images(tmp_path / "gallery", ["0001_c2_1.jpg"])
    with pytest.raises(DatasetError, match=r"not Market-1501 names.*'alice.jpg'"):
        load_dataset("unlabelled", tmp_path)
    _images(tmp_path / "query", ["alice/c1_1.jpg"])
    with pytest.raises(DatasetError, match=r"pass test_labels='folders'"):
        load_dataset("unlabelled", tmp_path, test_labels="names")


# ---------------------------------------------------------------- CSV rows without identity
def test_csv_pid_minus_one_kept_in_train_dropped_from_test(tmp_path: Path) -> None:
    _images(tmp_path / "img", ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"])
    (tmp_path / "train.csv").write_text("path,pid,camid\nimg/a.jpg,4,0\nimg/b.jpg,-1,1\n")
    (tmp_path / "query.csv").write_text("path,pid,camid\nimg/c.jpg,9,2\nimg/e.jpg,-1,0\n")
    (tmp_path / "gallery.csv").write_text("path,pid,camid\nimg/d.jpg,9,1\nimg/f.jpg,-1,1\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = FolderDataset(tmp_path).load()
    assert [(Path(r.path).name, r.pid, r.camid) for r in ds.train] == [
        ("a.jpg", 4, 0),
        ("b.jpg", -1, 1),
    ]
    assert [Path(r.path).name for r in ds.query + ds.gallery] == ["c.jpg", "d.jpg"]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert "1 image(s) with pid -1 (no identity) dropped from query.csv" in messages[0]
    assert "needs its identity to be scored" in messages[0]
    assert "dropped from gallery.csv" in messages[1]
    assert ds.stats("train").num_ids == 1
    assert "1 unlabelled training image(s) (pid -1) kept" in ds.notes


def test_csv_training_split_may_be_all_unlabelled(tmp_path: Path) -> None:
    _images(tmp_path / "img", ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    (tmp_path / "train.csv").write_text("path,pid,camid\nimg/a.jpg,-1,0\nimg/b.jpg,-1,1\n")
    (tmp_path / "query.csv").write_text("path,pid,camid\nimg/c.jpg,1,0\n")
    (tmp_path / "gallery.csv").write_text("path,pid,camid\nimg/d.jpg,1,1\n")
    ds = load_dataset("folder", tmp_path)
    assert [r.pid for r in ds.train] == [-1, -1] and ds.num_train_pids == 0


# ---------------------------------------------------------------- register_dataset
@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations of a test stay in it."""
    monkeypatch.setattr(datasets_module, "DATASETS", dict(datasets_module.DATASETS))


def _my_loader(root: Path, flip: bool = False) -> ReIDDataset:
    path = str(Path(root) / "x.jpg")
    query = [ImageRecord(path, 1, 0)]
    gallery = [ImageRecord(path, 1, 1 if flip else 0)]
    return ReIDDataset("mine", Path(root), [ImageRecord(path, -1, 0)], query, gallery)


class _MyLayout:
    def __init__(self, root: Path) -> None:
        self.root = root

    def load(self) -> ReIDDataset:
        return _my_loader(self.root)


@pytest.mark.usefixtures("registry")
def test_register_a_function_and_a_class(tmp_path: Path) -> None:
    assert register_dataset("My-Cams", _my_loader) == "mycams"
    assert register_dataset("other_layout", _MyLayout) == "otherlayout"
    assert dataset_names()[-2:] == ["mycams", "otherlayout"]
    assert canonical_dataset_name("MY_CAMS") == "mycams"
    ds = load_dataset("my-cams", tmp_path, flip=True)  # options reach the loader
    assert ds.name == "mine" and ds.gallery[0].camid == 1
    assert load_dataset("otherlayout", tmp_path).train[0].pid == -1


@pytest.mark.usefixtures("registry")
def test_register_refusals(tmp_path: Path) -> None:
    for taken, by in [
        ("market1501", "built-in layout 'market1501'"),
        ("Market", "built-in layout 'market1501'"),  # an alias
        ("unlabeled", "built-in layout 'unlabelled'"),
        ("duke", "withdrawn dataset DukeMTMC-reID"),
    ]:
        with pytest.raises(ValueError, match=f"{taken!r} is already taken by the {by}"):
            register_dataset(taken, _my_loader)
    with pytest.raises(ValueError, match="market_1501. is already taken"):
        register_dataset("market_1501", _my_loader, replace=True)  # never a built-in
    register_dataset("mine", _my_loader)
    with pytest.raises(ValueError, match=r"'Mine' is already registered .*replace=True"):
        register_dataset("Mine", _MyLayout)
    register_dataset("mine", _MyLayout, replace=True)
    assert datasets_module.DATASETS["mine"] is _MyLayout
    with pytest.raises(TypeError, match="must be callable .* got str 'a/b.py'"):
        register_dataset("strings", "a/b.py")  # type: ignore[arg-type]
    for bad in ("", "my.layout", "caméras", "a/b"):
        with pytest.raises(ValueError, match="must hold letters and digits"):
            register_dataset(bad, _my_loader)
    assert "strings" not in dataset_names()
    register_dataset("broken", lambda root: [ImageRecord("x.jpg", 1, 0)])
    with pytest.raises(TypeError, match="'broken' .* returned list, not a ReIDDataset"):
        load_dataset("broken", tmp_path)


def test_registrations_did_not_leak() -> None:
    assert dataset_names() == [
        "market1501", "msmt17", "veri776", "folder", "unlabelled", "synthetic",
    ]  # fmt: skip
