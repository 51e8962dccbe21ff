"""Evaluation for person re-identification: dataset layouts, metrics and the ``reid-eval`` command.

- :mod:`reid_eval.datasets`: ``load_dataset(name, root)`` for Market-1501, MSMT17, VeRi-776,
  your own folders, and the generated synthetic dataset (``make_synthetic_dataset``).
- :func:`evaluate_rank`: CMC, mAP and mINP from a distance matrix (the field's protocol).
- :func:`evaluate_features`: the same from features, chunked (MSMT17-size galleries, on GPU).
- :class:`ReIDEvaluator`: ``reset / process / evaluate`` for training loops.
- :func:`extract_features`, :func:`pairwise_distance`: features and distances.
"""

from .datasets import (
    DatasetError,
    DatasetLayoutError,
    ImageRecord,
    ReIDDataset,
    load_dataset,
    make_synthetic_dataset,
)
from .distance import iter_distance_chunks, pairwise_distance
from .evaluator import QueryGallerySplit, ReIDEvaluator, evaluate_features
from .features import ImageReadError, extract_features, pixel_features
from .metrics import RankResult, evaluate_rank, evaluate_records

__version__ = "0.1.0"

__all__ = [
    "DatasetError",
    "DatasetLayoutError",
    "ImageReadError",
    "ImageRecord",
    "QueryGallerySplit",
    "RankResult",
    "ReIDDataset",
    "ReIDEvaluator",
    "__version__",
    "evaluate_features",
    "evaluate_rank",
    "evaluate_records",
    "extract_features",
    "iter_distance_chunks",
    "load_dataset",
    "make_synthetic_dataset",
    "pairwise_distance",
    "pixel_features",
]
