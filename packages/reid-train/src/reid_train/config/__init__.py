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

The package, one module per concern, each importing only those above it:

    coercion    a YAML or command-line value checked and coerced against a field's type
    schema      the six section dataclasses, ConfigError, ConfigWarning, METHODS /
                ARCHITECTURES / METHOD_ARCH
    validation  TrainConfig and the rules of TrainConfig.validate() (ranges, cross-field rules,
                a recipe's own keys); split_batch
    files       dicts <-> TrainConfig, overrides, YAML files with ``base:``, load and save
    lookup      find_config: a config given by name (``--config NAME``)
"""

# BASE_KEY, config_dirs and _RANGES (read by the tests) stay importable from here, outside
# __all__, as from the single module this package replaced.
from .files import (
    BASE_KEY,  # noqa: F401
    apply_overrides,
    config_from_dict,
    config_keys,
    config_to_dict,
    load_config,
    save_config,
)
from .lookup import available_configs, config_dirs, find_config  # noqa: F401
from .schema import (
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
)
from .validation import _RANGES, TrainConfig, split_batch  # noqa: F401

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
    "TrainConfig",
    "apply_overrides",
    "split_batch",
    "config_from_dict",
    "config_keys",
    "config_to_dict",
    "available_configs",
    "find_config",
    "load_config",
    "save_config",
]
