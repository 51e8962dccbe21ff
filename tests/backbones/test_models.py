"""build_model: output shapes and layouts, regions, eval features, classifiers from centroids."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from torchvision import models

from reid_backbones import (
    MODEL_OPTIONS,
    MODELS,
    PartBranch,
    ReIDModel,
    ReIDOutput,
    build_model,
    region_rows,
)

N, K, D = 2, 5, 512  # resnet18 maps have 512 channels
IMAGES = (64, 32)  # → 4×2 maps with last stride 1

CASES = [
    ("baseline", {}, 0),
    ("pplr", {}, 3),
    ("pplr", {"num_parts": 2}, 2),
    *[("dcls", {"attention": a}, 3) for a in ("soft", "cbam", "eca", "se", "none")],
    ("dcls", {"num_regions": 2}, 2),
    ("dcls", {"attention": "eca", "num_regions": 2}, 2),
    ("dcls", {"num_regions": 0}, 0),
    ("dcls", {"overlap": False}, 3),
]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(N, 3, *IMAGES, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("name", "options", "parts"), CASES)
def test_train_and_eval_shapes(name: str, options: dict, parts: int, images: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = build_model(name, "resnet18", num_classes=K, **options)
    assert isinstance(model, ReIDModel) and model.num_parts == parts and model.feature_dim == D
    out = model.train()(images)
    assert isinstance(out, ReIDOutput)
    assert out.global_features.shape == out.global_bn_features.shape == (N, D)
    assert out.global_logits is not None and out.global_logits.shape == (N, K)
    if parts:
        assert out.part_features.shape == out.part_pooled_features.shape == (N, parts, D)
        assert out.part_logits.shape == (N, parts, K)
    else:
        assert out.part_features is None and out.part_logits is None
    if options.get("attention", "soft") == "soft":  # one backward per architecture is enough
        loss = out.global_logits.sum() + out.global_features.sum()
        if parts:
            loss = loss + out.part_logits.sum()
        loss.backward()

    model.eval()
    with torch.no_grad():
        feats = model(images)
        g, p = model.extract(images)
    assert feats.shape == (N, D)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(N))
    torch.testing.assert_close(g, feats)
    if parts:
        assert p.shape == (N, parts, D)
        torch.testing.assert_close(p.norm(dim=2), torch.ones(N, parts))
    else:
        assert p is None


def test_without_classes_there_are_no_logits(images: torch.Tensor) -> None:
    model = build_model("pplr", "resnet18")
    out = model(images)
    assert out.global_logits is None and out.part_logits is None
    assert out.part_features.shape == (N, 3, D)
    with torch.no_grad():
        assert model.eval().extract(images, parts=False)[1] is None


def test_feature_conventions(images: torch.Tensor) -> None:
    """Pre/post BNNeck as documented: bn features = BNNeck(pooled); logits = classifier(bn)."""
    model = build_model("pplr", "resnet18", num_classes=K).train()
    out = model(images)
    fmap = model.backbone(images)
    torch.testing.assert_close(out.global_features, fmap.mean((2, 3)))
    torch.testing.assert_close(out.global_logits, model.classifier(out.global_bn_features))
    # The default parts are AdaptiveAvgPool2d((3, 1)) bins of the 4-row map: [0,2), [1,3), [2,4).
    stripes = [fmap[:, :, a:b].mean((2, 3)) for a, b in ((0, 2), (1, 3), (2, 4))]
    torch.testing.assert_close(out.part_pooled_features, torch.stack(stripes, 1))
    disjoint = build_model("pplr", "resnet18", num_classes=K, part_bins="disjoint").train()
    disjoint.load_state_dict(model.state_dict())
    stripes = [fmap[:, :, a:b].mean((2, 3)) for a, b in ((0, 1), (1, 3), (3, 4))]
    torch.testing.assert_close(disjoint(images).part_pooled_features, torch.stack(stripes, 1))
    for i in range(3):
        torch.testing.assert_close(
            out.part_logits[:, i], model.parts.classifiers[i](out.part_features[:, i])
        )
    assert not model.neck.bias.requires_grad and model.neck.weight.requires_grad
    assert model.classifier.bias is None


def test_region_rows() -> None:
    # DCLS, 3 overlapping regions: [0, H/2), [H/4, 3H/4), [H/2, H).
    assert region_rows(16, 3, overlap=True) == [(0, 8), (4, 12), (8, 16)]
    assert region_rows(24, 3, overlap=True) == [(0, 12), (6, 18), (12, 24)]
    # DCLS, 2 overlapping regions: [0, 2H/3), [H/3, H), the middle third shared; symmetric.
    assert region_rows(24, 2, overlap=True) == [(0, 16), (8, 24)]
    assert region_rows(16, 2, overlap=True) == [(0, 11), (5, 16)]
    # PPLR / non-cross: disjoint stripes tiling the map.
    assert region_rows(24, 3, overlap=False) == [(0, 8), (8, 16), (16, 24)]
    assert region_rows(16, 3, overlap=False) == [(0, 5), (5, 11), (11, 16)]
    for h in range(6, 30):
        for n in (1, 2, 3, 4, 6):
            if h < n + 1:
                continue
            disjoint = region_rows(h, n, overlap=False)
            assert disjoint[0][0] == 0 and disjoint[-1][1] == h
            assert all(a[1] == b[0] for a, b in pairwise(disjoint))
            over = region_rows(h, n, overlap=True)
            assert over[0][0] == 0 and over[-1][1] == h
            assert all(b[0] < a[1] for a, b in pairwise(over))  # neighbours overlap
            assert all(a[0] < b[0] and a[1] < b[1] for a, b in pairwise(over))
    with pytest.raises(ValueError, match="cannot hold 3 overlapping regions"):
        region_rows(3, 3, overlap=True)


@pytest.mark.parametrize(
    ("regions", "overlap", "rows"),
    [
        (3, True, [(0, 8), (4, 12), (8, 16)]),  # DCLS
        (2, True, [(0, 11), (5, 16)]),  # DCLS, N_l = 2
        (3, False, [(0, 5), (5, 11), (11, 16)]),  # PPLR / DCLS "non-cross"
    ],
)
def test_branch_pools_the_documented_rows(regions: int, overlap: bool, rows: list) -> None:
    branch = PartBranch(8, regions, overlap=overlap, num_classes=3)
    fmap = torch.randn(2, 8, 16, 8)
    pooled, bn, logits = branch(fmap)
    expected = torch.stack([fmap[:, :, a:b].mean((2, 3)) for a, b in rows], 1)
    torch.testing.assert_close(pooled, expected)
    assert bn.shape == (2, regions, 8) and logits.shape == (2, regions, 3)
    torch.testing.assert_close(branch.bn_features(fmap), bn)


def test_dcls_global_branch_skips_the_attention(images: torch.Tensor) -> None:
    model = build_model("dcls", "resnet18")
    out = model(images)
    torch.testing.assert_close(out.global_features, model.backbone(images).mean((2, 3)))


def test_reset_classifiers_from_centroids(images: torch.Tensor) -> None:
    model = build_model("pplr", "resnet18", num_classes=K)
    g = torch.randn(7, D)
    p = torch.randn(7, 3, D)
    model.reset_classifiers(g, p)
    assert model.num_classes == 7
    torch.testing.assert_close(model.classifier.weight, F.normalize(g, dim=1))
    for i in range(3):
        torch.testing.assert_close(model.parts.classifiers[i].weight, F.normalize(p[:, i], dim=1))
    out = model(images)
    assert out.global_logits.shape == (N, 7) and out.part_logits.shape == (N, 3, 7)
    model.double().reset_classifiers(g, p)  # the model's dtype (and device) is kept
    assert model.classifier.weight.dtype == model.parts.classifiers[0].weight.dtype == torch.float64
    assert model.config()["num_classes"] == 7

    with pytest.raises(ValueError, match=r"part_centroids must be \[7, 3, 512\]"):
        model.reset_classifiers(g)
    with pytest.raises(ValueError, match=r"global_centroids must be \[K, 512\]"):
        model.reset_classifiers(torch.randn(7, 10), p)
    base = build_model("baseline", "resnet18")
    base.reset_classifiers(g)
    assert base(images).global_logits.shape == (N, 7)
    with pytest.raises(ValueError, match="has no parts"):
        base.reset_classifiers(g, p)


def test_options_are_checked() -> None:
    assert set(MODELS) == {"baseline", "pplr", "dcls"} == set(MODEL_OPTIONS)
    with pytest.raises(TypeError, match="unknown option.*num_part\\b.*valid options.*num_parts"):
        build_model("pplr", "resnet18", num_part=3)
    with pytest.raises(TypeError, match="valid options for 'baseline': none"):
        build_model("baseline", "resnet18", attention="soft")
    with pytest.raises(ValueError, match="unknown attention 'nonlocal'"):
        build_model("dcls", "resnet18", attention="nonlocal")
    with pytest.raises(ValueError, match="num_regions must be"):
        build_model("dcls", "resnet18", num_regions=-1)
    with pytest.raises(ValueError, match="unknown model 'mgn'"):
        build_model("mgn")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model("pplr", "vgg16")


def test_torchvision_file_loads_through_pretrained(tmp_path: Path) -> None:
    torch.manual_seed(1)
    state = models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(state, path)
    model = build_model("dcls", "resnet18", num_classes=K, pretrained=path)
    for key in ("conv1.weight", "layer4.1.bn2.running_var", "layer2.0.downsample.0.weight"):
        assert torch.equal(model.backbone.state_dict()[key], state[key])


def test_channels_last_bf16_autocast_matches_fp32(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = build_model("dcls", "resnet18", num_classes=K).eval()
    with torch.no_grad():
        ref = model(images)
        ref_g, ref_p = model.extract(images)
        model = model.to(memory_format=torch.channels_last)
        x = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(x)
            got_g, got_p = model.extract(x)
    assert torch.isfinite(got).all()
    # bf16 keeps ~3 significant digits: unit vectors agree loosely.
    assert F.cosine_similarity(got.float(), ref).min() > 0.98
    assert F.cosine_similarity(got_p.float(), ref_p, dim=2).min() > 0.98
    torch.testing.assert_close(got_g.float(), ref_g, atol=0.05, rtol=0)

    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = out.global_logits.float().logsumexp(1).mean() + out.part_logits.float().mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_load_centroids_writes_rows_in_place_and_keeps_parameters() -> None:

    model = build_model("pplr", backbone="resnet18", num_classes=10, num_parts=2)
    before = [id(p) for p in model.parameters()]
    g, p = torch.randn(4, 512), torch.randn(4, 2, 512)
    assert model.load_centroids(g, p) == 4
    assert [id(q) for q in model.parameters()] == before
    torch.testing.assert_close(model.classifier.weight[:4], F.normalize(g, dim=1))
    torch.testing.assert_close(model.parts.classifiers[1].weight[:4], F.normalize(p[:, 1], dim=1))
    with pytest.raises(ValueError, match="capacity of 10 rows"):
        model.load_centroids(torch.randn(11, 512), torch.randn(11, 2, 512))
    with pytest.raises(ValueError, match="part_centroids must be"):
        model.load_centroids(g, None)


@pytest.mark.parametrize("scale", [1e19, 1e-19])
def test_unit_features_and_centroids_at_extreme_scales(scale: float, images: torch.Tensor) -> None:
    """F.normalize squared the entries: BNNeck features at 1e19 gave an inf norm (features of
    zeros), at 1e-19 a vanishing one (divided by eps, not unit vectors); centroids likewise."""
    torch.manual_seed(0)
    model = build_model("dcls", "resnet18", num_classes=K).eval()
    with torch.no_grad():
        moderate, (moderate_g, moderate_p) = model(images), model.extract(images)
        for neck in (model.neck, *model.parts.necks):  # eval BNNeck: its output times `scale`
            neck.weight.mul_(scale)
            neck.bias.mul_(scale)
        feats, (g, p) = model(images), model.extract(images)
    for got in (feats, g, p):
        assert torch.isfinite(got).all()
    torch.testing.assert_close(feats, moderate)
    torch.testing.assert_close(g, moderate_g)
    torch.testing.assert_close(p, moderate_p)
    torch.testing.assert_close(p.norm(dim=2), torch.ones(N, 3))
    # classifier weights from centroids: the unit vectors of the moderate centroids
    cg, cp = torch.randn(4, D), torch.randn(4, 3, D)
    model.reset_classifiers(cg * scale, cp * scale)
    torch.testing.assert_close(model.classifier.weight, F.normalize(cg, dim=1))
    torch.testing.assert_close(model.parts.classifiers[2].weight, F.normalize(cp[:, 2], dim=1))
    model.load_centroids(cg[:2] * scale, cp[:2] * scale)
    torch.testing.assert_close(model.classifier.weight[:2], F.normalize(cg[:2], dim=1))
    torch.testing.assert_close(model.parts.classifiers[0].weight[:2], F.normalize(cp[:2, 0], dim=1))


@pytest.mark.parametrize("height", [1, 2, 3, 4, 5, 8, 16, 17, 24])
@pytest.mark.parametrize("parts", [1, 2, 3, 4, 6])
def test_adaptive_part_bins_equal_adaptive_avg_pool(height: int, parts: int) -> None:
    """PPLR's official parts: nn.AdaptiveAvgPool2d((P, 1)) of the backbone map."""
    fmap = torch.randn(2, 5, height, 3, dtype=torch.float64)
    branch = PartBranch(5, parts, overlap=False, adaptive=True)
    expected = torch.nn.AdaptiveAvgPool2d((parts, 1))(fmap).squeeze(3).transpose(1, 2)
    torch.testing.assert_close(branch.pool(fmap), expected, rtol=1e-12, atol=1e-12)


