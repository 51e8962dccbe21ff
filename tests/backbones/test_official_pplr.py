"""convert_official_pplr: the official PPLR checkpoints' key layout → our checkpoint folders.

No download: ``OfficialStandIn`` is written here from the official model's description (a
torchvision ResNet as ``base``, last stride 1, ``bnneck`` / ``classifier`` and per part
``bnneck{i}`` / ``classifier{i}``, GAP → bnneck → L2 in evaluation, ``AdaptiveAvgPool2d((P, 1))``
parts), with random weights and BatchNorm statistics, and saved as DataParallel would
(``module.`` keys). Unlike the official class, its heads are as wide as the backbone (512 for
ResNet-18), so that the small ResNet-18 keeps the tests fast.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision import models

from reid_backbones import (
    CheckpointError,
    build_model,
    convert_official_pplr,
    load_checkpoint,
    read_checkpoint_config,
)

IMAGES = (64, 32)  # → 4×2 maps: 3 adaptive bins [0, 2), [1, 3), [2, 4) share rows
K = 5
FACTORIES = {"resnet18": models.resnet18, "resnet50": models.resnet50}


class OfficialStandIn(nn.Module):
    """The official ResNetPart's parameter names and forward semantics (see the module doc)."""

    def __init__(self, backbone: str, num_parts: int = 3, num_classes: int = K) -> None:
        super().__init__()
        resnet = FACTORIES[backbone](weights=None)
        block = resnet.layer4[0]
        strided = block.conv2 if isinstance(block, models.resnet.Bottleneck) else block.conv1
        strided.stride = (1, 1)
        block.downsample[0].stride = (1, 1)
        self.base = nn.Sequential(
            resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
            resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4,
        )  # fmt: skip
        dim = resnet.fc.in_features
        self.num_parts = num_parts
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.rap = nn.AdaptiveAvgPool2d((num_parts, 1))
        self.bnneck = nn.BatchNorm1d(dim)
        self.bnneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        for i in range(num_parts):
            setattr(self, f"bnneck{i}", nn.BatchNorm1d(dim))
            getattr(self, f"bnneck{i}").bias.requires_grad_(False)
            setattr(self, f"classifier{i}", nn.Linear(dim, num_classes, bias=False))
        g = torch.Generator().manual_seed(int(backbone[6:]) + 100 * num_parts + 1000 * num_classes)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                    m.num_batches_tracked.fill_(int(torch.randint(1, 999, (), generator=g)))
                elif isinstance(m, nn.Linear):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g))

    def _parts(self, fmap: torch.Tensor, normalise: bool) -> torch.Tensor:
        f_p = self.rap(fmap).flatten(2)  # [N, D, P]
        fs = [getattr(self, f"bnneck{i}")(f_p[:, :, i]) for i in range(self.num_parts)]
        return torch.stack([F.normalize(f) if normalise else f for f in fs], dim=-1)

    def forward(self, x: torch.Tensor):  # noqa: ANN201 - the official return types
        fmap = self.base(x)
        f_g = self.bnneck(self.gap(fmap).flatten(1))
        if not self.training:
            return F.normalize(f_g)
        fs_p = self._parts(fmap, normalise=False)
        logits_p = torch.stack(
            [getattr(self, f"classifier{i}")(fs_p[:, :, i]) for i in range(self.num_parts)], -1
        )
        return f_g, fs_p, self.classifier(f_g), logits_p

    def extract_all_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.base(x)
        return F.normalize(self.bnneck(self.gap(fmap).flatten(1))), self._parts(fmap, True)


def _saved_as_dataparallel(net: nn.Module) -> dict[str, torch.Tensor]:
    return {f"module.{k}": v.clone() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def official() -> dict[str, tuple[OfficialStandIn, dict[str, torch.Tensor]]]:
    nets = {name: OfficialStandIn(name).eval() for name in FACTORIES}
    return {name: (net, _saved_as_dataparallel(net)) for name, net in nets.items()}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, *IMAGES, generator=torch.Generator().manual_seed(1))


