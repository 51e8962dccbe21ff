"""What a run does around its epochs, as hooks (in the spirit of fast-reid's ``HookBase`` and
Lightning's callbacks): the trainer calls every hook's :meth:`Hook.before_train`, then after each
epoch :meth:`Hook.after_epoch` in order, then :meth:`Hook.after_train`.

The default hooks, in their order (each epoch: evaluate, log, save):

* :class:`EvaluationHook`: mAP/CMC/mINP every ``runtime.eval_every`` epochs and after the last
  (and before training with ``runtime.eval_before_training``): ``metrics.jsonl``, the ``best/``
  checkpoint, the evaluation's console line and TensorBoard scalars;
* :class:`HistoryHook`: the epoch's ``history.jsonl`` line, console line and TensorBoard
  scalars; at the end, the plots (``runtime.plots``) and a warning when no epoch trained;
* :class:`CheckpointHook`: ``last/`` and ``state/`` (for ``--resume``) every
  ``runtime.save_every`` epochs and after the last.

The learning-rate step belongs to the epoch itself (a skipped epoch steps it too).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator

from reid_eval import evaluate_features, evaluate_records
from reid_eval.rerank import re_ranking_features

from .data import LEFT_OUT_OF_EVALUATION, BadImagesError, record_ids
from .epoch import EpochRecord
from .run_folder import (
    BEST_DIR,
    HISTORY_FILE,
    METRICS_FILE,
    Progress,
    append_line,
    fault_point,
    save_model,
    save_state,
)

__all__ = [
    "CheckpointHook",
    "EvaluationHook",
    "HistoryHook",
    "Hook",
    "TrainerView",
    "default_hooks",
]


class TrainerView(Protocol):
    """What a hook sees of the run (:class:`reid_train.trainer.Trainer` provides it)."""

    cfg: Any  # the run's TrainConfig
    acc: Accelerator
    out: Path  # the run folder
    net: Any  # the model, unwrapped
    dataset: Any  # the ReIDDataset
    report: Any  # the run's Reporter
    start_epoch: int
    trained_epochs: int
    best_map: float
    best_epoch: int
    evaluations: list[dict[str, Any]]

    def _extract(self, records: list[Any], parts: bool = ..., **options: Any) -> Any: ...
    def _broadcast(self, tensor: torch.Tensor) -> torch.Tensor: ...
    def _warn(self, text: str) -> None: ...


class Hook:
    """Something a run does before, between and after its epochs. Override what you need."""

    def before_train(self, trainer: TrainerView) -> None:
        """Once, before the first (or the resumed) epoch."""

    def after_epoch(self, trainer: TrainerView, record: EpochRecord) -> None:
        """After each epoch, every process (a hook that writes checks the main process)."""

    def after_train(self, trainer: TrainerView) -> None:
        """Once, after the last epoch."""


def due(epoch: int, every: int, last: bool) -> bool:
    """Whether a hook with period ``every`` (0 = at the end only) acts after ``epoch``."""
    return last or (every > 0 and (epoch + 1) % every == 0)


class EvaluationHook(Hook):
    """Query/gallery evaluation (every process extracts its shard, the main one computes)."""

    def before_train(self, trainer: TrainerView) -> None:
        if trainer.cfg.runtime.eval_before_training and trainer.start_epoch == 0:
            trainer.evaluations.append(self.evaluate(trainer, -1))

    def after_epoch(self, trainer: TrainerView, record: EpochRecord) -> None:
        last = record.epoch == trainer.cfg.optim.epochs - 1
        if due(record.epoch, trainer.cfg.runtime.eval_every, last):
            start = time.perf_counter()
            trainer.evaluations.append(self.evaluate(trainer, record.epoch, record))
            record.times["eval"] = time.perf_counter() - start

    def evaluate(
        self, trainer: TrainerView, epoch: int, trained: EpochRecord | None = None
    ) -> dict[str, Any]:
        """mAP/CMC/mINP of the current model as the ``metrics.jsonl`` line of ``epoch``; with
        ``trained``, the pseudo labels that epoch trained on are part of the line."""
        t, dataset = trainer, trainer.dataset
        records = list(dataset.query) + list(dataset.gallery)
        feats, _, valid = t._extract(records, what_next=LEFT_OUT_OF_EVALUATION)
        # The evaluation itself runs on the CPU (numpy metrics, re-ranking); the other
        # processes drop their gathered copy at once.
        feats, valid = (feats.cpu(), valid.cpu()) if t.acc.is_main_process else (None, None)
        nq = len(dataset.query)
        line: dict[str, Any] = {"epoch": epoch}
        if t.acc.is_main_process:
            assert feats is not None and valid is not None
            query = [r for r, ok in zip(dataset.query, valid[:nq].tolist(), strict=True) if ok]
            gallery = [r for r, ok in zip(dataset.gallery, valid[nq:].tolist(), strict=True) if ok]
            qf, gf = feats[:nq][valid[:nq]], feats[nq:][valid[nq:]]
            if len(query) < nq or len(gallery) < len(records) - nq:
                left = {"query": nq - len(query), "gallery": len(records) - nq - len(gallery)}
                line["left_out"] = left
                t._warn(
                    f"evaluation of epoch {epoch}: {left['query']} query and {left['gallery']} "
                    "gallery images are unreadable and left out of it (the warnings above name "
                    "them); the metrics cover the remaining images"
                )
                if not query or not gallery:
                    raise BadImagesError(
                        "no readable query or gallery image is left to evaluate; fix the images"
                    )
            q_ids, g_ids = record_ids(query), record_ids(gallery)
            line.update(_metrics(evaluate_features(qf, gf, q_ids[0], g_ids[0], q_ids[1], g_ids[1])))
            if t.cfg.runtime.rerank:
                reranked = evaluate_records(re_ranking_features(qf, gf), query, gallery)
                line["rerank"] = _metrics(reranked)
            if line["mAP"] > t.best_map:
                t.best_map, t.best_epoch = line["mAP"], epoch
                save_model(t.net, t.out, BEST_DIR, epoch, t.cfg, line)
            line["best_mAP"], line["best_epoch"] = t.best_map, t.best_epoch
            if trained is not None:  # the labels this epoch trained on
                line["pseudo_labels"] = {
                    "clusters": trained.clusters, "outliers": trained.outliers,
                    **trained.quality, **{k: v for k, v in trained.figures.items() if v},
                }  # fmt: skip
            append_line(t.out / METRICS_FILE, line)
            t.report.evaluation(line)
        t.best_map = float(t._broadcast(torch.tensor([t.best_map])).item())
        t.best_epoch = int(t._broadcast(torch.tensor([t.best_epoch])).item())
        t.acc.wait_for_everyone()
        return line


class HistoryHook(Hook):
    """``history.jsonl``, the console and TensorBoard; the plots at the end."""

    def after_epoch(self, trainer: TrainerView, record: EpochRecord) -> None:
        if trainer.acc.is_main_process:
            append_line(trainer.out / HISTORY_FILE, record.history_line())
            trainer.report.epoch(record)
        fault_point("logged", record.epoch)

    def after_train(self, trainer: TrainerView) -> None:
        trainer.report.finish(trainer.out, plots=trainer.cfg.runtime.plots)
        if trainer.trained_epochs == 0 and trainer.cfg.optim.epochs > trainer.start_epoch:
            trainer._warn(
                "no epoch trained: every epoch was skipped (no clusters, or fewer clusters than "
                "identities per batch), so the model is the initial one. Check cluster.eps / "
                "cluster.min_samples and data.batch_size / data.num_instances; history.jsonl "
                "has a note per epoch"
            )


class CheckpointHook(Hook):
    """``last/`` (the model) and ``state/`` (everything for ``--resume``), atomically."""

    def after_epoch(self, trainer: TrainerView, record: EpochRecord) -> None:
        last = record.epoch == trainer.cfg.optim.epochs - 1
        if due(record.epoch, trainer.cfg.runtime.save_every, last):
            t = trainer
            progress = Progress(record.epoch, t.best_map, t.best_epoch, t.trained_epochs)
            save_state(t.acc, t.net, t.out, t.cfg, progress)


def default_hooks() -> list[Hook]:
    """Evaluation, history, checkpoints: the order the run folder's files are written in."""
    return [EvaluationHook(), HistoryHook(), CheckpointHook()]


def _metrics(result: Any) -> dict[str, Any]:
    """``RankResult.to_dict()`` without the per-rank CMC list (one short line per evaluation)."""
    return {k: v for k, v in result.to_dict().items() if k != "cmc"}
