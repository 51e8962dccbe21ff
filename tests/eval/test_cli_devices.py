"""Bad ``--device`` and ``--checkpoint`` values: one clear error line, exit 2, before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import reid_eval.cli as cli
from reid_backbones import CheckpointError
from reid_eval import check_checkpoint, resolve_device
from reid_eval.cli import main


@pytest.fixture
def no_dataset_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command gets as far as reading the dataset."""

    def scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dataset was scanned before the bad input was reported")

    monkeypatch.setattr(cli, "load_dataset", scan)


def _no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def _error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert err.startswith("reid-eval: error: ") and "Traceback" not in err
    return err


# -- resolve_device ---------------------------------------------------------------------------


def test_resolve_device_accepts_usable_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    _gpus(monkeypatch, 2)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("foo", None), ("gpu", "cuda"), ("GPU:1", "cuda:1"), ("CUDA", "cuda"), ("cuda:", "cuda")],
)
def test_unparsable_device_names_the_choices(spec: str, expected: str | None) -> None:
    with pytest.raises(ValueError) as info:
        resolve_device(spec, name="--device")
    message = str(info.value)
    assert message.startswith(f"--device '{spec}' is not a device")
    assert "'cpu'" in message and "'cuda:N'" in message
    if expected:
        assert f"did you mean '{expected}'?" in message
    else:
        assert "did you mean" not in message


def test_auto_picks_cuda_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_cuda(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" AUTO ") == torch.device("cpu")
    _gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ValueError, match="did you mean 'auto'"):
        resolve_device("atuo:1")


def test_cli_defaults_to_auto(
    tiny_checkpoint: Path,
    synthetic_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    _no_cuda(monkeypatch)
    code = main([
        "--checkpoint", str(tiny_checkpoint), "--dataset", "synthetic",
        "--data-root", str(synthetic_root), "--quiet", "--workers", "0",
    ])  # fmt: skip
    assert code == 0
    assert "on cpu" in capsys.readouterr().out
    parser = cli.build_parser()
    commands = {
        "evaluate": ["--checkpoint", "c", "--dataset", "d", "--data-root", "r"],
        "extract": ["--checkpoint", "c", "--images", "i", "--output", "o"],
        "baseline": ["--dataset", "d", "--data-root", "r"],
    }
    for command, args in commands.items():
        parsed = parser.parse_args([command, *args])
        assert parsed.device == "auto"
        assert getattr(parsed, "workers", None) is None  # default_workers(device) decides


def test_cuda_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_cuda(monkeypatch)
    for spec in ("cuda", "cuda:0", torch.device("cuda", 1)):
        with pytest.raises(ValueError, match="CUDA, which is not available") as info:
            resolve_device(spec, name="runtime.device")
        assert "runtime.device" in str(info.value) and "use 'cpu'" in str(info.value)


def test_cuda_index_beyond_the_gpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpus(monkeypatch, 2)
    with pytest.raises(ValueError) as info:
        resolve_device("cuda:5")
    assert "'cuda:5'" in str(info.value)
    assert "2 CUDA devices (cuda:0 to cuda:1)" in str(info.value)
    _gpus(monkeypatch, 1)
    with pytest.raises(ValueError, match=r"1 CUDA device \(cuda:0 to cuda:0\)"):
        resolve_device("cuda:1")


def test_mps_without_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device 'mps' asks for the Apple GPU \(MPS\)"):
        resolve_device("mps")


def test_unsupported_device_type() -> None:
    with pytest.raises(ValueError, match="device type 'meta' is not available or not supported"):
        resolve_device("meta")
    with pytest.raises(ValueError, match="must be a string"):
        resolve_device(3)  # type: ignore[arg-type]


# -- reid-eval --device -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "gpus", "expected"),
    [
        ("foo", None, "--device 'foo' is not a device"),
        ("cuda", 0, "--device 'cuda' asks for CUDA, which is not available"),
        ("cuda:5", 2, "--device 'cuda:5': this machine has 2 CUDA devices"),
    ],
)
def test_cli_bad_device_fails_before_any_work(
    tiny_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    no_dataset_scan: None,
    spec: str,
    gpus: int | None,
    expected: str,
) -> None:
    if gpus == 0:
        _no_cuda(monkeypatch)
    elif gpus:
        _gpus(monkeypatch, gpus)
    common = ["--dataset", "synthetic", "--data-root", str(tmp_path), "--device", spec]
    assert main(["--checkpoint", str(tiny_checkpoint), *common, "--quiet"]) == 2
    assert expected in _error(capsys)
    assert main(["baseline", *common]) == 2
    assert expected in _error(capsys)


