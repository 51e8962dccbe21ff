"""Typed configuration of a training run: dataclasses, YAML files and ``key=value`` overrides.

A run is described by :class:`TrainConfig`, six sections of typed fields with the papers'
defaults (PPLR, Market-1501, without the camera loss, unless stated)::

    data     dataset, images, P×K batch, augmentation, loader workers
    model    architecture (baseline | pplr | dcls), backbone, pretrained weights, model options
    cluster  DBSCAN on the k-reciprocal Jaccard distance (eps, min_samples, k1, k2, sparse), or
             the ground-truth identities for supervised (source) pretraining (labels), or
             them with controlled noise (labels, label_noise, label_noise_seed)
    method   the loss recipe (baseline | pplr | pplr_cam | dcls) and every ablation switch
    optim    optimiser, learning-rate schedule, epochs × iterations, gradient clipping
    runtime  seed, determinism, mixed precision, evaluation/checkpoint cadence, output folder

:func:`load_config` reads a YAML file whose top-level keys are these sections (a missing key takes
its default) and applies command-line overrides ``section.field=value`` (dotted keys; values are
YAML scalars or flow lists, checked against the field's type). Unknown keys, in the file or in an
override, raise :class:`ConfigError` naming the key and the closest valid ones. :func:`save_config`
writes the resolved configuration; loading it again gives an equal object.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tempfile
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from reid_backbones import IMAGENET_MEAN, IMAGENET_STD, MODEL_OPTIONS, MODELS
from reid_eval.datasets import canonical_dataset_name, dataset_names
from reid_refine.dcls import GlobalMode as DCLSGlobalMode
from reid_refine.dcls import Guidance as DCLSGuidance
from reid_refine.dcls import LocalMode as DCLSLocalMode
from reid_refine.dcls import Metric as DCLSMetric

from . import registry as _methods
from ._typed import Mismatch, accepts_str, coerce, describe, field_types, show

__all__ = [
    "ARCHITECTURES",
    "METHODS",
    "METHOD_ARCH",
    "ClusterConfig",
    "ConfigError",
    "DataConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "RuntimeConfig",
    "TrainConfig",
    "apply_overrides",
    "split_batch",
    "config_from_dict",
    "config_keys",
    "config_to_dict",
    "load_config",
    "save_config",
]

#: The built-in training recipes (``method.name``; ``reid_train.methods.names()`` also lists
#: recipes registered later).
METHODS: tuple[str, ...] = tuple(_methods.names())
#: Model architectures (``model.arch``): ``reid_backbones.MODELS``, the names of ``build_model``.
ARCHITECTURES: tuple[str, ...] = tuple(MODELS)
#: The architecture each built-in method trains (``reid_train.methods.get(name).arch``).
METHOD_ARCH: dict[str, str] = {name: _methods.get(name).arch for name in METHODS}


class ConfigError(ValueError):
    """A configuration file, dictionary or override is invalid (the message says how to fix it)."""


# --------------------------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Dataset, input images, the P×K batch and the training augmentation.

    ``batch_size`` is the batch of **one process** (Accelerate's convention): P = batch_size /
    num_instances pseudo identities × K = num_instances images. With N processes the global
    batch is N × batch_size, unless ``global_batch_size`` is set: then each process takes
    ``global_batch_size / N`` images (and ``model.bn_groups`` counts groups of the global batch),
    so that a paper's recipe means the same batch on any number of GPUs (:func:`split_batch`).
    """

    #: Layout name for ``reid_eval.load_dataset``: market1501, msmt17, veri776, folder, synthetic.
    dataset: str = "market1501"
    #: Dataset folder (relative paths are relative to the working directory).
    data_root: str = "data/market1501"
    #: Extra keyword options of the layout (e.g. ``include_val: false`` for msmt17).
    dataset_options: dict[str, Any] = field(default_factory=dict)
    #: ``dataset: synthetic`` only: a missing ``data_root`` is generated with this seed (as
    #: ``reid-eval make-synthetic ROOT --seed S`` would). No other dataset is ever created.
    synthetic_seed: int = 0
    #: ``dataset: synthetic`` only: ``SyntheticConfig`` fields for that generation (e.g.
    #: ``num_train_ids: 800``); empty = the generator's defaults.
    synthetic_options: dict[str, Any] = field(default_factory=dict)
    height: int = 384
    width: int = 128
    #: Images per process and step (P × K).
    batch_size: int = 64
    #: Images per optimiser step over all processes; set, it replaces batch_size by
    #: global_batch_size / processes at run time (the paper configs set it). null = unused.
    global_batch_size: int | None = None
    #: K, images per pseudo identity in a batch.
    num_instances: int = 4
    #: Take the K − 1 companions of a batch identity from cameras other than its first image's
    #: camera when it has any (the RandomMultipleGallerySampler of SpCL/PPLR).
    cross_camera_instances: bool = True
    #: DataLoader worker processes (0 = load in the main process).
    workers: int = 4
    #: Batch size of feature extraction (clustering and evaluation).
    test_batch_size: int = 128
    #: Resize interpolation (the official PPLR / Cluster Contrast code: bicubic); recorded in
    #: the checkpoints, whose reid-eval extraction resizes the same way.
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    flip_prob: float = 0.5
    #: Zero padding (pixels) before the random crop back to height × width; 0 disables both.
    pad: int = 10
    erasing_prob: float = 0.5
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))

    @property
    def num_identities(self) -> int:
        """P, the pseudo identities of one batch."""
        return self.batch_size // self.num_instances


