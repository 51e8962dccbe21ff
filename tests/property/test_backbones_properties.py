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

import functools
import itertools
import json
import math
import re
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

from reid_backbones import (
    ATTENTIONS,
    BACKBONES,
    IBN,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODEL_OPTIONS,
    MODELS,
    CheckpointError,
    GhostBatchNorm1d,
    GhostBatchNorm2d,
    PretrainedWeightsError,
    SafetensorsError,
    SoftAttention,
    build_attention,
    build_backbone,
    build_model,
    check_checkpoint,
    check_input_size,
    convert_official_pplr,
    convert_to_ghost_bn,
    convert_to_ibn_a,
    feature_map_size,
    imagenet_weights_url,
    l2_normalize,
    load_checkpoint,
    load_pretrained,
    load_safetensors,
    read_checkpoint_config,
    region_rows,
    register_attention,
    save_checkpoint,
    save_safetensors,
    set_bn_groups,
)
from tests.property.support import (
    ALL_DTYPES,
    DEVICES,
    KINDS,
    SPECIALS,
    _values,
    arrays,
    attempt,
    covers,
    eps,
    finite,
    moderate,
    mostly,
    must_accept,
    must_refuse,
    names_an_argument,
    refused,
    shapes,
    sides,
    tensors,
)

#: Tests that build ResNets or write files run this many examples in the fast profile (and a
#: quarter of the profile's count in the long one).
MODEL_EXAMPLES = max(10, settings().max_examples // 4)
MODEL_SETTINGS = settings(max_examples=MODEL_EXAMPLES)

TINY64 = torch.finfo(torch.float64).tiny


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread for this module's tiny convolutions: on a machine whose cores are
    busy, torch's thread pool waits for its other threads ~100x longer than the work takes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
@example(  # a list: AttributeError
    x=torch.tensor([0.5, 1.0]), dim_choice=-1, zero_row=False, as_list=True, seed=0
)
@example(  # an integer tensor: torch's RuntimeError
    x=torch.tensor([[1, 2]]), dim_choice=-1, zero_row=False, as_list=False, seed=0
)
@example(  # dim out of range: IndexError
    x=torch.tensor([0.5, 1.0]), dim_choice=1, zero_row=False, as_list=False, seed=0
)
@example(  # a float dim: a TypeError that named no argument
    x=torch.tensor([[0.5, 1.0]]), dim_choice=1.0, zero_row=False, as_list=False, seed=0
)
@example(  # a 0-d float16 zero went to F.normalize as is: NaN
    x=torch.tensor(0.0, dtype=torch.float16), dim_choice=-1, zero_row=False, as_list=False, seed=0
)
@example(  # a 0-d 1e29 went to F.normalize as is: its square overflowed, 0 instead of 1
    x=torch.tensor(1.2573e29), dim_choice=-1, zero_row=False, as_list=False, seed=0
)
@covers("l2_normalize")
def test_l2_normalize(x, dim_choice, zero_row, as_list, seed) -> None:
    """l2_normalize: the input's shape and dtype; equal to F.normalize in float64 (with the
    eps floor at float64's smallest normal) to the rounding of the dtype, for any magnitude
    (1e±30, rows at mixed scales); bit for bit F.normalize's float32/float64/bfloat16 answer on
    contiguous vectors of ordinary magnitude; finite non-zero vectors of unit length, zero
    vectors zero, a vector with a NaN all NaN, one with an inf NaN there and 0 elsewhere; a 0-d
    x its sign; permuting other dimensions permutes the result bit for bit (for one memory
    layout), permuting the normalised one to rounding. Non-tensors, integer/bool tensors and a
    dim that is no integer in range are refused naming x or dim."""
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
    if ordinary and x.dim() and x.is_contiguous():  # (F.normalize's own bits vary by layout)
        assert torch.equal(out, F.normalize(x, dim=dim)), "not F.normalize's bits"
    g = torch.Generator().manual_seed(seed)
    if x.dim() >= 2:
        other = (dim + 1) % x.dim()
        perm = torch.randperm(x.shape[other], generator=g)
        permuted = l2_normalize(x.index_select(other, perm), dim=dim)
        expected = l2_normalize(x.contiguous(), dim=dim).index_select(other, perm)  # one layout
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
@example(case=("mgn", {}), size=(256, 128), last_stride=1)  # KeyError
@example(case=("baseline", {}), size="32x16", last_stride=1)  # a TypeError naming nothing
@example(case=("baseline", {}), size=(32,), last_stride=1)  # IndexError
@example(case=("baseline", {}), size=(0, 16), last_stride=1)  # accepted
@example(case=("baseline", {}), size=(256, 128), last_stride=3)  # accepted
@example(case=("dcls", {}), size=(32, 16), last_stride=1)  # named num_regions, not passed
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
@example(height=2, num_regions=1, overlap=1, adaptive=False)  # overlap=1 accepted
@example(height=2.5, num_regions=1, overlap=False, adaptive=False)  # a float height accepted
@example(height=1, num_regions=1, overlap=True, adaptive=False)  # the refusal named no argument
@covers("region_rows")
def test_region_rows(height, num_regions, overlap, adaptive) -> None:
    """region_rows: N ranges [a, b) with 0 <= a < b <= H, starts and ends increasing (adaptive
    bins: non-decreasing), the first at 0 and the last at H. Adaptive bins average exactly as
    nn.AdaptiveAvgPool2d((N, 1)); disjoint stripes tile the map with heights differing by at
    most one row; overlapping regions are two of N + 1 near-equal bands each, neighbours
    sharing one band. Maps too short for their regions, and non-integer or non-positive
    arguments, are refused naming the argument."""
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
    if adaptive:  # bins repeat rows when the map is shorter than N (as the pooling does)
        assert all(p[0] <= q[0] and p[1] <= q[1] for p, q in itertools.pairwise(out))
    else:
        assert all(p[0] < q[0] and p[1] < q[1] for p, q in itertools.pairwise(out))
    if adaptive:
        fmap = torch.arange(height, dtype=torch.float64).reshape(1, 1, height, 1) ** 2
        pooled = nn.AdaptiveAvgPool2d((num_regions, 1))(fmap).flatten()
        ours = torch.stack([fmap[0, 0, a:b, 0].mean() for a, b in out])
        torch.testing.assert_close(ours, pooled, rtol=1e-12, atol=0)
    elif not overlap:
        assert all(p[1] == q[0] for p, q in itertools.pairwise(out))
        heights = [b - a for a, b in out]
        assert max(heights) - min(heights) <= 1
    elif num_regions >= 2:  # region i = bands i and i + 1: [e_i, e_{i+2})
        edges = [a for a, _ in out] + [b for _, b in out[-2:]]
        assert all(out[i] == (edges[i], edges[i + 2]) for i in range(num_regions))
        heights = [b - a for a, b in itertools.pairwise(edges)]
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


#: Valid build_model arguments (the @examples change one of them).
ARGS = {
    "name": "baseline",
    "options": {},
    "backbone": "resnet18",
    "num_classes": 2,
    "last_stride": 1,
    "bn_groups": 1,
    "input_size": (64, 32),
    "norm": "imagenet",
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


def _ibn_fits(backbone: str, size: tuple[int, int]) -> bool:
    """IBN-a's InstanceNorms (layers 1-3, stride up to 16) need more than one position."""
    return not backbone.endswith("_ibn_a") or -(-size[0] // 16) * -(-size[1] // 16) >= 2


def _positive_int(value: object, low: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _bn_train(x: torch.Tensor, bn: nn.Module, groups: int) -> torch.Tensor:
    """BatchNorm in training mode applied to each of ``groups`` consecutive chunks of the batch
    on its own, in float64 (the definition of ghost BatchNorm; plain BatchNorm for one group)."""
    w, b = (None if p is None else p.detach().double() for p in (bn.weight, bn.bias))
    return torch.cat(
        [
            F.batch_norm(c, None, None, w, b, training=True, eps=bn.eps)
            for c in x.detach().double().chunk(groups)
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
@example(args={**ARGS, "bn_groups": True}, batch=2, images_kind="model", other=(64, 32), seed=0)
@example(args={**ARGS, "num_classes": True}, batch=2, images_kind="model", other=(64, 32), seed=0)
@example(args={**ARGS, "norm": "nan"}, batch=2, images_kind="model", other=(64, 32), seed=0)
@example(args={**ARGS, "norm": "zero_std"}, batch=2, images_kind="model", other=(64, 32), seed=0)
@example(args={**ARGS, "input_size": (0, 16)}, batch=2, images_kind="model", other=(64, 32), seed=0)
@example(args={**ARGS, "name": "mgn"}, batch=2, images_kind="model", other=(64, 32), seed=0)
@example(  # built for 16x16 images, on which its InstanceNorms cannot run
    args={**ARGS, "backbone": "resnet18_ibn_a", "input_size": (16, 16)}, batch=2,
    images_kind="model", other=(64, 32), seed=0,
)  # fmt: skip
@example(  # no images with an IBN-a backbone: IndexError
    args={**ARGS, "backbone": "resnet18_ibn_a"}, batch=0, images_kind="model", other=(64, 32),
    seed=0,
)  # fmt: skip
@example(args=ARGS, batch=1, images_kind="model", other=(64, 32), seed=0)  # BatchNorm's error
@example(args=ARGS, batch=2, images_kind="channels", other=(64, 32), seed=0)  # RuntimeError
@example(args=ARGS, batch=2, images_kind="float64", other=(64, 32), seed=0)  # RuntimeError
@example(  # images too short for the regions: region_rows' error, naming no argument
    args={**ARGS, "name": "dcls"}, batch=2, images_kind="other", other=(32, 16), seed=0
)
@covers("build_model", "ReIDModel", "ReIDOutput", "ResNetBackbone", "BNNeck", "PartBranch")
def test_build_model(args, batch, images_kind, other, seed) -> None:
    """build_model: a ReIDModel for every valid architecture, option set, ResNet-18 backbone
    (IBN-a too), class count, stride, ghost-BN group count, input size (tall enough for the
    regions; more than 16 pixels in one side for IBN-a) and mean/std; bad ones are refused
    naming the argument. Training mode: a ReIDOutput whose fields have the
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
    num_classes, last_stride, bn_groups = (
        args["num_classes"],
        args["last_stride"],
        args["bn_groups"],
    )
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
        and _ibn_fits(backbone, size)
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
    images_ok = (
        images_kind in ("model", "other")
        and _fits(name, options, hw, last_stride)
        and _ibn_fits(backbone, hw)
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
        bn = _bn_train(out.global_features, model.neck, bn_groups)  # O(1) values: atol 1e-4
        torch.testing.assert_close(out.global_bn_features.double(), bn, rtol=1e-3, atol=1e-4)
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
                torch.testing.assert_close(
                    out.part_features[:, i].double(), bn, rtol=1e-3, atol=1e-4
                )
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


@MODEL_SETTINGS
@given(
    arch=st.sampled_from(("baseline", "pplr")),
    capacity=st.sampled_from((0, 2, 5)),
    k=mostly((1, 2, 4), (0,)),
    global_kind=mostly(("ok",), ("wrong_d", "1d", "list", "int")),
    part_kind=mostly(("ok",), ("none", "wrong_p")),
    values=arrays((4, 2, 512), kinds=KINDS),
    dtype=st.sampled_from((torch.float32, torch.float64, torch.float16)),
    method=st.sampled_from(("reset_classifiers", "load_centroids")),
)
@example(  # NaN centroids gave NaN classifier rows
    arch="baseline", capacity=2, k=1, global_kind="ok", part_kind="ok",
    values=np.where(np.arange(4 * 2 * 512).reshape(4, 2, 512) == 0, np.nan, 0.5),
    dtype=torch.float32, method="reset_classifiers",
)  # fmt: skip
@example(  # a list: AttributeError
    arch="baseline", capacity=2, k=1, global_kind="list", part_kind="ok",
    values=np.ones((4, 2, 512)), dtype=torch.float32, method="reset_classifiers",
)  # fmt: skip
@example(  # too many clusters: the refusal named num_classes, not an argument
    arch="baseline", capacity=2, k=4, global_kind="ok", part_kind="ok",
    values=np.ones((4, 2, 512)), dtype=torch.float32, method="load_centroids",
)  # fmt: skip
@example(  # wrong part centroids: refused after the global rows were written
    arch="pplr", capacity=2, k=1, global_kind="ok", part_kind="wrong_p",
    values=np.ones((4, 2, 512)), dtype=torch.float32, method="load_centroids",
)  # fmt: skip
@covers("ReIDModel")
def test_classifiers_from_centroids(
    arch, capacity, k, global_kind, part_kind, values, dtype, method
) -> None:
    """ReIDModel.reset_classifiers / load_centroids: every classifier's first K rows become the
    L2-normalised centroids (unit rows parallel to them in float64; zero rows for zero
    centroids), reset_classifiers with K outputs and num_classes K, load_centroids in place
    (the same parameters, rows K.. untouched; K <= the capacity). Wrong shapes, K = 0, NaN/inf
    (in float32), non-float or non-tensor centroids and part centroids for a model without
    parts are refused naming the argument, and nothing is written then."""
    model = (
        build_model(arch, "resnet18", capacity, input_size=(32, 16), num_parts=2)
        if (arch == "pplr")
        else build_model(arch, "resnet18", capacity, input_size=(32, 16))
    )
    full = torch.from_numpy(values[:k]).to(dtype)
    g = {"wrong_d": full[:, 0, :-1], "1d": full[:, 0].flatten(), "list": full[:, 0].tolist()}.get(
        global_kind, full[:, 0]
    )
    if global_kind == "int":
        g = g.round().to(torch.int64)
    if arch == "pplr":
        p = {"ok": full, "none": None, "wrong_p": full[:, :1]}[part_kind]
    else:  # no parts: None is right, any tensor wrong
        p = None if part_kind in ("ok", "none") else full
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    params = list(model.parameters())
    out = attempt(getattr(model, method), g, p)
    used = full if arch == "pplr" else full[:, 0]
    finite32 = finite(used.float()) and finite(used)
    valid = (
        global_kind == "ok"
        and (part_kind == "ok" or (arch == "baseline" and part_kind == "none"))
        and k >= 1
        and finite32
        and (method == "reset_classifiers" or k <= capacity)
    )
    if not valid:
        must_refuse(out, "bad centroids")
        after = model.state_dict()
        assert after.keys() == before.keys()
        assert all(torch.equal(before[n], after[n]) for n in before), "a refusal wrote rows"
        return
    must_accept(out)
    fcs = [model.classifier] + (list(model.parts.classifiers) if arch == "pplr" else [])
    cents = [full[:, 0]] + ([full[:, 0], full[:, 1]] if arch == "pplr" else [])
    for fc, c in zip(fcs, cents, strict=True):
        rows = fc.weight[:k].detach().double()
        c64 = c.float().double()
        norms = c64.norm(dim=1)
        for row, cen, nrm in zip(rows, c64, norms, strict=True):
            if nrm == 0:
                assert bool((row == 0).all())
            else:
                assert abs(float(row.norm()) - 1) < 1e-5
                cosine = float(row @ cen) / float(nrm)
                assert abs(cosine - 1) < 1e-5
    if method == "reset_classifiers":
        assert out is None and model.num_classes == k
        assert all(fc.out_features == k for fc in fcs)
    else:
        assert out == k and list(model.parameters()) == params
        assert all(fc.out_features == capacity for fc in fcs)
        for name, t in model.state_dict().items():
            if "classifier" in name:
                assert torch.equal(t[k:], before[name][k:])


# --- checkpoints ----------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**62), 2**62)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
EXTRAS = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3),
    st.sampled_from(({"epoch": math.nan}, {"a": object()}, {"a": {1, 2}}, "epoch 3", 5)),
)


class _Compiled(nn.Module):
    """What torch.compile returns: the model under ``_orig_mod``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self._orig_mod = inner


def _randomise(model: nn.Module, seed: int) -> None:
    """Every parameter and buffer drawn at random (BatchNorm variances > 0, counters > 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                values = torch.randn(t.shape, generator=g, dtype=torch.float64)
                t.copy_(values.abs() + 0.5 if name.endswith("running_var") else values * 0.1)
            else:
                t.copy_(torch.randint(1, 1000, t.shape, generator=g))


def _same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b) or set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(_bytes(a[key]), _bytes(b[key])), key


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a tensor's values (so that NaN payloads and -0 compare too)."""
    fresh = torch.empty(t.shape, dtype=t.dtype).copy_(t.detach().cpu())  # strides of its own
    return fresh.reshape(-1).view(torch.uint8)


@MODEL_SETTINGS
@given(
    args=build_args(),
    dtype=st.sampled_from((torch.float32, torch.float32, torch.float64, torch.bfloat16)),
    extra=EXTRAS,
    interpolation=mostly(("bilinear", "bicubic", "nearest"), ("lanczos", None)),
    wrapper=mostly(("none", "none", "data_parallel", "compiled"), ("linear", "none_object")),
    give=st.sampled_from(("folder", "weights")),
    seed=st.integers(0, 2**16),
)
@example(  # a string extra: dict()'s ValueError, naming no argument
    args=ARGS, dtype=torch.float32, extra="epoch 3", interpolation="bilinear", wrapper="none",
    give="folder", seed=0,
)  # fmt: skip
@covers(
    "save_checkpoint",
    "load_checkpoint",
    "check_checkpoint",
    "read_checkpoint_config",
    "unwrap_model",
    "CheckpointError",
)
def test_checkpoint_round_trip(args, dtype, extra, interpolation, wrapper, give, seed) -> None:
    """save_checkpoint → check_checkpoint / read_checkpoint_config / load_checkpoint: for every
    model build_model makes (random weights, statistics and counters; float32, float64,
    bfloat16; bare, in DataParallel or compiled), the loaded model's state dict equals the
    saved one bit for bit, in the saved dtype, it is in evaluation mode with the same config
    and gives the same features bit for bit; config.json holds the architecture, options,
    classes, groups, input size, mean/std, interpolation, dtype and extra (as JSON reads it
    back). The checkpoint is the folder or its model.safetensors. A non-model, an interpolation
    not in INTERPOLATIONS and an extra that is no JSON object are refused naming the argument."""
    name, options = args["name"], args["options"]
    mean, std = NORMS[args["norm"]]
    model = attempt(
        build_model, name, args["backbone"], args["num_classes"], None, args["last_stride"],
        args["bn_groups"], input_size=args["input_size"], mean=mean, std=std, **options,
    )  # fmt: skip
    if refused(model):
        return  # (what build_model refuses: test_build_model)
    _randomise(model, seed)
    model = model.to(dtype).eval()
    wrapped = {
        "data_parallel": lambda m: nn.DataParallel(m),
        "compiled": _Compiled,
        "linear": lambda m: nn.Linear(2, 2),
        "none_object": lambda m: None,
    }.get(wrapper, lambda m: m)(model)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run" / "ckpt"
        saved = attempt(save_checkpoint, wrapped, folder, extra, interpolation=interpolation)
        try:
            expected_extra = json.loads(json.dumps(dict(extra), allow_nan=False))
        except (TypeError, ValueError):
            expected_extra = "not JSON"
        valid = (
            wrapper in ("none", "data_parallel", "compiled")
            and interpolation in ("bilinear", "bicubic", "nearest")
            and (extra is None or (isinstance(extra, dict) and expected_extra != "not JSON"))
        )
        if not valid:
            must_refuse(saved, "a non-model, a bad interpolation or extra")
            assert not (folder / "config.json").exists()
            return
        must_accept(saved)
        assert saved == folder
        path = folder if give == "folder" else folder / "model.safetensors"
        assert check_checkpoint(path) == folder
        config = read_checkpoint_config(path)
        own = model.config()
        assert {k: config[k] for k in own} == json.loads(json.dumps(own))
        assert config["interpolation"] == interpolation
        assert config["dtype"] == str(dtype).removeprefix("torch.")
        assert config.get("extra") == (None if extra is None else expected_extra)
        loaded = load_checkpoint(path)
    assert not loaded.training and loaded.config() == own
    _same_state(loaded.state_dict(), model.state_dict())
    images = torch.randn(2, 3, *args["input_size"], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        assert torch.equal(loaded(images.to(dtype)), model(images.to(dtype)))


# --- safetensors ----------------------------------------------------------------------------------

#: What save_safetensors writes (reid_backbones' list), each with its header name.
SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}
#: Header dtype names the reading library knows -> torch dtypes (a flipped byte may turn one
#: of ours into another: I16 -> U16, F64 -> C64, ...).
KNOWN_DTYPES = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()} | {
    name: getattr(torch, attr)
    for name, attr in {
        "U16": "uint16",
        "U32": "uint32",
        "U64": "uint64",
        "C64": "complex64",
        "F8_E4M3FNUZ": "float8_e4m3fnuz",
        "F8_E5M2FNUZ": "float8_e5m2fnuz",
        "F8_E8M0": "float8_e8m0fnu",
    }.items()
    if hasattr(torch, attr)
}
NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)


@st.composite
def tensor_dicts(draw: st.DrawFn, max_tensors: int = 4) -> dict[str, torch.Tensor]:
    """Named tensors of every writable dtype, random bits (NaN payloads, -0, subnormals),
    shapes with 0-d and 0-size ones, laid out contiguously, transposed, strided, or sharing
    storage with an earlier tensor (tied weights, views)."""
    names = draw(st.lists(NAMES, max_size=max_tensors, unique=True))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    out: dict[str, torch.Tensor] = {}
    for name in names:
        earlier = [t for t in out.values() if t.numel()]
        if earlier and draw(mostly((False,) * 3, (True,))):  # shares an earlier one's storage
            base = draw(st.sampled_from(earlier))
            same = draw(st.booleans())
            out[name] = base if same or base.dim() == 0 else base[..., :1]
            continue
        dtype = draw(st.sampled_from(tuple(SAFETENSORS_DTYPES)))
        shape = draw(shapes(max_dims=3, max_side=4))
        numel = math.prod(shape)
        if dtype == torch.bool:
            t = torch.randint(0, 2, (numel,), generator=g).bool()
        else:
            size = torch.empty((), dtype=dtype).element_size()
            raw = torch.randint(0, 256, (numel * size,), generator=g, dtype=torch.uint8)
            t = raw.view(dtype)
        t = t.reshape(shape)
        layout = draw(st.sampled_from(("contiguous", "transposed", "strided")))
        if layout == "transposed" and t.dim() >= 2:
            t = t.transpose(0, 1).contiguous().transpose(0, 1)
        elif layout == "strided" and t.dim() >= 1:
            wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
            wide[..., ::2] = t
            t = wide[..., ::2]
        out[name] = t
    return out


METADATA = st.one_of(
    st.none(),
    st.dictionaries(NAMES, NAMES, max_size=3),
    st.sampled_from(({"a": 1}, {1: "a"}, "format=pt", ["a"])),
)


@given(
    tensors=tensor_dicts(),
    fault=mostly((None,), ("non_tensor", "complex", "reserved", "int_name", "list", "sparse")),
    metadata=METADATA,
    device=st.sampled_from(DEVICES),
)
@example(tensors={}, fault="int_name", metadata=None, device="cpu")  # named no argument
@example(tensors={}, fault="non_tensor", metadata=None, device="cpu")  # named no argument
@example(tensors={}, fault="list", metadata=None, device="cpu")  # AttributeError
@example(tensors={}, fault=None, metadata="format=pt", device="cpu")  # AttributeError
@covers("save_safetensors", "load_safetensors", "SafetensorsError")
def test_safetensors_round_trip(tensors, fault, metadata, device) -> None:
    """save_safetensors → load_safetensors: the same names, dtypes and shapes and the same bytes
    (every writable dtype, random bit patterns, 0-d and 0-size tensors, non-contiguous and
    shared-storage ones), owning their memory (the file may go), and the same metadata. A value
    that is no tensor, an unwritable dtype or layout, a reserved or non-string name, tensors or
    metadata that are no (string) mapping are refused naming the argument, and no file is
    written."""
    given_ = dict(tensors)
    if fault == "non_tensor":
        given_["x"] = [1.0, 2.0]
    elif fault == "complex":
        given_["x"] = torch.zeros(2, dtype=torch.complex64)
    elif fault == "reserved":
        given_["__metadata__"] = torch.zeros(1)
    elif fault == "int_name":
        given_[1] = torch.zeros(1)
    elif fault == "sparse":
        given_["x"] = torch.eye(2).to_sparse()
    arg = list(given_.values()) if fault == "list" else given_
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.safetensors"
        out = attempt(save_safetensors, arg, path, metadata)
        meta_ok = metadata is None or (
            isinstance(metadata, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
        )
        if fault is not None or not meta_ok:
            must_refuse(out, "a bad tensor, name, mapping or metadata")
            assert not path.exists() and not list(Path(tmp).iterdir())
            return
        must_accept(out)
        loaded, meta = load_safetensors(path, device=device)
        path.unlink()  # the loaded tensors own their memory
    assert set(loaded) == set(tensors) and meta == (metadata or {})
    for name, t in tensors.items():
        got = loaded[name]
        assert got.dtype == t.dtype and got.shape == t.shape and got.is_contiguous(), name
        assert torch.equal(_bytes(got), _bytes(t)), name


class _NotSafetensors(Exception):
    """What the reference reader concludes about bytes that are no valid safetensors file."""


def _no_duplicates(pairs: list) -> dict:
    """JSON objects as the library reads them: a tensor entry (a struct) may not repeat a field;
    the top level (a map) keeps the last of a repeated name."""
    keys = [k for k, _ in pairs]
    if {"dtype", "shape", "data_offsets"} & set(keys) and len(keys) != len(set(keys)):
        raise _NotSafetensors("a field repeated in a tensor entry")
    return dict(pairs)


def _reference_read(data: bytes) -> tuple[dict[str, tuple[str, list[int], bytes]], dict]:
    """The safetensors format read plainly (its README): an 8-byte little-endian header length
    n (at most 100 MB), n bytes of UTF-8 JSON — an object of tensor entries {dtype, shape,
    data_offsets} and an optional "__metadata__" string map — then the data, which the
    entries' [begin, end) offsets must tile exactly, each as long as its shape and dtype say
    (a BOOL byte other than 0 is True).
    Returns name -> (dtype name, shape, bytes) and the metadata, or raises _NotSafetensors."""

    def whole(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**64

    if len(data) < 8:
        raise _NotSafetensors("shorter than the length prefix")
    (n,) = struct.unpack("<Q", data[:8])
    if n > 100_000_000 or 8 + n > len(data):
        raise _NotSafetensors("header length beyond the limit or the file")
    try:
        text = data[8 : 8 + n].decode("utf-8")
        header = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=float.__call__)
    except (UnicodeDecodeError, ValueError, TypeError) as e:
        raise _NotSafetensors(f"header not JSON: {e}") from None
    if not isinstance(header, dict):
        raise _NotSafetensors("header not an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _NotSafetensors("metadata not a string map")
    entries, spans = {}, []
    for name, entry in header.items():
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise _NotSafetensors(f"entry {name!r} incomplete")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in KNOWN_DTYPES:
            raise _NotSafetensors(f"unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(whole(v) for v in shape):
            raise _NotSafetensors("bad shape")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(whole, offsets)):
            raise _NotSafetensors("bad offsets")
        size = math.prod(shape) * torch.empty((), dtype=KNOWN_DTYPES[dtype]).element_size()
        if offsets[1] < offsets[0] or offsets[1] - offsets[0] != size:
            raise _NotSafetensors(f"{name!r}: offsets do not match its size")
        raw = data[8 + n + offsets[0] : 8 + n + offsets[1]]
        if dtype == "BOOL":  # any non-zero byte is True (and reads back as 1)
            raw = bytes(int(b != 0) for b in raw)
        entries[name] = (dtype, shape, raw)
        spans.append(tuple(offsets))
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            raise _NotSafetensors("the tensors do not tile the data")
        end = stop
    if 8 + n + end != len(data):
        raise _NotSafetensors("the data is longer or shorter than the tensors")
    return entries, metadata


@given(
    tensors=tensor_dicts(max_tensors=3),
    metadata=st.one_of(st.none(), st.dictionaries(NAMES, NAMES, max_size=2)),
    corruption=st.sampled_from(("truncate", "header", "header", "length", "data", "append")),
    where=st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=3),
    padding=st.booleans(),
    masks=st.lists(st.integers(1, 255), min_size=3, max_size=3),
    length=st.sampled_from(("zero", -8, -1, 1, 8, "file", 2**63, 2**64 - 1)),
)
@example(  # the last padding byte flipped to a JSON whitespace (tab): the same file
    tensors={"a": torch.ones(1)}, metadata=None, corruption="header", where=[0.0],
    padding=True, masks=[0x29, 1, 1], length="zero",
)  # fmt: skip
@covers("load_safetensors", "SafetensorsError")
def test_corrupt_safetensors(tensors, metadata, corruption, where, padding, masks, length) -> None:
    """load_safetensors on a valid file with generated damage — cut at a drawn offset, drawn
    header bytes XORed, the length prefix overwritten, data bytes flipped, bytes appended —
    raises SafetensorsError naming the file, or (damage the format allows: JSON whitespace in
    the padding, a name or dtype turned into another valid one, data bytes) returns exactly
    what the damaged bytes say (the reference reading of the format); never another exception,
    and never a file the reference finds invalid. A cut, a changed length or appended bytes are
    always refused. Unchanged header meaning gives the identical tensors."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.safetensors"
        save_safetensors(tensors, path, metadata=metadata)
        data = bytearray(path.read_bytes())
        (n,) = struct.unpack("<Q", data[:8])
        if corruption == "truncate":
            data = data[: int(where[0] * len(data))]
        elif corruption == "header":
            for pos, mask in zip(where, masks, strict=False):  # (3 masks)
                # the padding (spaces) is the header's last bytes: aim there with padding
                data[8 + (n - 1 - int(pos * min(n, 8)) if padding else int(pos * n))] ^= mask
        elif corruption == "length":
            # zero, n ± a few bytes, the file's size, beyond any file
            new = {"zero": 0, "file": len(data)}.get(length, length)
            new = n + new if isinstance(length, int) and abs(length) <= 8 else new
            data[:8] = struct.pack("<Q", new)
        elif corruption == "data" and len(data) > 8 + n:
            for pos, mask in zip(where, masks, strict=False):  # (3 masks)
                data[8 + n + int(pos * (len(data) - 8 - n))] ^= mask
        elif corruption == "append":
            data += bytes(masks)
        path.write_bytes(bytes(data))
        try:
            expected = _reference_read(bytes(data))
        except _NotSafetensors:
            expected = None
        try:
            loaded, meta = load_safetensors(path)
        except SafetensorsError as e:
            assert str(path) in str(e)
            assert expected is None, f"refused a file the format allows: {e}"
            return
    assert corruption in ("header", "data"), f"{corruption}: a damaged file was read"
    assert expected is not None, "read a file the format does not allow"
    entries, expected_meta = expected
    assert set(loaded) == set(entries) and meta == expected_meta
    for name, (dtype, shape, raw) in entries.items():
        got = loaded[name]
        assert got.dtype == KNOWN_DTYPES[dtype] and list(got.shape) == shape, name
        assert bytes(_bytes(got).numpy()) == raw, name
    original = _reference_read(_saved_bytes(tensors, metadata))
    if {k: v[:2] for k, v in entries.items()} == {k: v[:2] for k, v in original[0].items()}:
        if corruption == "header" and meta == original[1]:
            assert set(loaded) == set(tensors)
            assert all(torch.equal(_bytes(loaded[k]), _bytes(t)) for k, t in tensors.items())


def _saved_bytes(tensors: dict, metadata: dict | None) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.safetensors"
        save_safetensors(tensors, path, metadata=metadata)
        return path.read_bytes()


# --- the official PPLR weights -------------------------------------------------------------------

#: The official ResNetPart's ``base`` Sequential index of each torchvision ResNet module.
OFFICIAL_BASE = {
    "conv1": "0",
    "bn1": "1",
    "layer1": "4",
    "layer2": "5",
    "layer3": "6",
    "layer4": "7",
}
#: Layouts no reid-backbones model has: ResNet-152's, and one no torchvision ResNet has.
ODD_LAYOUTS = {"resnet152": ("conv3", (3, 8, 36, 3)), "odd": ("conv2", (2, 2, 2, 3))}


@functools.lru_cache(maxsize=2)
def _official_base(backbone: str) -> dict[str, torch.Tensor]:
    """``base.<i>.*`` of the official model: a torchvision ResNet's weights (random, fixed)."""
    torch.manual_seed(0)
    net = getattr(torchvision.models, backbone)(weights=None)
    return {
        f"base.{OFFICIAL_BASE[k.split('.', 1)[0]]}.{k.split('.', 1)[1]}": v
        for k, v in net.state_dict().items()
        if not k.startswith("fc.")
    }


def _official_state(backbone: str, num_parts: int, num_classes: int, seed: int) -> dict:
    """An official ResNetPart state dict (names without ``module.``): the base, and random
    BatchNorm1d heads (bnneck, bnneck{i}) and bias-free classifiers (classifier, classifier{i})."""
    if backbone in ODD_LAYOUTS:  # the key layout alone: conversion stops at it
        last, blocks = ODD_LAYOUTS[backbone]
        state = {f"base.{4 + i}.{b}.{last}.weight": torch.zeros(1) for i, n in enumerate(blocks)
                 for b in range(n)}  # fmt: skip
        state["base.0.weight"] = torch.zeros(1)
        dim = 2048 if last == "conv3" else 512
    else:
        state, dim = dict(_official_base(backbone)), 512
    g = torch.Generator().manual_seed(seed)
    for head in ["bnneck"] + [f"bnneck{i}" for i in range(num_parts)]:
        state[f"{head}.weight"] = torch.rand(dim, generator=g) + 0.5
        state[f"{head}.bias"] = torch.randn(dim, generator=g) * 0.1
        state[f"{head}.running_mean"] = torch.randn(dim, generator=g) * 0.1
        state[f"{head}.running_var"] = torch.rand(dim, generator=g) + 0.5
        state[f"{head}.num_batches_tracked"] = torch.randint(1, 999, (), generator=g)
    for head in ["classifier"] + [f"classifier{i}" for i in range(num_parts)]:
        state[f"{head}.weight"] = torch.randn(num_classes, dim, generator=g)
    return state


def _our_name(official: str) -> str:
    """Where an official key goes in our pplr model (the module docstring's table, by hand)."""
    head, _, rest = official.partition(".")
    if head == "base":
        index, _, tail = rest.partition(".")
        ours = {v: k for k, v in OFFICIAL_BASE.items()}[index]
        return f"backbone.{ours}.{tail}"
    if head == "bnneck":
        return f"neck.{rest}"
    if head.startswith("bnneck"):
        return f"parts.necks.{head[6:]}.{rest}"
    if head.startswith("classifier") and head != "classifier":
        return f"parts.classifiers.{head[10:]}.{rest}"
    return official


@MODEL_SETTINGS
@given(
    backbone=mostly(("resnet18",) * 3 + ("resnet34",), tuple(ODD_LAYOUTS)),
    num_parts=st.integers(1, 4),
    num_classes=st.sampled_from((0, 1, 3)),
    prefix=st.sampled_from(("", "module.", "module.", "module.module.", "some")),
    wrap=st.sampled_from(("none", "none", "state_dict", "model", "file")),
    damage=mostly(
        (None, None, "no_counter"), ("missing", "extra", "misshaped", "not_tensor", "gap")
    ),
    which=st.floats(0, 1, exclude_max=True),
    seed=st.integers(0, 2**16),
)
@example(  # the last part's BNNeck gone, empty classifiers: converted with one part fewer
    backbone="resnet18", num_parts=2, num_classes=0, prefix="", wrap="none", damage="gap",
    which=0.5, seed=0,
)  # fmt: skip
@example(  # bnneck.weight of another width: the message named no key
    backbone="resnet18", num_parts=2, num_classes=3, prefix="", wrap="none",
    damage="misshaped", which=0.902, seed=0,
)  # fmt: skip
@covers("convert_official_pplr")
def test_convert_official_pplr(
    backbone, num_parts, num_classes, prefix, wrap, damage, which, seed
) -> None:
    """convert_official_pplr on generated official ResNetPart state dicts (ResNet-18/34, 1-4
    parts, 0-3 classes; with or without DataParallel's 'module.' on all or some keys; bare,
    wrapped under 'state_dict'/'model', or in a .pth file): the checkpoint folder loads as a
    pplr model (adaptive bins, last stride 1) whose parameters are the official tensors bit for
    bit under the documented renaming, with the inferred parts and classes; a missing
    num_batches_tracked counter is filled in. A drawn key missing, an unexpected key, a key of
    another shape, a value that is no tensor, a part head missing, or a layout no reid-backbones
    ResNet has raise CheckpointError naming the key (or its head), and nothing is written."""
    state = _official_state(backbone, num_parts, num_classes, seed)
    keys = sorted(state)
    key = keys[int(which * len(keys))]
    named = [key]  # what the error must name
    if damage == "no_counter":
        counters = sorted(k for k in keys if k.endswith("num_batches_tracked"))
        key = counters[int(which * len(counters))]
        del state[key]
    elif damage == "missing":
        del state[key]
    elif damage == "extra":
        key = st_extra = ("base.0.extra", "bnneck.scale", "head.weight", "classifier.bias")[
            int(which * 4)
        ]
        state[st_extra], named = torch.zeros(1), [key]
    elif damage == "misshaped":
        t = state[key]
        state[key] = torch.zeros(*t.shape[:-1], t.shape[-1] + 1) if t.dim() else torch.zeros(1)
        if key == "classifier.weight":  # it sets K: the part classifiers then disagree
            named = [f"classifier{i}.weight" for i in range(num_parts)] + [key]
        elif key.startswith("bnneck.") and key != "bnneck.num_batches_tracked":
            named = [key, "bnneck.weight"]  # the feature width is checked first, on its weight
    elif damage == "not_tensor":
        state[key] = 3
    elif damage == "gap":  # a part's head missing
        part = int(which * num_parts)
        state = {k: v for k, v in state.items() if not k.startswith(f"bnneck{part}.")}
        named = [
            f"bnneck{part}",
            f"bnneck[{', '.join(str(i) for i in range(num_parts) if i != part)}]",
        ]
        if part == num_parts - 1:  # the last part's neck gone: its classifier is then extra
            named.append(f"classifier{part}.weight")
    given_state = {
        (prefix if prefix != "some" or i % 2 else "module.") + k
        if prefix != "some" or i % 2 == 0
        else k: v
        for i, (k, v) in enumerate(state.items())
    }
    source = {"state_dict": given_state, "model": given_state}.get(wrap, given_state)
    with tempfile.TemporaryDirectory() as tmp:
        if wrap == "file":
            source = Path(tmp) / "official.pth"
            torch.save(given_state, source)
        out = Path(tmp) / "converted"
        harmless = (damage == "missing" and key.endswith("num_batches_tracked")) or (
            # Linear(D, 0) classifiers carry nothing: conversion leaves them out unread
            damage in ("missing", "misshaped")
            and num_classes == 0
            and re.fullmatch(r"classifier\d*\.weight", key) is not None
        )
        valid = (damage in (None, "no_counter") or harmless) and backbone not in ODD_LAYOUTS
        if not valid:
            with pytest.raises(CheckpointError) as info:
                convert_official_pplr(source, out, (32, 16))
            message = str(info.value)
            if backbone not in ODD_LAYOUTS:
                assert any(names_an_argument(message, [n]) for n in named), (named, message)
            assert not out.exists()
            return
        folder = convert_official_pplr(source, out, (32, 16))
        config = read_checkpoint_config(folder)
        model = load_checkpoint(folder)
    assert config["architecture"] == "pplr" and config["backbone"] == backbone
    assert config["options"] == {"num_parts": num_parts, "part_bins": "adaptive"}
    assert config["num_classes"] == num_classes and config["last_stride"] == 1
    assert config["extra"]["converted_from"]["module_prefix"] == (prefix != "")
    ours = model.state_dict()
    expected = {_our_name(k): v for k, v in state.items()}
    if num_classes == 0:  # Linear(D, 0): no classifiers
        expected = {k: v for k, v in expected.items() if "classifier" not in k}
    if damage in ("no_counter", "missing"):  # a counter left out reads as 0
        expected.pop(_our_name(key), None)
        if key.endswith("num_batches_tracked"):
            expected[_our_name(key)] = torch.tensor(0)
    assert set(ours) == set(expected)
    for name, t in expected.items():
        assert ours[name].dtype == t.dtype and torch.equal(ours[name], t), name


# --- attention blocks -----------------------------------------------------------------------------

ATTENTION_KWARGS = mostly(
    ({}, {}, {"reduction": 1}, {"reduction": 4}, {"reduction": 64}, {"kernel_size": 3},
     {"kernel_size": 1}, {"reduction": 2, "kernel_size": 5}),
    ({"reduction": 0}, {"reduction": 2.5}, {"kernel_size": 2}, {"kernel_size": -1},
     {"bogus": 1}),
)  # fmt: skip
#: block -> the keyword options its constructor takes
ATTENTION_OPTIONS = {
    "soft": {"reduction"},
    "se": {"reduction"},
    "eca": {"kernel_size"},
    "cbam": {"reduction", "kernel_size"},
    "none": set(),
}


def _feature_maps(
    shape: tuple[int, ...], kind: str, special: float | None, dtype: torch.dtype, seed: int
) -> torch.Tensor:
    """Values of a drawn kind (support.KINDS: ties, 1e±30, mixed scales...), sometimes one
    NaN/±inf."""
    x = _values(kind, shape, np.random.default_rng(seed))
    if special is not None and x.size:
        x.flat[seed % x.size] = special
    return torch.from_numpy(x).to(dtype)


def _attention64(name: str, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block's equations (its docstring) in float64 with its weights."""
    m = {k: v.detach().double() for k, v in block.state_dict().items()}
    x = x.double()

    def conv(t: torch.Tensor, prefix: str, **kw: int) -> torch.Tensor:
        return F.conv2d(t, m[f"{prefix}.weight"], m.get(f"{prefix}.bias"), **kw)

    gap = x.mean(dim=(2, 3), keepdim=True)
    if name == "none":
        return x
    if name == "se":
        return x * torch.sigmoid(conv(F.relu(conv(gap, "squeeze")), "expand"))
    if name == "eca":
        k = m["conv.weight"].shape[-1]
        w = F.conv1d(gap.flatten(1).unsqueeze(1), m["conv.weight"], padding=(k - 1) // 2)
        return x * torch.sigmoid(w).reshape(x.shape[0], x.shape[1], 1, 1)
    if name == "cbam":

        def mlp(t: torch.Tensor) -> torch.Tensor:
            return conv(F.relu(conv(t, "mlp.0")), "mlp.2")

        x = x * torch.sigmoid(mlp(gap) + mlp(x.amax(dim=(2, 3), keepdim=True)))
        pooled = torch.cat((x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)), dim=1)
        k = m["spatial.weight"].shape[-1]
        return x * torch.sigmoid(conv(pooled, "spatial", padding=k // 2))
    # soft: F_s (mean over channels -> 3x3 stride-2 conv -> bilinear up -> 1x1) times F_c (Eq. 1)
    s = conv(x.mean(dim=1, keepdim=True), "spatial_down", stride=2, padding=1)
    s = conv(F.interpolate(s, size=x.shape[-2:], mode="bilinear", align_corners=False),
             "spatial_out")  # fmt: skip
    c = F.relu(conv(F.relu(conv(gap, "channel_squeeze")), "channel_expand"))
    return x * torch.sigmoid(conv(s * c, "fuse"))  # Eq. 2


@given(
    name=mostly(tuple(ATTENTION_OPTIONS), ("nonlocal", None)),
    channels=mostly((1, 2, 3, 8, 17, 32), (0, -1, 2.0, True)),
    kwargs=ATTENTION_KWARGS,
    batch=sides(2),
    height=st.integers(1, 5),
    width=st.integers(1, 5),
    kind=st.sampled_from(KINDS),
    special=mostly((None,), SPECIALS),
    dtype=st.sampled_from((torch.float32, torch.float64)),
    seed=st.integers(0, 2**16),
)
@example(  # no channels: torch's RuntimeError
    name="soft", channels=0, kwargs={}, batch=1, height=2, width=2, kind="normal",
    special=None, dtype=torch.float32, seed=0,
)  # fmt: skip
@example(  # no channels: ECA's log2(0), a math domain error
    name="eca", channels=0, kwargs={}, batch=1, height=2, width=2, kind="normal",
    special=None, dtype=torch.float32, seed=0,
)  # fmt: skip
@example(  # a float reduction: a TypeError from torch naming nothing
    name="se", channels=8, kwargs={"reduction": 2.5}, batch=1, height=2, width=2,
    kind="normal", special=None, dtype=torch.float32, seed=0,
)  # fmt: skip
@example(  # an even CBAM kernel: the spatial map one larger, a RuntimeError in forward
    name="cbam", channels=4, kwargs={"kernel_size": 2}, batch=1, height=2, width=2,
    kind="normal", special=None, dtype=torch.float32, seed=0,
)  # fmt: skip
@example(  # an unknown name: the message named no argument
    name="nonlocal", channels=4, kwargs={}, batch=1, height=2, width=2, kind="normal",
    special=None, dtype=torch.float32, seed=0,
)  # fmt: skip
@covers("build_attention", "SoftAttention", "SEAttention", "ECA", "CBAM")
def test_attention(
    name, channels, kwargs, batch, height, width, kind, special, dtype, seed
) -> None:
    """build_attention: every block maps [N, C, H, W] to the same shape and dtype, finite for
    finite inputs of moderate size; it multiplies the input by weights in [0, 1] (never grows or
    flips an entry); it equals its equations in float64 with its own weights (SE, ECA, CBAM,
    DCLS soft attention Eq. 1-2; 'none' is the identity); the samples are independent
    (permuting the batch permutes the output). Unknown names and options, channels that are
    not a positive integer, a reduction that is not one, even or non-positive kernel sizes are
    refused naming the argument."""
    torch.manual_seed(seed)
    block = attempt(build_attention, name, channels, **kwargs)
    valid = (
        name in ATTENTION_OPTIONS
        and _positive_int(channels)
        and set(kwargs) <= ATTENTION_OPTIONS[name]
        and _positive_int(kwargs.get("reduction", 1))
        and _positive_int(kwargs.get("kernel_size", 1))
        and kwargs.get("kernel_size", 1) % 2 == 1
    )
    if not valid:
        must_refuse(block, "a bad name, channel count or option")
        return
    must_accept(block)
    block = block.to(dtype)
    x = _feature_maps((batch, channels, height, width), kind, special, dtype, seed)
    with torch.no_grad():
        out = attempt(block, x)
    must_accept(out)
    assert out.shape == x.shape and out.dtype == x.dtype
    if not (moderate(x) and finite(x)):
        return
    assert finite(out)
    x64, out64 = x.double(), out.double()
    slack = 4 * eps(dtype) * x64.abs()
    assert bool((out64.abs() <= x64.abs() + slack).all()) and bool((out64 * x64 >= 0).all())
    expected = _attention64(name, block, x)
    peak = float(x64.abs().max()) if x64.numel() else 0.0
    torch.testing.assert_close(out64, expected, rtol=1e-4, atol=1e-5 * (1 + peak))
    if batch > 1:
        perm = torch.randperm(batch, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            permuted = block(x[perm])
        torch.testing.assert_close(permuted, out[perm], rtol=1e-5, atol=1e-6)


@given(
    name=mostly(("mine", "other"), ("soft", 3)),
    channels=st.integers(1, 4),
)
@example(name="soft", channels=1)  # refused only when decorating, naming no argument
@example(name=3, channels=1)  # a non-string name registered
@covers("register_attention", "build_attention")
def test_register_attention(name, channels) -> None:
    """register_attention: a new name is built by build_attention (and accepted as dcls's
    attention= option); a name already registered, or not a string, is refused naming name."""
    unique = f"test_{name}" if isinstance(name, str) and name != "soft" else name

    class Halve(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x / 2

    try:
        out = attempt(register_attention, unique)
        if not isinstance(unique, str) or unique == "soft":
            must_refuse(out, "a name that is not a string, or registered already")
            assert ATTENTIONS["soft"] is SoftAttention
            return
        must_accept(out)
        assert out(Halve) is Halve
        x = torch.ones(1, channels, 2, 2)
        assert torch.equal(build_attention(unique, channels)(x), x / 2)
        assert check_input_size("dcls", (64, 32), attention=unique) is None
    finally:
        if isinstance(unique, str) and unique != "soft":
            ATTENTIONS.pop(unique, None)


# --- ghost BatchNorm and IBN ----------------------------------------------------------------------


@given(
    dims=st.sampled_from((1, 1, 2)),
    channels=st.integers(1, 3),
    groups=mostly((1, 2, 3, 4), (0, -1, 1.5, True)),
    per_group=mostly((2, 3), (1, 0)),
    extra=st.integers(0, 1),
    spatial=st.sampled_from(((), (1,), (3,), (1, 1), (2, 3))),
    running_stats=mostly(("mean", "first"), ("all",)),
    momentum=st.sampled_from((0.1, 0.5, None)),
    affine=st.booleans(),
    track=st.booleans(),
    how=st.sampled_from(("module", "convert", "set_bn_groups")),
    dtype=st.sampled_from((torch.float32, torch.float64)),
    seed=st.integers(0, 2**16),
)
@example(  # the refusal named bn_groups, not the module's groups
    dims=1, channels=2, groups=0, per_group=2, extra=0, spatial=(), running_stats="mean",
    momentum=0.1, affine=True, track=True, how="module", dtype=torch.float32, seed=0,
)  # fmt: skip
@example(  # the same, for a batch that does not split into the groups
    dims=1, channels=2, groups=2, per_group=2, extra=1, spatial=(), running_stats="mean",
    momentum=0.1, affine=True, track=True, how="module", dtype=torch.float32, seed=0,
)  # fmt: skip
@covers("GhostBatchNorm1d", "GhostBatchNorm2d", "convert_to_ghost_bn", "set_bn_groups")
def test_ghost_batch_norm(
    dims, channels, groups, per_group, extra, spatial, running_stats, momentum, affine, track,
    how, dtype, seed,
) -> None:  # fmt: skip
    """Ghost BatchNorm with G groups in training: each of the G consecutive chunks of the batch
    normalised with its own statistics (BatchNorm per chunk in float64); the running mean and
    variance move by the momentum (or the cumulative average) towards the mean of the groups'
    statistics ('mean') or the first group's ('first'); num_batches_tracked counts the call.
    Evaluation mode, G = 1 and an empty batch are exactly BatchNorm (its answer, or its
    refusal).
    convert_to_ghost_bn / set_bn_groups replace every BatchNorm1d/2d in place keeping the very
    same parameters and buffers (and set bn_groups). A group count that is not a positive
    integer, an unknown running_stats, and a batch that does not split into groups of 2
    (or of one sample with several positions) are refused naming the argument."""
    g = torch.Generator().manual_seed(seed)
    plain_cls = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    spatial = spatial[:1] if dims == 1 else (spatial + (2, 2))[:2] if len(spatial) < 2 else spatial
    plain = plain_cls(channels, momentum=momentum, affine=affine, track_running_stats=track)
    plain = plain.to(dtype)
    with torch.no_grad():
        for t in (plain.weight, plain.bias, plain.running_mean):
            if t is not None:
                t.copy_(torch.randn(t.shape, generator=g))
        if plain.running_var is not None:
            plain.running_var.copy_(torch.rand(channels, generator=g, dtype=dtype) + 0.5)
    reference = {k: v.clone() for k, v in plain.state_dict().items()}
    holder = nn.Sequential(plain)
    holder.bn_groups = 1
    if how == "module":
        ghost_cls = GhostBatchNorm1d if dims == 1 else GhostBatchNorm2d
        ghost = attempt(
            ghost_cls, channels, groups=groups, running_stats=running_stats, momentum=momentum,
            affine=affine, track_running_stats=track,
        )  # fmt: skip
        if not refused(ghost):
            ghost = ghost.to(dtype)
            ghost.load_state_dict(reference)
    else:
        fn = convert_to_ghost_bn if how == "convert" else set_bn_groups
        done = attempt(fn, holder, groups, running_stats)
        ghost = done if refused(done) else holder[0]
    if not (_positive_int(groups) and running_stats in ("mean", "first")):
        must_refuse(ghost, "a bad group count or running_stats")
        return
    must_accept(ghost)
    if how != "module":
        assert type(ghost).__name__ == f"GhostBatchNorm{dims}d" and ghost.groups == groups
        assert all(a is b for a, b in zip(ghost.parameters(), plain.parameters(), strict=True))
        assert all(a is b for a, b in zip(ghost.buffers(), plain.buffers(), strict=True))
        assert holder.bn_groups == (groups if how == "set_bn_groups" else 1)
    n = groups * per_group + (extra if groups > 1 else 0)
    x = torch.randn(n, channels, *spatial, generator=g, dtype=dtype)
    twin = plain_cls(channels, momentum=momentum, affine=affine, track_running_stats=track)
    twin = twin.to(dtype)
    twin.load_state_dict(reference)
    if groups == 1 or n == 0:  # BatchNorm itself: the same answer or the same refusal
        outcomes = []
        for bn in (ghost, twin):
            try:
                outcomes.append(bn(x))
            except ValueError as e:
                outcomes.append(type(e))
        assert not isinstance(outcomes[0], torch.Tensor) or torch.equal(*outcomes), outcomes
        assert all(torch.equal(a, b) for a, b in zip(ghost.buffers(), twin.buffers(), strict=True))
        return
    out = attempt(ghost, x)
    positions = math.prod(spatial)
    if n % groups or (per_group == 1 and positions <= 1):
        must_refuse(out, "a batch that does not split into groups")
        return
    must_accept(out)
    chunks = [c.double() for c in x.chunk(groups)]
    w = None if twin.weight is None else twin.weight.detach().double()
    b = None if twin.bias is None else twin.bias.detach().double()
    expected = torch.cat([F.batch_norm(c, None, None, w, b, True, 0.0, twin.eps) for c in chunks])
    torch.testing.assert_close(out.double(), expected, rtol=1e-3, atol=1e-4)
    if track:
        calls = int(reference["num_batches_tracked"]) + 1
        assert int(ghost.num_batches_tracked) == calls
        factor = 1.0 / calls if momentum is None else momentum
        dims_ = [0] + list(range(2, x.dim()))
        means = torch.stack([c.mean(dim=dims_) for c in chunks])
        variances = torch.stack([c.var(dim=dims_, unbiased=True) for c in chunks])
        pick = (lambda t: t.mean(0)) if running_stats == "mean" else (lambda t: t[0])
        for name, stats in (("running_mean", means), ("running_var", variances)):
            old = reference[name].double()
            want = (1 - factor) * old + factor * pick(stats)
            torch.testing.assert_close(getattr(ghost, name).double(), want, rtol=1e-4, atol=1e-5)
    ghost.eval()
    twin.load_state_dict(ghost.state_dict())
    twin.eval()
    assert torch.equal(ghost(x), twin(x))


class _Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(channels)


@given(
    planes=mostly((2, 3, 4, 8), (1, 0, 2.0)),
    ratio=mostly((0.5, 0.25, 0.75), (0.0, 1.0, math.nan, "0.5")),
    batch=st.integers(1, 3),
    spatial=st.sampled_from(((2, 2), (1, 3), (3, 1), (1, 1))),
    training=st.booleans(),
    stages=mostly((("layer1", "layer2"), ("layer1",), ()), (("layer9",), "layer1")),
    seed=st.integers(0, 2**16),
)
@example(  # a string ratio: '<' between float and str
    planes=4, ratio="0.5", batch=2, spatial=(2, 2), training=True, stages=(), seed=0
)
@example(  # no channel for InstanceNorm: "needs at least 2 channels, got 2", naming nothing
    planes=2, ratio=0.25, batch=2, spatial=(2, 2), training=True, stages=(), seed=0
)
@example(  # 1x1 maps: torch's InstanceNorm error, naming nothing
    planes=4, ratio=0.5, batch=2, spatial=(1, 1), training=True, stages=(), seed=0
)
@example(  # a stage the network lacks: AttributeError
    planes=4, ratio=0.5, batch=2, spatial=(2, 2), training=False, stages=("layer9",), seed=0
)
@covers("IBN", "convert_to_ibn_a")
def test_ibn(planes, ratio, batch, spatial, training, stages, seed) -> None:
    """IBN: the first int(planes·ratio) channels instance-normalised (affine), the others batch-
    normalised (batch statistics in training, running ones in evaluation), as InstanceNorm2d and
    BatchNorm2d in float64 with the same weights give; an empty batch passes through; too few
    channels or positions, and a ratio outside (0, 1), are refused naming the argument.
    convert_to_ibn_a turns the bn1 of every block of the given stages (only) into an IBN of its
    width; a stage the network lacks is refused naming stages."""
    g = torch.Generator().manual_seed(seed)
    ibn = attempt(IBN, planes, ratio)
    ok_ratio = isinstance(ratio, float) and 0 < ratio < 1
    if not (ok_ratio and _positive_int(planes) and 0 < int(planes * ratio) < planes):
        must_refuse(ibn, "too few channels or a ratio outside (0, 1)")
    else:
        must_accept(ibn)
        with torch.no_grad():
            for t in ibn.parameters():
                t.copy_(torch.randn(t.shape, generator=g))
            ibn.BN.running_var.copy_(torch.rand(planes - ibn.half, generator=g) + 0.5)
        ibn.train(training)
        x = torch.randn(batch, planes, *spatial, generator=g)
        first, second = x[:, : ibn.half].double(), x[:, ibn.half :].double()
        stats = {k: v.double().clone() for k, v in ibn.BN.state_dict().items()}
        out = attempt(ibn, x)
        if math.prod(spatial) < 2:
            must_refuse(out, "one position: no instance statistics")
        else:
            must_accept(out)
            p = {k: v.detach().double() for k, v in ibn.state_dict().items()}
            inst = F.instance_norm(first, weight=p["IN.weight"], bias=p["IN.bias"], eps=1e-5)
            bn = F.batch_norm(
                second, stats["running_mean"], stats["running_var"], p["BN.weight"],
                p["BN.bias"], training, 0.0, 1e-5,
            )  # fmt: skip
            torch.testing.assert_close(out.double(), torch.cat((inst, bn), 1), rtol=1e-4, atol=1e-5)
        empty = ibn.eval()(torch.zeros(0, planes, *spatial))
        assert empty.shape == (0, planes, *spatial)
    net = nn.Module()
    for stage in ("layer1", "layer2", "layer3"):
        setattr(net, stage, nn.Sequential(_Block(4), _Block(6)))
    done = attempt(convert_to_ibn_a, net, stages)
    if isinstance(stages, str) or not set(stages) <= {"layer1", "layer2", "layer3"}:
        must_refuse(done, "a stage the network lacks")
        return
    must_accept(done)
    for stage in ("layer1", "layer2", "layer3"):
        for block, width in zip(getattr(net, stage), (4, 6), strict=True):
            if stage in stages:
                assert (
                    isinstance(block.bn1, IBN)
                    and block.bn1.half + block.bn1.BN.num_features == width
                )
            else:
                assert type(block.bn1) is nn.BatchNorm2d


# --- backbones and pretrained weights -------------------------------------------------------------


class _Tiny(nn.Module):
    """A small module with a conv, a BatchNorm (counter included) and a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)


class _Payload:
    """A Python object in a pickle: torch.load(weights_only=True) refuses to build it."""


@given(
    prefix=st.sampled_from(("", "module.", "backbone.")),
    wrap=st.sampled_from(("none", "state_dict", "model")),
    form=st.sampled_from(("pth", "pth", "safetensors", "checkpoint_folder", "code", "missing")),
    fc=st.booleans(),
    damage=mostly((None, None, "no_counter"), ("missing", "extra", "misshaped")),
    which=st.floats(0, 1, exclude_max=True),
    seed=st.integers(0, 2**16),
)
@covers("load_pretrained", "load_state_dict_checked", "PretrainedWeightsError")
def test_load_pretrained(prefix, wrap, form, fc, damage, which, seed) -> None:
    """load_pretrained / load_state_dict_checked: a state dict (in a torch.save file, bare or
    under 'state_dict'/'model'; a .safetensors file; a checkpoint folder's model.safetensors),
    with DataParallel's 'module.' or a whole re-ID model's 'backbone.' prefix, and classifier
    'fc.*' entries, loads bit for bit (a missing num_batches_tracked counter keeps its value).
    A missing, unexpected or misshaped key is a PretrainedWeightsError naming it; a missing
    file, and a pickle holding Python objects (refused before anything runs), are
    PretrainedWeightsErrors naming the file; the module is left as it was."""
    g = torch.Generator().manual_seed(seed)
    module = _Tiny()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    state = {
        k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else torch.tensor(seed))
        for k, v in module.state_dict().items()
    }
    key = sorted(state)[int(which * len(state))]
    if damage == "no_counter":
        key = "bn.num_batches_tracked"
    if damage in ("no_counter", "missing"):
        del state[key]
    elif damage == "extra":
        key = "bn.extra"
        state[key] = torch.zeros(1)
    elif damage == "misshaped":
        state[key] = torch.zeros(*state[key].shape, 2)
    given_state = {prefix + k: v for k, v in state.items()}
    if fc:
        given_state["fc.weight"] = torch.zeros(7, 4)
    holder = {"state_dict": given_state, "model": given_state}.get(wrap, given_state)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pth"
        if form == "safetensors":
            path = path.with_suffix(".safetensors")
            save_safetensors(given_state, path)
        elif form == "checkpoint_folder":
            path = Path(tmp) / "ckpt"
            path.mkdir()
            save_safetensors(given_state, path / "model.safetensors")
        elif form == "code":
            torch.save({"state_dict": given_state, "hook": _Payload()}, path)
        elif form != "missing":
            torch.save(holder, path)
        harmless = damage in (None, "no_counter") or (
            damage == "missing" and key.endswith("num_batches_tracked")
        )
        if form in ("code", "missing") or not harmless:
            with pytest.raises(PretrainedWeightsError) as info:
                load_pretrained(module, path)
            message = str(info.value)
            if form in ("code", "missing"):
                assert str(path) in message
            else:
                assert names_an_argument(message, [key]), (key, message)
            after = module.state_dict()
            assert all(torch.equal(before[k], after[k]) for k in before)
            return
        load_pretrained(module, path)
    after = module.state_dict()
    for k, v in after.items():
        expected = state.get(k, before[k])
        assert v.dtype == expected.dtype and torch.equal(v, expected), k


@MODEL_SETTINGS
@given(
    name=mostly(("resnet18", "resnet18", "resnet18_ibn_a"), ("resnet7", None, "VGG16")),
    last_stride=mostly((1, 2), (3, True, 1.0)),
    pretrained=mostly((None, None, "file"), ("other_backbone", 3, "missing")),
    url_name=mostly(
        ("resnet18", "resnet34", "resnet50", "resnet101", "resnet50_ibn_a", "resnet101_ibn_a"),
        ("resnet152", None),
    ),  # fmt: skip
    seed=st.integers(0, 2**16),
)
@example(  # unknown names: the messages named no argument
    name="VGG16", last_stride=1, pretrained=None, url_name="resnet152", seed=0
)
@example(name="resnet18", last_stride=True, pretrained=None, url_name="resnet18", seed=0)
@covers("build_backbone", "ResNetBackbone", "imagenet_weights_url", "PretrainedWeightsError")
def test_build_backbone(name, last_stride, pretrained, url_name, seed) -> None:
    """build_backbone: a ResNet-18 (or IBN-a) whose map is [N, 512, ⌈H/2^s⌉, ⌈W/2^s⌉]
    (s = 4 with last_stride=1, 5 with 2), finite; with pretrained= a file of another such
    backbone's weights, the same weights bit for bit and the same map. A weights file of another
    architecture or a missing one is a PretrainedWeightsError naming the file or keys; an
    unknown name, a stride other than 1 or 2 and a pretrained= of another type are refused
    naming the argument. imagenet_weights_url: an https .pth URL for every backbone (IBN-Net's
    release for IBN-a), refused naming name for others."""
    url = attempt(imagenet_weights_url, url_name)
    if url_name in BACKBONES:
        must_accept(url)
        assert url.startswith("https://") and url.endswith(".pth")
        assert ("IBN-Net" in url) == url_name.endswith("_ibn_a")
    else:
        must_refuse(url, "an unknown backbone")
    valid = (
        name in ("resnet18", "resnet18_ibn_a")
        and last_stride in (1, 2)
        and (type(last_stride) is int)
    )
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "weights.pth"
        reference = None
        if pretrained in ("file", "other_backbone") and valid:
            other = "resnet34" if pretrained == "other_backbone" else name
            reference = build_backbone(other, last_stride=last_stride)
            _randomise(reference, seed)
            torch.save(reference.state_dict(), source)
        arg = str(source) if pretrained in ("file", "other_backbone", "missing") else pretrained
        if valid and pretrained in ("other_backbone", "missing"):
            with pytest.raises(PretrainedWeightsError) as info:
                build_backbone(name, last_stride=last_stride, pretrained=arg)
            assert str(source) in str(info.value)
            return
        backbone = attempt(build_backbone, name, last_stride=last_stride, pretrained=arg)
    if not valid or pretrained == 3:
        must_refuse(backbone, "a bad name, stride or pretrained=")
        return
    must_accept(backbone)
    x = torch.randn(2, 3, 33, 17, generator=torch.Generator().manual_seed(seed))
    backbone.eval()
    with torch.no_grad():
        fmap = backbone(x)
    assert fmap.shape == (2, 512, *feature_map_size((33, 17), last_stride)) and finite(fmap)
    if reference is not None:
        _same_state(backbone.state_dict(), reference.state_dict())
        reference.eval()
        with torch.no_grad():
            assert torch.equal(reference(x), fmap)
