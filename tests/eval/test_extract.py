"""FeatureExtractor, ``reid-eval extract`` and the checkpoint's own preprocessing (size,
mean/std, interpolation) on small generated images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reid_backbones import CheckpointError, build_model, read_checkpoint_config, save_checkpoint
from reid_eval import (
    FeatureExtractor,
    ImageReadError,
    ImageRecord,
    Preprocessing,
    evaluate_checkpoint,
    extract_features,
    find_images,
    parse_image_name,
    save_features,
)
from reid_eval.cli import main
from reid_eval.datasets import load_dataset
from reid_eval.features import default_workers, image_to_tensor, load_image

NAMES = [
    "0002_c1s1_000451_03.jpg",
    "0002_c3s1_000551_01.png",
    "0007_c2s1_000100_00.jpg",
    "0000_c6s2_000001_02.jpg",  # distractor: pid 0
    "-1_c4s1_000010_00.jpg",  # junk: pid -1 in Market-1501
    "frame_0001.jpg",  # no Market-1501 name: pid and camid -1
]


def _noise_images(folder: Path, names: list[str], size: tuple[int, int] = (40, 90)) -> list[Path]:
    """Random RGB images (width, height ``size``), different per name, so that resizing and
    normalisation show in the features."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for name in names:
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        path = folder / name
        Image.fromarray(arr).save(path, quality=95)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images") / "query"
    _noise_images(folder, NAMES)
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """A 96x32 baseline model (a size none of the old defaults match), ImageNet statistics."""
    torch.manual_seed(1)
    return build_model("baseline", backbone="resnet18", input_size=(96, 32)).eval()