@dataclass
class ModelConfig:
    """The network: ``reid_backbones.build_model(arch, backbone=..., **options)``.

    ``num_parts`` is used by ``arch: pplr``; ``attention``, ``num_regions`` and ``overlap`` by
    ``arch: dcls`` (see :meth:`options`).
    """

    #: null = the architecture of ``method.name`` (filled in by validation).
    arch: str | None = None
    backbone: str = "resnet50"
    #: Backbone weights: ``imagenet`` (downloaded once), the path of a ``.pth`` file, or null.
    pretrained: str | None = "imagenet"
    last_stride: int = 1
    #: Ghost BatchNorm groups (4 reproduces the official 4-GPU DataParallel statistics of PPLR).
    bn_groups: int = 1
    #: PPLR: horizontal stripes P.
    num_parts: int = 3
    #: PPLR: "adaptive" = the bins of AdaptiveAvgPool2d((P, 1)) as in the official code
    #: (neighbouring stripes share a row when P does not divide the map height); "disjoint" =
    #: uniform stripes that tile the map.
    part_bins: Literal["adaptive", "disjoint"] = "adaptive"
    #: DCLS: attention block of the local branch (soft, cbam, eca, se, none).
    attention: str = "soft"
    #: DCLS: local regions N_l (0, 2 or 3 in the paper).
    num_regions: int = 3
    #: DCLS: overlapping regions (False = disjoint stripes).
    overlap: bool = True
    #: Classifier rows (an upper bound on the clusters of an epoch); null = training images
    #: // cluster.min_samples + 1. Each epoch's centroids fill the first K rows (official PPLR).
    max_clusters: int | None = None

    def options(self) -> dict[str, Any]:
        """The architecture's ``**options`` for ``build_model``: the fields of this section named
        like the options ``reid_backbones.MODEL_OPTIONS`` lists for it."""
        return {name: getattr(self, name) for name in MODEL_OPTIONS.get(self.arch or "", {})}


@dataclass
class ClusterConfig:
    """``reid_clustering.dbscan_pseudo_labels`` on the Jaccard distance (k-reciprocal encoding)."""

    eps: float = 0.5
    min_samples: int = 4
    k1: int = 30
    k2: int = 6
    #: Sparse radius-graph path: null (automatic: on the CPU above 2,048 images, on a GPU
    #: always), true or false (on a GPU honoured up to 2,048 images only); the same labels.
    sparse: bool | None = None
    #: Where the epoch's labels come from: ``dbscan`` (pseudo labels, the unsupervised setting),
    #: ``ground_truth`` (the training split's identities: supervised training, e.g. to
    #: pretrain on a labelled source dataset; never use it for unsupervised results) or
    #: ``noisy_ground_truth`` (those identities with ``label_noise`` of the images corrupted by
    #: false merges of look-alikes, false splits by camera and outliers, fixed for the whole run:
    #: ``reid_train.label_noise``; a controlled test of label refinement, not a training mode).
    labels: Literal["dbscan", "ground_truth", "noisy_ground_truth"] = "dbscan"
    #: ``noisy_ground_truth`` only: fraction of the training images whose label is corrupted,
    #: in [0, 1) (a third each merged, split, outliers); 0 = the ground truth.
    label_noise: float = 0.0
    #: ``noisy_ground_truth`` only: seed of the corruption (the same seed, data and rate give
    #: the same noisy labels, whatever ``runtime.seed``).
    label_noise_seed: int = 0
    #: Subtract each camera's mean feature (then L2-normalise) before clustering, so clusters
    #: stop following the camera (background, colour cast). Not part of PPLR or DCLS (their
    #: configs keep it off); a common camera-bias remedy in unsupervised re-ID.
    camera_debias: bool = False


