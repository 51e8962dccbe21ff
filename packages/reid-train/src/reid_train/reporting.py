"""What a run tells its user: console lines, warnings, the scalars of its experiment trackers
(TensorBoard, W&B, MLflow, ... through Accelerate's tracker classes) and the end-of-run plots.
Only the main process reports; on the others every call does nothing.

The files of the run folder (``history.jsonl``, ``metrics.jsonl``, checkpoints) are written by
:mod:`reid_train.run_folder`; this module only formats and shows.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from . import registry
from .config import ConfigError
from .hooks import due
from .run_folder import HISTORY_FILE

if TYPE_CHECKING:
    import torch

    from .epoch import EpochRecord

__all__ = [
    "LOGGER",
    "BatchProgress",
    "Reporter",
    "epoch_line",
    "epoch_scalars",
    "evaluation_line",
    "tracker_names",
]

#: The run's logger: ``train.log`` in the run folder gets every console line, warning and
#: iteration line (main process).
LOGGER = logging.getLogger("reid_train")


#: The pip requirement that provides each tracker of ``runtime.log_with``.
_TRACKER_PACKAGES = {"tensorboard": '"reid-train[tensorboard]"', "comet_ml": "comet-ml"}


class Reporter:
    """The console, warnings and experiment trackers of one run.

    Args:
        is_main: whether this is the main process (the others report nothing).
    """

    def __init__(self, is_main: bool) -> None:
        self.is_main = is_main
        #: The open trackers (``accelerate.tracking.GeneralTracker`` instances), by name.
        self.trackers: dict[str, Any] = {}
        self._log: logging.Handler | None = None

    def open_log(self, path: Path) -> None:
        """Append every line from now on to ``path`` (``train.log``), with a time stamp."""
        if not self.is_main or self._log is not None:
            return
        self._log = logging.FileHandler(path, mode="a", encoding="utf-8")
        self._log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        LOGGER.addHandler(self._log)
        LOGGER.setLevel(logging.INFO)

    def close_log(self) -> None:
        if self._log is not None:
            LOGGER.removeHandler(self._log)
            self._log.close()
            self._log = None

    def say(self, text: str) -> None:
        """One console line (through tqdm, so that it does not break a progress bar), logged."""
        if self.is_main:
            tqdm.write(text)
            LOGGER.info(text)

    def warn(self, text: str, stacklevel: int = 2) -> None:
        """A :class:`RuntimeWarning`, attributed ``stacklevel`` frames up from the caller of
        this method (as :func:`warnings.warn` counts from its own caller), logged."""
        if self.is_main:
            warnings.warn(text, RuntimeWarning, stacklevel=stacklevel + 1)
            LOGGER.warning(text)

    def batches(
        self, loader: Iterable[Any], epoch: int, iters: int, log_every: int, batch_images: int
    ) -> BatchProgress:
        """The console of an epoch's batch loop over ``loader`` (:class:`BatchProgress`);
        ``batch_images``: the images of one step over every process."""
        return BatchProgress(self, loader, epoch, iters, log_every, batch_images)

    def iteration(self, epoch: int, step: int, iters: int, means: dict[str, float], lr: float,
                  images_per_s: float) -> None:  # fmt: skip
        """The running mean losses every ``runtime.log_every`` iterations: to ``train.log``,
        and to the console too when it is no terminal (no progress bar: a batch job)."""
        if not self.is_main:
            return
        losses = "  ".join(f"{k} {v:.3f}" for k, v in means.items())
        text = (
            f"epoch {epoch} iter {step + 1}/{iters}: {losses} | lr {lr:.2e} | "
            f"{images_per_s:.1f} images/s"
        )
        LOGGER.info(text)
        if not sys.stdout.isatty():
            print(text, flush=True)

    def open_trackers(self, names: list[str], run_dir: Path, config: dict[str, Any]) -> None:
        """Start the trackers ``names`` (:func:`tracker_names`) and give each the resolved
        ``config`` (nested sections, flattened to ``section.key``). A tracker that writes files
        writes them to ``run_dir/<name>``; the others log to project ``reid-train`` under the
        run folder's name."""
        if not self.is_main:
            return
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        flat = {
            f"{section}.{key}": value if isinstance(value, (bool, int, float, str)) else str(value)
            for section, values in config.items()
            for key, value in values.items()
        }
        for name in names:
            cls = LOGGER_TYPE_TO_CLASS[name]
            if cls.requires_logging_directory:
                tracker = cls(name, run_dir)  # run_dir/<name>
            else:
                tracker = cls("reid-train", **_RUN_NAME_KWARGS.get(name, dict)(run_dir.name))
            tracker.start()
            tracker.store_init_configuration(flat)
            self.trackers[name] = tracker

    def _log_scalars(self, scalars: dict[str, float], step: int) -> None:
        for tracker in self.trackers.values():
            tracker.log(scalars, step=step)

    def epoch(self, summary: EpochRecord) -> None:
        """The epoch's console line and its tracker scalars."""
        if not self.is_main:
            return
        self.say(epoch_line(summary))
        self._log_scalars(epoch_scalars(summary), summary.epoch)

    def evaluation(self, record: dict[str, Any]) -> None:
        """An evaluation's tracker scalars and console line (``record``: a line of
        ``metrics.jsonl``, with ``best_mAP`` and ``best_epoch``)."""
        if not self.is_main:
            return
        scalars = {f"eval/{k}": record[k] for k in ("mAP", "rank1", "rank5", "rank10", "mINP")
                   if k in record}  # fmt: skip
        self._log_scalars(scalars, record["epoch"])
        self.say(evaluation_line(record))

    def finish(self, run_dir: Path, plots: bool) -> None:
        """Close the trackers; draw the run's plots (``runtime.plots``) when the run has a
        ``history.jsonl``."""
        for tracker in self.trackers.values():
            tracker.finish()
        self.trackers = {}
        if plots and self.is_main and (run_dir / HISTORY_FILE).exists():
            from .plots import plot_run

            plot_run(run_dir)


