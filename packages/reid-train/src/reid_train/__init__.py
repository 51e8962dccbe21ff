"""Training engine for unsupervised person re-identification on HuggingFace Accelerate.

Baseline, PPLR, PPLR with the camera loss, DCLS and Cluster Contrast, driven by typed configs.
The trainer: :class:`Trainer` (one run: setup, epochs, hooks for evaluation, history and
checkpoints) and :func:`train` (run a config, return one metrics record per evaluation), from
:mod:`reid_train.trainer`, which is imported on first use, so that ``import reid_train`` does
not load Accelerate. Building blocks:

* :mod:`reid_train.config` — :class:`TrainConfig` (typed sections), :func:`load_config` with
  ``key=value`` overrides, :func:`save_config`;
* :mod:`reid_train.data` — torchvision v2 transforms, datasets that skip unreadable images,
  :func:`build_train_loader` / :func:`build_extract_loader`;
* :mod:`reid_train.sampler` — :class:`PKBatchSampler`, the distributed-aware P×K sampler;
* :mod:`reid_train.losses` — :func:`soft_triplet_loss` (PPLR Eq. 3), :func:`camera_proxies` and
  :func:`camera_proxy_loss` (PPLR Eq. 4);
* :mod:`reid_train.methods` — one module per training recipe (baseline, pplr + pplr_cam, dcls,
  cluster_contrast) and their registry;
* :mod:`reid_train.label_noise` — controlled label noise (``cluster.labels:
  noisy_ground_truth``).

Beside the epoch loop of :mod:`reid_train.trainer`: :mod:`reid_train.build` (dataset, model,
optimizer, schedule), :mod:`reid_train.pseudo_labels` (each epoch's labels),
:mod:`reid_train.hooks` (evaluation, history, checkpoints), :mod:`reid_train.distributed`
(sharded feature extraction and gathering), :mod:`reid_train.run_folder` (what a run writes
into its folder, and the folder's rules), :mod:`reid_train.reporting` (console, trackers,
plots). :mod:`reid_train.engine` is the trainer's former name, kept for old imports.
"""

from typing import TYPE_CHECKING, Any

from reid_train import methods  # noqa: F401  (registers the built-in recipes first)
from reid_train.config import (
    ARCHITECTURES,
    METHOD_ARCH,
    METHODS,
    ClusterConfig,
    ConfigError,
    ConfigWarning,
    DataConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    RuntimeConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_keys,
    config_to_dict,
    load_config,
    save_config,
)
from reid_train.data import (
    BadImagesError,
    BadImageWarning,
    ImageDataset,
    TrainImageDataset,
    build_extract_loader,
    build_test_transform,
    build_train_loader,
    build_train_transform,
)
from reid_train.losses import (
    CameraProxyLoss,
    SoftTripletLoss,
    camera_proxies,
    camera_proxy_loss,
    euclidean_distances,
    soft_triplet_loss,
)
from reid_train.sampler import PKBatchSampler, TooFewIdentitiesError, epoch_generator

if TYPE_CHECKING:
    from reid_train.trainer import Trainer, train

__version__ = "0.4.0"

__all__ = [
    "ARCHITECTURES",
    "METHODS",
    "METHOD_ARCH",
    "BadImageWarning",
    "BadImagesError",
    "CameraProxyLoss",
    "ClusterConfig",
    "ConfigError",
    "ConfigWarning",
    "DataConfig",
    "ImageDataset",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "PKBatchSampler",
    "RuntimeConfig",
    "SoftTripletLoss",
    "TooFewIdentitiesError",
    "TrainConfig",
    "TrainImageDataset",
    "Trainer",
    "__version__",
    "apply_overrides",
    "build_extract_loader",
    "build_test_transform",
    "build_train_loader",
    "build_train_transform",
    "camera_proxies",
    "camera_proxy_loss",
    "config_from_dict",
    "config_keys",
    "config_to_dict",
    "epoch_generator",
    "euclidean_distances",
    "load_config",
    "save_config",
    "soft_triplet_loss",
    "train",
]

_TRAINER_NAMES = ("Trainer", "train")


def __getattr__(name: str) -> Any:
    """``Trainer`` and ``train`` come from :mod:`reid_train.trainer`, imported on first use."""
    if name in _TRAINER_NAMES:
        from reid_train import trainer

        value = globals()[name] = getattr(trainer, name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_TRAINER_NAMES))