@dataclass
class MethodConfig:
    """The loss recipe and every ablation switch of PPLR and DCLS.

    Losses per method (each composed by its module in ``reid_train/methods/``; the engine adds
    the soft triplet):

    * ``baseline`` — label-smoothed CE (``global_epsilon``; 0 = plain CE, 0.1 = "+constant LS")
      on the global logits + soft triplet.
    * ``pplr`` — PGLR on the global logits (``use_pglr``; otherwise CE with ``global_epsilon``)
      + part loss averaged over parts: AALS from epoch ``aals_epoch`` (``use_aals``), CE with
      ``part_epsilon`` before it or without AALS + soft triplet.
    * ``pplr_cam`` — ``pplr`` + ``lambda_cam`` × inter-camera proxy loss (global, plus the parts'
      mean when ``cam_on_parts``).
    * ``dcls`` — ``reid_refine.dcls_loss`` with ``w_l``, ``w_g``, ``metric``, ``local_smoothing``,
      ``global_smoothing``, ``guidance``, ``epsilon`` + soft triplet on the global feature.
    """

    #: The recipe: a name of ``reid_train.methods.names()`` (built in: baseline, pplr,
    #: pplr_cam, dcls; one module each in ``reid_train/methods/``).
    name: str = "pplr"
    # --- every method ---
    #: Soft-target weight of the positive in the soft triplet (0 = PPLR Eq. 3; see losses).
    triplet_margin: float = 0.0
    #: Weight of the triplet term (0 removes it).
    triplet_weight: float = 1.0
    #: Features of the triplet loss: ``bn`` = after the BNNeck, as the official
    #: PPLR code does; ``pooled`` = before it (docs/design.md, "PPLR", "Soft triplet"). The
    #: camera loss always takes the post-BNNeck features, those its proxies are built from.
    triplet_features: Literal["bn", "pooled"] = "bn"
    #: Constant label smoothing ε of the global classifier where no refinement applies
    #: (baseline; pplr with use_pglr false). 0 = plain cross-entropy.
    global_epsilon: float = 0.0
    # --- PPLR ---
    #: k of the top-k ranked lists of the cross agreement (Eq. 6).
    agreement_k: int = 20
    #: β of PGLR (Eq. 9): weight of the one-hot label, in (0, 1].
    beta: float = 0.5
    #: First epoch (0-based) that trains the parts with AALS; before it, CE with part_epsilon.
    aals_epoch: int = 5
    #: Constant label smoothing ε of the part classifiers before aals_epoch / without AALS.
    part_epsilon: float = 0.1
    use_aals: bool = True
    use_pglr: bool = True
    #: PGLR ablation "w/o cross agreement": equal part weights 1/P in the ensemble.
    pglr_uniform_weights: bool = False
    # --- PPLR camera-aware proxies (pplr_cam) ---
    lambda_cam: float = 0.5
    cam_temperature: float = 0.07
    num_hard_negatives: int = 50
    #: Also apply the camera loss to each part feature (the official code does; averaged).
    cam_on_parts: bool = True
    # --- DCLS (names as in reid_refine.dcls_loss) ---
    w_l: float = 0.7
    w_g: float = 0.5
    metric: DCLSMetric = "euclidean"
    #: dcls (Eq. 6+7, LS''_l) | initial (Eq. 6, LS'_l) | constant (CLS_l) | none (one-hot).
    local_smoothing: DCLSLocalMode = "dcls"
    #: dcls (Eq. 8, LS_g) | constant (CLS_g) | none (one-hot).
    global_smoothing: DCLSGlobalMode = "dcls"
    #: cross (Eq. 7) | non_cross (Table 4 ablation).
    guidance: DCLSGuidance = "cross"
    #: ε of DCLS's constant smoothing modes.
    epsilon: float = 0.1
    # --- a method's own keys ---
    #: The keys of the method's ``Options`` dataclass (reid_train.methods: e.g. Cluster
    #: Contrast's ``temperature``), set in YAML as a mapping or on the command line as
    #: ``method.options.temperature=0.05``; checked against it and completed with its
    #: defaults when the config is validated (the run's config.yaml holds every key).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """Optimiser and schedule: ``lr × gamma^(number of milestones passed)``, per epoch."""

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    #: SGD momentum (unused by Adam/AdamW).
    momentum: float = 0.9
    #: Epochs (0-based count of finished epochs) at which the lr is multiplied by gamma.
    #: PPLR's "×0.1 every 20 epochs" over 50 epochs is [20, 40]; DCLS's is [40, 70].
    milestones: list[int] = field(default_factory=lambda: [20, 40])
    gamma: float = 0.1
    #: Linear warm-up from warmup_factor × lr over the first warmup_epochs epochs (0 = none).
    warmup_epochs: int = 0
    warmup_factor: float = 0.1
    epochs: int = 50
    #: Optimiser steps per epoch.
    iters: int = 400
    #: Max gradient norm, or null for no clipping.
    grad_clip: float | None = None


