"""One kNN: PPLR's cross agreement searches with reid_clustering.knn_search and reuses the
clustering's global ranked list exactly when the clustering ranked the same features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import reid_train.methods.pplr as pplr_module
import reid_train.pseudo_labels as labels_module
from reid_clustering import dbscan_clustering
from reid_train.config import load_config
from reid_train.methods.pplr import _reusable_ranking
from reid_train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "synthetic_tiny.yaml"


def _record(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Spy on the engine's clustering, kNN searches and cross agreement (real ones still run)."""
    calls: dict[str, list[Any]] = {"clustering": [], "knn": [], "agreement": []}
    real_cluster = labels_module.dbscan_clustering
    real_knn = pplr_module.knn_search
    real_agreement = pplr_module.cross_agreement

    def cluster(features: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        result = real_cluster(features, *args, **kwargs)
        calls["clustering"].append((features, kwargs, result))
        return result

    def knn(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        calls["knn"].append((x, kwargs["k"]))
        return real_knn(x, *args, **kwargs)

    def agreement(global_feats: torch.Tensor, parts: torch.Tensor, **kwargs: Any) -> Any:
        result = real_agreement(global_feats, parts, **kwargs)
        calls["agreement"].append((global_feats, parts, kwargs, result))
        return result

    monkeypatch.setattr(labels_module, "dbscan_clustering", cluster)
    monkeypatch.setattr(pplr_module, "knn_search", knn)
    monkeypatch.setattr(pplr_module, "cross_agreement", agreement)
    return calls


def _searched(global_feats: torch.Tensor, parts: torch.Tensor, k: int) -> torch.Tensor:
    """The cross agreement without any reuse: every list searched by knn_search."""
    from reid_clustering import knn_search
    from reid_refine import cross_agreement

    return cross_agreement(global_feats, parts, k=k, knn=lambda x, m: knn_search(x, k=m).indices)


@pytest.mark.parametrize(
    ("overrides", "reuse"),
    [
        (["cluster.camera_debias=false"], True),
        (["cluster.camera_debias=true"], False),  # clusters debiased features
        (["cluster.camera_debias=false", "cluster.k1=10"], False),  # k1 < agreement_k + 1 = 11
    ],
)
def test_global_ranked_list_is_reused_only_for_the_clustered_features(
    overrides: list[str],
    reuse: bool,
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _record(monkeypatch)
    cfg = load_config(TINY, [f"data.data_root={synthetic_root}", "optim.epochs=1", *overrides])
    trainer = Trainer(cfg, tmp_path)
    try:
        summary = trainer.run_epoch(0)
    finally:
        trainer.close()
    k = cfg.method.agreement_k
    ((clustered, cluster_kwargs, clustering),) = calls["clustering"]
    ((global_feats, parts, kwargs, scores),) = calls["agreement"]
    n, num_parts = parts.shape[:2]
    assert cluster_kwargs["backend"] == "torch" and clustering.ranked.shape == (n, cfg.cluster.k1)
    assert kwargs["k"] == k and kwargs["knn"] is pplr_module._knn
    part_searches = [(tuple(parts[:, p].shape), k + 1) for p in range(num_parts)]
    searches = [(tuple(x.shape), m) for x, m in calls["knn"]]
    if reuse:
        # The clustering's own list and the very features it ranked (its re-normalised copy of
        # the extracted ones, a few ulps away); only the parts are searched.
        assert kwargs["global_ranked"] is clustering.ranked
        assert global_feats is clustering.features
        assert torch.allclose(global_feats, clustered, rtol=0, atol=1e-5)
        assert searches == part_searches
    else:
        assert kwargs["global_ranked"] is None
        assert global_feats is not clustering.features
        assert searches == [(tuple(global_feats.shape), k + 1), *part_searches]
        if cfg.cluster.camera_debias:  # the clustering saw other features than the agreement
            assert not torch.allclose(clustering.features, global_feats, rtol=0, atol=1e-5)
    # Reusing changes nothing: the scores are those of searching every list again.
    assert torch.equal(scores, _searched(global_feats, parts, k))
    agreement = summary.figures["agreement"]
    assert agreement and all(0.0 <= a <= 1.0 for a in agreement)


def test_reusable_ranking_checks_each_condition() -> None:
    gen = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(40, 16, generator=gen), dim=1)
    clustering = dbscan_clustering(feats, 0.5, k1=12)
    ok = {"clustered_all_rows": True, "camera_debias": False, "k": 11}
    assert _reusable_ranking(clustering, feats, **ok) is clustering
    assert _reusable_ranking(None, feats, **ok) is None  # cluster.labels: ground_truth
    # Unreadable images were left out of the clustering: its rows are not the agreement's.
    assert _reusable_ranking(clustering, feats, **{**ok, "clustered_all_rows": False}) is None
    assert _reusable_ranking(clustering, feats, **{**ok, "camera_debias": True}) is None
    assert _reusable_ranking(clustering, feats, **{**ok, "k": 12}) is None  # needs k1 >= k + 1
    # Features that were not unit vectors: the clustering ranked their normalised copy.
    scaled = dbscan_clustering(3 * feats, 0.5, k1=12)
    assert _reusable_ranking(scaled, 3 * feats, **ok) is None
    assert _reusable_ranking(clustering, feats[:39], **ok) is None  # other rows
