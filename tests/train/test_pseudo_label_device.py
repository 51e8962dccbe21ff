"""Pseudo-labelling on the training device: the engine keeps the gathered features where they
were extracted (the GPU of a GPU run); only the sparse radius graph goes to the CPU, for DBSCAN.

The CPU tests check that no ``[N, D]`` / ``[N, P, D]`` feature matrix is converted to the CPU or
to numpy on the way (on the CPU a move would be a no-op, so the conversions themselves are
recorded) and that the labels and agreement are those of the public functions. The CUDA test
(skipped without a GPU; ``benchmarks/gpu_check.py`` runs it) checks the devices on a GPU.
"""

from __future__ import annotations

import contextlib
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import reid_train.methods.base as base_module
import reid_train.methods.dcls as dcls_module
import reid_train.methods.pplr as pplr_module
import reid_train.pseudo_labels as labels_module
from reid_clustering import (
    SPARSE_THRESHOLD,
    camera_debiased,
    dbscan_clustering,
    dbscan_pseudo_labels,
    knn_search,
)
from reid_refine import cross_agreement, dcls_smoothing_factors
from reid_train.config import load_config
from reid_train.methods.pplr import _reusable_ranking
from reid_train.pseudo_labels import PseudoLabeler, sparse_path
from reid_train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "synthetic_tiny.yaml"