@dataclass
class RuntimeConfig:
    """Reproducibility, precision and bookkeeping."""

    seed: int = 1
    #: torch.use_deterministic_algorithms + cuDNN deterministic (slower).
    deterministic: bool = False
    #: null = what ``accelerate launch --mixed_precision`` / ``accelerate config`` set (default
    #: "no"); an explicit value here wins over the launcher.
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None
    channels_last: bool = False
    #: Evaluate every N epochs (and after the last); 0 = after the last epoch only.
    eval_every: int = 5
    #: Also evaluate the initial model (logged as epoch -1): the "before" of a run.
    eval_before_training: bool = False
    #: Also report the k-reciprocal re-ranked metrics when evaluating.
    rerank: bool = False
    output_dir: str = "runs/pplr_market1501"
    #: Save the resumable state every N epochs (0 = only at the end); best/last always.
    save_every: int = 1
    #: Log the running losses every N iterations.
    log_every: int = 50
    #: Unreadable training images skipped (with a warning) per loading process before an error.
    max_bad_images: int = 10
    #: TensorBoard event files in RUN_DIR/tensorboard: null = when the tensorboard package is
    #: installed, true = required (error if missing), false = never.
    tensorboard: bool | None = None
    #: PNG plots of the run (reid_train.plots) in RUN_DIR/plots at the end of training.
    plots: bool = True


