"""save_safetensors / load_safetensors on the ``safetensors`` library: files of the old hand-written
writer still load, every bad file is a SafetensorsError naming the file and the fix, and tensors
the library would refuse (non-contiguous, shared storage, tied weights) are saved as copies."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import reid_backbones.safetensors_format as stf
from reid_backbones import (
    CheckpointError,
    PretrainedWeightsError,
    SafetensorsError,
    build_backbone,
    build_model,
    check_checkpoint,
    load_checkpoint,
    load_safetensors,
    save_checkpoint,
    save_safetensors,
)
from reid_backbones.safetensors_format import read_safetensors_header
from tests.backbones.old_safetensors_writer import (
    OLD_DTYPES,
    old_safetensors_bytes,
    old_save_safetensors,
)

DATA = Path(__file__).parent / "data"
OLD_FIXTURE = DATA / "old_writer_v0.3.safetensors"


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        if a[k].dtype.is_floating_point and a[k].element_size() <= 2:  # compare the bits
            bits = torch.int16 if a[k].element_size() == 2 else torch.uint8
            assert torch.equal(a[k].view(bits), b[k].view(bits)), k
        else:
            assert torch.equal(a[k], b[k]), k


def _fixture_tensors() -> dict[str, torch.Tensor]:
    """What tests/backbones/data/old_writer_v0.3.safetensors holds (written by the old code)."""
    return {
        "conv.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4 - 0.5,
        "half": torch.tensor([1.0, -2.5, 65504.0, float("inf")], dtype=torch.float16),
        "bf16": torch.tensor([0.15625, -3.0, 1e30], dtype=torch.bfloat16),
        "f64": torch.tensor([3.141592653589793], dtype=torch.float64),
        "bn.num_batches_tracked": torch.tensor(7),
        "i32": torch.tensor([[-1, 2]], dtype=torch.int32),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
        "strided": torch.arange(6.0).reshape(2, 3).t(),
    }


FIXTURE_METADATA = {"format": "pt", "architecture": "baseline", "note": "é"}


# --- files written before the library was used ------------------------------------------------


def test_the_committed_file_of_the_old_writer_loads() -> None:
    # The frozen copy of the old writer still produces exactly the committed bytes.
    assert old_safetensors_bytes(_fixture_tensors(), FIXTURE_METADATA) == OLD_FIXTURE.read_bytes()
    tensors, metadata = load_safetensors(OLD_FIXTURE)
    _same(tensors, {k: v.contiguous() for k, v in _fixture_tensors().items()})
    assert metadata == FIXTURE_METADATA
    entries, header_metadata = read_safetensors_header(OLD_FIXTURE)
    assert entries["conv.weight"] == {"dtype": "F32", "shape": [2, 3]}
    assert entries["bn.num_batches_tracked"] == {"dtype": "I64", "shape": []}
    assert header_metadata == FIXTURE_METADATA


def test_every_dtype_and_layout_of_the_old_writer_loads(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    tensors: dict[str, torch.Tensor] = {}
    for code, dtype in OLD_DTYPES.items():
        if dtype == torch.bool:
            tensors[code] = torch.rand(5, generator=g) > 0.5
        elif dtype.is_floating_point:
            tensors[code] = (torch.randn(3, 5, generator=g) * 4).to(dtype)
        else:
            tensors[code] = torch.randint(0, 100, (7,), generator=g).to(dtype)
    tensors["scalar"] = torch.tensor(3)
    tensors["empty"] = torch.zeros(2, 0)
    tensors["transposed"] = torch.randn(4, 3, generator=g).t()
    path = tmp_path / "old.safetensors"
    old_save_safetensors(tensors, path, {"format": "pt"})
    expected = {k: v.contiguous() for k, v in tensors.items()}
    loaded, metadata = load_safetensors(path)
    _same(loaded, expected)
    assert metadata == {"format": "pt"}
    _same(load_file(str(path)), expected)  # and they are plain safetensors for anyone


def test_a_checkpoint_whose_weights_the_old_writer_wrote_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("baseline", "resnet18", num_classes=3, input_size=(64, 32)).eval()
    save_checkpoint(model, tmp_path)
    metadata = {"format": "pt", "architecture": "baseline", "backbone": "resnet18"}
    old_save_safetensors(model.state_dict(), tmp_path / "model.safetensors", metadata)
    loaded = load_checkpoint(tmp_path)
    _same(loaded.state_dict(), model.state_dict())


# --- bad files ----------------------------------------------------------------------------------


def _entry_file(header: dict, data: bytes) -> bytes:
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + data


def _good_bytes() -> bytes:
    return old_safetensors_bytes({"a": torch.ones(100), "b": torch.arange(3)})


def _pth_bytes(tmp_path: Path) -> bytes:
    torch.save({"conv.weight": torch.ones(3)}, tmp_path / "weights.pth")
    return (tmp_path / "weights.pth").read_bytes()


BAD_FILES = {
    # name: (the bytes, what the message says)
    "truncated": (lambda _: _good_bytes()[:-10], "truncated or corrupt"),
    "zero-byte": (lambda _: b"", "empty (0 bytes)"),
    "shorter than the length field": (lambda _: b"\x05", "too short"),
    "header length beyond the file": (
        lambda _: _good_bytes()[:100],
        "is not a safetensors file",
    ),
    "forged huge header length": (
        lambda _: struct.pack("<Q", 2**62) + b"{}",
        "is not a safetensors file",
    ),
    "header not JSON": (lambda _: struct.pack("<Q", 8) + b"nope{{{{", "unreadable"),
    "header not UTF-8": (lambda _: struct.pack("<Q", 8) + b"\xff" * 8, "unreadable"),
    "header a JSON list": (lambda _: struct.pack("<Q", 8) + b"[1, 2]  ", "unreadable"),
    "offsets beyond the data": (
        lambda _: _entry_file(
            {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8
        ),
        "truncated or corrupt",
    ),
    "offsets not matching the shape": (
        lambda _: _entry_file(
            {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 8
        ),
        "truncated or corrupt",
    ),
    "unknown dtype": (
        lambda _: _entry_file(
            {"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8
        ),
        "names a dtype",
    ),
    "a .pth renamed": (_pth_bytes, "is not a safetensors file"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_a_safetensors_error_naming_it(tmp_path: Path, case: str) -> None:
    make, expected = BAD_FILES[case]
    path = tmp_path / "weights.safetensors"
    path.write_bytes(make(tmp_path))
    for read in (load_safetensors, read_safetensors_header):
        with pytest.raises(SafetensorsError) as info:
            read(path)
        message = str(info.value)
        assert f"'{path}'" in message, message
        assert expected in message, message
        assert "re-save it" in message or "not a safetensors file" in message, message
        assert not message.startswith("Error while"), message  # not the library's text alone
        assert info.value.problem in message and info.value.hint in message


def test_bad_files_through_checkpoints_and_pretrained_weights(tmp_path: Path) -> None:
    model = build_model("baseline", "resnet18", num_classes=2, input_size=(64, 32))
    save_checkpoint(model, tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    for call in (check_checkpoint, load_checkpoint):
        with pytest.raises(CheckpointError) as info:
            call(tmp_path / "ckpt")
        message = str(info.value)
        assert f"'{weights}' is truncated or corrupt" in message
        assert "re-save the checkpoint with reid_backbones.save_checkpoint" in message
    weights.write_bytes(_pth_bytes(tmp_path))
    expected = re.escape(f"'{weights}' is not a safetensors file")
    with pytest.raises(PretrainedWeightsError, match=expected):
        build_backbone("resnet18", pretrained=weights)


def test_a_directory_and_a_missing_file(tmp_path: Path) -> None:
    folder = tmp_path / "model.safetensors"
    folder.mkdir()
    for read in (load_safetensors, read_safetensors_header):
        with pytest.raises(SafetensorsError, match=f"'{re.escape(str(folder))}' is a directory"):
            read(folder)
        with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
            read(tmp_path / "nope")


class PanicException(BaseException):  # what pyo3 raises when Rust code panics
    pass


def test_a_library_panic_or_late_error_becomes_a_safetensors_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.safetensors"
    save_safetensors({"a": torch.ones(3)}, path)

    def panic(*args: object, **kwargs: object) -> None:
        raise PanicException("called `Option::unwrap()` on a `None` value")

    with monkeypatch.context() as m:
        m.setattr(stf, "safe_open", panic)
        with pytest.raises(SafetensorsError) as info:
            load_safetensors(path)
    message = str(info.value)
    assert f"'{path}' is not a readable safetensors file" in message and "unwrap" in message
    assert "re-save it" in message

    class Handle:  # opens fine, fails on reading a tensor
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def __enter__(self) -> Handle:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def offset_keys(self) -> list[str]:
            return ["a"]

        def metadata(self) -> None:
            return None

        def get_tensor(self, name: str) -> torch.Tensor:
            raise stf.safetensors.SafetensorError("Error while deserializing header: boom")

    monkeypatch.setattr(stf, "safe_open", Handle)
    with pytest.raises(SafetensorsError, match=f"'{re.escape(str(path))}' is not a valid.*boom"):
        load_safetensors(path)


# --- what the library would refuse ---------------------------------------------------------------


def test_non_contiguous_and_shared_storage_tensors_are_saved(tmp_path: Path) -> None:
    base = torch.arange(24.0).reshape(4, 6)
    tensors = {
        "base": base,
        "same_object": base,  # the same tensor under two names
        "transposed": base.t(),
        "row": base[1],  # a view inside base's storage
        "column": base[:, 2],
        "slice_of_big": torch.arange(10_000.0)[5:9],  # must not store the whole storage
        "expanded": torch.ones(3, 1).expand(3, 4),
        "empty_view": base[:0],
    }
    path = tmp_path / "shared.safetensors"
    save_safetensors(tensors, path)
    expected = {k: v.contiguous() for k, v in tensors.items()}
    loaded, _ = load_safetensors(path)
    _same(loaded, expected)
    _same(load_file(str(path)), expected)
    assert path.stat().st_size < 2_000  # the 10 000-float storage was not written
    assert torch.equal(base, torch.arange(24.0).reshape(4, 6))  # the inputs are untouched
    loaded["base"] += 1  # each name has its own memory
    assert torch.equal(loaded["same_object"], base)


def test_tied_weights_are_saved_and_load_back(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Linear(4, 5, bias=False))
    net[1].weight = net[0].weight  # tied, as in language models
    state = net.state_dict()
    assert state["0.weight"].data_ptr() == state["1.weight"].data_ptr()
    save_safetensors(state, tmp_path / "tied.safetensors")
    loaded, _ = load_safetensors(tmp_path / "tied.safetensors")
    _same(loaded, {k: v.detach() for k, v in state.items()})
    other = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Linear(4, 5, bias=False))
    other[1].weight = other[0].weight
    other.load_state_dict(loaded)
    assert torch.equal(other[1].weight, net[0].weight)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_round_trips_every_bit_pattern(tmp_path: Path, dtype: torch.dtype) -> None:
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)  # NaNs, infs, -0
    tensors = {"all": bits.view(dtype), "matrix": torch.randn(7, 3).to(dtype).t()}
    path = tmp_path / "half.safetensors"
    save_safetensors(tensors, path)
    loaded, _ = load_safetensors(path)
    _same(loaded, {k: v.contiguous() for k, v in tensors.items()})
    assert loaded["all"].view(torch.int16).equal(bits)


def test_fp16_checkpoint_round_trip(tmp_path: Path) -> None:
    model = build_model("baseline", "resnet18", num_classes=3, input_size=(64, 32)).half()
    save_checkpoint(model, tmp_path)
    loaded = load_checkpoint(tmp_path)
    assert loaded.neck.weight.dtype == torch.float16
    _same(loaded.state_dict(), model.state_dict())


# --- the rest of the API --------------------------------------------------------------------------


def test_loaded_tensors_do_not_depend_on_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_safetensors({"a": torch.arange(4096.0)}, path)
    loaded, _ = load_safetensors(path)
    raw = path.read_bytes()
    with path.open("r+b") as f:  # overwrite the data in place (a memory map would see it)
        f.seek(len(raw) - 4096 * 4)
        f.write(b"\0" * 4096 * 4)
    assert torch.equal(loaded["a"], torch.arange(4096.0))
    loaded["a"].add_(1)  # writable, and the file does not change
    assert path.read_bytes()[-4:] == b"\0" * 4


def test_device_mapping(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_safetensors({"a": torch.ones(2, 3)}, path)
    assert load_safetensors(path, torch.device("cpu"))[0]["a"].device.type == "cpu"
    meta = load_safetensors(path, "meta")[0]["a"]
    assert meta.device.type == "meta" and meta.shape == (2, 3)
    if torch.cuda.is_available():
        on_gpu = load_safetensors(path, "cuda")[0]["a"]
        assert on_gpu.is_cuda and torch.equal(on_gpu.cpu(), torch.ones(2, 3))
        save_safetensors({"g": on_gpu.t()}, tmp_path / "g.safetensors")
        assert torch.equal(load_safetensors(tmp_path / "g.safetensors")[0]["g"], on_gpu.t().cpu())


def test_empty_and_metadata_only_files(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_safetensors({}, path)
    assert load_safetensors(path) == ({}, {})
    save_safetensors({}, path, metadata={"k": "v"})
    assert load_safetensors(path) == ({}, {"k": "v"})


def test_a_failed_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.safetensors"
    save_safetensors({"a": torch.ones(3)}, path)
    before = path.read_bytes()

    def half_written(tensors: object, filename: Path, metadata: object = None) -> None:
        Path(filename).write_bytes(b"\x10\0\0")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stf.safetensors.torch, "save_file", half_written)
    with pytest.raises(OSError, match="No space left"):
        save_safetensors({"a": torch.zeros(3)}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]  # no temporary left


def test_what_cannot_be_saved(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    with pytest.raises(SafetensorsError, match="names must be strings"):
        save_safetensors({3: torch.ones(1)}, path)  # type: ignore[dict-item]
    with pytest.raises(SafetensorsError, match="reserved"):
        save_safetensors({"__metadata__": torch.ones(1)}, path)
    with pytest.raises(SafetensorsError, match="not a tensor"):
        save_safetensors({"a": [1.0]}, path)  # type: ignore[dict-item]
    with pytest.raises(SafetensorsError, match="to_dense"):
        save_safetensors({"a": torch.eye(3).to_sparse()}, path)
    assert not path.exists() and not list(tmp_path.iterdir())
