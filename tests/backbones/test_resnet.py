"""ResNet and IBN-ResNet backbones: strides, weight files and downloads, the key-check report."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models

from reid_backbones import (
    BACKBONES,
    IBN,
    PretrainedWeightsError,
    build_backbone,
    imagenet_weights_url,
    load_pretrained,
    save_safetensors,
)


@pytest.mark.parametrize(
    ("name", "last_stride", "shape"),
    [
        ("resnet18", 1, (2, 512, 4, 2)),
        ("resnet18", 2, (2, 512, 2, 1)),
        ("resnet34", 1, (2, 512, 4, 2)),
        ("resnet50", 1, (2, 2048, 4, 2)),
        ("resnet50", 2, (2, 2048, 2, 1)),
        ("resnet18_ibn_a", 1, (2, 512, 4, 2)),
        ("resnet50_ibn_a", 1, (2, 2048, 4, 2)),
    ],
)
def test_feature_map_shape(name: str, last_stride: int, shape: tuple[int, ...]) -> None:
    backbone = build_backbone(name, last_stride=last_stride).eval()
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 64, 32))
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
    with pytest.raises(PretrainedWeightsError, match=r"bad.pth' cannot be read with torch.load"):
        build_backbone("resnet18", pretrained=bad)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'.*resnet50_ibn_a"):
        build_backbone("vgg16")
    with pytest.raises(ValueError, match="last_stride must be 1 or 2"):
        build_backbone("resnet18", last_stride=3)


def test_ibn_a_layout_matches_ibn_net_checkpoints() -> None:
    """resnet50_ibn_a: IBN (half IN, half BN) on bn1 of every block of layers 1-3 only, with
    the key names of IBN-Net's released resnet50_ibn_a .pth files."""
    assert {"resnet50_ibn_a", "resnet101_ibn_a"} <= set(BACKBONES)
    ibn = build_backbone("resnet50_ibn_a")
    plain = build_backbone("resnet50")
    keys, plain_keys = set(ibn.state_dict()), set(plain.state_dict())
    for stage, blocks, planes in (("layer1", 3, 64), ("layer2", 4, 128), ("layer3", 6, 256)):
        for b in range(blocks):
            layer = getattr(ibn, stage)[b].bn1
            assert isinstance(layer, IBN)
            assert layer.IN.num_features == planes // 2 and layer.IN.affine
            assert layer.BN.num_features == planes - planes // 2
            prefix = f"{stage}.{b}.bn1"
            assert {f"{prefix}.IN.weight", f"{prefix}.IN.bias"} <= keys
            assert f"{prefix}.IN.running_mean" not in keys  # InstanceNorm keeps no statistics
            assert f"{prefix}.BN.running_var" in keys and f"{prefix}.weight" not in keys
    assert not any(isinstance(m, IBN) for m in ibn.layer4.modules())
    assert isinstance(ibn.bn1, nn.BatchNorm2d)
    renamed = {k for k in plain_keys if ".bn1." in k and not k.startswith("layer4")}
    assert keys - plain_keys == {
        k.replace(".bn1.", sub) for k in renamed for sub in (".bn1.IN.", ".bn1.BN.")
    } - {
        k.replace(".bn1.", ".bn1.IN.")
        for k in renamed
        if k.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked")
    }
    assert plain_keys - keys == renamed
    # last stride 1: stride in conv2 of the first layer-4 block and in its shortcut.
    assert ibn.layer4[0].conv2.stride == (1, 1) and ibn.layer4[0].downsample[0].stride == (1, 1)


def test_ibn_layer_is_instance_norm_then_batch_norm() -> None:
    torch.manual_seed(0)
    layer = IBN(8).train()
    x = torch.randn(4, 8, 5, 3) * 3 + 2
    expected = torch.cat([nn.functional.instance_norm(x[:, :4]), layer.BN(x[:, 4:])], dim=1)
    torch.testing.assert_close(layer(x), expected)
    y = layer(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y, expected)


def test_ibn_net_style_file_loads(tmp_path: Path) -> None:
    """An IBN-Net .pth (fc.* kept, DataParallel prefix, no num_batches_tracked) loads."""
    torch.manual_seed(0)
    source = build_backbone("resnet18_ibn_a")
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    state["module.fc.weight"], state["module.fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    path = tmp_path / "resnet18_ibn_a.pth.tar"
    torch.save({"state_dict": state, "epoch": 100}, path)
    backbone = build_backbone("resnet18_ibn_a", pretrained=path).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), source.eval()(x), rtol=0, atol=0)
    torch.save(models.resnet18().state_dict(), tmp_path / "plain.pth")  # not an IBN file
    with pytest.raises(PretrainedWeightsError, match="missing in the file: layer1.0.bn1.BN.bias"):
        build_backbone("resnet18_ibn_a", pretrained=tmp_path / "plain.pth")


def test_safetensors_weights_file(tmp_path: Path) -> None:
    state = models.resnet18(weights=None).state_dict()
    save_safetensors(state, tmp_path / "r18.safetensors")
    backbone = build_backbone("resnet18", pretrained=tmp_path / "r18.safetensors")
    assert torch.equal(backbone.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])


def test_imagenet_and_weight_enums_go_through_the_hub_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = models.resnet18(weights=None).state_dict()
    urls: list[str] = []

    def fake_download(url: str, **kwargs: object) -> dict:
        urls.append(url)
        return state

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    backbone = build_backbone("resnet18", pretrained="imagenet")
    assert torch.equal(backbone.conv1.weight, state["conv1.weight"])
    build_backbone("resnet18", pretrained=models.ResNet18_Weights.IMAGENET1K_V1)
    assert urls == [imagenet_weights_url("resnet18")] * 2
    assert urls[0] == models.ResNet18_Weights.IMAGENET1K_V1.url
    assert imagenet_weights_url("resnet50_ibn_a").endswith("/resnet50_ibn_a-d9d0bb7b.pth")
    with pytest.raises(PretrainedWeightsError, match="do not match"):
        build_backbone("resnet34", pretrained=models.ResNet34_Weights.IMAGENET1K_V1)
    with pytest.raises(PretrainedWeightsError, match="has no torchvision weights"):
        build_backbone("resnet18_ibn_a", pretrained=models.ResNet18_Weights.IMAGENET1K_V1)
    with pytest.raises(TypeError, match="pretrained must be None, 'imagenet'"):
        build_backbone("resnet18", pretrained=True)  # type: ignore[arg-type]


def test_no_internet_gives_an_actionable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, **kwargs: object) -> dict:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedWeightsError) as e:
        build_backbone("resnet50", pretrained="imagenet")
    msg = str(e.value)
    assert "could not get the ImageNet weights of resnet50" in msg
    assert "pretrained='/path/to/resnet50-0676ba61.pth'" in msg
    with pytest.raises(PretrainedWeightsError, match="resnet50_ibn_a-d9d0bb7b.pth"):
        build_backbone("resnet50_ibn_a", pretrained="imagenet")
