"""The loop-based Jaccard distance of benchmarks/plain_jaccard.py, loaded as the test oracle.

One plain implementation serves both the benchmark baseline and the tests' independent check.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "plain_jaccard.py"
_spec = importlib.util.spec_from_file_location("plain_jaccard", _PATH)
assert _spec is not None and _spec.loader is not None
plain = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plain)


def clustered_features(
    num_clusters: int, per_cluster: int, dim: int = 32, noise: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised float32 features around random centres, and their cluster ids."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_clusters, dim))
    labels = np.repeat(np.arange(num_clusters), per_cluster)
    x = centres[labels] + noise * rng.normal(size=(labels.size, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels
