"""Checkpoints: safetensors read and written (through the library), bit-exact round trips, clear
errors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

import reid_backbones
from reid_backbones import (
    CheckpointError,
    SafetensorsError,
    build_model,
    load_checkpoint,
    load_safetensors,
    read_checkpoint_config,
    save_checkpoint,
    save_safetensors,
)


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(3, 4, generator=g),
        "f16": torch.randn(5, generator=g).half(),
        "bf16": torch.randn(2, 2, generator=g).bfloat16(),
        "f64": torch.randn(1, generator=g).double(),
        "i64": torch.tensor(7),  # 0-d, like num_batches_tracked
        "i32": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
        "strided": torch.arange(12.0).reshape(3, 4).t(),  # not contiguous
    }


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b) or set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


def test_safetensors_round_trip_and_layout(tmp_path: Path) -> None:
    tensors = _tensors()
    path = tmp_path / "t.safetensors"
    save_safetensors(tensors, path, metadata={"format": "pt", "note": "é"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = json.loads(raw[8 : 8 + n])
    assert header["__metadata__"] == {"format": "pt", "note": "é"}
    # The library lays the tensors out (widest dtypes first); each holds its raw little-endian
    # bytes at the offsets its header entry gives.
    begin, end = header["f32"].pop("data_offsets")
    assert header["f32"] == {"dtype": "F32", "shape": [3, 4]} and end - begin == 48
    assert raw[8 + n + begin : 8 + n + end] == tensors["f32"].numpy().tobytes()
    loaded, meta = load_safetensors(path)
    _assert_same(loaded, tensors)
    assert meta == {"format": "pt", "note": "é"}
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed


def test_safetensors_library_reads_ours_and_we_read_its(tmp_path: Path) -> None:
    st = pytest.importorskip("safetensors.torch")
    tensors = _tensors()
    ours = tmp_path / "ours.safetensors"
    save_safetensors(tensors, ours, metadata={"format": "pt"})
    _assert_same(st.load_file(str(ours)), {k: v.contiguous() for k, v in tensors.items()})

    theirs = tmp_path / "theirs.safetensors"
    st.save_file({k: v.contiguous() for k, v in tensors.items()}, str(theirs), {"a": "b"})
    loaded, meta = load_safetensors(theirs)
    _assert_same(loaded, tensors)
    assert meta == {"a": "b"}

    model = build_model("pplr", "resnet18", num_classes=3)
    save_checkpoint(model, tmp_path / "ckpt")
    _assert_same(st.load_file(str(tmp_path / "ckpt" / "model.safetensors")), model.state_dict())


def test_safetensors_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_safetensors({"a": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(SafetensorsError, match="truncated or corrupt"):
        load_safetensors(path)
    path.write_bytes(b"\x05")
    with pytest.raises(SafetensorsError, match="too short"):
        load_safetensors(path)
    path.write_bytes(struct.pack("<Q", 4) + b"nope")
    with pytest.raises(SafetensorsError, match="unreadable safetensors header"):
        load_safetensors(path)
    with pytest.raises(SafetensorsError, match="complex64"):
        save_safetensors({"c": torch.zeros(2, dtype=torch.complex64)}, path)
    with pytest.raises(SafetensorsError, match="metadata must map strings"):
        save_safetensors({"a": torch.ones(1)}, path, metadata={"epoch": 3})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("name", "options", "groups"),
    [("baseline", {}, 1), ("pplr", {"num_parts": 2}, 2), ("dcls", {"attention": "cbam"}, 1)],
)
def test_round_trip_is_bit_exact(tmp_path: Path, name: str, options: dict, groups: int) -> None:
    torch.manual_seed(0)
    model = build_model(
        name, "resnet18", num_classes=4, bn_groups=groups, input_size=(64, 32), **options
    )
    with torch.no_grad():  # move the running statistics off their init
        for key, buf in model.named_buffers():
            if key.endswith(("running_mean", "running_var")):
                buf.uniform_(0.5, 1.5)
    model.eval()
    save_checkpoint(model, tmp_path / "run" / "best", extra={"epoch": 3, "mAP": 0.5})

    config = read_checkpoint_config(tmp_path / "run" / "best")
    assert config["architecture"] == name and config["backbone"] == "resnet18"
    assert config["num_classes"] == 4 and config["bn_groups"] == groups
    assert config["input_size"] == [64, 32] and config["mean"] == [0.485, 0.456, 0.406]
    assert config["versions"]["reid-backbones"] == reid_backbones.__version__
    assert config["versions"]["torch"] == torch.__version__
    assert config["extra"] == {"epoch": 3, "mAP": 0.5}

    loaded = load_checkpoint(tmp_path / "run" / "best")
    assert not loaded.training and loaded.config() == model.config()
    _assert_same(loaded.state_dict(), model.state_dict())
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        if model.num_parts:
            assert torch.equal(loaded.extract(x)[1], model.extract(x)[1])


def test_round_trip_after_reset_classifiers_and_in_bf16(tmp_path: Path) -> None:
    model = build_model("dcls", "resnet18", num_regions=2)
    model.reset_classifiers(torch.randn(9, 512), torch.randn(9, 2, 512))
    model = model.to(torch.bfloat16)
    save_checkpoint(model, tmp_path)
    loaded = load_checkpoint(tmp_path)
    assert loaded.num_classes == 9 and loaded.neck.weight.dtype == torch.bfloat16
    _assert_same(loaded.state_dict(), model.state_dict())


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path)

    model = build_model("pplr", "resnet18", num_classes=3)
    save_checkpoint(model, tmp_path / "a")
    (tmp_path / "a" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_checkpoint(tmp_path / "a")

    # Weights of one model, config of another: a readable report of what differs.
    save_checkpoint(model, tmp_path / "b")
    save_checkpoint(build_model("pplr", "resnet18", num_classes=5, num_parts=2), tmp_path / "c")
    (tmp_path / "c" / "model.safetensors").replace(tmp_path / "b" / "model.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "b")
    msg = str(e.value)
    assert "missing in the weights: parts.classifiers.2.weight" in msg
    assert "shape mismatch: classifier.weight: file [5, 512] vs model [3, 512]" in msg

    config = json.loads((tmp_path / "b" / "config.json").read_text())
    (tmp_path / "b" / "config.json").write_text(json.dumps({**config, "architecture": "mgn"}))
    with pytest.raises(CheckpointError, match="unknown architecture 'mgn'"):
        load_checkpoint(tmp_path / "b")
    options = {**config, "options": {"num_parts": 3, "stripes": 2}}
    (tmp_path / "b" / "config.json").write_text(json.dumps(options))
    with pytest.raises(CheckpointError, match="cannot be built.*stripes"):
        load_checkpoint(tmp_path / "b")
    (tmp_path / "b" / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="could not read"):
        load_checkpoint(tmp_path / "b")

    with pytest.raises(TypeError, match="JSON-serialisable"):
        save_checkpoint(model, tmp_path / "d", extra={"when": object()})
    with pytest.raises(TypeError, match="made by reid_backbones.build_model"):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "e")


def test_wrapped_models_are_unwrapped(tmp_path: Path) -> None:
    model = build_model("baseline", "resnet18", num_classes=2)
    save_checkpoint(torch.nn.DataParallel(model), tmp_path)
    assert set(load_checkpoint(tmp_path).state_dict()) == set(model.state_dict())