def _assert_same_features(model: nn.Module, net: OfficialStandIn, images: torch.Tensor) -> None:
    with torch.no_grad():
        torch.testing.assert_close(model(images), net(images), rtol=1e-5, atol=1e-6)
        g, parts = model.extract(images)
        official_g, official_parts = net.extract_all_features(images)
    torch.testing.assert_close(g, official_g, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts, official_parts.permute(0, 2, 1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", ["module", "plain", "wrapped file"])
@pytest.mark.parametrize("backbone", list(FACTORIES))
def test_converted_model_gives_the_official_features(
    official, images: torch.Tensor, tmp_path: Path, backbone: str, layout: str
) -> None:
    net, state = official[backbone]
    source: object = state
    if layout == "plain":
        source = {k.removeprefix("module."): v for k, v in state.items()}
    elif layout == "wrapped file":  # as the official save_checkpoint helper would write it
        source = tmp_path / "best.pth"
        torch.save({"state_dict": state, "epoch": 49, "best_mAP": 0.81}, source)
    out = convert_official_pplr(source, tmp_path / "converted", IMAGES)
    assert out == tmp_path / "converted"

    model = load_checkpoint(out)
    assert not model.training
    _assert_same_features(model, net, images)
    config = read_checkpoint_config(out)
    assert (config["architecture"], config["backbone"]) == ("pplr", backbone)
    assert config["options"] == {"num_parts": 3, "part_bins": "adaptive"}
    assert (config["num_parts"], config["num_classes"], config["last_stride"]) == (3, K, 1)
    assert config["feature_dim"] == {"resnet18": 512, "resnet50": 2048}[backbone]
    assert config["input_size"] == list(IMAGES)
    assert config["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert config["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert config["interpolation"] == "bicubic"  # the official T.Resize(..., interpolation=3)
    converted = config["extra"]["converted_from"]
    assert converted["module_prefix"] == (layout != "plain")
    assert converted["file"] == (str(source) if layout == "wrapped file" else None)


def test_training_outputs_and_classifiers_match(official, tmp_path: Path) -> None:
    net, state = official["resnet18"]
    model = load_checkpoint(convert_official_pplr(state, tmp_path / "c", IMAGES))
    net = copy.deepcopy(net).train()  # batch statistics, as in training; the fixture stays
    model.train()
    batch = torch.randn(8, 3, *IMAGES, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        f_g, fs_p, logits_g, logits_p = net(batch)
        out = model(batch)
    # batch statistics of 8 images amplify the rounding of the two poolings' summation orders
    close = {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(out.global_bn_features, f_g, **close)
    torch.testing.assert_close(out.part_features, fs_p.permute(0, 2, 1), **close)
    torch.testing.assert_close(out.global_logits, logits_g, **close)
    torch.testing.assert_close(out.part_logits, logits_p.permute(0, 2, 1), **close)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors:UserWarning")
@pytest.mark.parametrize(("num_parts", "num_classes"), [(1, 3), (2, 0), (4, 11)])
def test_parts_and_classes_are_inferred(images, tmp_path: Path, num_parts, num_classes) -> None:
    net = OfficialStandIn("resnet18", num_parts=num_parts, num_classes=num_classes).eval()
    out = convert_official_pplr(_saved_as_dataparallel(net), tmp_path / "c", (256, 128))
    config = read_checkpoint_config(out)
    assert (config["num_parts"], config["num_classes"]) == (num_parts, num_classes)
    assert config["input_size"] == [256, 128]
    model = load_checkpoint(out)
    assert (model.classifier is None) == (num_classes == 0)
    _assert_same_features(model, net, images)


def _edited(state: dict[str, torch.Tensor], drop=(), **replace) -> dict[str, torch.Tensor]:
    edited = {k: v for k, v in state.items() if k not in drop}
    edited.update({f"module.{k.replace('__', '.')}": v for k, v in replace.items()})
    return edited


CALLS: list[str] = []


def _ran() -> None:  # what the pickle below would run if it were unpickled with code allowed
    CALLS.append("ran")


class _Payload:
    def __reduce__(self):  # noqa: ANN204
        return (_ran, ())


def test_refusals_name_the_problem(official, tmp_path: Path) -> None:
    _, state = official["resnet18"]

    def refused(source, *match: str) -> None:
        with pytest.raises(CheckpointError) as info:
            convert_official_pplr(source, tmp_path / "out", IMAGES)
        for text in match:
            assert text in str(info.value), (text, str(info.value))
        assert not (tmp_path / "out").exists()

    refused(_edited(state, drop=["module.base.5.0.conv1.weight"]), "missing", "base.5.0.conv1")
    refused(_edited(state, classifier__bias=torch.zeros(K)), "unexpected", "classifier.bias")
    wrong = _edited(state, bnneck1__running_mean=torch.zeros(7))
    refused(wrong, "shape mismatch", "bnneck1.running_mean: file [7] vs model [512]")
    refused(_edited(state, classifier2__weight=torch.zeros(K + 1, 512)), "classifier2.weight")
    no_part = _edited(state, drop=[k for k in state if k.startswith("module.bnneck1.")])
    refused(no_part, "bnneck[0, 2]", "parts are missing")
    wide = {k: torch.zeros(2048) for k in ("weight", "bias", "running_mean", "running_var")}
    refused(_edited(state, **{f"bnneck__{k}": v for k, v in wide.items()}), "hard-codes 2048")

    plain = models.resnet18(weights=None).state_dict()
    refused(plain, "a plain ResNet", "no bnneck", "pretrained=")
    refused(build_model("dcls", "resnet18").state_dict(), "reid-backbones model (dcls", "needs no")
    global_only = {k: v for k, v in state.items() if k.startswith("module.base.")}
    global_only["module.feat_bn.weight"] = torch.ones(512)
    refused(global_only, "global-only ResNet", "feat_bn")
    deeper = _edited(state, **{f"base__5__{b}__conv1__weight": torch.zeros(1) for b in range(2, 8)})
    deeper.update({f"module.base.6.{b}.conv1.weight": torch.zeros(1) for b in range(2, 36)})
    deeper.update({f"module.base.{i}.{b}.conv3.weight": torch.zeros(1) for i in (4, 5, 6, 7)
                   for b in (0, 1, 2)})  # fmt: skip
    refused(deeper, "resnet152 backbone, which reid-backbones does not build")

    code = tmp_path / "with_code.pth"
    torch.save({"state_dict": state, "hook": _Payload()}, code)
    refused(code, "holds Python objects besides tensors", "_ran", "weights_only=False")
    assert CALLS == []  # refused before anything ran
    refused(tmp_path / "missing.pth", "does not exist")
    (tmp_path / "page.pth").write_text("<html>a download page, not the weights</html>")
    refused(tmp_path / "page.pth", "cannot be read with torch.load(weights_only=True)")
    cut = tmp_path / "cut.pth"
    torch.save(state, cut)
    cut.write_bytes(cut.read_bytes()[:100_000])
    refused(cut, "could not read", "is the download complete?")
    refused({**state, "module.note": "x"}, "'module.note': str, not a tensor")


def test_reid_eval_convert_command(official, images: torch.Tensor, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """``reid-eval convert OFFICIAL.pth OUT_DIR --input-size H W``: the same folder as the
    function, and a refusal is exit status 2 with the converter's message."""
    from reid_backbones import load_checkpoint
    from reid_eval.cli import main

    net, state = official["resnet18"]
    weights = tmp_path / "best.pth"
    torch.save(state, weights)
    out = tmp_path / "converted"
    assert main(["convert", str(weights), str(out), "--input-size", *map(str, IMAGES)]) == 0
    said = capsys.readouterr().out
    assert "parts" in said and f"reid-eval --checkpoint {out}" in said
    _assert_same_features(load_checkpoint(out).eval(), net, images)
    broken = tmp_path / "broken.pth"
    torch.save({k: v for k, v in state.items() if "bnneck0" not in k}, broken)
    assert main(["convert", str(broken), str(tmp_path / "no")]) == 2
    assert "reid-eval: error:" in capsys.readouterr().err
