"""Property tests of reid-backbones: the model factory, its heads and blocks, normalisation, and
the checkpoint / safetensors readers and writers, on generated inputs and generated files.

Each call either refuses its input (a ValueError/TypeError naming an argument; the documented
error class, ``SafetensorsError``/``CheckpointError``/``PretrainedWeightsError``, for files)
or returns a result that satisfies the invariants and, where there is one, the readable
reference: ``F.normalize`` in float64, ``nn.AdaptiveAvgPool2d`` for the official part bins,
BatchNorm applied group by group, a plain reading of the safetensors format, the official PPLR
key layout written out by hand. Model-building tests keep to ResNet-18 on images of at most
64×32 and run fewer examples (``MODEL_SETTINGS``).
"""

from __future__ import annotations

import json
import math
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

from reid_backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODEL_OPTIONS,
    MODELS,
    build_model,
    check_input_size,
    feature_map_size,
    l2_normalize,
    region_rows,
)
from tests.property.support import (
    ALL_DTYPES,
    FLOAT_DTYPES,
    attempt,
    covers,
    eps,
    finite,
    mostly,
    must_accept,
    must_refuse,
    refused,
    shapes,
    tensors,
)

#: Tests that build ResNets or write files run this many examples in the fast profile (and a
#: quarter of the profile's count in the long one).
MODEL_EXAMPLES = max(10, settings().max_examples // 4)
MODEL_SETTINGS = settings(max_examples=MODEL_EXAMPLES)

TINY64 = torch.finfo(torch.float64).tiny


def _rows(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t`` as a 2-D ``[vectors, entries]`` view of the vectors along ``dim``."""
    if t.dim() == 0:
        return t.reshape(1, 1)
    moved = t.movedim(dim, -1)
    return moved.reshape(-1, moved.shape[-1]) if moved.numel() else moved.reshape(0, 1)


# --- l2_normalize ---------------------------------------------------------------------------------


def _int_dim(value: object, ndim: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -ndim <= value < ndim


@given(
    x=tensors(shapes(min_dims=0, max_dims=3, max_side=5), dtypes=ALL_DTYPES),
    dim_choice=mostly((-1, 0, 1, 2), (3, -4, 1.0, None)),
    zero_row=mostly((False,), (True,)),
    as_list=mostly((False,), (True,)),
    seed=st.integers(0, 2**16),
)
@covers("l2_normalize")
def test_l2_normalize(x, dim_choice, zero_row, as_list, seed) -> None:
    """l2_normalize: the input's shape and dtype; equal to F.normalize in float64 (with the
    eps floor at float64's smallest normal) to the rounding of the dtype, for any magnitude
    (1e±30, rows at mixed scales); bit for bit F.normalize's float32/float64/bfloat16 answer on
    vectors of ordinary magnitude; finite non-zero vectors of unit length, zero vectors zero, a
    vector with a NaN all NaN, one with an inf NaN there and 0 elsewhere; permuting other
    dimensions permutes the result bit for bit, permuting the normalised one to rounding.
    Non-tensors, integer/bool tensors and a dim out of range are refused naming x or dim."""
    ndim, dim = max(x.dim(), 1), dim_choice
    if zero_row and x.dim() >= 1 and x.shape[0]:
        x = x.clone()
        x[0] = 0
    arg = x.tolist() if as_list else x
    out = attempt(l2_normalize, arg, dim=dim)
    if as_list or not x.is_floating_point() or not _int_dim(dim, ndim):
        must_refuse(out, "a non-tensor, a non-float tensor or a bad dim")
        return
    must_accept(out)
    assert out.shape == x.shape and out.dtype == x.dtype
    reference = F.normalize(x.double(), dim=dim, eps=TINY64) if x.dim() else x.double().sign()
    if x.dim() == 0:
        reference = F.normalize(x.double().reshape(1), dim=0, eps=TINY64).reshape(())
    got = out.double()
    assert torch.equal(torch.isnan(got), torch.isnan(reference))
    tol = 8 * eps(x.dtype)
    torch.testing.assert_close(got, reference, rtol=tol, atol=tol, equal_nan=True)
    rows_in, rows_out = _rows(x.double(), dim), _rows(got, dim)
    for row_in, row_out in zip(rows_in, rows_out, strict=True):
        if torch.isnan(row_in).any():
            assert torch.isnan(row_out).all()
        elif torch.isinf(row_in).any():
            assert torch.equal(torch.isnan(row_out), torch.isinf(row_in))
            assert bool((row_out[~torch.isinf(row_in)] == 0).all())
        elif bool((row_in == 0).all()):
            assert bool((row_out == 0).all())
        else:
            assert abs(float(row_out.norm()) - 1) <= 4 * tol
    ordinary = (
        x.dtype in (torch.float32, torch.float64, torch.bfloat16)
        and finite(x)
        and bool(((x.double().abs() >= 1e-12) | (x == 0)).all())
        and bool((x.double().abs() <= 1e12).all())
    )
    if ordinary and x.dim():
        assert torch.equal(out, F.normalize(x, dim=dim)), "not F.normalize's bits"
    g = torch.Generator().manual_seed(seed)
    if x.dim() >= 2:
        other = (dim + 1) % x.dim()
        perm = torch.randperm(x.shape[other], generator=g)
        permuted = l2_normalize(x.index_select(other, perm), dim=dim)
        expected = out.index_select(other, perm)
        assert torch.equal(torch.isnan(permuted), torch.isnan(expected))
        assert torch.equal(permuted.nan_to_num(), expected.nan_to_num())
    if x.dim() >= 1 and x.shape[dim] > 1:
        perm = torch.randperm(x.shape[dim], generator=g)
        permuted = l2_normalize(x.index_select(dim % x.dim(), perm), dim=dim)
        torch.testing.assert_close(
            permuted.double(),
            out.index_select(dim % x.dim(), perm).double(),
            rtol=tol,
            atol=tol,
            equal_nan=True,
        )


# --- input sizes and regions ----------------------------------------------------------------------

BAD_SIZES = ((0, 16), (-32, 16), (32,), (32, 16, 3), (32.0, 16), "32x16", None, (True, 16))
SIZES = mostly(
    ((256, 128), (64, 32), (49, 16), (48, 16), (33, 8), (32, 16), (17, 8), (16, 16), (1, 1)),
    BAD_SIZES,
)

#: option -> (valid values, invalid values)
OPTION_VALUES = {
    "num_parts": ((1, 2, 3, 4, 6), (0, -1, 2.0, True, "3")),
    "part_bins": (("adaptive", "disjoint"), ("uniform", None)),
    "attention": (("soft", "cbam", "eca", "se", "none"), ("nonlocal", 3)),
    "num_regions": ((0, 1, 2, 3, 4), (-1, 2.5, False)),
    "overlap": ((True, False), (1, "yes")),
}


@st.composite
def model_options(draw: st.DrawFn, name: str, bad: bool | None = None) -> dict:
    """Options for architecture ``name``: a drawn subset of its own; with ``bad`` (drawn when
    None, about 1 in 8) one bad value or an option of another architecture (or a typo)."""
    own = MODEL_OPTIONS.get(name, {})
    options = {k: draw(st.sampled_from(OPTION_VALUES[k][0])) for k in own if draw(st.booleans())}
    if bad is None:
        bad = draw(mostly((False,), (True,)))
    if bad:
        key = draw(st.sampled_from(sorted(OPTION_VALUES) + ["num_part"]))
        if key in own:
            options[key] = draw(st.sampled_from(OPTION_VALUES[key][1]))
        else:  # another architecture's option, or a typo
            options[key] = draw(st.sampled_from(OPTION_VALUES.get(key, ((3,),))[0]))
    return options


@st.composite
def model_cases(draw: st.DrawFn) -> tuple[object, dict]:
    """An architecture name (sometimes unknown) and options for it (sometimes bad ones)."""
    name = draw(mostly(MODELS, ("mgn", None)))
    return name, draw(model_options(name if name in MODELS else "baseline"))


def _valid_option(key: str, value: object) -> bool:
    if key in ("num_parts", "num_regions"):
        low = 1 if key == "num_parts" else 0
        return isinstance(value, int) and not isinstance(value, bool) and value >= low
    if key == "part_bins":
        return value in ("adaptive", "disjoint")
    if key == "attention":
        return value in ("soft", "cbam", "eca", "se", "none")
    return isinstance(value, bool)


def _valid_size(size: object) -> bool:
    return (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)
    )


def _rows_needed(name: str, options: dict) -> int:
    """Feature-map rows the architecture's regions need (the docstrings' rule)."""
    resolved = {**MODEL_OPTIONS[name], **options}
    if name == "pplr" and resolved["part_bins"] == "disjoint":
        return resolved["num_parts"]
    if name == "dcls" and resolved["num_regions"] > 0:
        return resolved["num_regions"] + (1 if resolved["overlap"] else 0)
    return 1


@given(case=model_cases(), size=SIZES, last_stride=mostly((1, 2), (3, 0, "1", 1.5)))
@covers("check_input_size", "feature_map_size")
def test_check_input_size(case, size, last_stride) -> None:
    """feature_map_size: (⌈H/2^s⌉, ⌈W/2^s⌉) with s = 4 (last_stride=1) or 5 (2).
    check_input_size: accepts exactly the sizes whose map has the rows the architecture's
    regions need (disjoint: P or N, overlapping: N + 1, adaptive bins and no regions: 1);
    unknown names and options, bad option values, sizes and strides are refused naming the
    argument."""
    name, options = case
    out = attempt(check_input_size, name, size, last_stride, **options)
    stride_ok = last_stride in (1, 2) and not isinstance(last_stride, (bool, float))
    valid = (
        name in MODELS
        and set(options) <= set(MODEL_OPTIONS[name])
        and all(_valid_option(k, v) for k, v in options.items())
        and _valid_size(size)
        and stride_ok
    )
    if valid:
        s = 4 if last_stride == 1 else 5
        h, w = (-(-v // 2**s) for v in size)
        assert feature_map_size(size, last_stride) == (h, w)
        if h >= _rows_needed(name, options):
            must_accept(out)
            assert out is None
        else:
            must_refuse(out, f"a map {h} rows tall")
            assert "input_size" in str(out.error)
    else:
        must_refuse(out, "a bad name, option, size or stride")
    maps = attempt(feature_map_size, size, last_stride)
    if _valid_size(size) and stride_ok:
        must_accept(maps)
    else:
        must_refuse(maps, "a bad size or stride")


@given(
    height=mostly(tuple(range(1, 25)), (0, -3, 2.5, None)),
    num_regions=mostly((1, 2, 3, 4, 6), (0, -1, 2.0)),
    overlap=mostly((False, True), (1,)),
    adaptive=mostly((False, True)),
)
@covers("region_rows")
def test_region_rows(height, num_regions, overlap, adaptive) -> None:
    """region_rows: N ranges [a, b) with 0 <= a < b <= H, starts and ends increasing, the
    first at 0 and the last at H. Adaptive bins average exactly as nn.AdaptiveAvgPool2d((N, 1));
    disjoint stripes tile the map with heights differing by at most one row; overlapping regions
    are two of N + 1 near-equal bands each, neighbours sharing one band. Maps too short for
    their regions, and non-integer or non-positive arguments, are refused naming the argument."""
    out = attempt(region_rows, height, num_regions, overlap, adaptive=adaptive)
    ints = all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (height, num_regions)
    )
    bool_overlap = isinstance(overlap, bool)
    if not ints or not bool_overlap or (adaptive and overlap):
        must_refuse(out, "bad arguments")
        return
    bands = num_regions + 1 if overlap else num_regions
    if not adaptive and height < bands:
        must_refuse(out, "a map too short")
        return
    must_accept(out)
    assert len(out) == num_regions
    assert all(0 <= a < b <= height for a, b in out)
    assert out[0][0] == 0 and out[-1][1] == height
    assert all(p[0] < q[0] and p[1] < q[1] for p, q in zip(out, out[1:])) or num_regions == 1
    if adaptive:
        fmap = torch.arange(height, dtype=torch.float64).reshape(1, 1, height, 1) ** 2
        pooled = nn.AdaptiveAvgPool2d((num_regions, 1))(fmap).flatten()
        ours = torch.stack([fmap[0, 0, a:b, 0].mean() for a, b in out])
        torch.testing.assert_close(ours, pooled, rtol=1e-12, atol=0)
    elif not overlap:
        assert all(p[1] == q[0] for p, q in zip(out, out[1:]))
        heights = [b - a for a, b in out]
        assert max(heights) - min(heights) <= 1
    elif num_regions >= 2:  # region i = bands i and i + 1: [e_i, e_{i+2})
        edges = [a for a, _ in out] + [b for _, b in out[-2:]]
        assert all(out[i] == (edges[i], edges[i + 2]) for i in range(num_regions))
        heights = [b - a for a, b in zip(edges, edges[1:])]
        assert min(heights) >= 1 and max(heights) - min(heights) <= 1


# --- the model factory ----------------------------------------------------------------------------

IMAGE_SIZES = ((64, 32), (48, 16), (33, 16), (32, 16), (17, 8), (16, 16))
NORMS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "unit": ((0.5, 0.5, 0.5), [0.25, 0.25, 0.25]),
    "short": ((0.5, 0.5), (1.0, 1.0, 1.0)),
    "zero_std": ((0.0, 0.0, 0.0), (1.0, 0.0, 1.0)),
    "nan": ((math.nan, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
#: build_model argument -> (valid values, invalid values); build_args draws at most one invalid.
BUILD_ARGS = {
    "backbone": (("resnet18",) * 4 + ("resnet18_ibn_a",), ("resnet7", None)),
    "num_classes": ((0, 1, 3), (-1, 2.5, True)),
    "last_stride": ((1, 2), (3, 0)),
    "bn_groups": ((1, 1, 2), (0, 1.5, True)),
    "input_size": (IMAGE_SIZES, ((0, 16), "64x32", (64,))),
    "norm": (("imagenet", "unit"), ("short", "zero_std", "nan")),
}


@st.composite
def build_args(draw: st.DrawFn) -> dict:
    """Arguments of build_model (ResNet-18 family only): all valid about half the time, else
    one of them (the name, an option, or one of BUILD_ARGS) bad."""
    faults = ("name", "option", *BUILD_ARGS)
    fault = draw(st.sampled_from((None,) * len(faults) + faults))
    name = draw(st.sampled_from(("mgn", None) if fault == "name" else MODELS))
    args = {"name": name, "options": draw(model_options(name, bad=fault == "option"))}
    for key, (good, bad) in BUILD_ARGS.items():
        args[key] = draw(st.sampled_from(bad if fault == key else good))
    return args


def _valid_model_case(name: object, options: dict) -> bool:
    return (
        name in MODELS
        and set(options) <= set(MODEL_OPTIONS[name])
        and all(_valid_option(k, v) for k, v in options.items())
    )


def _fits(name: str, options: dict, size: tuple[int, int], last_stride: int) -> bool:
    """Whether images of ``size`` leave the rows the architecture's regions need."""
    s = 4 if last_stride == 1 else 5
    return -(-size[0] // 2**s) >= _rows_needed(name, options)


def _positive_int(value: object, low: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _bn_train(x: torch.Tensor, bn: nn.Module, groups: int) -> torch.Tensor:
    """BatchNorm in training mode applied to each of ``groups`` consecutive chunks of the batch
    on its own (the definition of ghost BatchNorm; plain BatchNorm for one group)."""
    return torch.cat(
        [
            F.batch_norm(c, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
            for c in x.chunk(groups)
        ]
    )


def _unit_rows(t: torch.Tensor) -> None:
    norms = t.double().flatten(0, -2).norm(dim=-1)
    assert bool(((norms - 1).abs() < 1e-5).all()), norms


def _pool_regions(fmap: torch.Tensor, rows: list[tuple[int, int]]) -> torch.Tensor:
    return torch.stack([fmap[:, :, a:b, :].mean(dim=(2, 3)) for a, b in rows], dim=1)


@MODEL_SETTINGS
@given(
    args=build_args(),
    batch=mostly((2, 4, 1, 3), (0,)),
    images_kind=mostly(("model", "model", "other"), ("channels", "float64", "uint8", "3d")),
    other=st.sampled_from(IMAGE_SIZES),
    seed=st.integers(0, 2**16),
)
@covers("build_model", "ReIDModel", "ReIDOutput", "ResNetBackbone", "BNNeck", "PartBranch")
def test_build_model(args, batch, images_kind, other, seed) -> None:
    """build_model: a ReIDModel for every valid architecture, option set, ResNet-18 backbone
    (IBN-a too), class count, stride, ghost-BN group count, input size and mean/std; bad ones
    are refused naming the argument. Training mode: a ReIDOutput whose fields have the
    documented shapes ([N, D], [N, K], [N, P, D], [N, P, K]; None without classes or parts),
    all finite; the global feature is the mean of the backbone map (⌈H/2^s⌉ × ⌈W/2^s⌉), the
    BNNeck output is BatchNorm of it per ghost group, the logits its product with the
    classifier, the part features the mean over region_rows of the (attended) map — for pplr's
    adaptive bins exactly nn.AdaptiveAvgPool2d((P, 1)). Evaluation mode: unit-length [N, D]
    features, the normalised running-statistics BNNeck output; extract() gives the same and
    unit-length [N, P, D] parts. Images the model cannot run on (wrong shape, dtype, too short
    for the regions, a batch that does not split into groups of 2 in training) are refused
    naming images."""
    name, options, backbone = args["name"], args["options"], args["backbone"]
    num_classes, last_stride, bn_groups = args["num_classes"], args["last_stride"], args["bn_groups"]
    size, norm = args["input_size"], args["norm"]
    mean, std = NORMS[norm]
    model = attempt(
        build_model, name, backbone, num_classes, None, last_stride, bn_groups,
        input_size=size, mean=mean, std=std, **options,
    )  # fmt: skip
    valid = (
        _valid_model_case(name, options)
        and backbone in ("resnet18", "resnet18_ibn_a")
        and _positive_int(num_classes, 0)
        and last_stride in (1, 2)
        and _positive_int(bn_groups)
        and _valid_size(size)
        and norm in ("imagenet", "unit")
        and _fits(name, options, size, last_stride)
    )
    if not valid:
        must_refuse(model, "a bad name, option, backbone, count, stride, size or mean/std")
        return
    must_accept(model)
    resolved = {**MODEL_OPTIONS[name], **options}
    num_parts = {"pplr": resolved.get("num_parts"), "dcls": resolved.get("num_regions")}.get(name)
    num_parts = num_parts or 0
    assert model.feature_dim == 512 and model.num_parts == num_parts
    assert model.config()["options"] == resolved and model.config()["input_size"] == list(size)
    assert not model.neck.bias.requires_grad and bool((model.neck.bias == 0).all())

    g = torch.Generator().manual_seed(seed)
    hw = size if images_kind != "other" else other
    shape = {"channels": (batch, 1, *hw), "3d": (3, *hw)}.get(images_kind, (batch, 3, *hw))
    images = torch.randn(shape, generator=g)
    if images_kind in ("float64", "uint8"):
        images = images.to(getattr(torch, images_kind))
    ibn_ok = backbone != "resnet18_ibn_a" or -(-hw[0] // 16) * -(-hw[1] // 16) >= 2
    images_ok = (
        images_kind in ("model", "other") and _fits(name, options, hw, last_stride) and ibn_ok
    )
    train_ok = images_ok and batch % bn_groups == 0 and batch // bn_groups >= 2

    model.train()
    out = attempt(model, images)
    if not train_ok:
        must_refuse(out, "images the model cannot train on")
    else:
        must_accept(out)
        d, k, n = 512, num_classes, batch
        with torch.no_grad():
            fmap = model.backbone(images)
        assert fmap.shape[2:] == feature_map_size(hw, last_stride)
        assert out.global_features.shape == (n, d) and out.global_bn_features.shape == (n, d)
        close = {"rtol": 1e-4, "atol": 1e-5}
        torch.testing.assert_close(out.global_features, fmap.mean(dim=(2, 3)), **close)
        bn = _bn_train(out.global_features, model.neck, bn_groups)
        torch.testing.assert_close(out.global_bn_features, bn, **close)
        if k:
            assert out.global_logits.shape == (n, k)
            logits = out.global_bn_features @ model.classifier.weight.T
            torch.testing.assert_close(out.global_logits, logits, **close)
        else:
            assert out.global_logits is None and out.part_logits is None
        if num_parts:
            shapes_ = [tuple(t.shape) for t in (out.part_features, out.part_pooled_features)]
            assert shapes_ == [(n, num_parts, d)] * 2
            with torch.no_grad():
                attended = model.parts.attention(fmap)
            if name == "pplr" and resolved["part_bins"] == "adaptive":
                pooled = nn.AdaptiveAvgPool2d((num_parts, 1))(fmap).flatten(2).transpose(1, 2)
            else:
                overlap = name == "dcls" and resolved["overlap"]
                rows = region_rows(fmap.shape[2], num_parts, overlap)
                pooled = _pool_regions(attended, rows)
            torch.testing.assert_close(out.part_pooled_features, pooled, **close)
            for i, neck in enumerate(model.parts.necks):
                bn = _bn_train(out.part_pooled_features[:, i], neck, bn_groups)
                torch.testing.assert_close(out.part_features[:, i], bn, **close)
            if k:
                assert out.part_logits.shape == (n, num_parts, k)
        else:
            assert out.part_features is None and out.part_pooled_features is None
        assert all(finite(t) for t in out if t is not None)

    model.eval()
    with torch.no_grad():
        feats = attempt(model, images)
        if not images_ok:
            must_refuse(feats, "images the model cannot run on")
            return
        must_accept(feats)
        assert feats.shape == (batch, 512) and feats.dtype == torch.float32 and finite(feats)
        _unit_rows(feats)
        pooled = model.backbone(images).mean(dim=(2, 3))
        expected = F.normalize(model.neck(pooled).double(), dim=1)
        torch.testing.assert_close(feats.double(), expected, rtol=1e-4, atol=1e-5)
        global_, parts = model.extract(images)
    assert torch.equal(global_, feats)
    if num_parts:
        assert parts.shape == (batch, num_parts, 512) and finite(parts)
        _unit_rows(parts)
    else:
        assert parts is None
