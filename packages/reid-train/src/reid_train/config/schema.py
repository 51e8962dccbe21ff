"""The schema of a run's configuration: six sections, one dataclass each, whose fields are the
config keys (type, default and what it does), and the names some keys choose from.

The whole run, :class:`~reid_train.config.TrainConfig` (these sections together), lives in
:mod:`reid_train.config.validation`, beside the rules its ``validate()`` applies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from reid_backbones import IMAGENET_MEAN, IMAGENET_STD, MODEL_OPTIONS, MODELS

from .. import registry as _methods

__all__ = [
    "ARCHITECTURES",
    "METHODS",
    "METHOD_ARCH",
    "ClusterConfig",
    "ConfigError",
    "ConfigWarning",
    "DataConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "RuntimeConfig",
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


class ConfigWarning(UserWarning):
    """A configuration was read with a change the user should know of (e.g. the keys of a
    recipe replaced by a ``method.name`` override, which the message names)."""


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
    """The training recipe: ``name``, the keys every recipe shares, and the recipe's own keys.

    The section is flat in YAML and on the command line (``method.use_aals=false``): besides
    the shared fields below, every key is one of the recipe's own, a field of the ``Options``
    dataclass registered with it (``reid_train.methods.get(name).Options``):

    * ``pplr``: ``agreement_k``, ``beta``, ``aals_epoch``, ``part_epsilon``, ``use_aals``,
      ``use_pglr``, ``pglr_uniform_weights`` (:class:`reid_train.methods.pplr.PPLROptions`);
    * ``pplr_cam``: those of ``pplr`` and ``lambda_cam``, ``cam_temperature``,
      ``num_hard_negatives``, ``cam_on_parts`` (``PPLRCamOptions``);
    * ``dcls``: ``w_l``, ``w_g``, ``metric``, ``local_smoothing``, ``global_smoothing``,
      ``guidance``, ``epsilon`` (``reid_refine.DCLSOptions`` itself);
    * ``cluster_contrast``: ``temperature``, ``momentum``, ``update``;
    * ``baseline``: none.

    They are held in :attr:`options` (typed, range-checked and completed with the recipe's
    defaults when the config is validated; a key of another recipe is refused there) and read
    and set as attributes, ``config.method.beta``, like the shared ones.
    """

    #: The recipe: a name of ``reid_train.methods.names()`` (built in: baseline, pplr,
    #: pplr_cam, dcls, cluster_contrast; one module each in ``reid_train/methods/``).
    name: str = "pplr"
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
    #: The recipe's own keys (written flat in the section, not under this name).
    options: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, key: str) -> Any:
        # Only called for names that are not fields: the recipe's own keys.
        if key.startswith("__") or "options" not in self.__dict__:
            raise AttributeError(key)
        if key in self.options:
            return self.options[key]
        own = _methods.option_types(self.name) if self.name in _methods.names() else {}
        if key in own:  # not validated yet: the recipe's default
            return dataclasses.asdict(_methods.get(self.name).Options())[key]
        raise AttributeError(
            f"method {self.name!r} has no key {key!r} (its own keys: {', '.join(own) or 'none'})"
        )

    def __setattr__(self, key: str, value: Any) -> None:
        if key in _METHOD_FIELDS:
            object.__setattr__(self, key, value)
        else:  # a recipe's own key (checked when the config is validated)
            self.options[key] = value


_METHOD_FIELDS = frozenset(f.name for f in dataclasses.fields(MethodConfig))


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
    #: Further experiment trackers, through Accelerate's tracker classes (main process): any of
    #: ``wandb``, ``mlflow``, ``comet_ml``, ``aim``, ``clearml``, ``dvclive``, ``swanlab``,
    #: ``trackio``, ``tensorboard`` (= ``tensorboard: true``). Each gets the resolved config
    #: once and the epoch and evaluation scalars of every epoch (the TensorBoard tags); its
    #: package must be installed (the run refuses to start otherwise, naming it). Trackers
    #: that write files write them to RUN_DIR/<tracker>; the others log to project
    #: ``reid-train`` with the run folder's name as the run name.
    log_with: list[str] = field(default_factory=list)
    #: PNG plots of the run (reid_train.plots) in RUN_DIR/plots at the end of training.
    plots: bool = True


#: The sections of a run, by their top-level key (the order of the saved YAML).
_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "cluster": ClusterConfig,
    "method": MethodConfig,
    "optim": OptimConfig,
    "runtime": RuntimeConfig,
}