@dataclass
class TrainConfig:
    """A whole training run. Build one with :func:`load_config` or :func:`config_from_dict`."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> TrainConfig:
        """Check types, ranges and cross-field rules; raise :class:`ConfigError` listing every
        problem. A null ``model.arch`` is set to the architecture of ``method.name``."""
        problems = _type_problems(self)
        if not problems and self.model.arch is None and self.method.name in _methods.names():
            self.model.arch = _methods.get(self.method.name).arch
        problems = problems or _validate(self)
        if problems:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
        return self

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``reid_backbones.build_model`` (add ``num_classes`` yourself)."""
        self.validate()
        m = self.model
        return {
            "name": m.arch,
            "backbone": m.backbone,
            "pretrained": m.pretrained,
            "last_stride": m.last_stride,
            "bn_groups": m.bn_groups,
            "input_size": (self.data.height, self.data.width),
            "mean": tuple(self.data.mean),
            "std": tuple(self.data.std),
            **m.options(),
        }


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "cluster": ClusterConfig,
    "method": MethodConfig,
    "optim": OptimConfig,
    "runtime": RuntimeConfig,
}


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Range:
    """The allowed interval of a number: ``low``/``high`` (None = unbounded), ends closed unless
    ``*_open``; a null value passes (keys whose type allows null)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    why: str = ""  # appended to the message, e.g. "(a Jaccard distance)"

    def holds(self, v: float) -> bool:
        return (
            (self.low is None or (v > self.low if self.low_open else v >= self.low))
            and (self.high is None or (v < self.high if self.high_open else v <= self.high))
        )  # fmt: skip

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return (
            f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
            f"{')' if self.high_open else ']'}"
        )


_UNIT = _Range(0, 1)
_POSITIVE = _Range(0, low_open=True)
_AT_LEAST_0 = _Range(0)
_AT_LEAST_1 = _Range(1)

#: The range of every numeric key that has one, checked first; the rules that tie several keys
#: together (batch composition, the method's architecture, ...) follow in :func:`_validate`.
#: A method's own keys are checked by its recipe (DCLS: ``reid_refine.DCLSOptions``).
_RANGES: dict[str, _Range] = {
    "data.height": _AT_LEAST_1,
    "data.width": _AT_LEAST_1,
    "data.synthetic_seed": _AT_LEAST_0,
    "data.num_instances": _AT_LEAST_1,
    "data.workers": _AT_LEAST_0,
    "data.test_batch_size": _AT_LEAST_1,
    "data.global_batch_size": _AT_LEAST_1,
    "data.pad": _AT_LEAST_0,
    "data.flip_prob": _UNIT,
    "data.erasing_prob": _UNIT,
    "model.bn_groups": _AT_LEAST_1,
    "model.num_parts": _AT_LEAST_1,
    "model.num_regions": _AT_LEAST_0,
    "cluster.eps": _Range(0, 1, low_open=True, high_open=True, why=" (a Jaccard distance)"),
    "cluster.min_samples": _AT_LEAST_1,
    "cluster.k1": _AT_LEAST_1,
    "cluster.k2": _AT_LEAST_1,
    "cluster.label_noise": _Range(
        0, 1, high_open=True, why=" (the fraction of training images whose label is corrupted)"
    ),
    "cluster.label_noise_seed": _AT_LEAST_0,
    "method.triplet_margin": _UNIT,
    "method.triplet_weight": _AT_LEAST_0,
    "method.global_epsilon": _UNIT,
    "method.part_epsilon": _UNIT,
    "method.beta": _Range(0, 1, low_open=True),
    "method.agreement_k": _AT_LEAST_1,
    "method.aals_epoch": _AT_LEAST_0,
    "method.lambda_cam": _AT_LEAST_0,
    "method.cam_temperature": _POSITIVE,
    "method.num_hard_negatives": _AT_LEAST_1,
    "optim.lr": _POSITIVE,
    "optim.weight_decay": _AT_LEAST_0,
    "optim.momentum": _Range(0, 1, high_open=True),
    "optim.gamma": _Range(0, 1, low_open=True),
    "optim.epochs": _AT_LEAST_1,
    "optim.iters": _AT_LEAST_1,
    "optim.warmup_epochs": _AT_LEAST_0,
    "optim.warmup_factor": _Range(0, 1, low_open=True),
    "optim.grad_clip": _POSITIVE,
    "runtime.seed": _AT_LEAST_0,
    "runtime.eval_every": _AT_LEAST_0,
    "runtime.save_every": _AT_LEAST_0,
    "runtime.log_every": _AT_LEAST_1,
    "runtime.max_bad_images": _AT_LEAST_0,
}


def _range_problems(cfg: TrainConfig) -> list[str]:
    problems = []
    for key, allowed in _RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is None:
            continue
        if not math.isfinite(value):
            problems.append(f"{key} must be a finite number {allowed}{allowed.why}, got {value}")
        elif not allowed.holds(value):
            problems.append(f"{key} must be {allowed}{allowed.why}, got {value}")
    return problems


def _type_problems(cfg: TrainConfig) -> list[str]:
    problems = []
    for name, cls in _SECTIONS.items():
        section = getattr(cfg, name)
        if not isinstance(section, cls):
            problems.append(f"{name} must be a {cls.__name__}, got {type(section).__name__}")
            continue
        for key, tp in field_types(cls).items():
            value = getattr(section, key)
            try:
                coerce(value, tp)
            except Mismatch:
                problems.append(f"{name}.{key} must be {describe(tp)}, got {show(value)}")
    return problems


def _validate(cfg: TrainConfig) -> list[str]:
    p: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            p.append(message)

    d, m, c, me, o, r = cfg.data, cfg.model, cfg.cluster, cfg.method, cfg.optim, cfg.runtime
    for name in _SECTIONS:  # every number is finite (inf / nan never mean "unlimited" here)
        for key, value in vars(getattr(cfg, name)).items():
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                need(False, f"{name}.{key} must hold finite numbers, got {value}")
    p.extend(_range_problems(cfg))
    # data
    need(
        canonical_dataset_name(d.dataset) is not None,
        f"data.dataset {d.dataset!r} is unknown; choose one of {', '.join(dataset_names())}",
    )
    if d.synthetic_options:
        from reid_eval.datasets import SyntheticConfig

        try:
            SyntheticConfig(**d.synthetic_options)
        except (TypeError, ValueError) as e:
            need(False, f"data.synthetic_options: {e}")
    if d.num_instances >= 1:
        need(
            d.batch_size % d.num_instances == 0,
            f"data.batch_size {d.batch_size} must be a multiple of data.num_instances "
            f"{d.num_instances} (P identities x K images)",
        )
        need(
            d.batch_size // d.num_instances >= 2,
            f"data.batch_size / data.num_instances = {d.batch_size // d.num_instances} pseudo "
            "identities per batch; the triplet loss needs at least 2 (raise data.batch_size)",
        )
    if d.global_batch_size is not None and d.num_instances >= 1:
        need(
            d.global_batch_size % d.num_instances == 0,
            f"data.global_batch_size {d.global_batch_size} must be a multiple of "
            f"data.num_instances {d.num_instances}",
        )
    need(
        len(d.mean) == 3 and len(d.std) == 3,
        f"data.mean and data.std need 3 values (RGB), got {d.mean} and {d.std}",
    )
    need(all(s > 0 for s in d.std), f"data.std must be positive, got {d.std}")
    # model
    need(
        m.arch is None or m.arch in MODELS,
        f"model.arch {m.arch!r} is unknown; choose one of {', '.join(MODELS)} or null",
    )
    need(m.last_stride in (1, 2), f"model.last_stride must be 1 or 2, got {m.last_stride}")
    if m.bn_groups >= 1:
        need(
            d.batch_size % m.bn_groups == 0 and d.batch_size // m.bn_groups >= 2,
            f"data.batch_size {d.batch_size} must split into model.bn_groups {m.bn_groups} "
            "groups of at least 2 images",
        )
    from reid_backbones import ATTENTIONS, check_input_size  # the registry: custom blocks too

    need(
        m.attention in ATTENTIONS,
        f"model.attention {m.attention!r} is unknown; choose one of {', '.join(ATTENTIONS)}",
    )
    if not p and m.arch is not None:  # the parts / regions fit the feature map
        try:
            check_input_size(m.arch, (d.height, d.width), m.last_stride, **m.options())
        except ValueError as e:
            need(False, f"data.height/width: {e} (model.num_parts / model.num_regions)")
    # cluster
    need(
        c.label_noise == 0 or c.labels == "noisy_ground_truth",
        f"cluster.label_noise={c.label_noise} corrupts only cluster.labels=noisy_ground_truth, "
        f"got cluster.labels={c.labels!r}; set cluster.labels=noisy_ground_truth (or drop "
        "cluster.label_noise)",
    )
    # method
    recipe = _methods.get(me.name) if me.name in _methods.names() else None
    if recipe is None:
        close = difflib.get_close_matches(me.name, _methods.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        need(False, f"method.name {me.name!r} is unknown{hint}; choose one of "
             f"{' | '.join(repr(n) for n in _methods.names())} (reid_train.methods)")  # fmt: skip
    else:
        need(
            m.arch == recipe.arch,
            f"method.name {me.name!r} trains model.arch {recipe.arch!r}, got model.arch {m.arch!r}",
        )
    # w_l, w_g, metric, the smoothing modes and epsilon: DCLS's recipe (reid_refine.DCLSOptions)
    if recipe is not None:
        own = _method_options(recipe, me)
        p.extend(own)
        if not own:
            p.extend(recipe.validate(cfg))  # the recipe's own rules (reid_train.methods)
    # optim
    need(
        all(x >= 1 for x in o.milestones)
        and all(a < b for a, b in zip(o.milestones, o.milestones[1:], strict=False)),
        f"optim.milestones must be increasing positive epochs, got {o.milestones}",
    )
    # runtime
    need(bool(r.output_dir), "runtime.output_dir must not be empty")
    return p


def _method_options(recipe: Any, me: MethodConfig) -> list[str]:
    """Check ``method.options`` against the recipe's ``Options`` dataclass and complete it with
    the defaults (in place); the problems, each naming the key."""
    cls = recipe.Options
    if cls is None:
        if me.options:
            return [
                f"method.options {sorted(me.options)}: method {me.name!r} has no options of "
                "its own; remove them (or choose the method they belong to)"
            ]
        return []
    types_ = field_types(cls)
    problems, values = [], {}
    for key, value in me.options.items():
        if key not in types_:
            close = difflib.get_close_matches(str(key), list(types_), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(
                f"method.options.{key} is not an option of {me.name!r}; {hint}its options: "
                f"{', '.join(types_)}"
            )
            continue
        try:
            values[key] = coerce(value, types_[key])
        except Mismatch:
            problems.append(
                f"method.options.{key} must be {describe(types_[key])}, got {show(value)}"
            )
    if problems:
        return problems
    try:
        me.options = dataclasses.asdict(cls(**values))
    except (TypeError, ValueError) as e:  # the dataclass's own range checks
        return [f"method.options: {e}"]
    return []


def split_batch(cfg: TrainConfig, processes: int) -> str:
    """Set the per-process batch of a run on ``processes`` processes (in place) and describe it.

    With ``data.global_batch_size`` G: ``data.batch_size`` = G / processes and
    ``model.bn_groups`` = bn_groups / processes (the ghost BatchNorm groups were given for the
    global batch: each group keeps its size); without it, nothing changes and the global batch
    is processes × batch_size. Returns the line a run prints at start.

    Raises:
        ConfigError: G does not split into ``processes`` P×K batches of at least 2 identities,
            or the BatchNorm groups do not split over the processes.
    """
    d, m = cfg.data, cfg.model
    if d.global_batch_size is not None:
        g, k = d.global_batch_size, d.num_instances
        per = g // processes
        if g % processes or per % k or per // k < 2:
            raise ConfigError(
                f"data.global_batch_size {g} does not split into {processes} processes of P x K "
                f"images with K = data.num_instances {k} and P >= 2 ({g} / {processes} = "
                f"{g / processes:g}); choose a global batch that is a multiple of "
                f"{processes * k * 2} or another number of processes"
            )
        if m.bn_groups % processes and processes % m.bn_groups:
            raise ConfigError(
                f"model.bn_groups {m.bn_groups} (BatchNorm groups of the global batch) do not "
                f"split over {processes} processes; use a bn_groups that divides or is divided "
                "by the number of processes"
            )
        d.batch_size, m.bn_groups = per, max(1, m.bn_groups // processes)
    total = processes * d.batch_size
    return (
        f"global batch {total} = {processes} process(es) x {d.batch_size} images "
        f"({d.num_identities} identities x {d.num_instances} images per process, "
        f"{processes * d.num_identities} identities per step); BatchNorm over groups of "
        f"{d.batch_size // m.bn_groups} images"
        + (
            ""
            if d.global_batch_size is not None or processes == 1
            else f". data.batch_size is per process: set data.global_batch_size={d.batch_size} to "
            "keep one process's batch on several"
        )  # fmt: skip
    )


# --------------------------------------------------------------------------------------------
# dict <-> dataclasses
# --------------------------------------------------------------------------------------------


def config_keys() -> list[str]:
    """Every valid dotted key, e.g. ``optim.lr`` (free-form mappings appear once)."""
    keys = []
    for section, cls in _SECTIONS.items():
        keys.extend(f"{section}.{f.name}" for f in dataclasses.fields(cls))
    return keys


def _unknown_key(key: str, source: str) -> ConfigError:
    pool = config_keys() if "." in key else list(_SECTIONS) + config_keys()
    close = difflib.get_close_matches(key, pool, n=3, cutoff=0.6)
    if not close:
        # Match the last component alone ("lrr" or "optim.lrr" -> optim.lr).
        leaf = key.rsplit(".", 1)[-1]
        by_leaf: dict[str, list[str]] = {}
        for k in pool:
            by_leaf.setdefault(k.rsplit(".", 1)[-1], []).append(k)
        for match in difflib.get_close_matches(leaf, list(by_leaf), n=3, cutoff=0.6):
            close.extend(by_leaf[match])
    if close:
        hint = f"; did you mean {' or '.join(repr(c) for c in close[:3])}?"
    else:
        section = key.split(".", 1)[0]
        if section in _SECTIONS:
            valid = [f.name for f in dataclasses.fields(_SECTIONS[section])]
            hint = f"; valid keys of '{section}': {', '.join(valid)}"
        else:
            hint = f"; valid sections: {', '.join(_SECTIONS)}"
    return ConfigError(f"unknown config key '{key}' in {source}{hint}")


def _check_keys(data: Any, source: str) -> dict[str, Any]:
    """``data`` as a dict of section dicts, every key known; else a ConfigError."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source} must hold a mapping of sections ({', '.join(_SECTIONS)}), "
            f"got {type(data).__name__}"
        )
    out: dict[str, Any] = {}
    for name, values in data.items():
        if name not in _SECTIONS:
            raise _unknown_key(str(name), source)
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"section '{name}' in {source} must be a mapping of keys, "
                f"got {type(values).__name__}"
            )
        types_ = field_types(_SECTIONS[name])
        for key in values:
            if key not in types_:
                raise _unknown_key(f"{name}.{key}", source)
        out[name] = dict(values)
    return out


