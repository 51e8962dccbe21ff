"""The trainer: setup, the epoch and batch loops, and the hook calls; the same epoch for every
method (baseline, PPLR, PPLR+camera, DCLS, Cluster Contrast and any registered recipe), on
Accelerate. An epoch (docs/design.md, "One training epoch"), recorded in one
:class:`~reid_train.epoch.EpochRecord`:

1. every process extracts its shard of the training images' features; the shards are gathered
   on every process, on the training device (:mod:`reid_train.distributed`);
2. the main process makes the pseudo labels (:mod:`reid_train.pseudo_labels`) and runs the
   method's ``on_epoch_start`` (PPLR's cross agreement, DCLS's β); labels and per-image tensors
   are broadcast;
3. every process loads the cluster centroids into the fixed-capacity classifiers (a method with
   classifiers) and runs the method's ``setup_epoch`` (camera proxies, a centroid memory);
4. ``iters`` P×K batches per process: forward, the method's ``training_step`` (every loss term),
   backward, step, the method's ``after_step``; then the learning-rate step;
5. the hooks (:mod:`reid_train.hooks`): evaluation, ``history.jsonl``, checkpoints.

What the trainer is built from (dataset, model, optimizer, schedule) comes from
:mod:`reid_train.build`; the run folder's rules from :mod:`reid_train.run_folder`; console,
warnings and trackers from :mod:`reid_train.reporting`.
"""

from __future__ import annotations

import os
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from reid_backbones import ReIDModel
from reid_clustering import cluster_centroids
from reid_eval import ImageRecord, ReIDDataset

from . import build
from .config import TrainConfig, config_to_dict, split_batch
from .data import build_train_loader, record_ids
from .distributed import broadcast_from_main, broadcast_tensors, extract_features, on_main
from .epoch import EpochRecord
from .hooks import EvaluationHook, Hook, default_hooks
from .methods import Method
from .methods import get as get_method
from .pseudo_labels import PseudoLabeler, check_readable, check_training_split
from .reporting import Reporter, tracker_names
from .run_folder import (
    LOG_FILE,
    STATE_DIR,
    RunLock,
    check_new_run,
    claim_run_dir,
    load_state,
    process_hosts,
)
from .sampler import TooFewIdentitiesError

__all__ = ["Trainer", "TrainingDivergedError", "train"]


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


