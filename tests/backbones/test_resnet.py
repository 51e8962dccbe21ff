"""ResNet backbones: output strides, torchvision weight files, and the key-check report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import models

from reid_backbones import PretrainedWeightsError, build_backbone, load_pretrained


@pytest.mark.parametrize(
    ("name", "last_stride", "shape"),
    [
        ("resnet18", 1, (2, 512, 8, 4)),
        ("resnet18", 2, (2, 512, 4, 2)),
        ("resnet34", 1, (2, 512, 8, 4)),
        ("resnet50", 1, (2, 2048, 8, 4)),
        ("resnet50", 2, (2, 2048, 4, 2)),
    ],
)
def test_feature_map_shape(name: str, last_stride: int, shape: tuple[int, ...]) -> None:
    backbone = build_backbone(name, last_stride=last_stride).eval()
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 128, 64))
    assert tuple(out.shape) == shape
    assert backbone.out_channels == shape[1]


def test_torchvision_file_loads_and_matches_torchvision(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("resnet18", last_stride=2, pretrained=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = torch.nn.Sequential(*list(reference.children())[:-2])(x)
        torch.testing.assert_close(backbone(x), expected, rtol=0, atol=0)


def test_wrapped_and_dataparallel_state_dicts(tmp_path: Path) -> None:
    state = models.resnet18(weights=None).state_dict()
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    backbone = build_backbone("resnet18")
    load_pretrained(backbone, path)
    assert torch.equal(backbone.conv1.weight, state["conv1.weight"])


def test_mismatch_is_reported_key_by_key(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(PretrainedWeightsError) as e:
        build_backbone("resnet50", pretrained=path)
    msg = str(e.value)
    assert "missing in the file: " in msg and "layer1.0.conv3.weight" in msg
    assert "shape mismatch: " in msg and "layer1.0.conv1.weight: file (64, 64, 3, 3)" in msg


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsError, match="does not exist.*pretrained=None"):
        build_backbone("resnet18", pretrained=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="could not read weights"):
        build_backbone("resnet18", pretrained=bad)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        build_backbone("vgg16")
    with pytest.raises(ValueError, match="last_stride must be 1 or 2"):
        build_backbone("resnet18", last_stride=3)
