"""The GPU check's sizes, a step's context and its result."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

DEFAULT_BUDGET = 270.0
GRACE = 20.0  # a step started just before the budget ends may run this much past it
STATUSES = ("PASS", "FAIL", "SKIP")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Problem sizes of the steps (GPU defaults; :data:`CPU_SIZES` for ``--cpu``)."""

    cluster_sizes: tuple[int, ...] = (12936, 32621)
    cluster_dim: int = 2048
    #: the CPU reference of a size is skipped when its predicted time exceeds this
    cpu_reference_limit_s: float = 60.0
    eval_query: int = 11659
    eval_gallery: int = 82161
    eval_ids: int = 3060
    eval_cameras: int = 15
    eval_dim: int = 2048
    #: queries evaluated on both devices and compared (0: no comparison)
    eval_check_queries: int = 1024
    train_backbone: str = "resnet50"
    train_size: tuple[int, int] = (256, 128)
    train_batch: int = 64
    train_classes: int = 1000
    train_warmup: int = 3
    train_iters: int = 10
    run_epochs: int = 2


GPU_SIZES = Sizes()
CPU_SIZES = Sizes(
    cluster_sizes=(2000,),
    eval_query=1000,
    eval_gallery=5000,
    eval_ids=250,
    eval_check_queries=0,
    train_backbone="resnet18",
    train_size=(64, 32),
    train_batch=16,
    train_warmup=1,
    train_iters=3,
)

# Wall-clock cap of each step (seconds; the budget may cut it shorter). Expected on an H200:
# 15-30 s each, the tiny training run 30-60 s.
STEP_CAPS = {
    "cuda-tests": 90.0,
    "pseudo-labels": 120.0,
    "evaluation": 120.0,
    "train-throughput": 90.0,
    "accelerate-run": 150.0,
}


@dataclasses.dataclass
class Context:
    device: str  # "cuda" or "cpu"
    sizes: Sizes
    deadline: float  # time.time() by which the step must be done
    workdir: Path

    @property
    def cpu(self) -> bool:
        return self.device == "cpu"

    def remaining(self) -> float:
        return self.deadline - time.time()


@dataclasses.dataclass
class StepResult:
    name: str
    status: str = "FAIL"
    seconds: float = 0.0
    summary: str = ""
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepResult:
        return cls(**data)
