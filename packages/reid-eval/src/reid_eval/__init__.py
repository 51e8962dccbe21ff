"""Evaluation for person re-identification: dataset layouts, metrics and the ``reid-eval`` command.

- :mod:`reid_eval.datasets`: ``load_dataset(name, root)`` for Market-1501, MSMT17, VeRi-776,
  your own folders, and the generated synthetic dataset (``make_synthetic_dataset``).
- :func:`evaluate_rank`: CMC, mAP and mINP from a distance matrix (the field's protocol).
- :func:`evaluate_features`: the same from features, chunked (MSMT17-size galleries, on GPU).
- :class:`ReIDEvaluator`: ``reset / process / evaluate`` for training loops.
- :func:`re_ranking` (classic, squares its inputs) and :func:`re_ranking_features` (features in,
  block by block): k-reciprocal re-ranking on reid-clustering's k-reciprocal encoding.
- :func:`extract_features`, :func:`pairwise_distance`: features and distances.
- :func:`evaluate_checkpoint`: a saved model on a dataset (the ``reid-eval`` command);
  :func:`check_checkpoint`: the quick check it starts with (path exists, files readable).
- :func:`resolve_device`: parse and check a device string (``"cuda:1"``) before any work,
  raising ``ValueError`` with the problem and the fix (no GPU, index out of range, typo).
"""

from .checkpoint_eval import CheckpointEvaluation, check_checkpoint, evaluate_checkpoint
from .datasets import (
    DatasetError,
    DatasetLayoutError,
    ImageRecord,
    ReIDDataset,
    load_dataset,
    make_synthetic_dataset,
)
from .devices import resolve_device
from .distance import iter_distance_chunks, pairwise_distance
from .evaluator import QueryGallerySplit, ReIDEvaluator, evaluate_features
from .features import ImageReadError, extract_features, pixel_features
from .metrics import RankResult, evaluate_rank, evaluate_records
from .rerank import iter_re_ranking_features, re_ranking, re_ranking_features

__version__ = "0.3.0"

__all__ = [
    "CheckpointEvaluation",
    "DatasetError",
    "DatasetLayoutError",
    "ImageReadError",
    "ImageRecord",
    "QueryGallerySplit",
    "RankResult",
    "ReIDDataset",
    "ReIDEvaluator",
    "__version__",
    "check_checkpoint",
    "evaluate_features",
    "evaluate_rank",
    "evaluate_records",
    "evaluate_checkpoint",
    "extract_features",
    "iter_distance_chunks",
    "iter_re_ranking_features",
    "load_dataset",
    "make_synthetic_dataset",
    "pairwise_distance",
    "pixel_features",
    "re_ranking",
    "re_ranking_features",
    "resolve_device",
]
