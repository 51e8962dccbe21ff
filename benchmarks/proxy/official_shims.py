"""Run the official PPLR trainer (``examples/train_pplr.py`` of yoonkicho/PPLR) on a CPU, on the
proxy's data, with its method code untouched.

This module is the child process of ``benchmarks.proxy.official_pplr``, which runs it from the
repository root as::

    python -m benchmarks.proxy.official_shims --official-repo DIR --source-model RUN/last \\
        --backbone resnet18 --pad 4 --interpolation bilinear [--camera-debias] -- ARGS...

(``ARGS``: ``train_pplr.py``'s command line). It is not a project module and nothing of the
official repository is copied here. The user gives a checkout of that repository; this process
puts it on ``sys.path`` (its one ``sys.path`` change), installs the shims below and executes the
official script as ``__main__`` with the official command line. Every shim replaces an
environment piece (GPU, faiss, ImageNet weights, the data pipeline's sizes), none a line of the
method (the trainer, AALS, PGLR, the cross agreement, the clustering loop):

1. ``.cuda()`` (tensors and modules) returns its object: everything stays on the CPU.
2. ``faiss`` is a stand-in module: ``IndexFlatL2`` is an exact brute-force L2 search in torch
   (float64 distances, ties to the lower index); ``get_num_gpus()`` is 0. The official
   ranked lists and Jaccard distance run their CPU path, ``search_option=3``.
3. The backbone is a ResNet-18: the official necks and classifiers are 2048 wide (ResNet-50),
   so ``BatchNorm1d(2048)`` / ``Linear(2048, ·)`` of the part model's module are built 512 wide,
   and the last-stride change is made on ``conv1`` of layer 4's first BasicBlock (the official
   code sets ``conv2``, where a Bottleneck strides; on a BasicBlock that line changes nothing).
4. "ImageNet-pretrained" is the proxy's supervised source model: its backbone weights
   (``--source-model``, a checkpoint folder of ours) are loaded where torchvision's download
   would be.
5. The data pipeline follows the proxy's config: ``T.Pad(10)`` pads ``--pad`` pixels (10 is the
   official value for 384×128 inputs) and ``T.Resize`` uses ``--interpolation``.
6. The clustering sees camera-debiased features when ``--camera-debias`` is given (each
   camera's mean feature removed, ``reid_clustering.camera_debiased``), as the proxy's
   ``cluster.camera_debias`` does; the cross agreement sees the features unchanged, as in ours.

Records (written into ``--logs-dir`` beside the official ``log.txt``): ``evaluations.jsonl``
(every evaluation's mAP and, for the last one, Rank-1), ``clusterings.jsonl`` (per epoch: the
clusters, outliers and the pseudo labels' quality against the true identities) and
``labels.npy`` (each epoch's DBSCAN labels, for the cross agreement's mean over clustered images).
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
import types
from pathlib import Path

import numpy as np
import torch


def _no_cuda() -> None:
    def same(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        return self

    torch.Tensor.cuda = same
    torch.nn.Module.cuda = same


class _IndexFlatL2:
    """faiss.IndexFlatL2: exact squared-L2 search, ascending, ties to the lower index."""

    def __init__(self, d: int) -> None:
        self.d = d
        self._base = np.zeros((0, d), dtype=np.float32)

    def add(self, x: np.ndarray) -> None:
        self._base = np.concatenate([self._base, np.asarray(x, dtype=np.float32)])

    def reset(self) -> None:
        self._base = np.zeros((0, self.d), dtype=np.float32)

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = torch.from_numpy(np.asarray(x, dtype=np.float64))
        b = torch.from_numpy(self._base.astype(np.float64))
        dist = (q * q).sum(1, keepdim=True) + (b * b).sum(1) - 2.0 * q @ b.T
        order = torch.sort(dist, dim=1, stable=True).indices[:, :k]
        return dist.gather(1, order).float().numpy(), order.numpy().astype(np.int64)


def _fake_faiss() -> None:
    faiss = types.ModuleType("faiss")
    faiss.METRIC_L2 = 1
    faiss.get_num_gpus = lambda: 0
    faiss.IndexFlatL2 = _IndexFlatL2
    sys.modules["faiss"] = faiss


def _cpu_search(module: types.ModuleType) -> None:
    """The official ranked lists and Jaccard distance on their CPU path (search_option=3)."""
    jaccard, ranked = module.compute_jaccard_distance, module.compute_ranked_list

    def compute_jaccard_distance(features, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        kwargs["search_option"] = 3
        return jaccard(_debias(features), *args, **kwargs)

    def compute_ranked_list(features, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        kwargs["search_option"] = 3
        return ranked(features, *args, **kwargs)

    module.compute_jaccard_distance = compute_jaccard_distance
    module.compute_ranked_list = compute_ranked_list


_STATE: dict = {"dataset": None, "debias": False, "labels": [], "logs": None}


def _train_list() -> list[tuple[str, int, int]]:
    return sorted(_STATE["dataset"].train)


def _debias(features: torch.Tensor) -> torch.Tensor:
    if not _STATE["debias"]:
        return features
    from reid_clustering import camera_debiased

    camids = torch.tensor([c for _, _, c in _train_list()])
    if camids.numel() != features.shape[0]:
        raise RuntimeError("the clustered features are not the training list: cannot debias")
    return camera_debiased(features, camids)


def _record_datasets(datasets: types.ModuleType) -> None:
    create = datasets.create

    def recording_create(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        _STATE["dataset"] = create(*args, **kwargs)
        return _STATE["dataset"]

    datasets.create = recording_create


def _record_dbscan() -> None:
    import sklearn.cluster

    from reid_clustering import pseudo_label_quality

    base = sklearn.cluster.DBSCAN

    class DBSCAN(base):
        def fit_predict(self, X, y=None, sample_weight=None):  # noqa: ANN001, ANN201, N803
            labels = super().fit_predict(X, y, sample_weight=sample_weight)
            true = np.array([pid for _, pid, _ in _train_list()])
            q = pseudo_label_quality(labels, true)
            _STATE["labels"].append(np.asarray(labels))
            np.save(_STATE["logs"] / "labels.npy", np.stack(_STATE["labels"]))
            record = {
                "epoch": len(_STATE["labels"]) - 1, "clusters": q.num_clusters,
                "outliers": q.num_outliers, "true_identities": q.num_identities,
                "pairwise_f1": q.pairwise_f1, "pairwise_precision": q.pairwise_precision,
                "nmi": q.nmi,
            }  # fmt: skip
            with open(_STATE["logs"] / "clusterings.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            return labels

    DBSCAN.__name__ = DBSCAN.__qualname__ = "DBSCAN"
    sklearn.cluster.DBSCAN = DBSCAN


def _record_evaluations(evaluators: types.ModuleType) -> None:
    evaluate_all = evaluators.evaluate_all

    def recording_evaluate_all(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        result = evaluate_all(*args, **kwargs)
        if isinstance(result, tuple):
            cmc, m_ap = result
            record = {"mAP": float(m_ap), "rank1": float(cmc[0])}
        else:
            record = {"mAP": float(result)}
        with open(_STATE["logs"] / "evaluations.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        return result

    evaluators.evaluate_all = recording_evaluate_all


def _resnet18_from_source(source: Path, backbone: str):  # noqa: ANN202
    """The factory the part model calls for depth 18: torchvision's ResNet-18 with the source
    model's backbone weights and the last stride of a BasicBlock removed."""
    import torchvision

    from reid_backbones import build_backbone

    def factory(pretrained: bool = True, **_: object) -> torch.nn.Module:
        net = torchvision.models.resnet18(weights=None)
        if pretrained:
            weights = build_backbone(backbone, last_stride=1, pretrained=source).state_dict()
            missing, unexpected = net.load_state_dict(weights, strict=False)
            if unexpected or set(missing) != {"fc.weight", "fc.bias"}:
                raise RuntimeError(f"source weights do not fit: {missing} {unexpected}")
        net.layer4[0].conv1.stride = (1, 1)
        return net

    return factory