# -- reid-eval --checkpoint ---------------------------------------------------------------------


def _evaluate(checkpoint: Path | str, data_root: Path | str) -> int:
    return main([
        "--checkpoint", str(checkpoint), "--dataset", "synthetic",
        "--data-root", str(data_root), "--quiet",
    ])  # fmt: skip


def test_missing_checkpoint_fails_before_the_dataset_scan(
    tiny_checkpoint: Path, capsys: pytest.CaptureFixture, no_dataset_scan: None
) -> None:
    typo = tiny_checkpoint.parent / "bset"
    assert _evaluate(typo, "/no/such/data") == 2
    err = _error(capsys)
    assert f"checkpoint '{typo}' does not exist" in err
    assert f"did you mean '{tiny_checkpoint}'?" in err and "model.safetensors" in err


def test_checkpoint_given_as_its_weights_file(
    tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    weights = tiny_checkpoint / "model.safetensors"
    assert check_checkpoint(weights) == tiny_checkpoint
    assert check_checkpoint(str(tiny_checkpoint)) == tiny_checkpoint
    out = tmp_path / "metrics.json"
    code = main([
        "--checkpoint", str(weights), "--dataset", "synthetic", "--data-root",
        str(synthetic_root), "--quiet", "--output", str(out),
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["checkpoint"] == str(weights)


@pytest.fixture
def broken(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """A copy of the tiny checkpoint, to damage."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))


def test_other_file_is_not_a_checkpoint(
    broken: Path, capsys: pytest.CaptureFixture, no_dataset_scan: None
) -> None:
    assert _evaluate(broken / "config.json", "/no/such/data") == 2
    err = _error(capsys)
    assert f"is a file, not a checkpoint folder: give its folder '{broken}'" in err
    (broken / "model.pth").write_bytes(b"a pickle")
    (broken / "config.json").unlink()
    (broken / "model.safetensors").unlink()
    assert _evaluate(broken / "model.pth", "/no/such/data") == 2
    err = _error(capsys)
    assert "is a file, not a checkpoint folder: give the folder written by save_checkpoint" in err


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("no-weights", "has config.json but no model.safetensors"),
        ("truncated", "is not a safetensors file"),
        ("garbage", "unreadable safetensors header"),
        ("architecture", "unknown architecture 'nope'"),
        ("no-config", "has no config.json"),
    ],
)
def test_damaged_checkpoint_fails_before_the_dataset_scan(
    broken: Path,
    capsys: pytest.CaptureFixture,
    no_dataset_scan: None,
    damage: str,
    expected: str,
) -> None:
    weights, config = broken / "model.safetensors", broken / "config.json"
    if damage == "no-weights":
        weights.unlink()
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "garbage":
        weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    elif damage == "architecture":
        config.write_text(json.dumps({**json.loads(config.read_text()), "architecture": "nope"}))
    else:
        config.unlink()
    for given in (broken, weights):
        if damage == "no-weights" and given == weights:
            continue  # the file is gone: reported as a missing path
        assert _evaluate(given, "/no/such/data") == 2
        assert expected in _error(capsys)
    with pytest.raises(CheckpointError, match=expected):
        check_checkpoint(broken)
