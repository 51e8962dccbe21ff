"""Evaluation for person re-identification: dataset layouts, metrics and the ``reid-eval`` command.

- :mod:`reid_eval.datasets`: ``load_dataset(name, root)`` for Market-1501, MSMT17, VeRi-776,
  your own folders, and the generated synthetic dataset (``make_synthetic_dataset``).
- :func:`evaluate_rank`: CMC, mAP and mINP from a distance matrix (the field's protocol).
- :func:`evaluate_features`: the same from features, chunked (MSMT17-size galleries, on GPU).
- :class:`ReIDEvaluator`: ``reset / process / evaluate`` for training loops.
- :func:`re_ranking` (classic, squares its inputs) and :func:`re_ranking_features` (features in,
  block by block): k-reciprocal re-ranking on reid-clustering's k-reciprocal encoding.
- :class:`FeatureExtractor`: a checkpoint's features of a folder, a glob, paths, PIL images or
  image tensors, prepared as the checkpoint says (size, mean/std, interpolation); the
  ``reid-eval extract`` command writes them to a ``.npz`` file (:func:`save_features`).
- :func:`extract_features`, :func:`pairwise_distance`: features and distances.
- :func:`evaluate_checkpoint`: a saved model on a dataset (the ``reid-eval`` command), ranked
  chunk by chunk; :func:`check_checkpoint`: the quick check it starts with.
- :func:`resolve_device`: parse and check a device string (``"auto"``, ``"cuda:1"``) before any
  work, raising ``ValueError`` with the problem and the fix (no GPU, index out of range, typo).
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
from .distance import distance_rows, iter_distance_chunks, pairwise_distance
from .evaluator import QueryGallerySplit, ReIDEvaluator, evaluate_features
from .extractor import (
    FeatureExtractor,
    FeatureFileError,
    find_images,
    parse_image_name,
    save_features,
)
from .features import ImageReadError, Preprocessing, extract_features, pixel_features
from .metrics import RankResult, evaluate_rank, evaluate_records
from .rerank import iter_re_ranking_features, re_ranking, re_ranking_features

__version__ = "0.4.0"

__all__ = [
    "CheckpointEvaluation",
    "DatasetError",
    "DatasetLayoutError",
    "FeatureExtractor",
    "FeatureFileError",
    "ImageReadError",
    "ImageRecord",
    "Preprocessing",
    "QueryGallerySplit",
    "RankResult",
    "ReIDDataset",
    "ReIDEvaluator",
    "__version__",
    "check_checkpoint",
    "distance_rows",
    "evaluate_features",
    "evaluate_rank",
    "evaluate_records",
    "evaluate_checkpoint",
    "extract_features",
    "find_images",
    "iter_distance_chunks",
    "iter_re_ranking_features",
    "load_dataset",
    "make_synthetic_dataset",
    "pairwise_distance",
    "parse_image_name",
    "pixel_features",
    "re_ranking",
    "re_ranking_features",
    "resolve_device",
    "save_features",
]
