"""A corpus of malformed files and layouts thrown at the three commands.

Every case builds its bad input in a fresh folder, runs ``reid-eval`` (``evaluate``,
``extract``, ``convert``, ``make-synthetic``) or ``reid-train`` in-process and checks the
command's contract for bad input: exit status 2, a one-paragraph message on stderr that names
the offending file (or key) and the fix, no traceback, and nothing written or changed anywhere
but where the command may write (a reid-train run folder is never created for a bad config or
dataset). A ``.pth`` holding code must never run it.

Some inputs are unusual but valid (CMYK, 16-bit, one-pixel and very wide images): they are
read, converted to RGB, and give finite features (:func:`test_unusual_but_valid_images_work`).

``CASES`` is counted by ``scripts/reliability_figure.py`` for docs/reliability.md.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reid_backbones import build_model, save_checkpoint
from tests.helpers import write_images

MARKET_TRAIN = [f"{pid:04d}_c{cam}s1_{pid * 100 + cam:06d}_01.jpg" for pid in (2, 7, 9)
                for cam in (1, 2)]  # fmt: skip
MARKET_QUERY = ["0001_c1s1_001051_00.jpg", "0003_c5s1_002351_00.jpg"]
MARKET_GALLERY = ["0001_c2s1_000301_01.jpg", "0003_c4s1_002301_01.jpg", "0000_c1s1_000151_01.jpg"]


def market(root: Path, train: list[str] = MARKET_TRAIN, query: list[str] = MARKET_QUERY,
           gallery: list[str] = MARKET_GALLERY) -> Path:  # fmt: skip
    """A small valid Market-1501 tree under ``root``."""
    write_images(root / "bounding_box_train", train)
    write_images(root / "query", query)
    write_images(root / "bounding_box_test", gallery)
    return root


class _Marker:
    """Unpickling this writes the file named in it: the code a malicious .pth would run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):  # noqa: ANN204
        return (Path.write_text, (Path(self.path), "ran"))


def evil_pth(path: Path, marker: Path) -> Path:
    """A ``.pth`` whose unpickling runs code (writes ``marker``)."""
    torch.save({"state_dict": _Marker(marker)}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("pplr", backbone="resnet18", num_classes=5, input_size=(64, 32))
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "best")


@pytest.fixture(scope="module")
def baseline_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("baseline", backbone="resnet18", num_classes=5, input_size=(64, 32))
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt_base") / "best")


def _ckpt_copy(src: Path, work: Path) -> Path:
    out = work / "ckpt"
    shutil.copytree(src, out)
    return out


def _weights(ckpt: Path) -> Path:
    return next(ckpt.glob("*.safetensors"))


@dataclass(frozen=True)
class Case:
    """One malformed input: ``build(work, fixtures)`` writes it under ``work`` and returns the
    command (``reid-eval`` or ``reid-train``), its arguments, the words the message must hold,
    and the folder the command may write in (None: nowhere)."""

    id: str
    kind: str  # what is malformed: checkpoint, image, layout, config, dataset
    build: Callable[[Path, dict[str, Path]], tuple[str, list[str], list[str], Path | None]]


def _evaluate(ckpt: Path, root: Path, dataset: str = "market1501") -> list[str]:
    return ["--checkpoint", str(ckpt), "--dataset", dataset, "--data-root", str(root), "--quiet",
            "--device", "cpu"]  # fmt: skip


# --- checkpoints ------------------------------------------------------------------------------


