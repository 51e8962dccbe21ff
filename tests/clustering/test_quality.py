from __future__ import annotations

import numpy as np
import pytest
import torch

from reid_clustering import pseudo_label_quality


def test_pairwise_scores_by_hand() -> None:
    truth = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([5, 5, 7, 7, 7, 8])
    q = pseudo_label_quality(pred, truth)
    # Pairs clustered together: (0,1) (2,3) (2,4) (3,4) -> 4; of them sharing an identity:
    # (0,1) and (3,4) -> precision 2/4. True pairs: (0,1) (0,2) (1,2) (3,4) -> recall 2/4.
    assert q.pairwise_precision == pytest.approx(0.5)
    assert q.pairwise_recall == pytest.approx(0.5)
    assert q.pairwise_f1 == pytest.approx(0.5)
    assert (q.num_clusters, q.num_identities, q.num_outliers) == (3, 3, 0)


def test_perfect_and_relabelled_clusterings_score_one() -> None:
    truth = torch.tensor([3, 3, 1, 1, 2])
    q = pseudo_label_quality(torch.tensor([0, 0, 2, 2, 1]), truth)
    assert (q.nmi, q.ari, q.pairwise_precision, q.pairwise_recall) == (1.0, 1.0, 1.0, 1.0)


def test_outlier_modes() -> None:
    truth = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([0, 0, -1, 1, 1, -1])
    single = pseudo_label_quality(pred, truth)
    # Outliers are singletons: precision 2/2, recall 2/6.
    assert single.pairwise_precision == 1.0
    assert single.pairwise_recall == pytest.approx(2 / 6)
    assert single.num_outliers == 2 and single.num_clusters == 2
    excluded = pseudo_label_quality(pred, truth, outliers="exclude")
    assert (excluded.nmi, excluded.ari, excluded.pairwise_recall) == (1.0, 1.0, 1.0)
    everything_out = pseudo_label_quality(np.full(6, -1), truth, outliers="exclude")
    assert everything_out.nmi == 0.0 and everything_out.num_clusters == 0
    assert pseudo_label_quality(np.full(6, -1), truth).pairwise_recall == 0.0


def test_as_dict_and_errors() -> None:
    q = pseudo_label_quality(np.array([0, 1]), np.array([0, 1]))
    assert set(q.as_dict()) >= {"nmi", "ari", "pairwise_precision", "pairwise_recall"}
    with pytest.raises(ValueError, match="differ in length"):
        pseudo_label_quality(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="outliers must be"):
        pseudo_label_quality(np.array([0]), np.array([0]), outliers="drop")
    with pytest.raises(ValueError, match="1-D integer"):
        pseudo_label_quality(np.array([0.0]), np.array([0]))
