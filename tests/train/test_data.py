"""reid_train.data: transforms, unreadable images (skip, threshold), train/extract loaders."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reid_eval.datasets import ImageRecord
from reid_eval.features import image_to_tensor, load_image
from reid_train.config import DataConfig
from reid_train.data import (
    BadImagesError,
    BadImageWarning,
    ImageDataset,
    TrainImageDataset,
    build_extract_loader,
    build_test_transform,
    build_train_loader,
    build_train_transform,
)

DATA = DataConfig(height=32, width=16, batch_size=8, num_instances=4, workers=0, pad=2)


def _jpeg(color: tuple[int, int, int], size: tuple[int, int] = (20, 40)) -> bytes:
    rng = np.random.default_rng(sum(color))
    arr = np.clip(rng.normal(color, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def _records(
    tmp_path: Path, labels: list[int], bad: dict[int, str] | None = None
) -> list[ImageRecord]:
    """One JPEG per label (camera = index % 3); ``bad`` maps indices to 'garbage'/'truncated'/
    'missing'."""
    bad = bad or {}
    records = []
    for i, label in enumerate(labels):
        path = tmp_path / f"{i:03d}_{label}.jpg"
        data = _jpeg((40 * (label % 6), 100, 30 * (i % 8)))
        kind = bad.get(i)
        if kind == "garbage":
            path.write_bytes(b"this is not a JPEG")
        elif kind == "truncated":
            path.write_bytes(data[: len(data) // 2])
        elif kind != "missing":
            path.write_bytes(data)
        records.append(ImageRecord(str(path), label, i % 3))
    return records


def test_train_transform_shapes_dtype_and_determinism_per_seed(tmp_path: Path) -> None:
    img = Image.open(io.BytesIO(_jpeg((200, 50, 50), size=(30, 70)))).convert("RGB")
    transform = build_train_transform(DATA)
    out = transform(img)
    assert type(out) is torch.Tensor and out.shape == (3, 32, 16) and out.dtype == torch.float32
    ds = TrainImageDataset(_records(tmp_path, [0, 0]), [0, 0], transform)
    state = torch.get_rng_state()
    a, b = ds[(0, 123)]["image"], ds[(0, 123)]["image"]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert torch.equal(a, b)
    assert any(not torch.equal(a, ds[(0, s)]["image"]) for s in range(1, 6))


def test_train_transform_augments() -> None:
    img = Image.open(io.BytesIO(_jpeg((10, 200, 90)))).convert("RGB")
    cfg = DataConfig(height=32, width=16, flip_prob=1.0, pad=0, erasing_prob=0.0)
    flipped = build_train_transform(cfg)(img)
    plain = build_test_transform(cfg)(img)
    assert torch.allclose(flipped, plain.flip(-1), atol=1e-6)
    erase = DataConfig(height=32, width=16, flip_prob=0.0, pad=0, erasing_prob=1.0)
    assert (build_train_transform(erase)(img) == 0).any()


def test_test_transform_equals_reid_eval_image_to_tensor(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(_jpeg((120, 60, 30), size=(33, 71)))
    img = load_image(str(path))
    ours = build_test_transform(DATA)(img)
    theirs = image_to_tensor(img, (32, 16))
    assert ours.shape == (3, 32, 16) and ours.dtype == torch.float32
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_unreadable_image_is_replaced_by_the_same_identity(tmp_path: Path) -> None:
    labels = [0, 0, 0, 1, 1, 1]
    records = _records(tmp_path, labels, bad={1: "garbage"})
    ds = TrainImageDataset(records, labels, build_test_transform(DATA), max_bad_images=2)
    with pytest.warns(BadImageWarning, match=records[1].path.replace(".", r"\.")):
        item = ds[1]
    assert item["index"] == 2 and item["label"] == 0 and item["camid"] == 2
    assert item["image"].shape == (3, 32, 16)
    # known bad: skipped silently afterwards; good images are untouched
    assert ds[1]["index"] == 2 and ds[0]["index"] == 0 and ds[5]["label"] == 1


def test_too_many_unreadable_images_raise_listing_the_paths(tmp_path: Path) -> None:
    labels = [0, 0, 0, 1, 1, 1]
    records = _records(tmp_path, labels, bad={0: "truncated", 4: "missing"})
    ds = TrainImageDataset(records, labels, build_test_transform(DATA), max_bad_images=1)
    with pytest.warns(BadImageWarning):
        ds[0]
    with pytest.raises(BadImagesError) as info:
        ds[4]
    message = str(info.value)
    assert records[0].path in message and records[4].path in message
    assert "max_bad_images=1" in message
    strict = TrainImageDataset(records, labels, build_test_transform(DATA), max_bad_images=0)
    with pytest.raises(BadImagesError, match="max_bad_images=0"):
        strict[0]


def test_identity_without_any_readable_image(tmp_path: Path) -> None:
    labels = [0, 0, 1, 1]
    records = _records(tmp_path, labels, bad={2: "garbage", 3: "garbage"})
    ds = TrainImageDataset(records, labels, build_test_transform(DATA), max_bad_images=5)
    with pytest.warns(BadImageWarning), pytest.raises(BadImagesError, match="pseudo identity 1"):
        ds[2]


def test_extraction_dataset_marks_unreadable_images_invalid(tmp_path: Path) -> None:
    records = _records(tmp_path, [0, 1, 2], bad={1: "garbage"})
    ds = ImageDataset(records, build_test_transform(DATA), (32, 16), max_bad_images=1)
    assert ds[0]["valid"] is True
    with pytest.warns(BadImageWarning, match="outlier"):
        item = ds[1]
    assert item["valid"] is False and torch.equal(item["image"], torch.zeros(3, 32, 16))
    loader = build_extract_loader(records, DATA, max_bad_images=1)
    with pytest.warns(BadImageWarning):
        batch = next(iter(loader))
    assert batch["valid"].tolist() == [True, False, True]
    assert batch["index"].tolist() == [0, 1, 2] and batch["image"].shape == (3, 3, 32, 16)


def test_train_loader_batches(tmp_path: Path) -> None:
    labels = [0, 0, 0, 1, 1, 1, 1, 2, 2, -1, -1]
    records = _records(tmp_path, labels)
    loader = build_train_loader(records, labels, DATA, iters=3, seed=1, epoch=0)
    assert len(loader) == 3 and loader.pin_memory is False
    batches = list(loader)
    for batch in batches:
        assert batch["image"].shape == (8, 3, 32, 16) and batch["image"].dtype == torch.float32
        assert batch["label"].dtype == torch.int64
        counts = Counter(batch["label"].tolist())
        assert len(counts) == 2 and set(counts.values()) == {4} and -1 not in counts
        assert batch["label"].tolist() == [labels[i] for i in batch["index"].tolist()]
        assert batch["camid"].tolist() == [i % 3 for i in batch["index"].tolist()]
    again = list(build_train_loader(records, labels, DATA, iters=3, seed=1, epoch=0))
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(batches, again, strict=True))
    other = list(build_train_loader(records, labels, DATA, iters=3, seed=1, epoch=1))
    assert any(not torch.equal(a["image"], b["image"]) for a, b in zip(batches, other, strict=True))


def test_train_loader_images_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    labels = [0, 0, 1, 1, 2, 2, 3, 3]
    records = _records(tmp_path, labels)
    main = list(build_train_loader(records, labels, DATA, iters=2, seed=4, epoch=3))
    workers = DataConfig(**{**DATA.__dict__, "workers": 2})
    forked = list(build_train_loader(records, labels, workers, iters=2, seed=4, epoch=3))
    for a, b in zip(main, forked, strict=True):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["image"], b["image"])


def test_train_loader_ranks(tmp_path: Path) -> None:
    labels = [0, 0, 1, 1, 2, 2, 3, 3]
    records = _records(tmp_path, labels)
    kw = {"iters": 2, "seed": 0, "num_replicas": 2}
    r0 = [b["index"].tolist() for b in build_train_loader(records, labels, DATA, rank=0, **kw)]
    r1 = [b["index"].tolist() for b in build_train_loader(records, labels, DATA, rank=1, **kw)]
    assert len(r0) == len(r1) == 2 and r0 != r1


def test_dataset_argument_checks(tmp_path: Path) -> None:
    records = _records(tmp_path, [0, 1])
    with pytest.raises(ValueError, match="one entry per record"):
        TrainImageDataset(records, [0], build_test_transform(DATA))
    with pytest.raises(ValueError, match="max_bad_images"):
        TrainImageDataset(records, [0, 1], build_test_transform(DATA), max_bad_images=-1)
    with pytest.raises(ValueError, match="interpolation"):
        build_train_transform(DataConfig(interpolation="lanczos"))  # type: ignore[arg-type]
