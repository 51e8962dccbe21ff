"""The trainer: one epoch loop for every method (baseline, PPLR, PPLR+camera, DCLS, Cluster
Contrast, and any registered recipe), on Accelerate.

An epoch (docs/design.md, "One training epoch"), recorded in one
:class:`~reid_train.epoch.EpochRecord`:

1. every process extracts the global (and part) features of its shard of the training images;
   the shards are gathered on every process, where they stay on the training device
   (``Accelerator.device``: the GPU of a GPU run);
2. the main process makes the pseudo labels (:mod:`reid_train.pseudo_labels`: DBSCAN on the
   Jaccard distance, or the ground truth) and runs the method's
   :meth:`~reid_train.methods.Method.on_epoch_start` (PPLR's cross agreement, reusing the
   clustering's ranked list where it ranked the same features; DCLS's β), both on that
   device; the labels and the method's per-image tensors are broadcast;
3. every process writes the L2-normalised cluster centroids into the first K rows of the
   fixed-capacity classifiers (``ReIDModel.load_centroids``, the official PPLR scheme: the
   parameters stay the same objects, so Adam's state and DDP stay valid; not for a method
   without classifiers) and runs the method's ``setup_epoch`` (PPLR+camera's proxies, Cluster
   Contrast's memory);
4. ``iters`` P×K batches per process (outliers never sampled; different batches per process):
   forward, the method's ``training_step`` (its loss terms, the shared soft triplet among
   them), backward, step, the method's ``after_step``;
5. the hooks (:mod:`reid_train.hooks`): evaluation every ``eval_every`` epochs (``best/``,
   ``metrics.jsonl``), the epoch's ``history.jsonl`` line, ``last/`` and ``state/`` for
   ``--resume`` (written to a temporary folder and renamed).

Beside it: :mod:`reid_train.distributed` (sharded extraction, gathering, broadcasts),
:mod:`reid_train.run_folder` (the run folder's files and rules),
:mod:`reid_train.reporting` (console, warnings, TensorBoard, plots).
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from tqdm.auto import tqdm

from reid_backbones import ReIDModel, build_model
from reid_clustering import camera_debiased, cluster_centroids, cluster_statistics
from reid_eval import (
    ImageRecord,
    ReIDDataset,
    load_dataset,
    make_synthetic_dataset,
)
from reid_eval.datasets import SyntheticConfig, synthetic_families, synthetic_mismatch

from .config import ConfigError, TrainConfig, config_to_dict, split_batch
from .data import BadImagesError, build_train_loader, record_ids
from .distributed import broadcast_from_main, broadcast_tensors, extract_features
from .epoch import EpochRecord
from .hooks import EvaluationHook, Hook, default_hooks, due
from .methods import Method
from .methods import get as get_method
from .pseudo_labels import PseudoLabeler, ground_truth_labels, training_set_problems
from .reporting import Reporter, tracker_names
from .run_folder import (
    LOG_FILE,
    STATE_DIR,
    RunDirError,
    RunLock,
    check_new_run,
    claim_run_dir,
    load_state,
    process_hosts,
)
from .sampler import TooFewIdentitiesError

# camera_debiased lives in reid_clustering; re-exported here, where it used to be defined.
__all__ = ["EpochRecord", "Trainer", "TrainingDivergedError", "camera_debiased", "train"]


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


class Trainer:
    """Runs a :class:`~reid_train.config.TrainConfig` to the end (see the module docstring).

    Args:
        config: the run; validated here.
        output_dir: run folder (default ``config.runtime.output_dir``).
        resume: continue from ``output_dir/state`` (model, optimizer, scheduler, epoch, best).
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
        self.resume = resume
        self.acc = accelerator or Accelerator(
            mixed_precision=config.runtime.mixed_precision, cpu=not torch.cuda.is_available()
        )
        self.report = Reporter(self.acc.is_main_process)  # console, warnings, trackers
        trackers = tracker_names(config.runtime.tensorboard, config.runtime.log_with)
        batch = split_batch(config, self.acc.num_processes)  # data.global_batch_size
        self._lock: RunLock | None = None
        self.hooks = default_hooks() if hooks is None else hooks
        self.evaluations: list[dict[str, Any]] = []  # one metrics line per evaluation
        # Nothing is written before these checks pass (run_dir module docstring).
        self._on_main(lambda: None if resume else check_new_run(self.out, overwrite))
        if config.runtime.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        set_seed(config.runtime.seed)
        self.dataset: ReIDDataset = _load_dataset(config, self.acc, self._print, self._warn)
        self.train_records: list[ImageRecord] = list(self.dataset.train)
        self.train_pids, self.train_camids = record_ids(self.train_records)
        _check_training_split(config, self.method, self.train_pids)
        capacity = config.model.max_clusters or (
            len(self.train_records) // config.cluster.min_samples + 1
        )
        if not self.method.uses_classifiers:
            capacity = 0  # no classifiers: the method classifies against its own state
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
            hosts = process_hosts(self.acc)  # a collective: every process, for the lock
            self._on_main(lambda: self._claim_run_dir(overwrite, hosts))
            self.report.open_log(self.out / LOG_FILE)  # train.log: every line from here on
            self._print(_summary(config, self.out, self.acc))
            self._print(batch)
            if resume:
                self._load_state()
            self.acc.wait_for_everyone()
        except BaseException:
            self.close()
            raise
        self.report.open_trackers(trackers, self.out, config_to_dict(config))
        self.labeler = PseudoLabeler(
            config, self.train_pids, self.train_camids, self._families, self._print, self._warn
        )

    def _on_main(self, job: Any) -> Any:
        return _on_main(self.acc, job)

    def _claim_run_dir(self, overwrite: bool, hosts: list[str]) -> None:
        """Main process: lock the run folder (with every node's host), then prepare it for a
        new or a resumed run."""
        self._lock = claim_run_dir(
            self.out,
            self.cfg,
            resume=self.resume,
            overwrite=overwrite,
            say=self._print,
            hosts=hosts,
        )

    def close(self) -> None:
        """Release the run folder's lock (done by :meth:`fit` when it ends, however it ends)."""
        self.report.close_log()
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
        for hook in self.hooks:
            hook.before_train(self)
        for epoch in range(self.start_epoch, self.cfg.optim.epochs):
            record = self.run_epoch(epoch)
            for hook in self.hooks:
                hook.after_epoch(self, record)
        for hook in self.hooks:
            hook.after_train(self)
        return self.evaluations

    # ------------------------------------------------------------------ epoch
    def run_epoch(self, epoch: int) -> EpochRecord:
        """Extract, make pseudo labels, re-initialise the classifiers, train ``iters`` batches.

        The extracted features live on the training device from extraction until the
        classifiers and the method's per-epoch state are set up; they are released before the
        batches.
        """
        cfg, device = self.cfg, self.acc.device
        record = EpochRecord(
            epoch=epoch, device=device, gather=self.acc.gather, lr=self.scheduler.get_last_lr()[0]
        )
        record.camids = self.train_camids
        start = time.perf_counter()
        record.feats, record.parts, record.valid = self._extract(
            self.train_records, parts=self._needs_parts
        )
        record.times["extract"] = time.perf_counter() - start

        start = time.perf_counter()
        self._pseudo_labels(record)
        record.times["cluster"] = time.perf_counter() - start

        start = time.perf_counter()
        k, batch_ids = record.num_clusters, cfg.data.batch_size // cfg.data.num_instances
        if k == 0:
            record.note = "every sample is an outlier: epoch skipped"
        elif k < batch_ids:
            record.note = f"{k} clusters < {batch_ids} identities per batch: epoch skipped"
        else:
            try:
                assert record.labels is not None
                loader = self._train_loader(epoch, record.labels)
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
        with warnings.catch_warnings():  # a skipped epoch steps the schedule without training
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.scheduler.step()
        record.times["train"] = time.perf_counter() - start
        return record

    @property
    def _needs_parts(self) -> bool:
        return self.method.needs_parts(self.net.num_parts)

    def _pseudo_labels(self, record: EpochRecord) -> None:
        """The epoch's labels, the method's per-image tensors and figures (main process, then
        broadcast), and the labels' statistics; every step on the features' device
        (:mod:`reid_train.pseudo_labels` has the memory bound)."""
        feats, valid = record.feats, record.valid
        assert feats is not None and valid is not None
        _check_readable(valid, self.train_records)  # every process: all raise together
        n, device = feats.shape[0], feats.device
        labels = torch.full((n,), -1, dtype=torch.int64)  # on the CPU: the sampler reads them
        tensors: dict[str, torch.Tensor] = {}
        if self.acc.is_main_process:
            keep = valid.nonzero().flatten()
            found, record.clustering = self.labeler.labels(feats, keep)
            labels[keep.cpu()] = torch.from_numpy(found)
            record.labels = labels
            tensors = self.method.on_epoch_start(record)
            record.clustering = None  # its normalised copy of the features: not needed now
        record.labels = self._broadcast(labels)
        record.tensors = broadcast_tensors(self.acc, tensors, device)
        stats = cluster_statistics(record.labels)
        record.clusters, record.outliers = stats.num_clusters, stats.num_outliers
        record.num_clusters = int(record.labels.max()) + 1 if record.labels.numel() else 0
        if self.acc.is_main_process:
            record.quality = self.labeler.quality(record.labels)

    def _families(self) -> dict[int, int] | None:
        """The synthetic dataset's look-alike families (``noisy_ground_truth``), else None."""
        if not _is_synthetic(self.cfg.data.dataset):
            return None
        return synthetic_families(self.dataset.root)

    def _train_loader(self, epoch: int, labels: torch.Tensor) -> Any:
        """This process's P×K batches of the epoch (raises :class:`TooFewIdentitiesError`)."""
        cfg = self.cfg
        return build_train_loader(
            self.train_records, labels.numpy(), cfg.data, iters=cfg.optim.iters,
            seed=cfg.runtime.seed, epoch=epoch, num_replicas=self.acc.num_processes,
            rank=self.acc.process_index, max_bad_images=cfg.runtime.max_bad_images,
            device=self.acc.device,
        )  # fmt: skip

    def _train_epoch(self, loader: Any, record: EpochRecord) -> None:
        cfg, device = self.cfg, self.acc.device
        totals: dict[str, float] = defaultdict(float)
        digest, started = 0, time.perf_counter()
        self.model.train()
        bar = tqdm(
            loader,
            desc=f"epoch {record.epoch}",
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
                terms = self.method.training_step(out, targets, batch, record)
            loss = sum(terms.values())
            _check_finite(self.acc, loss, record.epoch, step, terms, self.out)
            self.optimizer.zero_grad(set_to_none=True)
            self.acc.backward(loss)
            if cfg.optim.grad_clip is not None:
                self.acc.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            self.optimizer.step()
            self.method.after_step(out, targets, batch, record)
            for name, value in terms.items():
                totals[name] += float(value.detach())
            if due(step, cfg.runtime.log_every, last=False):
                means = {k: v / (step + 1) for k, v in totals.items()}
                bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()})
                seen = (step + 1) * cfg.data.batch_size * self.acc.num_processes
                self.report.iteration(
                    record.epoch, step, cfg.optim.iters, means, record.lr,
                    seen / max(time.perf_counter() - started, 1e-9),
                )  # fmt: skip
        record.losses = {k: v / cfg.optim.iters for k, v in totals.items()}
        record.batch_digests = self.acc.gather(torch.tensor([digest], device=device)).tolist()

    # ------------------------------------------------------------------ helpers
    def _extract(
        self, records: list[ImageRecord], parts: bool = False, **loader_options: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(global [N, D], parts [N, P, D] | None, valid [N])`` of ``records`` on the training
        device, every process its shard, gathered on all
        (:func:`reid_train.distributed.extract_features`)."""
        return extract_features(self.acc, self.net, records, self.cfg, parts, **loader_options)

    def _broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """The main process's ``tensor`` on every process, on the device it was given on."""
        return broadcast_from_main(self.acc, tensor)

    def evaluate(self, epoch: int) -> dict[str, Any]:
        """mAP/CMC/mINP of the current model, written as the ``metrics.jsonl`` line of
        ``epoch`` (:class:`reid_train.hooks.EvaluationHook`)."""
        return EvaluationHook().evaluate(self, epoch)

    def _load_state(self) -> None:
        saved = load_state(self.acc, self.out)  # state/: put in place by _claim_run_dir
        self.start_epoch = saved.epoch + 1
        self.best_map, self.best_epoch = saved.best_map, saved.best_epoch
        self.trained_epochs = saved.trained_epochs
        self._print(f"resumed from '{self.out / STATE_DIR}' after epoch {saved.epoch}")

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


def _load_centroids(net: ReIDModel, record: EpochRecord) -> None:
    """Cluster means of the features (on their device, :func:`reid_clustering.
    cluster_centroids`) into the classifiers' first K rows (every process, from the
    gathered features)."""
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


def _check_training_split(cfg: TrainConfig, method: Method, pids: np.ndarray) -> None:
    """Refuse, before the run folder exists, a training split that the label source or the
    method cannot use (no identities for a fixed label source; fewer images than a k)."""
    if cfg.cluster.labels != "dbscan":
        ground_truth_labels(pids, cfg.cluster.labels)
    problems = [*training_set_problems(cfg, pids), *method.training_set_problems(len(pids))]
    if problems:
        raise ConfigError("the training split is too small:\n  - " + "\n  - ".join(problems))


def _check_readable(valid: torch.Tensor, records: list[ImageRecord]) -> None:
    """Refuse an epoch none of whose training images could be read."""
    if not bool(valid.any()):
        examples = ", ".join(f"'{r.path}'" for r in records[:3])
        raise BadImagesError(
            f"none of the {valid.numel()} training images could be read (e.g. {examples}): "
            "they are corrupt or not images; check data.data_root (replace or delete them)"
        )


def _summary(cfg: TrainConfig, out: Path, acc: Accelerator) -> str:
    """The first line of a run: what trains, on what, for how long, where."""
    d, o = cfg.data, cfg.optim
    return (
        f"reid-train: method {cfg.method.name} ({cfg.model.arch}, {cfg.model.backbone}) on "
        f"{d.dataset} '{d.data_root}' at {d.height}x{d.width}; {o.epochs} epochs x {o.iters} "
        f"iterations, {o.optimizer} lr {o.lr:g}; seed {cfg.runtime.seed}; {acc.num_processes} "
        f"process(es) on {acc.device}; run folder '{out}'"
    )


def _on_main(acc: Accelerator, job: Any) -> Any:
    """Run ``job`` on the main process; a :class:`RunDirError` or :class:`ConfigError` it raises
    is raised on every process (the others would otherwise wait forever)."""
    failure: list[Any] = [None]
    result = None
    if acc.is_main_process:
        try:
            result = job()
        except (RunDirError, ConfigError) as e:
            failure = [(type(e).__name__, str(e))]
    if acc.num_processes > 1:
        broadcast_object_list(failure, from_process=0)
    if failure[0] is not None:
        kind, message = failure[0]
        raise (ConfigError if kind == "ConfigError" else RunDirError)(message)
    return result


def _check_finite(
    acc: Accelerator,
    loss: torch.Tensor,
    epoch: int,
    step: int,
    terms: dict[str, torch.Tensor],
    out: Path,
) -> None:
    """Stop every process when the loss is NaN/inf on any of them."""
    bad = torch.tensor(0.0 if bool(torch.isfinite(loss.detach())) else 1.0, device=loss.device)
    if float(acc.reduce(bad, reduction="sum")) > 0:
        shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        raise TrainingDivergedError(
            f"the loss became NaN/inf at epoch {epoch}, iteration {step} ({shown}) on at "
            f"least one process; training stopped. The last checkpoint in '{out}' is kept. "
            "Try a lower optim.lr, optim.grad_clip, or runtime.mixed_precision=no"
        )


def _load_dataset(cfg: TrainConfig, acc: Accelerator, say: Any, warn: Any) -> ReIDDataset:
    """The configured dataset; the built-in synthetic one is generated where it is missing."""
    d = cfg.data
    root = Path(d.data_root)
    if _is_synthetic(d.dataset):  # every process enters (a barrier), the main one writes
        with acc.main_process_first():
            if acc.is_main_process and not root.exists():
                say(
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
            elif acc.is_main_process and (root / "synthetic.json").is_file():
                wanted = SyntheticConfig(**d.synthetic_options)
                differs = synthetic_mismatch(root, d.synthetic_seed, wanted)
                if differs is not None:  # e.g. generated by an earlier version's defaults
                    warn(
                        f"data.data_root '{root}' holds a synthetic dataset that is not the "
                        f"one data.synthetic_seed / data.synthetic_options describe ("
                        f"{differs}); training on what is there. For the configured one, "
                        f"remove the folder (it is generated again) or point "
                        f"data.data_root at a new folder"
                    )
    return load_dataset(d.dataset, d.data_root, **d.dataset_options)


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