def test_adaptive_part_bins_known_rows() -> None:
    # VeRi-776 at 256x256 (H = 16): neighbouring stripes share a row; 64x32 (H = 4) likewise.
    assert region_rows(16, 3, overlap=False, adaptive=True) == [(0, 6), (5, 11), (10, 16)]
    assert region_rows(4, 3, overlap=False, adaptive=True) == [(0, 2), (1, 3), (2, 4)]
    assert region_rows(24, 3, overlap=False, adaptive=True) == [(0, 8), (8, 16), (16, 24)]
    assert region_rows(2, 3, overlap=False, adaptive=True) == [(0, 1), (0, 2), (1, 2)]
    with pytest.raises(ValueError, match="overlap=False"):
        region_rows(16, 3, overlap=True, adaptive=True)


def test_pplr_part_bins_option_and_old_checkpoints(tmp_path: Path) -> None:
    from reid_backbones import load_checkpoint, save_checkpoint

    adaptive = build_model("pplr", backbone="resnet18", num_classes=4, input_size=(64, 32))
    assert adaptive.parts is not None and adaptive.parts.adaptive
    disjoint = build_model(
        "pplr", backbone="resnet18", num_classes=4, input_size=(64, 32), part_bins="disjoint"
    )
    assert disjoint.parts is not None and not disjoint.parts.adaptive
    with pytest.raises(ValueError, match="part_bins must be one of adaptive, disjoint"):
        build_model("pplr", backbone="resnet18", part_bins="overlap")
    save_checkpoint(adaptive, tmp_path / "new")
    assert load_checkpoint(tmp_path / "new").parts.adaptive  # type: ignore[union-attr]
    # A checkpoint written before the option existed pooled disjoint stripes: it stays so.
    config = json.loads((tmp_path / "new" / "config.json").read_text())
    del config["options"]["part_bins"]
    (tmp_path / "new" / "config.json").write_text(json.dumps(config))
    assert not load_checkpoint(tmp_path / "new").parts.adaptive  # type: ignore[union-attr]