def config_from_dict(data: Mapping[str, Any] | None, source: str = "<dict>") -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from nested mappings (missing keys: defaults).

    Raises:
        ConfigError: unknown keys (with suggestions), wrong types, invalid values.
    """
    sections: dict[str, Any] = {}
    for name, values in _check_keys(data, source).items():
        cls = _SECTIONS[name]
        types_ = field_types(cls)
        kwargs = {}
        for key, value in values.items():
            try:
                kwargs[key] = coerce(value, types_[key])
            except Mismatch:
                raise ConfigError(
                    f"{name}.{key} in {source} must be {describe(types_[key])}, got {show(value)}"
                ) from None
        sections[name] = cls(**kwargs)
    return TrainConfig(**sections).validate()


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Nested plain dict (YAML-ready: lists, not tuples) of a configuration."""
    out: dict[str, Any] = {}
    for name in _SECTIONS:
        section = getattr(config, name)
        out[name] = {f.name: _plain(getattr(section, f.name)) for f in dataclasses.fields(section)}
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------
# Overrides, files
# --------------------------------------------------------------------------------------------


def _parse_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(
            f"override {item!r} must look like key=value with a dotted key, e.g. optim.lr=1e-4"
        )
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key; use e.g. optim.lr=1e-4")
    return key, raw.strip()