@contextlib.contextmanager
def _conversions() -> Iterator[list[tuple[str, tuple[int, ...]]]]:
    """Record ``Tensor.cpu()``, ``Tensor.numpy()`` and ``Tensor.to(<cpu>)`` calls (name, shape)."""
    seen: list[tuple[str, tuple[int, ...]]] = []
    real = {name: getattr(torch.Tensor, name) for name in ("cpu", "numpy", "to")}
    own = {name: torch.Tensor.__dict__.get(name) for name in real}  # None: inherited

    def to_cpu_device(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        for value in (*args, kwargs.get("device")):
            if isinstance(value, torch.Tensor):
                value = value.device
            if isinstance(value, str | torch.device) and torch.device(value).type == "cpu":
                return True
        return False

    def cpu(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append(("cpu", tuple(self.shape)))
        return real["cpu"](self, *args, **kwargs)

    def numpy(self: torch.Tensor, *args: Any, **kwargs: Any) -> np.ndarray:
        seen.append(("numpy", tuple(self.shape)))
        return real["numpy"](self, *args, **kwargs)

    def to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if to_cpu_device(args, kwargs):
            seen.append(("to", tuple(self.shape)))
        return real["to"](self, *args, **kwargs)

    for name, spy in (("cpu", cpu), ("numpy", numpy), ("to", to)):
        setattr(torch.Tensor, name, spy)
    try:
        yield seen
    finally:
        for name, value in own.items():
            if value is None:  # inherited from torch._C.TensorBase: remove the override
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, value)


def _spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Record what the engine's pseudo-labelling steps are given (the real ones still run)."""
    calls: dict[str, list[Any]] = {}

    def wrap(owner: Any, name: str, keep: Any) -> None:
        real = getattr(owner, name)
        calls[name] = []

        def spy(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            calls[name].append(keep(args, kwargs, result))
            return result

        monkeypatch.setattr(owner, name, spy)

    wrap(labels_module, "dbscan_clustering", lambda a, kw, r: (a[0], kw, r))
    wrap(pplr_module, "cross_agreement", lambda a, kw, r: (a[0], a[1], kw, r))
    wrap(pplr_module, "knn_search", lambda a, kw, r: a[0])
    wrap(labels_module, "camera_debiased", lambda a, kw, r: (a[0], a[1], r))
    wrap(dcls_module, "dcls_smoothing_factors", lambda a, kw, r: (a[0], a[1]))
    wrap(pplr_module, "camera_proxies", lambda a, kw, r: (a[0], a[1], a[2]))
    wrap(Trainer, "_extract", lambda a, kw, r: r)
    wrap(Trainer, "_pseudo_labels", lambda a, kw, r: (a[1].labels, dict(a[1].tensors)))
    return calls


def _config(synthetic_root: Path, *overrides: str):  # noqa: ANN202
    return load_config(
        TINY,
        [f"data.data_root={synthetic_root}", "optim.epochs=1", "runtime.plots=false",
         "runtime.tensorboard=false", *overrides],
    )  # fmt: skip


def _devices(calls: dict[str, list[Any]]) -> set[torch.device]:
    """Every device of a tensor the pseudo-labelling steps were given or returned."""
    found: set[torch.device] = set()

    def visit(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            found.add(x.device)
        elif isinstance(x, tuple | list):  # a DBSCANResult too (its labels are numpy)
            for item in x:
                visit(item)

    for name, records in calls.items():
        if name != "_pseudo_labels":  # its labels are on the CPU by design (the sampler reads them)
            visit(records)
    return found


@pytest.mark.parametrize(
    "overrides",
    [
        ["method.name=pplr"],  # the clustering's ranked list is reused by the agreement
        ["method.name=pplr_cam", "cluster.camera_debias=true"],  # debiasing, camera proxies
        ["method.name=dcls"],  # the β statistics
    ],
)
def test_cpu_run_never_converts_the_features(
    overrides: list[str], synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Extraction, clustering, agreement, β and the classifiers' initialisation of one epoch:
    no feature matrix goes through ``.cpu()`` / ``.numpy()`` / ``.to("cpu")``; the labels and
    the agreement are those of the public functions on the extracted features."""
    cfg = _config(synthetic_root, *overrides)
    trainer = Trainer(cfg, tmp_path)
    calls = _spy(monkeypatch)
    try:
        with _conversions() as seen:
            summary = trainer.run_epoch(0)
    finally:
        trainer.close()
    assert summary.trained, summary.note
    ((feats, parts, valid),) = calls["_extract"]
    device = trainer.acc.device
    assert feats.device == valid.device == device and (parts is None or parts.device == device)
    matrices = {tuple(feats.shape)} | ({tuple(parts.shape)} if parts is not None else set())
    matrices |= {(feats.shape[0], *parts.shape[2:])} if parts is not None else set()
    assert feats.shape[0] != feats.shape[1]  # the shapes below tell features from N × N
    converted = [(how, shape) for how, shape in seen if shape in matrices]
    assert not converted, f"feature matrices converted to the CPU / numpy: {converted}"
    assert _devices(calls) == {device}
    # The labels and the agreement are what the public functions give on those features.
    ((labels, tensors),) = calls["_pseudo_labels"]
    agreement = tensors.get("agreement")
    assert labels.device.type == "cpu" and labels.dtype == torch.int64
    c = cfg.cluster
    clustered = feats[valid]
    if c.camera_debias:
        camids = torch.as_tensor(np.array([r.camid for r in trainer.train_records]))
        clustered = camera_debiased(clustered, camids[valid])
    expected = dbscan_pseudo_labels(clustered, c.eps, c.min_samples, c.k1, c.k2, sparse=c.sparse)
    assert np.array_equal(labels[valid].numpy(), expected)
    assert bool((labels[~valid] == -1).all())
    if cfg.method.name in ("pplr", "pplr_cam"):
        assert agreement is not None and agreement.device == device
        knn = lambda x, m: knn_search(x, k=m).indices  # noqa: E731
        k = cfg.method.agreement_k
        assert torch.equal(agreement, cross_agreement(feats, parts, k=k, knn=knn))
    if cfg.method.name == "dcls":
        beta = dcls_smoothing_factors(feats, parts, cfg.method.metric)[0]
        assert summary.figures["beta"] == beta[valid].mean(dim=0).tolist()


def test_sparse_path_on_accelerators() -> None:
    """The CPU keeps ``cluster.sparse`` as given; an accelerator takes the radius graph unless
    ``false`` is asked for at most SPARSE_THRESHOLD images (where N × N stays small)."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    big = SPARSE_THRESHOLD + 1
    for n in (100, big):
        for setting in (None, True, False):
            assert sparse_path(setting, n, cpu) is setting
        assert sparse_path(None, n, cuda) is True
        assert sparse_path(True, n, cuda) is True
    assert sparse_path(False, 100, cuda) is False
    assert sparse_path(False, SPARSE_THRESHOLD, cuda) is False
    assert sparse_path(False, big, cuda) is True
    # The override of an explicit `false` is said once per run.
    said: list[str] = []
    stub = types.SimpleNamespace(
        cfg=types.SimpleNamespace(cluster=types.SimpleNamespace(sparse=False)),
        _dense_refused=False,
        _warn=said.append,
    )
    assert PseudoLabeler._sparse(stub, big, cuda) is True  # type: ignore[arg-type]
    assert PseudoLabeler._sparse(stub, big, cuda) is True  # type: ignore[arg-type]
    assert PseudoLabeler._sparse(stub, 100, cuda) is False  # type: ignore[arg-type]
    assert len(said) == 1 and "cluster.sparse=false" in said[0]


def test_reusable_ranking_compares_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The block-wise comparison decides as the whole one did, wherever the difference is."""
    monkeypatch.setattr(base_module, "ROW_BLOCK", 7)
    gen = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(40, 16, generator=gen), dim=1)
    clustering = dbscan_clustering(feats, 0.5, k1=12)
    ok = {"clustered_all_rows": True, "camera_debias": False, "k": 11}
    assert _reusable_ranking(clustering, feats, **ok) is clustering
    for row in (0, 6, 7, 39):  # first and last rows of blocks
        moved = feats.clone()
        moved[row, 3] += 1e-3
        assert _reusable_ranking(clustering, moved, **ok) is None


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_mean_beta_in_blocks_is_the_mean_of_one_pass(metric: str) -> None:
    """The block-wise β of an accelerator (here on the CPU) is the one-pass statistic."""
    gen = torch.Generator().manual_seed(1)
    feats = torch.nn.functional.normalize(torch.randn(50, 16, generator=gen), dim=1)
    parts = torch.nn.functional.normalize(torch.randn(50, 3, 16, generator=gen), dim=2)
    valid = torch.rand(50, generator=gen) > 0.2
    whole = dcls_smoothing_factors(feats, parts, metric)[0][valid].mean(dim=0)
    assert dcls_module._mean_beta(feats, parts, valid, metric) == whole.tolist()  # CPU: one
    for rows in (1, 7, 49, 50, 64):
        blocks = dcls_module._mean_beta(feats, parts, valid, metric, rows=rows)
        torch.testing.assert_close(torch.tensor(blocks), whole, rtol=1e-6, atol=1e-7)


#: The GPU runs of the CUDA test: (overrides, what they cover). One test function, not a
#: parametrised one: benchmarks/gpu_check.py counts one result per CUDA-only test.
CUDA_RUNS = [
    # the clustering's ranked list reused; `false` overridden above the (lowered) threshold
    (["method.name=pplr", "cluster.sparse=false"], "reuse, sparse override"),
    (["method.name=pplr_cam", "cluster.camera_debias=true"], "debiasing, camera proxies"),
    (["method.name=dcls"], "beta in blocks"),
]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_labels_on_the_gpu(synthetic_root: Path, tmp_path: Path) -> None:
    """GPU runs: the gathered features stay on the GPU, and the clustering, kNN searches,
    cross agreement, debiasing, β and camera proxies all get CUDA tensors; only the sparse
    radius graph goes to the CPU; each run (one epoch and its evaluation) finishes."""
    for overrides, what in CUDA_RUNS:
        with pytest.MonkeyPatch.context() as monkeypatch:
            _check_cuda_run(overrides, synthetic_root, tmp_path / what.split()[0], monkeypatch)


def _check_cuda_run(
    overrides: list[str], synthetic_root: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(synthetic_root, *overrides)
    monkeypatch.setattr(base_module, "ROW_BLOCK", 16)  # several blocks at this size
    if cfg.cluster.sparse is False:
        monkeypatch.setattr(labels_module, "SPARSE_THRESHOLD", 50)
    calls = _spy(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = Trainer(cfg, out)
        assert trainer.acc.device.type == "cuda"
        records = trainer.fit()
    assert len(records) == 1 and 0.0 <= records[0]["mAP"] <= 1.0, overrides
    feats, parts, valid = calls["_extract"][0]  # the epoch's (then the evaluation's)
    assert feats.is_cuda and valid.is_cuda and (parts is None or parts.is_cuda)
    assert {d.type for d in _devices(calls)} == {"cuda"}, overrides
    ((clustered, kwargs, clustering),) = calls["dbscan_clustering"]
    assert clustered.is_cuda and clustering.ranked.is_cuda and clustering.features.is_cuda
    assert kwargs["sparse"] is True  # only the radius graph goes to the CPU
    if cfg.cluster.sparse is False:
        assert any("cluster.sparse=false" in str(w.message) for w in caught)
    ((labels, tensors),) = calls["_pseudo_labels"]
    agreement = tensors.get("agreement")
    assert labels.device.type == "cpu" and labels.dtype == torch.int64
    if cfg.method.name in ("pplr", "pplr_cam"):
        ((global_feats, _, agreement_kwargs, _),) = calls["cross_agreement"]
        assert agreement is not None and agreement.is_cuda
        if not cfg.cluster.camera_debias and bool(valid.all()):  # the GPU copy was reused
            assert agreement_kwargs["global_ranked"] is clustering.ranked
            assert global_feats is clustering.features
    if cfg.cluster.camera_debias:
        assert calls["camera_debiased"] and calls["camera_proxies"]
    if cfg.method.name == "dcls":
        # β in blocks on the GPU: the per-region means of one pass on the CPU, to float32 noise.
        assert len(calls["dcls_smoothing_factors"]) > 1
        cpu_beta = dcls_smoothing_factors(feats.cpu(), parts.cpu(), cfg.method.metric)[0]
        expected = cpu_beta[valid.cpu()].mean(dim=0)
        last = dcls_module._mean_beta(feats, parts, valid, cfg.method.metric)
        torch.testing.assert_close(torch.tensor(last), expected, rtol=1e-5, atol=1e-6)
