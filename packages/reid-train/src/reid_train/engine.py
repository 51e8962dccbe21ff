"""The former home of the trainer, kept so that imports written against reid-train 0.4
(``from reid_train.engine import Trainer``) keep working: :mod:`reid_train.trainer` holds it now."""

from __future__ import annotations

from reid_clustering import camera_debiased

from .epoch import EpochRecord
from .trainer import Trainer, TrainingDivergedError, train

__all__ = ["EpochRecord", "Trainer", "TrainingDivergedError", "camera_debiased", "train"]
