"""Validation of a run's configuration: :class:`TrainConfig` (the six sections of
:mod:`reid_train.config.schema` together) and the rules of its :meth:`~TrainConfig.validate`:
the field types, the range of every numeric key (``_RANGES``), the rules that tie several keys
together, a recipe's own keys of the ``method`` section; and :func:`split_batch`, the
per-process batch.

``TrainConfig`` is defined here, beside its rules, because they read a whole ``TrainConfig`` and
it calls them: one module, so that the modules of ``reid_train.config`` import one another in
one direction only (coercion, schema, validation, files; ``tests/train/test_import_graph.py``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any

from reid_backbones import MODELS
from reid_eval.datasets import canonical_dataset_name, dataset_names

from .. import registry as _methods
from .coercion import Mismatch, coerce, describe, field_types, show
from .schema import (
    _SECTIONS,
    ClusterConfig,
    ConfigError,
    DataConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    RuntimeConfig,
)

__all__ = ["TrainConfig", "split_batch"]


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


# --------------------------------------------------------------------------------------------
# The rules
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
#: A recipe's own keys are checked by its Options dataclass (PPLR: ``PPLROptions``; DCLS:
#: ``reid_refine.DCLSOptions``).
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
    # the recipe's own keys: its Options dataclass (types, ranges), then its own rules
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
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS  # Accelerate's tracker names

    for name in r.log_with:
        need(
            name in LOGGER_TYPE_TO_CLASS,
            f"runtime.log_with: {name!r} is not a tracker of Accelerate; choose from "
            f"{', '.join(LOGGER_TYPE_TO_CLASS)}",
        )
    return p


def _method_options(recipe: Any, me: MethodConfig) -> list[str]:
    """Check the recipe's own keys of the ``method`` section (``me.options``) against its
    ``Options`` dataclass and complete them with its defaults (in place); the problems, each
    naming the key and the fix."""
    cls = recipe.Options
    if cls is None:
        if me.options:
            return [
                f"method.{k} is not a key of method {me.name!r}, which has no keys of its own; "
                "remove it (or choose the method it belongs to)"
                for k in sorted(me.options)
            ]
        return []
    types_ = field_types(cls)
    problems, values = [], {}
    for key, value in me.options.items():
        if key not in types_:
            close = difflib.get_close_matches(str(key), list(types_), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            owners = [n for n in _methods.names() if key in _methods.option_types(n)]
            of = f" (a key of {', '.join(owners)})" if owners else ""
            problems.append(
                f"method.{key}{of} is not a key of method {me.name!r}; {hint}its keys: "
                f"{', '.join(types_)}"
            )
            continue
        try:
            values[key] = coerce(value, types_[key])
        except Mismatch:
            problems.append(f"method.{key} must be {describe(types_[key])}, got {show(value)}")
            continue
        if isinstance(values[key], float) and not math.isfinite(values[key]):
            problems.append(f"method.{key} must hold finite numbers, got {values[key]}")
    if problems:
        return problems
    try:
        me.options = dataclasses.asdict(cls(**values))
    except (TypeError, ValueError) as e:  # the dataclass's own range checks name the field
        text = str(e)
        return [f"method.{text}" if text.split(" ", 1)[0] in types_ else f"method: {text}"]
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
