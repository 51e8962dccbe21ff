"""The training engine: one loop for baseline, PPLR, PPLR+camera and DCLS, on Accelerate.

An epoch (docs/design.md, "One training epoch"):

1. every process extracts the global (and part) features of its shard of the training images;
   the shards are gathered on every process, where they stay on the training device
   (``Accelerator.device``: the GPU of a GPU run);
2. the main process clusters the global features (``reid_clustering.dbscan_clustering``) and
   runs the method's preparation (:meth:`reid_train.methods.Method.prepare`; for PPLR the
   cross agreement, ``reid_refine.cross_agreement``, reusing the clustering's ranked list where
   it ranked the same features), both on that device; only the sparse radius graph of the
   Jaccard distance goes to the CPU, for scikit-learn's DBSCAN (:meth:`Trainer._cluster` has
   the memory bound); the labels and the method's per-image tensors are broadcast;
3. every process writes the L2-normalised cluster centroids into the first K rows of the
   fixed-capacity classifiers (``ReIDModel.load_centroids``, the official PPLR scheme: the
   parameters stay the same objects, so Adam's state and DDP stay valid) and, for PPLR+camera,
   builds the camera proxies;
4. ``iters`` P×K batches per process (outliers never sampled; different batches per process):
   forward, the method's losses (``reid_refine``), the soft triplet, backward, step;
5. every ``eval_every`` epochs, query/gallery features are extracted (sharded, gathered) and the
   main process evaluates them (``reid_eval.evaluate_features``, optionally re-ranked);
6. checkpoints: ``best/`` and ``last/`` via ``reid_backbones.save_checkpoint`` (``reid-eval``
   reads them) and ``state/`` via ``Accelerator.save_state`` for ``--resume``, all written to a
   temporary folder and renamed.

This module is the epoch loop; the other jobs of a run live beside it:

* :mod:`reid_train.extraction`: sharded extraction, gathering and broadcasts (steps 1, 2, 5);
* :mod:`reid_train.methods`: each method's preparation and batch losses (steps 2, 4);
* ``reid_clustering``: the clustering, the camera debiasing (``camera_debiased``) and the
  cluster centroids (``cluster_centroids``) (steps 2, 3);
* :mod:`reid_train.run_files`: what the run writes into its folder and reads back on resume
  (checkpoints, ``state/``, ``metrics.jsonl``, ``history.jsonl``; step 6), under the folder's
  rules in :mod:`reid_train.run_dir`;
* :mod:`reid_train.reporting`: console lines, warnings, TensorBoard and the end-of-run plots.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from tqdm.auto import tqdm

from reid_backbones import ReIDModel, build_model
from reid_clustering import (
    SPARSE_THRESHOLD,
    DBSCANResult,
    NoClustersWarning,
    camera_debiased,
    cluster_centroids,
    cluster_statistics,
    dbscan_clustering,
    pseudo_label_quality,
)
from reid_eval import (
    ImageRecord,
    ReIDDataset,
    evaluate_features,
    evaluate_records,
    load_dataset,
    make_synthetic_dataset,
)
from reid_eval.datasets import SyntheticConfig, synthetic_families, synthetic_mismatch
from reid_eval.rerank import re_ranking_features

from .config import ConfigError, TrainConfig
from .data import LEFT_OUT_OF_EVALUATION, BadImagesError, build_train_loader
from .extraction import broadcast_from_main, extract_features
from .label_noise import NoisyLabels, noisy_labels
from .losses import camera_proxies, soft_triplet_loss
from .methods import EpochInputs, EpochState, Method
from .methods import get as get_method
from .reporting import Reporter
from .run_dir import (
    BEST_DIR,
    HISTORY_FILE,
    METRICS_FILE,
    STATE_DIR,
    RunDirError,
    RunLock,
    check_new_run,
    fault_point,
)
from .run_files import (
    Progress,
    append_line,
    claim_run_dir,
    load_state,
    save_model,
    save_state,
)
from .sampler import TooFewIdentitiesError

# camera_debiased lives in reid_clustering; re-exported here, where it used to be defined.
__all__ = ["EpochSummary", "Trainer", "TrainingDivergedError", "camera_debiased", "train"]


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class EpochSummary:
    """What one epoch did (one line of ``history.jsonl``)."""

    epoch: int
    clusters: int = 0
    outliers: int = 0
    trained: bool = False
    losses: dict[str, float] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    quality: dict[str, float] = field(default_factory=dict)
    agreement: list[float] = field(default_factory=list)
    #: DCLS: mean smoothing factor β between each region and the global feature (Eq. 4) over
    #: the training set, from the features extracted at the start of the epoch.
    beta: list[float] = field(default_factory=list)
    lr: float = 0.0
    note: str = ""
    #: One checksum of the sampled dataset indices per process (processes see different batches).
    batch_digests: list[int] = field(default_factory=list)


class Trainer:
    """Runs a :class:`~reid_train.config.TrainConfig` to the end (see the module docstring).

    Args:
        config: the run; validated here.
        output_dir: run folder (default ``config.runtime.output_dir``).
        resume: continue from ``output_dir/state`` (model, optimizer, scheduler, epoch, best).
        accelerator: an existing :class:`accelerate.Accelerator` (default: one built from the
            config; on a machine without CUDA it runs on the CPU, with gloo for several ranks).
    """

    def __init__(
        self,
        config: TrainConfig,
        output_dir: str | os.PathLike[str] | None = None,
        *,
        resume: bool = False,
        overwrite: bool = False,
        accelerator: Accelerator | None = None,
    ) -> None:
        config.validate()
        self.cfg = config
        self.method: Method = get_method(config.method.name)(config)  # the recipe (methods/)
        self.out = Path(output_dir or config.runtime.output_dir)
        self.resume = resume
        self.acc = accelerator or Accelerator(
            mixed_precision=config.runtime.mixed_precision, cpu=not torch.cuda.is_available()
        )
        self.report = Reporter(self.acc.is_main_process)  # console, warnings, TensorBoard
        self._lock: RunLock | None = None
        # Nothing is written before these checks pass (run_dir module docstring).
        self._on_main(lambda: None if resume else check_new_run(self.out, overwrite))
        if config.runtime.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        set_seed(config.runtime.seed)
        self.dataset: ReIDDataset = self._load_dataset()
        self.train_records: list[ImageRecord] = list(self.dataset.train)
        self.train_pids, self.train_camids = _ids(self.train_records)  # reporting / debiasing
        capacity = config.model.max_clusters or (
            len(self.train_records) // config.cluster.min_samples + 1
        )
        model = build_model(**config.model_kwargs(), num_classes=capacity)
        if config.runtime.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = _build_optimizer(model, config)
        self.scheduler = _build_scheduler(optimizer, config)
        self.model, self.optimizer = self.acc.prepare(model, optimizer)
        self.acc.register_for_checkpointing(self.scheduler)
        self.start_epoch, self.best_map, self.best_epoch = 0, -1.0, -1
        self.trained_epochs = 0
        try:
            self._on_main(lambda: self._claim_run_dir(overwrite))
            if resume:
                self._load_state()
            self.acc.wait_for_everyone()
        except BaseException:
            self.close()
            raise
        self.report.open_tensorboard(config.runtime.tensorboard, self.out / "tensorboard")
        self._last_summary: EpochSummary | None = None
        self._noisy: NoisyLabels | None = None  # cluster.labels: noisy_ground_truth, once
        self._dense_refused = False  # warned once that cluster.sparse=false was overridden

    def _on_main(self, job: Any) -> Any:
        """Run ``job`` on the main process; a :class:`RunDirError` or :class:`ConfigError` it
        raises is raised on every process (the others would otherwise wait forever)."""
        failure: list[Any] = [None]
        result = None
        if self.acc.is_main_process:
            try:
                result = job()
            except (RunDirError, ConfigError) as e:
                failure = [(type(e).__name__, str(e))]
        if self.acc.num_processes > 1:
            broadcast_object_list(failure, from_process=0)
        if failure[0] is not None:
            kind, message = failure[0]
            raise (ConfigError if kind == "ConfigError" else RunDirError)(message)
        return result

    def _claim_run_dir(self, overwrite: bool) -> None:
        """Main process: lock the run folder, then prepare it for a new or a resumed run."""
        self._lock = claim_run_dir(
            self.out, self.cfg, resume=self.resume, overwrite=overwrite, say=self._print
        )

    def _load_dataset(self) -> ReIDDataset:
        """The configured dataset; the built-in synthetic one is generated where it is missing."""
        d = self.cfg.data
        root = Path(d.data_root)
        if _is_synthetic(d.dataset):  # every process enters (a barrier), the main one writes
            with self.acc.main_process_first():
                if self.acc.is_main_process and not root.exists():
                    self._print(
                        f"data.data_root '{root}' does not exist: generating the synthetic "
                        f"dataset there (seed {d.synthetic_seed}, as 'reid-eval make-synthetic "
                        f"{root} --seed {d.synthetic_seed}' would)"
                    )
                    # Written beside and renamed: an interrupted generation leaves no half root.
                    tmp = root.with_name(f".{root.name}.tmp")
                    shutil.rmtree(tmp, ignore_errors=True)
                    make_synthetic_dataset(
                        tmp, seed=d.synthetic_seed, config=SyntheticConfig(**d.synthetic_options)
                    )
                    tmp.rename(root)
                elif self.acc.is_main_process and (root / "synthetic.json").is_file():
                    wanted = SyntheticConfig(**d.synthetic_options)
                    differs = synthetic_mismatch(root, d.synthetic_seed, wanted)
                    if differs is not None:  # e.g. generated by an earlier version's defaults
                        self._warn(
                            f"data.data_root '{root}' holds a synthetic dataset that is not the "
                            f"one data.synthetic_seed / data.synthetic_options describe ("
                            f"{differs}); training on what is there. For the configured one, "
                            f"remove the folder (it is generated again) or point "
                            f"data.data_root at a new folder"
                        )
        return load_dataset(d.dataset, d.data_root, **d.dataset_options)

    def close(self) -> None:
        """Release the run folder's lock (done by :meth:`fit` when it ends, however it ends)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ------------------------------------------------------------------ public
    @property
    def net(self) -> ReIDModel:
        """The model without its distributed wrapper."""
        return self.acc.unwrap_model(self.model)

    def fit(self) -> list[dict[str, Any]]:
        """Train from the start (or the resumed) epoch to ``optim.epochs``; return the metrics.

        The run folder's lock is released when this returns or raises."""
        try:
            return self._fit()
        finally:
            self.close()

    def _fit(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        evaluations: list[dict[str, Any]] = []
        if cfg.runtime.eval_before_training and self.start_epoch == 0:
            evaluations.append(self.evaluate(-1))
        for epoch in range(self.start_epoch, cfg.optim.epochs):
            summary = self.run_epoch(epoch)
            last = epoch == cfg.optim.epochs - 1
            if _every(epoch, cfg.runtime.eval_every) or last:
                start = time.perf_counter()
                record = self.evaluate(epoch)
                summary.times["eval"] = time.perf_counter() - start
                evaluations.append(record)
            self._log_epoch(summary)
            fault_point("logged", epoch)
            if _every(epoch, cfg.runtime.save_every) or last:
                self._save(epoch)
        self.report.finish(self.out, plots=cfg.runtime.plots)
        if self.trained_epochs == 0 and cfg.optim.epochs > self.start_epoch:
            self._warn(
                "no epoch trained: every epoch was skipped (no clusters, or fewer clusters than "
                "identities per batch), so the model is the initial one. Check cluster.eps / "
                "cluster.min_samples and data.batch_size / data.num_instances; history.jsonl "
                "has a note per epoch"
            )
        return evaluations

    # ------------------------------------------------------------------ epoch
    def run_epoch(self, epoch: int) -> EpochSummary:
        """Extract, cluster, re-initialise the classifiers, train ``iters`` batches.

        The extracted features live on the training device from extraction until the
        classifiers and camera proxies are initialised; they are released before the batches.
        """
        cfg, summary = self.cfg, EpochSummary(epoch=epoch, lr=self.scheduler.get_last_lr()[0])
        start = time.perf_counter()
        feats, parts, valid = self._extract(self.train_records, parts=self._needs_parts)
        summary.times["extract"] = time.perf_counter() - start
        self._last_summary = summary

        start = time.perf_counter()
        labels, state = self._cluster(feats, parts, valid, summary)
        summary.times["cluster"] = time.perf_counter() - start

        start = time.perf_counter()
        num_clusters = int(labels.max()) + 1 if labels.numel() else 0
        batch_ids = cfg.data.batch_size // cfg.data.num_instances
        if num_clusters == 0:
            summary.note = "every sample is an outlier: epoch skipped"
        elif num_clusters < batch_ids:
            summary.note = (
                f"{num_clusters} clusters < {batch_ids} identities per batch: epoch skipped"
            )
        else:
            try:
                loader = self._train_loader(epoch, labels)
                state.proxies = self._init_classifiers(feats, parts, labels, num_clusters)
                del feats, parts, valid  # the batches never read them: free the device memory
                self._train_epoch(epoch, loader, state, num_clusters, summary)
                summary.trained = True
                self.trained_epochs += 1
            except TooFewIdentitiesError as e:
                summary.note = f"epoch skipped: {e}"
        if summary.note:
            self._warn(f"epoch {epoch}: {summary.note}")
        with warnings.catch_warnings():  # a skipped epoch steps the schedule without training
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.scheduler.step()
        summary.times["train"] = time.perf_counter() - start
        return summary

    @property
    def _needs_parts(self) -> bool:
        return self.method.needs_parts(self.net.num_parts)

    def _cluster(
        self,
        feats: torch.Tensor,
        parts: torch.Tensor | None,
        valid: torch.Tensor,
        summary: EpochSummary,
    ) -> tuple[torch.Tensor, EpochState]:
        """Pseudo labels and the method's preparation (main process, broadcast).

        ``feats`` ``[N, D]``, ``parts`` ``[N, P, D]`` and ``valid`` are on the training device
        (:meth:`_extract`) and every step runs there: the kNN, the k-reciprocal encoding and the
        Jaccard distance (``reid_clustering``), the camera debiasing and the method's
        preparation (PPLR's cross agreement, ``reid_refine``; DCLS's β statistics). Only the
        sparse radius graph of the Jaccard distance (the pairs within ``cluster.eps``) crosses
        to the CPU, where scikit-learn's DBSCAN labels it: on an accelerator the sparse path is
        always taken (an explicit ``cluster.sparse: false`` only up to ``SPARSE_THRESHOLD``,
        2,048, images; :func:`_sparse_path`). CPU runs compute exactly what they did when the
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
        * the DCLS β: row blocks of 4,096 features (:func:`_mean_beta`).

        Together about 0.3 GB of blocks and ``O(N·k)`` lists plus up to about four ``N × D``
        float32 temporaries: about 1.4 GB at MSMT17 size and D = 2048, estimated from this
        path's peak memory on the CPU at N = 32,621 (0.33 GB at D = 64, 0.57 GB at D = 512);
        it grows like ``N·(k + D)``. With ``cluster.camera_debias``, or images left out of the
        clustering, the clustered features are one more ``N × D`` copy (the debiasing's
        temporaries two more). The other processes hold only their gathered features (needed
        for the centroids) and wait for the broadcast.
        """
        cfg, n, device = self.cfg, feats.shape[0], feats.device
        labels = torch.full((n,), -1, dtype=torch.int64)  # on the CPU: the sampler reads them
        state = EpochState()
        if self.acc.is_main_process:
            keep = valid.nonzero().flatten()
            keep_cpu = keep.cpu()
            clustering: DBSCANResult | None = None
            if cfg.cluster.labels == "ground_truth":
                found = _ground_truth_labels(self.train_pids[keep_cpu.numpy()])
            elif cfg.cluster.labels == "noisy_ground_truth":
                found = _compact(self._noisy_labels().labels[keep_cpu.numpy()])
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NoClustersWarning)  # the epoch note says it
                    clustering = dbscan_clustering(
                        self._cluster_features(feats, keep),
                        cfg.cluster.eps,
                        cfg.cluster.min_samples,
                        cfg.cluster.k1,
                        cfg.cluster.k2,
                        sparse=self._dbscan_sparse(keep.numel(), device),
                        backend="torch",  # the ranking PPLR's cross agreement may reuse
                    )
                found = clustering.labels
            labels[keep_cpu] = torch.from_numpy(found)
            state = self.method.prepare(EpochInputs(feats, parts, valid, keep, labels, clustering))
            del clustering  # its normalised copy of the features: not needed any more
            for name, value in state.summary.items():  # logged by the main process
                setattr(summary, name, value)
        labels = self._broadcast(labels)
        if self.acc.num_processes > 1:  # the main process's tensors, on every process
            shapes = self.method.broadcast_shapes(n, self.net.num_parts)
            state.tensors = {
                name: self._broadcast(
                    state.tensors[name]
                    if self.acc.is_main_process
                    else torch.zeros(shape, device=device)
                )
                for name, shape in shapes.items()
            }
        stats = cluster_statistics(labels)
        summary.clusters, summary.outliers = stats.num_clusters, stats.num_outliers
        truth = self.train_pids
        if self.acc.is_main_process and len(np.unique(truth)) > 1:
            q = pseudo_label_quality(labels.numpy(), truth)
            summary.quality = {
                "nmi": q.nmi,
                "ari": q.ari,
                "pairwise_precision": q.pairwise_precision,
                "pairwise_recall": q.pairwise_recall,
                "pairwise_f1": q.pairwise_f1,
                "true_identities": q.num_identities,
            }
            if self._noisy is not None:  # the realised noise of the whole training split
                summary.quality["label_noise"] = self._noisy.rate
        return labels, state

    def _dbscan_sparse(self, n: int, device: torch.device) -> bool | None:
        """``sparse`` for :func:`reid_clustering.dbscan_clustering` on ``n`` features on
        ``device``: ``cluster.sparse``, except on an accelerator (:func:`_sparse_path`)."""
        setting = self.cfg.cluster.sparse
        sparse = _sparse_path(setting, n, device)
        if setting is False and sparse and not self._dense_refused:
            self._dense_refused = True
            self._warn(
                f"cluster.sparse=false asks for the dense {n} x {n} Jaccard matrix on {device}; "
                f"above {SPARSE_THRESHOLD} images the sparse radius graph is used there instead "
                "(the same labels, without an N x N matrix in device memory)"
            )
        return sparse

    def _noisy_labels(self) -> NoisyLabels:
        """``cluster.labels: noisy_ground_truth``: the training split's identities corrupted
        once for the run (``reid_train.label_noise``; look-alike merges from the synthetic
        dataset's families, random pairs elsewhere); main process."""
        if self._noisy is None:
            c = self.cfg.cluster
            _ground_truth_labels(self.train_pids, "noisy_ground_truth")  # has identities?
            families = None
            if _is_synthetic(self.cfg.data.dataset):
                families = synthetic_families(self.dataset.root)
            self._noisy = noisy_labels(
                self.train_pids, self.train_camids, c.label_noise, seed=c.label_noise_seed,
                families=families,
            )  # fmt: skip
            self._print(f"cluster.labels=noisy_ground_truth: {self._noisy.describe()}")
        return self._noisy

    def _cluster_features(self, feats: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The features DBSCAN sees (``cluster.camera_debias``:
        ``reid_clustering.camera_debiased``), on the features' device; ``feats`` itself (no
        copy) when every row is kept."""
        kept = feats if keep.numel() == feats.shape[0] else feats[keep]
        if not self.cfg.cluster.camera_debias:
            return kept
        camids = torch.from_numpy(self.train_camids[keep.cpu().numpy()])
        return camera_debiased(kept, camids.to(feats.device))

    def _train_loader(self, epoch: int, labels: torch.Tensor) -> Any:
        """This process's P×K batches of the epoch (raises :class:`TooFewIdentitiesError`)."""
        cfg = self.cfg
        return build_train_loader(
            self.train_records, labels.numpy(), cfg.data, iters=cfg.optim.iters,
            seed=cfg.runtime.seed, epoch=epoch, num_replicas=self.acc.num_processes,
            rank=self.acc.process_index, max_bad_images=cfg.runtime.max_bad_images,
            device=self.acc.device,
        )  # fmt: skip

    def _init_classifiers(
        self,
        feats: torch.Tensor,
        parts: torch.Tensor | None,
        labels: torch.Tensor,
        num_clusters: int,
    ) -> dict[str, Any] | None:
        """Cluster centroids into the classifiers and, for a method with camera proxies
        (``pplr_cam``), the proxies (every process, from the gathered features on the training
        device)."""
        self._load_centroids(feats, parts, labels, num_clusters)
        if not self.method.camera_proxies:
            return None
        return self._camera_proxies(feats, parts, labels)

    def _train_epoch(
        self,
        epoch: int,
        loader: Any,
        state: EpochState,
        num_clusters: int,
        summary: EpochSummary,
    ) -> None:
        cfg, device = self.cfg, self.acc.device
        state.tensors = {name: t.to(device) for name, t in state.tensors.items()}
        totals: dict[str, float] = defaultdict(float)
        digest = 0
        self.model.train()
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}",
            disable=None if self.acc.is_main_process else True,
            leave=False,
        )
        for step, batch in enumerate(bar):
            images = batch["image"].to(device, non_blocking=True)
            if cfg.runtime.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = batch["label"].to(device)
            digest = (digest + int((batch["index"] * (step + 1)).sum())) % 1_000_000_007
            with self.acc.autocast():
                out = self.model(images)
                terms = self._losses(out, targets, batch, epoch, num_clusters, state)
            loss = sum(terms.values())
            self._check_finite(loss, epoch, step, terms)
            self.optimizer.zero_grad(set_to_none=True)
            self.acc.backward(loss)
            if cfg.optim.grad_clip is not None:
                self.acc.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            self.optimizer.step()
            for name, value in terms.items():
                totals[name] += float(value.detach())
            if _every(step, cfg.runtime.log_every):
                bar.set_postfix({k: f"{v / (step + 1):.3f}" for k, v in totals.items()})
        summary.losses = {k: v / cfg.optim.iters for k, v in totals.items()}
        summary.batch_digests = self.acc.gather(torch.tensor([digest], device=device)).tolist()

    def _losses(
        self,
        out: Any,
        targets: torch.Tensor,
        batch: dict[str, torch.Tensor],
        epoch: int,
        k: int,
        state: EpochState,
    ) -> dict[str, torch.Tensor]:
        """The batch's loss terms, summed in this order: the method's classification terms
        (:meth:`Method.losses`), the soft triplet every method shares (PPLR Eq. 3, on the
        ``method.triplet_features``), then the method's auxiliary terms (PPLR's camera loss)."""
        m = self.cfg.method
        terms = self.method.losses(out, targets, batch, epoch, k, state)
        if m.triplet_weight > 0:
            embedding = (
                out.global_bn_features if m.triplet_features == "bn" else out.global_features
            )
            terms["triplet"] = m.triplet_weight * soft_triplet_loss(
                embedding.float(), targets, m.triplet_margin
            )
        terms.update(self.method.auxiliary_losses(out, targets, batch, state))
        return terms

    # ------------------------------------------------------------------ helpers
    def _load_centroids(
        self, feats: torch.Tensor, parts: torch.Tensor | None, labels: torch.Tensor, k: int
    ) -> None:
        """Cluster means of the features (on their device, :func:`reid_clustering.
        cluster_centroids`) into the classifiers' first K rows."""
        if k > self.net.classifier.out_features:
            raise RuntimeError(
                f"{k} clusters exceed the classifier capacity ({self.net.classifier.out_features}"
                " rows); set model.max_clusters higher"
            )
        p = None
        if self.net.num_parts > 0:
            assert parts is not None
            p = cluster_centroids(parts, labels, k)
        self.net.load_centroids(cluster_centroids(feats, labels, k), p)

    def _camera_proxies(
        self, feats: torch.Tensor, parts: torch.Tensor | None, labels: torch.Tensor
    ) -> dict[str, Any]:
        clustered = labels >= 0
        cams = torch.tensor([r.camid for r in self.train_records])[clustered].to(feats.device)
        lab, device = labels[clustered].to(feats.device), self.acc.device
        rows = clustered.to(feats.device)
        to_dev = lambda t: tuple(x.to(device) for x in t)  # noqa: E731
        out: dict[str, Any] = {"global": to_dev(camera_proxies(feats[rows], lab, cams))}
        out["parts"] = []
        if parts is not None and self.cfg.method.cam_on_parts:
            clustered_parts = parts[rows]  # one copy for all parts
            out["parts"] = [
                to_dev(camera_proxies(clustered_parts[:, i], lab, cams))
                for i in range(parts.shape[1])
            ]
        return out

    def _check_finite(
        self, loss: torch.Tensor, epoch: int, step: int, terms: dict[str, torch.Tensor]
    ) -> None:
        bad = torch.tensor(0.0 if bool(torch.isfinite(loss.detach())) else 1.0, device=loss.device)
        if float(self.acc.reduce(bad, reduction="sum")) > 0:
            shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
            raise TrainingDivergedError(
                f"the loss became NaN/inf at epoch {epoch}, iteration {step} ({shown}) on at "
                "least one process; training stopped. The last checkpoint in "
                f"'{self.out}' is kept. Try a lower optim.lr, optim.grad_clip, or "
                "runtime.mixed_precision=no"
            )

    def _extract(
        self, records: list[ImageRecord], parts: bool = False, **loader_options: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(global [N, D], parts [N, P, D] | None, valid [N])`` of ``records`` on the training
        device, every process its shard, gathered on all
        (:func:`reid_train.extraction.extract_features`)."""
        return extract_features(self.acc, self.net, records, self.cfg, parts, **loader_options)

    def _broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """The main process's ``tensor`` on every process, on the device it was given on."""
        return broadcast_from_main(self.acc, tensor)

    def evaluate(self, epoch: int) -> dict[str, Any]:
        """mAP/CMC/mINP on query vs gallery (main process computes, every process extracts)."""
        records = list(self.dataset.query) + list(self.dataset.gallery)
        feats, _, valid = self._extract(records, what_next=LEFT_OUT_OF_EVALUATION)
        # The evaluation itself runs on the CPU as before (numpy metrics, re-ranking); the other
        # processes drop their gathered copy at once.
        feats, valid = (feats.cpu(), valid.cpu()) if self.acc.is_main_process else (None, None)
        nq = len(self.dataset.query)
        record: dict[str, Any] = {"epoch": epoch}
        if self.acc.is_main_process:
            assert feats is not None and valid is not None
            query = [r for r, ok in zip(self.dataset.query, valid[:nq].tolist(), strict=True) if ok]
            gallery = [
                r for r, ok in zip(self.dataset.gallery, valid[nq:].tolist(), strict=True) if ok
            ]
            qf, gf = feats[:nq][valid[:nq]], feats[nq:][valid[nq:]]
            if len(query) < nq or len(gallery) < len(records) - nq:
                left = {"query": nq - len(query), "gallery": len(records) - nq - len(gallery)}
                record["left_out"] = left
                self._warn(
                    f"evaluation of epoch {epoch}: {left['query']} query and {left['gallery']} "
                    "gallery images are unreadable and left out of it (the warnings above name "
                    "them); the metrics cover the remaining images"
                )
                if not query or not gallery:
                    raise BadImagesError(
                        "no readable query or gallery image is left to evaluate; fix the images"
                    )
            q_ids, g_ids = _ids(query), _ids(gallery)
            result = evaluate_features(qf, gf, q_ids[0], g_ids[0], q_ids[1], g_ids[1])
            record.update(_metrics(result))
            if self.cfg.runtime.rerank:
                reranked = evaluate_records(re_ranking_features(qf, gf), query, gallery)
                record["rerank"] = _metrics(reranked)
            if record["mAP"] > self.best_map:
                self.best_map, self.best_epoch = record["mAP"], epoch
                save_model(self.net, self.out, BEST_DIR, epoch, self.cfg, record)
            record["best_mAP"], record["best_epoch"] = self.best_map, self.best_epoch
            last = self._last_summary
            if last is not None and last.epoch == epoch:  # the labels this epoch trained on
                record["pseudo_labels"] = {
                    "clusters": last.clusters, "outliers": last.outliers, **last.quality,
                    **({"agreement": last.agreement} if last.agreement else {}),
                    **({"beta": last.beta} if last.beta else {}),
                }  # fmt: skip
            append_line(self.out / METRICS_FILE, record)
            self.report.evaluation(record)
        self.best_map = float(self._broadcast(torch.tensor([self.best_map])).item())
        self.best_epoch = int(self._broadcast(torch.tensor([self.best_epoch])).item())
        self.acc.wait_for_everyone()
        return record

    # ------------------------------------------------------------------ run folder
    def _save(self, epoch: int) -> None:
        """``last/`` (model) and ``state/`` (everything for --resume), atomically."""
        progress = Progress(epoch, self.best_map, self.best_epoch, self.trained_epochs)
        save_state(self.acc, self.net, self.out, self.cfg, progress)

    def _load_state(self) -> None:
        saved = load_state(self.acc, self.out)  # state/: put in place by _claim_run_dir
        self.start_epoch = saved.epoch + 1
        self.best_map, self.best_epoch = saved.best_map, saved.best_epoch
        self.trained_epochs = saved.trained_epochs
        self._print(f"resumed from '{self.out / STATE_DIR}' after epoch {saved.epoch}")

    def _log_epoch(self, summary: EpochSummary) -> None:
        """The epoch's line of ``history.jsonl``, its console line and TensorBoard scalars."""
        if not self.acc.is_main_process:
            return
        append_line(self.out / HISTORY_FILE, summary.__dict__)
        self.report.epoch(summary)

    # ------------------------------------------------------------------ reporting
    def _print(self, text: str) -> None:
        self.report.say(text)

    def _warn(self, text: str) -> None:
        self.report.warn(text, stacklevel=3)  # as warnings.warn(..., stacklevel=3) here


def train(
    config: TrainConfig,
    output_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Run ``config`` (see :class:`Trainer`); return one metrics record per evaluation."""
    return Trainer(config, output_dir, resume=resume, overwrite=overwrite).fit()


def _build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if o.optimizer == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum)


def _build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch schedule: linear warm-up, then ×gamma at each milestone."""
    o = cfg.optim

    def factor(epoch: int) -> float:
        decay = o.gamma ** sum(epoch >= m for m in o.milestones)
        if epoch < o.warmup_epochs:
            alpha = epoch / o.warmup_epochs
            return decay * (o.warmup_factor * (1 - alpha) + alpha)
        return decay

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _is_synthetic(name: str) -> bool:
    return name.lower().replace("-", "").replace("_", "") == "synthetic"


def _every(epoch: int, n: int) -> bool:
    """Whether epoch (0-based) ends a period of ``n`` epochs; never for ``n == 0``."""
    return n > 0 and (epoch + 1) % n == 0


def _sparse_path(setting: bool | None, n: int, device: torch.device) -> bool | None:
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


def _ground_truth_labels(pids: np.ndarray, mode: str = "ground_truth") -> np.ndarray:
    """Identities relabelled 0..K-1 (``cluster.labels: ground_truth``); ids < 0 → -1 (junk,
    treated as outliers)."""
    labels = np.full(len(pids), -1, dtype=np.int64)
    known = pids >= 0
    if not known.any():
        raise ConfigError(
            f"cluster.labels={mode} but the training split has no identity labels "
            "(every pid < 0); use cluster.labels=dbscan"
        )
    labels[known] = np.unique(pids[known], return_inverse=True)[1]
    return labels


def _compact(labels: np.ndarray) -> np.ndarray:
    """Labels >= 0 renumbered 0..K-1 in sorted order (-1 kept): the noisy labels of the images
    an epoch keeps may have lost a whole label (all its images unreadable)."""
    out = labels.copy()
    kept = out >= 0
    out[kept] = np.unique(out[kept], return_inverse=True)[1].reshape(-1)
    return out


def _ids(records: list[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([r.pid for r in records]), np.array([r.camid for r in records])


def _metrics(result: Any) -> dict[str, Any]:
    """``RankResult.to_dict()`` without the per-rank CMC list (one short line per evaluation)."""
    return {k: v for k, v in result.to_dict().items() if k != "cmc"}
