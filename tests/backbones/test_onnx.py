"""ONNX export of the evaluation model, checked against torch with onnxruntime."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch

from reid_backbones import build_model, export_onnx


def test_export_matches_torch(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model("dcls", "resnet18", num_classes=3, input_size=(64, 32))
    model.train()(torch.randn(4, 3, 64, 32))  # non-trivial BatchNorm statistics
    model.train()
    path = export_onnx(model, tmp_path / "model.onnx", verify=True)  # verify: batch of 3
    assert path.is_file() and model.training  # the mode is restored
    assert not list(tmp_path.glob("*.data"))  # weights inside the one file

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    x = torch.randn(5, 3, 64, 32)
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    with torch.no_grad():
        expected = model.eval()(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(5))


def test_missing_onnx_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_onnx(name: str, *args: object, **kwargs: object) -> object:
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("No module named 'onnx'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    model = build_model("baseline", "resnet18")
    with pytest.raises(ImportError, match=r"pip install \"reid-backbones\[onnx\]\""):
        export_onnx(model, tmp_path / "m.onnx")