def _zero_byte_weights(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    ckpt = _ckpt_copy(fx["checkpoint"], work)
    _weights(ckpt).write_bytes(b"")
    return "reid-eval", _evaluate(ckpt, market(work / "m")), [_weights(ckpt).name], None


def _truncated_weights(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    ckpt = _ckpt_copy(fx["checkpoint"], work)
    data = _weights(ckpt).read_bytes()
    _weights(ckpt).write_bytes(data[: len(data) // 2])
    return "reid-eval", _evaluate(ckpt, market(work / "m")), [_weights(ckpt).name], None


def _forged_header(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    ckpt = _ckpt_copy(fx["checkpoint"], work)
    data = _weights(ckpt).read_bytes()
    _weights(ckpt).write_bytes(struct.pack("<Q", 2**40) + data[8:])  # header "length" 1 TB
    return "reid-eval", _evaluate(ckpt, market(work / "m")), [_weights(ckpt).name], None


def _header_not_json(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    ckpt = _ckpt_copy(fx["checkpoint"], work)
    data = _weights(ckpt).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    _weights(ckpt).write_bytes(data[:8] + b"{" * n + data[8 + n :])
    return "reid-eval", _evaluate(ckpt, market(work / "m")), [_weights(ckpt).name], None


def _config_json_garbage(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    ckpt = _ckpt_copy(fx["checkpoint"], work)
    (ckpt / "config.json").write_text("{not json")
    return "reid-eval", _evaluate(ckpt, market(work / "m")), ["config.json"], None


def _other_architecture(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    ckpt = _ckpt_copy(fx["checkpoint"], work)  # PPLR weights ...
    shutil.copy(fx["baseline_checkpoint"] / "config.json", ckpt / "config.json")  # ... baseline
    return "reid-eval", _evaluate(ckpt, market(work / "m")), [ckpt.name], None


def _pth_with_code_for_convert(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    pth = evil_pth(work / "official.pth", work / "MARKER")
    return "reid-eval", ["convert", str(pth), str(work / "out")], ["official.pth"], None


def _pth_with_code_as_pretrained(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    pth = evil_pth(work / "resnet18.pth", work / "MARKER")
    run = work / "run"
    args = ["--config", "synthetic_tiny", f"data.data_root={fx['synthetic_root']}",
            f"model.pretrained={pth}", "--output-dir", str(run)]  # fmt: skip
    return "reid-train", args, ["resnet18.pth"], None


def _not_official_weights(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    pth = work / "other.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(2, 2)}}, pth)
    return "reid-eval", ["convert", str(pth), str(work / "out")], ["other.pth"], None


# --- images -----------------------------------------------------------------------------------


def _image_case(write: Callable[[Path], None], name: str = "0003_c4s1_002301_01.jpg"):  # noqa: ANN202
    def build(work: Path, fx: dict[str, Path]):  # noqa: ANN202
        root = market(work / "m")
        write(root / "bounding_box_test" / name)
        return "reid-eval", _evaluate(fx["checkpoint"], root), [name], None

    return build


def _truncate(path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (32, 64), (10, 200, 30)).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue()[:200])


def _bomb(path: Path) -> None:
    # 20,000 x 20,000 pixels: beyond Pillow's decompression-bomb limit, a few kB on disk
    Image.new("1", (20000, 20000)).save(path, format="PNG")


# --- layouts ----------------------------------------------------------------------------------


def _bad_names(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    root = market(work / "m")
    write_images(root / "query", ["person_one.jpg"])
    return "reid-eval", _evaluate(fx["checkpoint"], root), ["person_one.jpg"], None


def _missing_split(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    root = market(work / "m")
    shutil.rmtree(root / "query")
    return "reid-eval", _evaluate(fx["checkpoint"], root), ["query"], None


def _one_camera(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    root = market(work / "m", query=["0001_c1s1_001051_00.jpg"],
                  gallery=["0001_c1s1_000301_01.jpg", "0002_c1s1_000301_01.jpg"])  # fmt: skip
    return "reid-eval", _evaluate(fx["checkpoint"], root), ["camera"], None


def _empty_folder(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    (work / "m").mkdir()
    return "reid-eval", _evaluate(fx["checkpoint"], work / "m"), [str(work / "m")], None


def _extract_no_images(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    (work / "imgs").mkdir()
    (work / "imgs" / "notes.txt").write_text("no images here")
    args = ["extract", "--checkpoint", str(fx["checkpoint"]), "--images", str(work / "imgs"),
            "--output", str(work / "out" / "f.npz"), "--quiet"]  # fmt: skip
    return "reid-eval", args, ["imgs"], None


def _make_synthetic_over_a_file(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    (work / "data").write_text("a file")
    return "reid-eval", ["make-synthetic", str(work / "data")], ["data"], None


def _make_synthetic_over_a_dataset(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    root = market(work / "m")
    return "reid-eval", ["make-synthetic", str(root)], ["--overwrite"], None


# --- reid-train configs and datasets ----------------------------------------------------------


def _train(fx: dict[str, Path], config: Path | str, work: Path, *overrides: str) -> list[str]:
    return ["--config", str(config), f"data.data_root={fx['synthetic_root']}",
            "--output-dir", str(work / "run"), *overrides]  # fmt: skip


def _train_market(root: Path, work: Path, *overrides: str) -> list[str]:
    """reid-train on the tiny config, on the Market-1501 layout at ``root``."""
    return ["--config", "synthetic_tiny", "data.dataset=market1501", f"data.data_root={root}",
            *overrides, "--output-dir", str(work / "run")]  # fmt: skip


def _yaml_case(text: str, words: list[str]):  # noqa: ANN202
    def build(work: Path, fx: dict[str, Path]):  # noqa: ANN202
        path = work / "bad.yaml"
        path.write_text(text)
        return "reid-train", _train(fx, path, work), ["bad.yaml", *words], None

    return build


def _base_cycle(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    (work / "a.yaml").write_text("base: b.yaml\n")
    (work / "b.yaml").write_text("base: a.yaml\n")
    return "reid-train", _train(fx, work / "a.yaml", work), ["cycle", "a.yaml"], None


def _binary_yaml(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    (work / "bad.yaml").write_bytes(bytes(range(256)))
    return "reid-train", _train(fx, work / "bad.yaml", work), ["bad.yaml"], None


def _train_one_identity(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    train = [f"0002_c{c}s1_0001{i}1_01.jpg" for c in (1, 2) for i in range(6)]
    root = market(work / "m", train=train)
    args = _train_market(root, work, "method.name=baseline", "cluster.labels=ground_truth")
    return "reid-train", args, ["1 identities", "P = 2"], None


def _train_split_below_k(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    root = market(work / "m")  # 6 training images: fewer than agreement_k 10 and k1 30
    args = _train_market(root, work)
    return "reid-train", args, ["method.agreement_k 10", "cluster.k1 30", "6 images"], None


def _train_missing_split(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    root = market(work / "m")
    shutil.rmtree(root / "bounding_box_train")
    args = _train_market(root, work)
    return "reid-train", args, ["bounding_box_train"], None


def _train_all_images_corrupt(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    root = market(work / "m")
    for path in (root / "bounding_box_train").iterdir():
        path.write_bytes(b"\xff\xd8 broken")
    args = _train_market(root, work, "cluster.k1=4", "cluster.k2=2", "method.agreement_k=3")
    return "reid-train", args, ["none of the 6 training images", "0002_c1s1"], work / "run"


def _resume_not_a_run(work: Path, fx: dict[str, Path]):  # noqa: ANN202
    (work / "run").mkdir()
    (work / "run" / "notes.txt").write_text("not a run")
    return "reid-train", ["--resume", str(work / "run")], ["config.yaml"], None


CASES = [
    Case("zero-byte weights", "checkpoint", _zero_byte_weights),
    Case("truncated weights", "checkpoint", _truncated_weights),
    Case("forged safetensors header length", "checkpoint", _forged_header),
    Case("safetensors header not JSON", "checkpoint", _header_not_json),
    Case("config.json not JSON", "checkpoint", _config_json_garbage),
    Case("weights of another architecture", "checkpoint", _other_architecture),
    Case(".pth holding code (convert)", "checkpoint", _pth_with_code_for_convert),
    Case(".pth holding code (model.pretrained)", "checkpoint", _pth_with_code_as_pretrained),
    Case("not the official layout (convert)", "checkpoint", _not_official_weights),
    Case("truncated JPEG", "image", _image_case(_truncate)),
    Case("zero-byte image", "image", _image_case(lambda p: p.write_bytes(b""))),
    Case("text named .jpg", "image", _image_case(lambda p: p.write_text("hello"))),
    Case("decompression bomb", "image", _image_case(_bomb, "0003_c4s1_002301_01.png")),
    Case("file names of no layout", "layout", _bad_names),
    Case("missing split", "layout", _missing_split),
    Case("one camera", "layout", _one_camera),
    Case("empty dataset folder", "layout", _empty_folder),
    Case("extract: no images", "layout", _extract_no_images),
    Case("make-synthetic onto a file", "layout", _make_synthetic_over_a_file),
    Case("make-synthetic onto a dataset", "layout", _make_synthetic_over_a_dataset),
    Case("YAML wrong type", "config", _yaml_case("optim:\n  lr: fast\n", ["optim.lr"])),
    Case("YAML unknown key", "config", _yaml_case("optim:\n  lrr: 0.1\n", ["optim.lr"])),
    Case("YAML not a mapping", "config", _yaml_case("- 1\n- 2\n", ["mapping"])),
    Case("YAML syntax error", "config", _yaml_case("optim: [1, 2\n", ["YAML"])),
    Case("YAML base cycle", "config", _base_cycle),
    Case("YAML binary garbage", "config", _binary_yaml),
    Case("train: one identity", "dataset", _train_one_identity),
    Case("train: fewer images than k", "dataset", _train_split_below_k),
    Case("train: missing split", "dataset", _train_missing_split),
    Case("train: every image corrupt", "dataset", _train_all_images_corrupt),
    Case("resume: not a run folder", "dataset", _resume_not_a_run),
]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_exits_2_with_a_message_and_writes_nothing(
    case: Case,
    checkpoint: Path,
    baseline_checkpoint: Path,
    synthetic_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reid_eval.cli import main as reid_eval
    from reid_train.cli import main as reid_train

    fixtures = {"checkpoint": checkpoint, "baseline_checkpoint": baseline_checkpoint,
                "synthetic_root": synthetic_root}  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    command, args, words, may_write = case.build(work, fixtures)
    monkeypatch.chdir(work)  # a relative default output would land here
    before = _snapshot(work)
    shared = {name: _snapshot(path.parent) for name, path in fixtures.items()}
    capsys.readouterr()
    code = (reid_eval if command == "reid-eval" else reid_train)(args)
    err = capsys.readouterr().err
    assert code == 2, f"{case.id}: exit {code}\n{err}"
    assert "Traceback" not in err, err
    assert err.count("error:") == 1 and err.strip(), err
    for word in words:
        assert word in err, f"{case.id}: the message does not name {word!r}:\n{err}"
    assert not (work / "MARKER").exists(), "the .pth's code ran"
    after = {k: v for k, v in _snapshot(work).items()
             if may_write is None or not (work / k).is_relative_to(may_write)}  # fmt: skip
    assert after == before, f"{case.id}: wrote {sorted(set(after) ^ set(before))}"
    if may_write is not None and may_write.exists():  # never a finished-looking run folder
        assert not (may_write / "last").exists() and not (may_write / "best").exists()
    else:
        assert not (work / "run").exists() or case.id.startswith("resume")
    assert {name: _snapshot(path.parent) for name, path in fixtures.items()} == shared


@pytest.mark.parametrize(
    ("mode", "size", "depth"),
    [("CMYK", (32, 64), None), ("I;16", (32, 64), 16), ("RGB", (1, 1), None),
     ("RGB", (20000, 4), None), ("LA", (32, 64), None), ("P", (32, 64), None)],
)  # fmt: skip
def test_unusual_but_valid_images_work(
    mode: str, size: tuple[int, int], depth: int | None, checkpoint: Path, tmp_path: Path
) -> None:
    """CMYK, 16-bit greyscale, one pixel, 20,000 pixels wide, grey + alpha and palette images
    are read, converted to RGB and resized like any other: finite, unit-length features."""
    from reid_eval.cli import main as reid_eval

    folder = tmp_path / "imgs"
    folder.mkdir()
    ext = "jpg" if mode == "CMYK" else "png"
    image = Image.new(mode, size)
    if depth == 16:
        image = Image.fromarray(np.arange(size[0] * size[1], dtype=np.uint16).reshape(size[::-1]))
    image.save(folder / f"0001_c1s1_000001_01.{ext}")
    out = tmp_path / "f.npz"
    args = ["extract", "--checkpoint", str(checkpoint), "--images", str(folder), "--output",
            str(out), "--quiet", "--device", "cpu"]  # fmt: skip
    assert reid_eval(args) == 0
    feats = np.load(out)["features"]
    assert feats.shape[0] == 1 and np.isfinite(feats).all()
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)


def test_the_corpus_counts_are_what_the_figure_reports() -> None:
    """Every case has a unique id and one of the kinds the reliability figure groups by."""
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.kind for c in CASES} == {"checkpoint", "image", "layout", "config", "dataset"}
    json.dumps([c.id for c in CASES])  # plain strings
    assert pickle.dumps(CASES[0].id)
