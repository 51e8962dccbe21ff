"""Where an epoch's pseudo labels come from (``cluster.labels``), on the main process:

* ``dbscan`` (the unsupervised runs): DBSCAN on the k-reciprocal Jaccard distance of the
  extracted global features (``reid_clustering.dbscan_clustering``, torch kNN backend: the
  ranking PPLR's cross agreement may reuse), seen camera-debiased with
  ``cluster.camera_debias`` (``reid_clustering.camera_debiased``); on an accelerator always
  through the sparse radius graph (:func:`sparse_path`);
* ``ground_truth`` (supervised source pretraining and the upper bound): the true identities;
* ``noisy_ground_truth``: them corrupted once for the run (:mod:`reid_train.label_noise`).

Every source gives labels 0..K-1 with -1 for outliers and unreadable images
(:func:`~reid_train.label_noise.relabel` makes them contiguous), and :meth:`PseudoLabeler.
quality` scores them against the true identities when those are known. The ground-truth
sources still get the extracted features: the classifiers are initialised with the cluster
centroids every epoch, whatever the labels' source.

## Where it runs, and its memory

``feats`` ``[N, D]``, ``parts`` ``[N, P, D]`` and ``valid`` are on the training device
(the trainer's extraction) and every step runs there: the kNN, the k-reciprocal encoding and the
Jaccard distance (``reid_clustering``), the camera debiasing and the method's
preparation (PPLR's cross agreement, ``reid_refine``; DCLS's β statistics). Only the
sparse radius graph of the Jaccard distance (the pairs within ``cluster.eps``) crosses
to the CPU, where scikit-learn's DBSCAN labels it: on an accelerator the sparse path is
always taken (an explicit ``cluster.sparse: false`` only up to ``SPARSE_THRESHOLD``,
2,048, images; :func:`sparse_path`). CPU runs compute exactly what they did when the
features were gathered to the CPU.

Peak device memory of the main process, besides the gathered features (``N × D`` and
``N × P × D`` float32: 0.27 and 0.80 GB for MSMT17's 32,621 training images at
D = 2048, P = 3); nothing of size ``N × N`` (4.3 GB there) is allocated:

* the clustering's L2-normalised copy of the features (``N × D``, kept for the cross
  agreement's reuse) and, while it is made and searched, ``N × D`` temporaries (the
  kNN's ``|x|`` for its scaling check, the input checks' ``N × D`` booleans);
* the exact kNN: one 2048 × 2048 similarity block, the running top ``k1 + 8`` of every
  row (``N × 38``), candidate pairs ``O(N·k1)`` (more only where many neighbours tie
  within the search's error bound) and 16 MiB chunks to re-score them;
* the encoding: ``O(N·k1)`` entries (the expanded reciprocal sets, a few dozen per
  row), and the Jaccard distance block by block of rows (a ``rows × N`` accumulator of
  at most 2²³ floats, at most 2²³ visited triples per block), kept as the radius graph;
* the cross agreement: one contiguous ``N × D`` copy of a part at a time, searched like
  the global features, and ``N × (k + 1)`` ranked lists;
* the DCLS β: row blocks of 4,096 features (``reid_train.methods.dcls``).

Together about 0.3 GB of blocks and ``O(N·k)`` lists plus up to about four ``N × D``
float32 temporaries: about 1.4 GB at MSMT17 size and D = 2048, estimated from this
path's peak memory on the CPU at N = 32,621 (0.33 GB at D = 64, 0.57 GB at D = 512);
it grows like ``N·(k + D)``. With ``cluster.camera_debias``, or images left out of the
clustering, the clustered features are one more ``N × D`` copy (the debiasing's
temporaries two more). The other processes hold only their gathered features (needed
for the centroids) and wait for the broadcast.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from reid_clustering import (
    SPARSE_THRESHOLD,
    DBSCANResult,
    NoClustersWarning,
    camera_debiased,
    dbscan_clustering,
    pseudo_label_quality,
)
from reid_eval import ImageRecord

from .config import ConfigError, TrainConfig
from .data import BadImagesError
from .label_noise import NoisyLabels, noisy_labels, relabel

__all__ = [
    "PseudoLabeler",
    "check_readable",
    "check_training_split",
    "ground_truth_labels",
    "sparse_path",
    "training_set_problems",
]


class PseudoLabeler:
    """The pseudo labels of every epoch of one run (main process).

    Args:
        config: the run.
        pids, camids: ``[N]`` identities and cameras of the training images (dataset order).
        families: the synthetic dataset's look-alike families (``noisy_ground_truth`` merges
            them first), or None.
        say, warn: the run's console line and warning.
    """

    def __init__(
        self,
        config: TrainConfig,
        pids: np.ndarray,
        camids: np.ndarray,
        families: Callable[[], dict[int, int] | None],
        say: Callable[[str], None],
        warn: Callable[[str], None],
    ) -> None:
        self.cfg, self.pids, self.camids = config, pids, camids
        self._families, self._say, self._warn = families, say, warn
        self._noisy: NoisyLabels | None = None  # noisy_ground_truth: drawn once
        self._dense_refused = False  # warned once that cluster.sparse=false was overridden

    def epoch_labels(
        self, feats: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, DBSCANResult | None]:
        """The epoch's labels of every training image, ``[N]`` int64 on the CPU (the sampler
        reads them; -1 for outliers and the unreadable images, ``valid`` False), and the
        clustering when DBSCAN made them."""
        keep = valid.nonzero().flatten()
        found, clustering = self.labels(feats, keep)
        labels = torch.full((feats.shape[0],), -1, dtype=torch.int64)
        labels[keep.cpu()] = torch.from_numpy(found)
        return labels, clustering

    def labels(
        self, feats: torch.Tensor, keep: torch.Tensor
    ) -> tuple[np.ndarray, DBSCANResult | None]:
        """Labels of the rows ``keep`` (the readable images) of ``feats`` ``[N, D]`` (on the
        training device), and the clustering when DBSCAN made them."""
        c, kept = self.cfg.cluster, keep.cpu().numpy()
        if c.labels == "ground_truth":
            return ground_truth_labels(self.pids[kept]), None
        if c.labels == "noisy_ground_truth":
            return relabel(self.noisy().labels[kept]), None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoClustersWarning)  # the epoch note says it
            clustering = dbscan_clustering(
                self._features(feats, keep), c.eps, c.min_samples, c.k1, c.k2,
                sparse=self._sparse(keep.numel(), feats.device),
                backend="torch",  # the ranking PPLR's cross agreement may reuse
            )  # fmt: skip
        return clustering.labels, clustering

    def quality(self, labels: torch.Tensor) -> dict[str, float]:
        """NMI, ARI, pairwise precision/recall/F1 of ``labels`` ``[N]`` against the true
        identities (and the realised noise of ``noisy_ground_truth``), over the images that have
        one (pid >= 0); empty when the training split has fewer than two identities (an
        unlabelled split: every pid -1)."""
        known = self.pids >= 0  # pid -1: an image without identity (reid_eval.UNLABELLED)
        if len(np.unique(self.pids[known])) <= 1:
            return {}
        if known.all():
            q = pseudo_label_quality(labels.numpy(), self.pids)
        else:
            q = pseudo_label_quality(labels.numpy()[known], self.pids[known])
        quality = {
            "nmi": q.nmi, "ari": q.ari, "pairwise_precision": q.pairwise_precision,
            "pairwise_recall": q.pairwise_recall, "pairwise_f1": q.pairwise_f1,
            "true_identities": q.num_identities,
        }  # fmt: skip
        if self._noisy is not None:  # the realised noise of the whole training split
            quality["label_noise"] = self._noisy.rate
        return quality

    def noisy(self) -> NoisyLabels:
        """``noisy_ground_truth``: the training split's identities corrupted once for the run
        (look-alike merges from the synthetic dataset's families, random pairs elsewhere)."""
        if self._noisy is None:
            c = self.cfg.cluster
            ground_truth_labels(self.pids, "noisy_ground_truth")  # has identities?
            self._noisy = noisy_labels(
                self.pids, self.camids, c.label_noise, seed=c.label_noise_seed,
                families=self._families(),
            )  # fmt: skip
            self._say(f"cluster.labels=noisy_ground_truth: {self._noisy.describe()}")
        return self._noisy

    def _features(self, feats: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The features DBSCAN sees, on their device; ``feats`` itself (no copy) when every
        row is kept and there is no camera debiasing."""
        kept = feats if keep.numel() == feats.shape[0] else feats[keep]
        if not self.cfg.cluster.camera_debias:
            return kept
        camids = torch.from_numpy(self.camids[keep.cpu().numpy()])
        return camera_debiased(kept, camids.to(feats.device))

    def _sparse(self, n: int, device: torch.device) -> bool | None:
        """``sparse`` of ``dbscan_clustering`` for ``n`` features on ``device``
        (:func:`sparse_path`), warning once where ``cluster.sparse=false`` is overridden."""
        setting = self.cfg.cluster.sparse
        sparse = sparse_path(setting, n, device)
        if setting is False and sparse and not self._dense_refused:
            self._dense_refused = True
            self._warn(
                f"cluster.sparse=false asks for the dense {n} x {n} Jaccard matrix on {device}; "
                f"above {SPARSE_THRESHOLD} images the sparse radius graph is used there instead "
                "(the same labels, without an N x N matrix in device memory)"
            )
        return sparse


def sparse_path(setting: bool | None, n: int, device: torch.device) -> bool | None:
    """``sparse`` of :func:`reid_clustering.dbscan_clustering` for ``n`` features on ``device``.

    On the CPU, ``cluster.sparse`` as given (None: the library's choice, the sparse radius graph
    above :data:`reid_clustering.SPARSE_THRESHOLD` images). On an accelerator the radius graph
    is always used, so that only it goes to the CPU for DBSCAN (the labels are the same on
    either path); an explicit ``false`` is honoured up to ``SPARSE_THRESHOLD`` images only,
    where the dense ``N × N`` float32 matrix is at most 17 MB: above it, the matrix (4.3 GB
    at MSMT17's 32,621 images) would sit in device memory, and the sparse path is taken.
    """
    if device.type == "cpu" or setting is True:
        return setting
    if setting is False and n <= SPARSE_THRESHOLD:
        return False
    return True


def training_set_problems(config: TrainConfig, pids: np.ndarray) -> list[str]:
    """What the label source needs of a training split with identities ``pids`` (``[N]``, -1
    where unknown): DBSCAN's k-reciprocal lists rank ``cluster.k1`` neighbours of every image;
    a fixed label source (``[noisy_]ground_truth``) must hold the P identities of a batch, or
    every epoch would be skipped."""
    c, d, n = config.cluster, config.data, len(pids)
    if c.labels == "dbscan":
        if n > c.k1:
            return []
        return [
            f"cluster.k1 {c.k1}: the k-reciprocal lists rank {c.k1} neighbours of every "
            f"training image, but the training split has {n} images; lower cluster.k1 (and "
            "cluster.k2) below it, or train on more images"
        ]
    ids, p = len(np.unique(pids[pids >= 0])), d.batch_size // d.num_instances
    if ids >= p:
        return []
    return [
        f"cluster.labels={c.labels}: the training split has {ids} identities, but every batch "
        f"needs P = {p} (data.batch_size {d.batch_size} / data.num_instances "
        f"{d.num_instances} per process) and the labels never change; train on more "
        "identities or lower data.batch_size"
    ]


def check_training_split(config: TrainConfig, pids: np.ndarray, method_problems: list[str]) -> None:
    """Refuse, before the run folder exists, a training split that the label source or the
    method cannot use (no identities for a fixed label source; fewer images than a k):
    :func:`training_set_problems` and the method's own ``method_problems``."""
    if config.cluster.labels != "dbscan":
        ground_truth_labels(pids, config.cluster.labels)
    problems = [*training_set_problems(config, pids), *method_problems]
    if problems:
        raise ConfigError("the training split is too small:\n  - " + "\n  - ".join(problems))


def check_readable(valid: torch.Tensor, records: Sequence[ImageRecord]) -> None:
    """Refuse an epoch none of whose training images could be read (``valid``: ``[N]`` bool)."""
    if not bool(valid.any()):
        examples = ", ".join(f"'{r.path}'" for r in records[:3])
        raise BadImagesError(
            f"none of the {valid.numel()} training images could be read (e.g. {examples}): "
            "they are corrupt or not images; check data.data_root (replace or delete them)"
        )


def ground_truth_labels(pids: np.ndarray, mode: str = "ground_truth") -> np.ndarray:
    """Identities relabelled 0..K-1 (``cluster.labels: ground_truth``); ids < 0 → -1 (junk,
    treated as outliers). A split without any identity is refused."""
    if not (pids >= 0).any():
        raise ConfigError(
            f"cluster.labels={mode} but the training split has no identity labels "
            "(every pid < 0); use cluster.labels=dbscan"
        )
    return relabel(pids)