def _resnet18_part_model(resnet_part: types.ModuleType, source: Path, backbone: str) -> None:
    if backbone != "resnet18":
        raise SystemExit(f"the official-trainer shims support a resnet18 backbone, not {backbone}")
    cls = resnet_part.ResNetPart
    cls._ResNetPart__factory[18] = _resnet18_from_source(source, backbone)

    class _Narrow:
        """``torch.nn`` as the part model's module sees it: 2048-wide layers are 512 wide."""

        def __getattr__(self, name: str):  # noqa: ANN204
            return getattr(torch.nn, name)

        class BatchNorm1d(torch.nn.BatchNorm1d):
            def __init__(self, num_features: int, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
                super().__init__(512 if num_features == 2048 else num_features, *args, **kwargs)

        class Linear(torch.nn.Linear):
            def __init__(self, in_features: int, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
                super().__init__(512 if in_features == 2048 else in_features, *args, **kwargs)

    resnet_part.nn = _Narrow()

    def resnet18part(**kwargs):  # noqa: ANN003, ANN202
        return cls(18, **kwargs)

    import pplr.models

    pplr.models.resnet50part = resnet18part  # the name train_pplr.py imports


def _transforms(transforms: types.ModuleType, pad: int, interpolation: str) -> None:
    import torchvision.transforms as tv

    mode = tv.InterpolationMode(interpolation)

    def Pad(padding, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202, N802
        return tv.Pad(pad, *args, **kwargs)

    def Resize(size, interpolation=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202, N802
        return tv.Resize(size, mode, *args, **kwargs)

    transforms.Pad, transforms.Resize = Pad, Resize


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official-repo", type=Path, required=True)
    parser.add_argument("--source-model", type=Path, required=True)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--pad", type=int, required=True)
    parser.add_argument("--interpolation", default="bilinear")
    parser.add_argument("--camera-debias", action="store_true")
    parser.add_argument("official", nargs=argparse.REMAINDER, help="-- then train_pplr.py's args")
    args = parser.parse_args(argv)
    official = args.official[1:] if args.official[:1] == ["--"] else args.official
    script = args.official_repo / "examples" / "train_pplr.py"
    if not script.is_file():
        raise SystemExit(
            f"{script} not found: --official-repo must be a checkout of yoonkicho/PPLR"
        )
    logs = Path(official[official.index("--logs-dir") + 1])
    logs.mkdir(parents=True, exist_ok=True)
    _STATE.update(debias=args.camera_debias, logs=logs)

    sys.path.insert(0, str(args.official_repo))
    _no_cuda()
    _fake_faiss()
    _record_dbscan()
    import pplr.datasets
    import pplr.evaluators
    import pplr.models.resnet_part
    import pplr.utils.data.transforms
    import pplr.utils.faiss_rerank

    _cpu_search(pplr.utils.faiss_rerank)
    _record_datasets(pplr.datasets)
    _record_evaluations(pplr.evaluators)
    _resnet18_part_model(pplr.models.resnet_part, args.source_model, args.backbone)
    _transforms(pplr.utils.data.transforms, args.pad, args.interpolation)

    sys.argv = [str(script), *official]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