def apply_overrides(
    data: dict[str, Any], overrides: Iterable[str], source: str = "the command line"
) -> dict[str, Any]:
    """Apply ``section.field=value`` overrides to a nested dict (in place; returned).

    Values are parsed as YAML (``true``/``false``, ``null``, numbers, ``[20, 40]``); a string
    field keeps the raw text when YAML would read something else (``runtime.output_dir=2024``).
    Keys of a mapping field go one level deeper: ``data.dataset_options.include_val=false``.

    Raises:
        ConfigError: a malformed item or an unknown key (with the closest valid keys).
    """
    for item in overrides:
        key, raw = _parse_override(item)
        parts = key.split(".")
        section = parts[0]
        if section not in _SECTIONS or len(parts) < 2:
            raise _unknown_key(key, source)
        types_ = field_types(_SECTIONS[section])
        name = parts[1]
        if name not in types_:
            raise _unknown_key(key, source)
        tp = types_[name]
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: cannot parse the value ({e})") from None
        sect = data.setdefault(section, {})
        if sect is None:
            sect = data[section] = {}
        if typing.get_origin(tp) is dict:
            mapping = sect.get(name)
            if not isinstance(mapping, dict):
                mapping = sect[name] = {}
            if len(parts) == 2:
                if not isinstance(value, Mapping):
                    raise ConfigError(
                        f"{key} is a mapping: set one entry ({key}.NAME=VALUE) or give "
                        f"{{name: value}}, got {raw!r}"
                    )
                sect[name] = dict(value)
            else:
                mapping[".".join(parts[2:])] = value
            continue
        if len(parts) > 2:
            raise _unknown_key(key, source)
        if accepts_str(tp) and value is not None and not isinstance(value, str):
            value = raw  # a string field: "no", "2024", "1.0" stay text
        try:
            coerce(value, tp)
        except Mismatch:
            raise ConfigError(
                f"override {item!r}: {key} must be {describe(tp)}, got {show(value)}"
            ) from None
        sect[name] = value
    return data