@pytest.fixture(scope="module")
def checkpoints(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same weights saved with each interpolation; one with its own mean/std."""
    root = tmp_path_factory.mktemp("ckpts")
    out = {
        name: save_checkpoint(model, root / name, interpolation=name)
        for name in ("bilinear", "bicubic", "nearest")
    }
    torch.manual_seed(1)
    other = build_model(
        "baseline", backbone="resnet18", input_size=(96, 32), mean=(0.5,) * 3, std=(0.25,) * 3
    )
    out["stats"] = save_checkpoint(other, root / "stats")
    return out


def _extractor(checkpoint: Path, **kwargs: object) -> FeatureExtractor:
    return FeatureExtractor(checkpoint, "cpu", batch_size=4, workers=0, **kwargs)


# -- the checkpoint records its interpolation (reid-backbones) ----------------------------------


def test_checkpoint_records_the_interpolation(checkpoints: dict, tmp_path: Path) -> None:
    for name in ("bilinear", "bicubic", "nearest"):
        saved = json.loads((checkpoints[name] / "config.json").read_text())
        assert saved["interpolation"] == name
        assert read_checkpoint_config(checkpoints[name])["interpolation"] == name
    # Saved before the field existed: read as bilinear.
    old = Path(shutil.copytree(checkpoints["bicubic"], tmp_path / "old"))
    config = json.loads((old / "config.json").read_text())
    del config["interpolation"]
    (old / "config.json").write_text(json.dumps(config))
    assert read_checkpoint_config(old)["interpolation"] == "bilinear"
    assert _extractor(old).preprocessing.interpolation == "bilinear"
    # A value this version does not know is a clear error, as is saving one.
    config["interpolation"] = "lanczos"
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unknown interpolation 'lanczos'"):
        read_checkpoint_config(old)
    with pytest.raises(ValueError, match="interpolation must be one of bilinear, bicubic"):
        save_checkpoint(build_model("baseline", "resnet18"), tmp_path / "x", interpolation="area")


def test_reid_train_writes_its_data_interpolation(model: torch.nn.Module, tmp_path: Path) -> None:
    from reid_train.config import TrainConfig
    from reid_train.run_folder import save_model

    cfg = TrainConfig()
    cfg.data.interpolation = "bicubic"
    save_model(model, tmp_path, "best", 3, cfg)
    assert read_checkpoint_config(tmp_path / "best")["interpolation"] == "bicubic"


# -- FeatureExtractor ---------------------------------------------------------------------------


def test_extractor_uses_the_checkpoints_preprocessing(
    model: torch.nn.Module, checkpoints: dict, images: Path
) -> None:
    paths = [str(p) for p in sorted(images.glob("*.*")) if p.suffix != ".txt"]
    records = [ImageRecord(p, 0, 0) for p in paths]
    for name in ("bilinear", "bicubic", "nearest"):
        extract = _extractor(checkpoints[name])
        assert extract.preprocessing == Preprocessing((96, 32), interpolation=name)
        feats = extract(paths)
        assert feats.shape == (len(paths), 512) and feats.dtype == torch.float32
        assert feats.device.type == "cpu"
        torch.testing.assert_close(feats.norm(dim=1), torch.ones(len(paths)))
        # The same numbers as extract_features with that size, statistics and interpolation.
        expected = extract_features(model, records, interpolation=name, batch_size=4)
        torch.testing.assert_close(feats, expected, rtol=0, atol=1e-6)
        if name == "bicubic":
            assert not torch.allclose(feats, extract_features(model, records), atol=1e-4)
    # Another 256x128 default or ImageNet statistics would change the features.
    assert not torch.allclose(
        _extractor(checkpoints["bilinear"])(paths),
        extract_features(model, records, size=(256, 128), force_size=True),
        atol=1e-3,
    )
    stats = _extractor(checkpoints["stats"])
    assert stats.preprocessing.mean == (0.5,) * 3 and stats.preprocessing.std == (0.25,) * 3
    x = image_to_tensor(load_image(paths[0]), (96, 32), (0.5,) * 3, (0.25,) * 3)
    with torch.no_grad():
        direct = torch.nn.functional.normalize(stats.model(x[None]), dim=1)
    torch.testing.assert_close(stats(paths[:1]), direct, rtol=0, atol=1e-6)


def test_extractor_input_kinds_agree(checkpoints: dict, images: Path) -> None:
    extract = _extractor(checkpoints["bicubic"])
    paths = find_images(images)
    assert paths == sorted(paths) and len(paths) == len(NAMES)  # notes.txt left out
    from_dir = extract(images)
    jpegs = [p.endswith(".jpg") for p in paths]
    torch.testing.assert_close(extract(str(images / "*.jpg")), from_dir[jpegs])
    torch.testing.assert_close(extract([Path(p) for p in paths]), from_dir)
    torch.testing.assert_close(extract(paths[2]), from_dir[2:3])
    pil = [Image.open(p) for p in paths]
    torch.testing.assert_close(extract(pil), from_dir, rtol=0, atol=1e-6)
    torch.testing.assert_close(extract(pil[0].convert("L")), extract(pil[0].convert("L")))
    # Tensors at the input size take the same path as files, from uint8 or [0, 1] floats.
    resized = [np.asarray(load_image(p).resize((32, 96), Image.Resampling.BICUBIC)) for p in paths]
    batch = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2)
    torch.testing.assert_close(extract(batch), from_dir, rtol=0, atol=1e-5)
    torch.testing.assert_close(extract(batch.float() / 255), from_dir, rtol=0, atol=1e-5)
    torch.testing.assert_close(extract(batch[0]), from_dir[:1], rtol=0, atol=1e-5)
    # Other sizes are resized by torch: close to, not equal to, PIL's resize of the file.
    big = torch.from_numpy(np.stack([np.asarray(load_image(p)) for p in paths])).permute(0, 3, 1, 2)
    cosine = (extract(big) * from_dir).sum(dim=1)
    assert cosine.min() > 0.98
    # Flip: the mean of the image's and the mirrored image's features.
    flipped = _extractor(checkpoints["bicubic"], flip=True)(batch)
    mirrored = extract(batch.flip(-1))
    with torch.no_grad():
        x = Preprocessing((96, 32), interpolation="bicubic").tensor(batch)
        both = (extract.model(x) + extract.model(x.flip(-1))) / 2
    torch.testing.assert_close(flipped, torch.nn.functional.normalize(both, dim=1))
    assert not torch.allclose(flipped, mirrored)


def test_extractor_refuses_bad_inputs(checkpoints: dict, images: Path, tmp_path: Path) -> None:
    extract = _extractor(checkpoints["bilinear"])
    with pytest.raises(ValueError, match="the list is empty"):
        extract([])
    with pytest.raises(ValueError, match=r"no image \(.jpg.*\) matched '.*\*\.gif'"):
        extract(str(images / "*.gif"))
    with pytest.raises(TypeError, match="only paths or only PIL images"):
        extract([str(images / NAMES[0]), Image.new("RGB", (4, 4))])
    with pytest.raises(TypeError, match="got ndarray"):
        extract(np.zeros((1, 3, 96, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"shape \[N, 3, H, W\]"):
        extract(torch.zeros(2, 1, 96, 32))
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        extract(torch.randn(2, 3, 96, 32))  # already normalised
    with pytest.raises(ValueError, match="uint8 or floating point"):
        extract(torch.zeros(2, 3, 96, 32, dtype=torch.int32))
    bad = tmp_path / "0001_c1s1_000001_00.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(ImageReadError, match="0001_c1s1_000001_00.jpg' is corrupt"):
        extract([str(images / NAMES[0]), str(bad)])
    with pytest.raises(ImageReadError, match="does not exist"):
        extract([str(tmp_path / "gone.jpg")])


def test_explicit_size_must_match_unless_forced(checkpoints: dict, images: Path) -> None:
    with pytest.raises(ValueError, match=r"trained on 96x32 images but size 256x128") as info:
        _extractor(checkpoints["bilinear"], size=(256, 128))
    assert "force_size=True" in str(info.value)
    same = _extractor(checkpoints["bilinear"], size=(96, 32))
    assert same.preprocessing.size == (96, 32)
    forced = _extractor(checkpoints["bilinear"], size=(128, 64), force_size=True)
    assert forced.preprocessing.size == (128, 64)
    assert forced(images).shape == (len(NAMES), 512)
    # The same rule for extract_features on a reid-backbones model.
    record = [ImageRecord(str(images / NAMES[0]), 2, 0)]
    with pytest.raises(ValueError, match=r"trained on 96x32 images but size 64x32"):
        extract_features(same.model, record, size=(64, 32))
    with pytest.raises(ValueError, match="does not record its input size: pass size"):
        extract_features(torch.nn.Conv2d(3, 4, 3), record)


def test_default_workers_and_tensor_resize(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for cpus, on_cpu, on_gpu in ((1, 0, 0), (2, 0, 1), (16, 4, 8), (64, 4, 8)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _, n=cpus: set(range(n)), raising=False)
        assert default_workers("cpu") == on_cpu
        assert default_workers("cuda") == on_gpu
    # A uniform image stays uniform whatever the interpolation.
    grey = torch.full((1, 3, 50, 20), 0.5)
    for name in ("bilinear", "bicubic", "nearest"):
        x = Preprocessing((96, 32), mean=(0.5,) * 3, std=(1.0,) * 3, interpolation=name).tensor(
            grey
        )
        assert x.shape == (1, 3, 96, 32)
        torch.testing.assert_close(x, torch.zeros_like(x))
    with pytest.raises(ValueError, match="interpolation must be one of"):
        Preprocessing((96, 32), interpolation="area")
    with pytest.raises(ValueError, match="two positive integers"):
        Preprocessing((96, 0))


@pytest.mark.parametrize("name", ["bilinear", "bicubic", "nearest"])
def test_resize_matches_the_training_transform(name: str, images: Path) -> None:
    """reid-eval resizes a file as reid-train's torchvision test transform does (PIL filters)."""
    from torchvision.transforms import InterpolationMode, v2

    img = load_image(str(images / NAMES[0]))
    mode = getattr(InterpolationMode, name.upper())
    train = v2.Compose(
        [
            v2.Resize((96, 32), interpolation=mode),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )(img)
    ours = image_to_tensor(img, (96, 32), interpolation=name)
    torch.testing.assert_close(ours, train.as_subclass(torch.Tensor), rtol=0, atol=1e-6)


# -- the checkpoint evaluation uses the checkpoint's preprocessing ------------------------------


def test_evaluate_checkpoint_uses_size_statistics_and_interpolation(
    model: torch.nn.Module, checkpoints: dict, synthetic_root: Path
) -> None:
    dataset = load_dataset("synthetic", synthetic_root)
    query = dataset.query[:8]
    for name in ("bilinear", "bicubic"):
        evaluation = evaluate_checkpoint(
            checkpoints[name], dataset, device="cpu", num_workers=0, progress=False
        )
        assert evaluation.checkpoint_config["interpolation"] == name
        expected = extract_features(model, query, interpolation=name, batch_size=8)
        torch.testing.assert_close(evaluation.query_features[:8], expected, rtol=0, atol=1e-6)
    stats = evaluate_checkpoint(
        checkpoints["stats"], dataset, device="cpu", num_workers=0, progress=False
    )
    direct = FeatureExtractor(checkpoints["stats"], "cpu", workers=0)
    torch.testing.assert_close(
        stats.query_features[:8], direct([r.path for r in query]), rtol=0, atol=1e-6
    )


# -- reid-eval extract --------------------------------------------------------------------------


def _run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["extract", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_extract_writes_the_npz(
    checkpoints: dict, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out" / "feats.npz"
    code, printed, err = _run(
        capsys, "--checkpoint", str(checkpoints["bicubic"]), "--images", str(images),
        "--output", str(out), "--device", "cpu", "--batch-size", "4", "--workers", "1",
    )  # fmt: skip
    assert code == 0, err
    assert "96x32, bicubic" in printed and f"[{len(NAMES)}, 512]" in printed
    assert "%|" not in err  # no progress bar when stderr is not a terminal
    with np.load(out) as saved:  # no pickle needed
        assert sorted(saved.files) == ["camids", "features", "paths", "pids"]
        paths = list(saved["paths"])
        assert paths == sorted(str(images / n) for n in NAMES)
        assert saved["features"].dtype == np.float32
        assert saved["features"].shape == (len(NAMES), 512)
        np.testing.assert_allclose(np.linalg.norm(saved["features"], axis=1), 1, atol=1e-5)
        expected = _extractor(checkpoints["bicubic"])(paths).numpy()
        np.testing.assert_allclose(saved["features"], expected, atol=1e-6)
        ids = {
            Path(p).name: (int(pid), int(camid))
            for p, pid, camid in zip(paths, saved["pids"], saved["camids"], strict=True)
        }
    assert ids["0002_c1s1_000451_03.jpg"] == (2, 0)
    assert ids["0002_c3s1_000551_01.png"] == (2, 2)
    assert ids["0000_c6s2_000001_02.jpg"] == (0, 5)
    assert ids["-1_c4s1_000010_00.jpg"] == (-1, 3)
    assert ids["frame_0001.jpg"] == (-1, -1)
    # A glob, relative paths kept as given, the name kept without .npz.
    other = tmp_path / "feats"
    code, _, err = _run(
        capsys, "--checkpoint", str(checkpoints["bicubic"]), "--images", str(images / "0002_*"),
        "--output", str(other), "--device", "cpu", "--workers", "0", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    with np.load(other) as saved:
        assert [Path(p).name for p in saved["paths"]] == NAMES[:2]
        rows = [paths.index(str(images / n)) for n in NAMES[:2]]
        np.testing.assert_allclose(saved["features"], expected[rows], atol=1e-6)


def test_cli_extract_size_options(
    checkpoints: dict, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    common = [
        "--checkpoint", str(checkpoints["bilinear"]), "--images", str(images / NAMES[0]),
        "--output", str(tmp_path / "f.npz"), "--device", "cpu", "--workers", "0", "--quiet",
    ]  # fmt: skip
    code, _, err = _run(capsys, *common, "--size", "128", "64")
    assert code == 2
    assert "trained on 96x32 images but size 128x64" in err and "--force-size" in err
    code, printed, err = _run(capsys, *common, "--size", "128", "64", "--force-size")
    assert code == 0, err
    assert "128x64" in printed
    code, _, err = _run(capsys, *common, "--force-size")
    assert code == 2 and "--force-size needs --size" in err


def test_cli_extract_errors_exit_2(
    checkpoints: dict,
    images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ckpt = ["--checkpoint", str(checkpoints["bilinear"]), "--device", "cpu", "--quiet"]
    out = ["--output", str(tmp_path / "f.npz")]

    def error(*args: str) -> str:
        code, _, err = _run(capsys, *ckpt, *args)
        assert code == 2 and err.startswith("reid-eval: error: ") and "Traceback" not in err
        return err

    assert "no image (.jpg" in error("--images", str(tmp_path / "*.jpg"), *out)
    assert "no such file or folder" in error("--images", str(tmp_path / "nothing"), *out)
    nested = tmp_path / "nested"
    _noise_images(nested / "a", NAMES[:1])
    err = error("--images", str(nested), *out)
    assert "its sub-folders do" in err and "**" in err
    # A corrupt image is named, also when read by a worker process.
    broken = tmp_path / "broken"
    _noise_images(broken, NAMES[:3])
    (broken / NAMES[1]).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    for workers in ("0", "1"):
        err = error("--images", str(broken), *out, "--workers", workers)
        assert f"image '{broken / NAMES[1]}' is corrupt" in err
    assert not (tmp_path / "f.npz").exists()
    # An output that cannot be written fails before anything is read.
    (tmp_path / "file").write_text("")
    monkeypatch.setattr("reid_eval.extractor.FeatureExtractor.__call__", _never)
    err = error("--images", str(images), "--output", str(tmp_path / "file" / "f.npz"))
    assert f"cannot write '{tmp_path / 'file' / 'f.npz'}'" in err
    assert "it is a folder" in error("--images", str(images), "--output", str(tmp_path))
    # A device that is not there.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = _run(
        capsys, "--checkpoint", str(checkpoints["bilinear"]), "--images", str(images), *out,
        "--device", "cuda",
    )  # fmt: skip
    assert code == 2 and "--device 'cuda' asks for CUDA, which is not available" in err


def _never(*args: object, **kwargs: object) -> None:
    raise AssertionError("features were extracted before the bad output was reported")


def test_save_features_and_names(tmp_path: Path) -> None:
    assert parse_image_name("/x/0002_c1s1_000451_03.jpg") == (2, 0)
    assert parse_image_name("0002_c0s1_000451_03.jpg") == (-1, -1)  # no camera 0
    assert parse_image_name("img.png") == (-1, -1)
    path = save_features(tmp_path / "a.npz", torch.eye(2), ["0003_c2_x.jpg", "b.jpg"])
    with np.load(path) as saved:
        assert saved["pids"].tolist() == [3, -1] and saved["camids"].tolist() == [1, -1]
        assert saved["paths"].dtype.kind == "U"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    with pytest.raises(ValueError, match="do not match 3 paths"):
        save_features(tmp_path / "b.npz", torch.eye(2), ["a", "b", "c"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]  # no temporary file left


def test_low_precision_checkpoint_gets_inputs_of_its_dtype(tmp_path: Path) -> None:
    half = build_model("baseline", "resnet18", input_size=(64, 32)).to(torch.bfloat16)
    extract = _extractor(save_checkpoint(half, tmp_path / "bf16"))
    feats = extract(torch.rand(3, 3, 64, 32))
    assert feats.dtype == torch.float32 and feats.shape == (3, 512)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(3))