class Trainer:
    """Runs a :class:`~reid_train.config.TrainConfig` to the end (see the module docstring).

    Args:
        config: the run; validated here.
        output_dir: run folder (default ``config.runtime.output_dir``).
        resume: continue from ``output_dir/state`` (model, optimizer, scheduler, epoch, best).
        overwrite: replace an existing run folder's records.
        accelerator: an existing :class:`accelerate.Accelerator` (default: one built from the
            config; on a machine without CUDA it runs on the CPU, with gloo for several ranks).
        hooks: what the run does around its epochs (default :func:`reid_train.hooks.
            default_hooks`: evaluation, history, checkpoints).
    """

    def __init__(
        self,
        config: TrainConfig,
        output_dir: str | os.PathLike[str] | None = None,
        *,
        resume: bool = False,
        overwrite: bool = False,
        accelerator: Accelerator | None = None,
        hooks: list[Hook] | None = None,
    ) -> None:
        config.validate()
        self.cfg = config
        self.method: Method = get_method(config.method.name)(config)  # the recipe (methods/)
        self.out = Path(output_dir or config.runtime.output_dir)
        self.acc = accelerator or Accelerator(
            mixed_precision=config.runtime.mixed_precision, cpu=not torch.cuda.is_available()
        )
        self.report = Reporter(self.acc.is_main_process)  # console, warnings, trackers
        trackers = tracker_names(config.runtime.tensorboard, config.runtime.log_with)
        batch = split_batch(config, self.acc.num_processes)  # data.global_batch_size
        self._lock: RunLock | None = None
        self.hooks = default_hooks() if hooks is None else hooks
        self.evaluations: list[dict[str, Any]] = []  # one metrics line per evaluation
        # Nothing is written before these checks pass (run_folder module docstring).
        on_main(self.acc, lambda: None if resume else check_new_run(self.out, overwrite))
        if config.runtime.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        set_seed(config.runtime.seed)
        say, warn = self._print, self._warn
        self.dataset: ReIDDataset = build.load_run_dataset(config, self.acc, say, warn)
        self.train_records: list[ImageRecord] = list(self.dataset.train)
        self.train_pids, self.train_camids = record_ids(self.train_records)
        method_problems = self.method.training_set_problems(len(self.train_pids))
        check_training_split(config, self.train_pids, method_problems)
        model = build.build_reid_model(
            config, len(self.train_records), self.method.uses_classifiers
        )
        optimizer = build.build_optimizer(model, config)
        self.scheduler = build.build_scheduler(optimizer, config)
        self.model, self.optimizer = self.acc.prepare(model, optimizer)
        self.acc.register_for_checkpointing(self.scheduler)
        self.start_epoch, self.best_map, self.best_epoch, self.trained_epochs = 0, -1.0, -1, 0
        try:
            hosts = process_hosts(self.acc)  # a collective: every process, for the lock
            self._lock = on_main(self.acc, lambda: claim_run_dir(
                self.out, config, resume=resume, overwrite=overwrite, say=self._print, hosts=hosts
            ))  # fmt: skip
            self.report.open_log(self.out / LOG_FILE)  # train.log: every line from here on
            self._print(build.run_summary(config, self.out, self.acc))
            self._print(batch)
            if resume:  # state/: put in place by claim_run_dir
                saved = load_state(self.acc, self.out)
                self.start_epoch, self.trained_epochs = saved.epoch + 1, saved.trained_epochs
                self.best_map, self.best_epoch = saved.best_map, saved.best_epoch
                self._print(f"resumed from '{self.out / STATE_DIR}' after epoch {saved.epoch}")
            self.acc.wait_for_everyone()
        except BaseException:
            self.close()
            raise
        self.report.open_trackers(trackers, self.out, config_to_dict(config))
        families = partial(build.dataset_families, config, self.dataset)
        self.labeler = PseudoLabeler(
            config, self.train_pids, self.train_camids, families, self._print, self._warn
        )

    def close(self) -> None:
        """Release the run folder's lock (done by :meth:`fit` when it ends, however it ends)."""
        self.report.close_log()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def net(self) -> ReIDModel:
        """The model without its distributed wrapper."""
        return self.acc.unwrap_model(self.model)

    def fit(self) -> list[dict[str, Any]]:
        """Train from the start (or the resumed) epoch to ``optim.epochs``; return the metrics.
        The run folder's lock is released when this returns or raises."""
        try:
            for hook in self.hooks:
                hook.before_train(self)
            for epoch in range(self.start_epoch, self.cfg.optim.epochs):
                record = self.run_epoch(epoch)
                for hook in self.hooks:
                    hook.after_epoch(self, record)
            for hook in self.hooks:
                hook.after_train(self)
            return self.evaluations
        finally:
            self.close()

    def run_epoch(self, epoch: int) -> EpochRecord:
        """Extract, make pseudo labels, set up the classifiers and the method, train ``iters``
        batches, step the schedule. The features are released before the batches."""
        cfg, device = self.cfg, self.acc.device
        lr = self.scheduler.get_last_lr()[0]
        record = EpochRecord(epoch=epoch, device=device, gather=self.acc.gather, lr=lr)
        record.camids = self.train_camids
        with record.timed("extract"):
            parts = self.method.needs_parts(self.net.num_parts)
            record.feats, record.parts, record.valid = self._extract(self.train_records, parts)
        with record.timed("cluster"):
            self._pseudo_labels(record)
        with record.timed("train"):
            record.note = record.skip_reason(cfg.data.batch_size // cfg.data.num_instances)
            if not record.note:
                try:
                    assert record.labels is not None
                    loader = build_train_loader(
                        self.train_records, record.labels.numpy(), cfg.data,
                        iters=cfg.optim.iters, seed=cfg.runtime.seed, epoch=epoch,
                        num_replicas=self.acc.num_processes, rank=self.acc.process_index,
                        max_bad_images=cfg.runtime.max_bad_images, device=device,
                    )  # fmt: skip
                    if self.method.uses_classifiers:
                        _load_centroids(self.net, record)
                    record.tensors = {name: t.to(device) for name, t in record.tensors.items()}
                    self.method.setup_epoch(record)
                    record.release_features()  # the batches never read them: free the memory
                    self._train_epoch(loader, record)
                    record.trained = True
                    self.trained_epochs += 1
                except TooFewIdentitiesError as e:
                    record.note = f"epoch skipped: {e}"
            record.release_features()
            if record.note:
                self._warn(f"epoch {epoch}: {record.note}")
            with warnings.catch_warnings():  # a skipped epoch steps the schedule untrained
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                self.scheduler.step()
        return record

    def _pseudo_labels(self, record: EpochRecord) -> None:
        """The epoch's labels, the method's per-image tensors and figures (main process, then
        broadcast), and the labels' statistics; every step on the features' device
        (:mod:`reid_train.pseudo_labels` has the memory bound)."""
        feats, valid = record.feats, record.valid
        assert feats is not None and valid is not None
        check_readable(valid, self.train_records)  # every process: all raise together
        labels = torch.full((feats.shape[0],), -1, dtype=torch.int64)  # CPU: the sampler's
        tensors: dict[str, torch.Tensor] = {}
        if self.acc.is_main_process:
            labels, record.clustering = self.labeler.epoch_labels(feats, valid)
            record.labels = labels
            tensors = self.method.on_epoch_start(record)
            record.clustering = None  # its normalised copy of the features: not needed now
        record.set_labels(self._broadcast(labels))
        record.tensors = broadcast_tensors(self.acc, tensors, feats.device)
        if self.acc.is_main_process:
            record.quality = self.labeler.quality(record.labels)

    def _train_epoch(self, loader: Any, record: EpochRecord) -> None:
        cfg, device, digest = self.cfg, self.acc.device, 0
        self.model.train()
        progress = self.report.batches(
            loader, record.epoch, cfg.optim.iters, cfg.runtime.log_every,
            cfg.data.batch_size * self.acc.num_processes,
        )  # fmt: skip
        for step, batch in enumerate(progress):
            images = batch["image"].to(device, non_blocking=True)
            if cfg.runtime.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = batch["label"].to(device)
            digest = (digest + int((batch["index"] * (step + 1)).sum())) % 1_000_000_007
            with self.acc.autocast():
                out = self.model(images)
                terms = self.method.training_step(out, targets, batch, record)
            loss = sum(terms.values())
            _check_finite(self.acc, loss, record.epoch, step, terms, self.out)
            self.optimizer.zero_grad(set_to_none=True)
            self.acc.backward(loss)
            if cfg.optim.grad_clip is not None:
                self.acc.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            self.optimizer.step()
            self.method.after_step(out, targets, batch, record)
            progress.add(step, terms, record.lr)
        record.losses = progress.means()
        record.batch_digests = self.acc.gather(torch.tensor([digest], device=device)).tolist()

    def _extract(
        self, records: list[ImageRecord], parts: bool = False, **loader_options: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(global [N, D], parts [N, P, D] | None, valid [N])`` of ``records`` on the training
        device, every process its shard, gathered on all."""
        return extract_features(self.acc, self.net, records, self.cfg, parts, **loader_options)

    def _broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """The main process's ``tensor`` on every process, on the device it was given on."""
        return broadcast_from_main(self.acc, tensor)

    def evaluate(self, epoch: int) -> dict[str, Any]:
        """mAP/CMC/mINP of the current model, written as the ``metrics.jsonl`` line of
        ``epoch`` (:class:`reid_train.hooks.EvaluationHook`)."""
        return EvaluationHook().evaluate(self, epoch)

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


def _load_centroids(net: ReIDModel, record: EpochRecord) -> None:
    """Cluster means of the features (on their device, :func:`reid_clustering.
    cluster_centroids`) into the classifiers' first K rows (every process, from the gathered
    features; ``ReIDModel.load_centroids``, the official PPLR scheme)."""
    feats, parts, labels, k = record.feats, record.parts, record.labels, record.num_clusters
    assert feats is not None and labels is not None
    if k > net.classifier.out_features:
        raise RuntimeError(
            f"{k} clusters exceed the classifier capacity ({net.classifier.out_features}"
            " rows); set model.max_clusters higher"
        )
    p = None
    if net.num_parts > 0:
        assert parts is not None
        p = cluster_centroids(parts, labels, k)
    net.load_centroids(cluster_centroids(feats, labels, k), p)


def _check_finite(
    acc: Accelerator, loss: torch.Tensor, epoch: int, step: int, terms: dict[str, torch.Tensor],
    out: Path,
) -> None:  # fmt: skip
    """Stop every process when the loss is NaN/inf on any of them."""
    bad = torch.tensor(0.0 if bool(torch.isfinite(loss.detach())) else 1.0, device=loss.device)
    if float(acc.reduce(bad, reduction="sum")) > 0:
        shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        raise TrainingDivergedError(
            f"the loss became NaN/inf at epoch {epoch}, iteration {step} ({shown}) on at "
            f"least one process; training stopped. The last checkpoint in '{out}' is kept. "
            "Try a lower optim.lr, optim.grad_clip, or runtime.mixed_precision=no"
        )