def load_config(path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> TrainConfig:
    """Read a YAML configuration file and apply ``key=value`` overrides.

    Args:
        path: a YAML file whose top-level keys are sections (data, model, cluster, method,
            optim, runtime); missing keys take the defaults of the dataclasses. A top-level
            ``base: other.yaml`` (relative to the file; a chain of bases is allowed) is read
            first and the file's keys override it (sections merge key by key, option
            mappings such as ``data.synthetic_options`` too; lists are replaced): a dataset
            variant of a recipe is a few lines. The saved ``config.yaml`` of a run is always
            the resolved configuration, with no ``base``.
        overrides: items like ``optim.lr=1e-4``, ``method.use_aals=false``,
            ``model.pretrained=null``, ``optim.milestones=[20,40]``.

    Returns:
        A validated :class:`TrainConfig`.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: unparsable YAML, unknown keys (file or override; the message names the key
            and the closest valid ones), wrong types or invalid values.
    """
    path = Path(path)
    if path.is_dir():
        examples = sorted(p.name for p in path.glob("*.yaml"))[:5]
        hint = f" (it holds {', '.join(examples)})" if examples else ""
        raise FileNotFoundError(
            f"--config '{path}' is a folder; give a YAML file in it{hint}, e.g. "
            f"--config {path / (examples[0] if examples else 'pplr_market1501.yaml')}"
        )
    data = _read_with_bases(path, ())
    source = f"'{path}'"
    overrides = list(overrides)
    if overrides:
        apply_overrides(data, overrides)
        source += " with overrides"
    return config_from_dict(data, source)


#: The top-level key naming the config a file extends.
BASE_KEY = "base"


def _read_with_bases(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The sections of the YAML file ``path``, merged over those of its ``base`` (recursively);
    every file's keys are checked and named as that file's."""
    if not path.is_file():
        if chain:
            raise ConfigError(f"'{chain[-1]}' has base: '{path}', which does not exist")
        raise FileNotFoundError(f"config file '{path}' does not exist")
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ConfigError(f"config bases form a cycle: {cycle}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse the YAML of '{path}': {e}") from None
    base = None
    if isinstance(data, Mapping) and BASE_KEY in data:
        data = dict(data)
        base = data.pop(BASE_KEY)
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(
                f"'{path}': {BASE_KEY} must be the path of another YAML config (relative to "
                f"this file), got {base!r}"
            )
    own = _check_keys(data, f"'{path}'")  # the file's own mistakes are named as the file's
    if base is None:
        return own
    return _merged(_read_with_bases(path.parent / base, (*chain, path.resolve())), own)


def _merged(base: dict[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``: mappings merge key by key (recursively), anything else (values,
    lists, null) replaces."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(dict(out[key]), value)
        else:
            out[key] = value
    return out


class _Dumper(yaml.SafeDumper):
    """Block-style sections, flow-style lists (``milestones: [20, 40]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


_Dumper.add_representer(list, _represent_list)

_HEADER = "# Resolved reid-train configuration: reid-train --config {name} reproduces the run.\n"


def save_config(config: TrainConfig, path: str | os.PathLike[str]) -> Path:
    """Write the resolved configuration as YAML, atomically (temporary file + rename).

    ``config`` is validated first (which also fills a null ``model.arch``).

    Returns:
        The path written. :func:`load_config` on it gives a configuration equal to ``config``.
    """
    config.validate()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _HEADER.format(name=path.name) + yaml.dump(
        config_to_dict(config), Dumper=_Dumper, sort_keys=False, default_flow_style=False
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