#: How a tracker that writes no files is told the run's name (the run folder's).
_RUN_NAME_KWARGS: dict[str, Any] = {
    "wandb": lambda name: {"name": name},
    "mlflow": lambda name: {"run_name": name},
}


class BatchProgress:
    """An epoch's batch loop as its user sees it: a progress bar (main process, on a terminal)
    with the running mean of each loss term, and every ``log_every`` iterations the line of
    :meth:`Reporter.iteration`. Iterate over it for the batches; :meth:`add` each step's terms;
    :meth:`means` gives the epoch's mean of each term over its ``iters`` iterations."""

    def __init__(
        self, report: Reporter, loader: Iterable[Any], epoch: int, iters: int, log_every: int,
        batch_images: int,
    ) -> None:  # fmt: skip
        hidden = None if report.is_main else True  # tqdm: None = shown on a terminal
        self.bar = tqdm(loader, desc=f"epoch {epoch}", disable=hidden, leave=False)
        self.report, self.epoch, self.iters, self.every = report, epoch, iters, log_every
        self.batch_images = batch_images
        self.totals: dict[str, float] = defaultdict(float)
        self.started = time.perf_counter()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.bar)

    def add(self, step: int, terms: dict[str, torch.Tensor], lr: float) -> None:
        """Step ``step``'s loss terms; the bar and, when due, the log line."""
        for name, value in terms.items():
            self.totals[name] += float(value.detach())
        if due(step, self.every, last=False):
            means = {k: v / (step + 1) for k, v in self.totals.items()}
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()})
            seen = (step + 1) * self.batch_images
            speed = seen / max(time.perf_counter() - self.started, 1e-9)
            self.report.iteration(self.epoch, step, self.iters, means, lr, speed)

    def means(self) -> dict[str, float]:
        """Each term's mean over the epoch's ``iters`` iterations."""
        return {k: v / self.iters for k, v in self.totals.items()}


def tracker_names(tensorboard: bool | None, log_with: list[str]) -> list[str]:
    """The trackers a run opens: TensorBoard by ``runtime.tensorboard`` (None = when its
    package is installed, True = required, False = never) and every tracker of
    ``runtime.log_with`` (required), each once.

    Raises:
        ConfigError: a required tracker's package is not installed, naming the package.
    """
    from accelerate.tracking import get_available_trackers

    available = {str(t) for t in get_available_trackers()}
    names = list(dict.fromkeys(log_with))
    if tensorboard is not False and "tensorboard" not in names:
        if tensorboard or "tensorboard" in available:
            names.insert(0, "tensorboard")
    for name in names:
        if name not in available:
            asked = (
                "runtime.tensorboard=true"
                if name == "tensorboard" and name not in log_with
                else f"runtime.log_with names {name!r}"
            )
            raise ConfigError(
                f"{asked} but the {name} package is not installed: pip install "
                f"{_TRACKER_PACKAGES.get(name, name)} (or drop the tracker)"
            )
    return names


def epoch_line(summary: EpochRecord) -> str:
    """``epoch E: K clusters, O outliers (quality) | figures | losses | lr | times``."""
    losses = "  ".join(f"{k} {v:.3f}" for k, v in summary.losses.items()) or "no training"
    times = " / ".join(f"{k} {v:.1f}s" for k, v in summary.times.items())
    q = summary.quality
    quality = (
        f" ({q['true_identities']} true)  NMI {q['nmi']:.3f} ARI {q['ari']:.3f} "
        f"pairwise P {q['pairwise_precision']:.3f} R {q['pairwise_recall']:.3f}"
        if q
        else ""
    )
    refine = "".join(
        f" | {name} " + " ".join(f"{v:.2f}" for v in values)
        for name, values in summary.figures.items()
        if values
    )
    return (
        f"epoch {summary.epoch}: {summary.clusters} clusters, {summary.outliers} outliers"
        f"{quality}{refine} | {losses} | lr {summary.lr:.2e} | {times}"
    )


def epoch_scalars(summary: EpochRecord) -> dict[str, float]:
    """The epoch's TensorBoard scalars, by tag."""
    scalars: dict[str, float] = {
        "pseudo_labels/clusters": summary.clusters,
        "pseudo_labels/outliers": summary.outliers,
        "lr": summary.lr,
    }
    scalars.update({f"pseudo_labels/{k}": v for k, v in summary.quality.items()})
    scalars.update({f"loss/{k}": v for k, v in summary.losses.items()})
    scalars.update({f"time/{k}": v for k, v in summary.times.items()})
    for name, values in summary.figures.items():
        unit = registry.figures().get(name)
        scalars.update({f"{name}/{unit.unit if unit else 'value'}_{i}": v
                        for i, v in enumerate(values)})  # fmt: skip
    return scalars


def evaluation_line(record: dict[str, Any]) -> str:
    """``epoch E: mAP … Rank-1 …  (best mAP … at epoch …)``."""
    return (
        f"epoch {record['epoch']}: mAP {100 * record['mAP']:.1f}  Rank-1 "
        f"{100 * record['rank1']:.1f}  (best mAP {100 * record['best_mAP']:.1f} at epoch "
        f"{record['best_epoch']})"
    )
