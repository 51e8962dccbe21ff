"""What a run tells its user: console lines, warnings, TensorBoard scalars and the end-of-run
plots. Only the main process reports; on the others every call does nothing.

The files of the run folder (``history.jsonl``, ``metrics.jsonl``, checkpoints) are written by
:mod:`reid_train.run_folder`; this module only formats and shows.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from . import registry
from .config import ConfigError
from .run_folder import HISTORY_FILE

if TYPE_CHECKING:
    from .epoch import EpochRecord

__all__ = ["LOGGER", "Reporter", "epoch_line", "epoch_scalars", "evaluation_line"]

#: The run's logger: ``train.log`` in the run folder gets every console line, warning and
#: iteration line (main process).
LOGGER = logging.getLogger("reid_train")


class Reporter:
    """The console, warnings and TensorBoard writer of one run.

    Args:
        is_main: whether this is the main process (the others report nothing).
    """

    def __init__(self, is_main: bool) -> None:
        self.is_main = is_main
        self.tensorboard: Any = None  # a SummaryWriter once :meth:`open_tensorboard` opened one
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

    def open_tensorboard(self, wanted: bool | None, log_dir: Path) -> None:
        """Open the TensorBoard writer (``runtime.tensorboard``: None = when the package is
        installed, True = required, False = never)."""
        if wanted is False or not self.is_main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if wanted:
                raise ConfigError(
                    "runtime.tensorboard=true but the tensorboard package is not installed: "
                    'pip install "reid-train[tensorboard]" (or set runtime.tensorboard=false)'
                ) from None
            return
        self.tensorboard = SummaryWriter(log_dir=str(log_dir))

    def epoch(self, summary: EpochRecord) -> None:
        """The epoch's console line and its TensorBoard scalars."""
        if not self.is_main:
            return
        self.say(epoch_line(summary))
        if self.tensorboard is not None:
            for tag, value in epoch_scalars(summary).items():
                self.tensorboard.add_scalar(tag, value, summary.epoch)
            self.tensorboard.flush()

    def evaluation(self, record: dict[str, Any]) -> None:
        """An evaluation's TensorBoard scalars and console line (``record``: a line of
        ``metrics.jsonl``, with ``best_mAP`` and ``best_epoch``)."""
        if not self.is_main:
            return
        if self.tensorboard is not None:
            for key in ("mAP", "rank1", "rank5", "rank10", "mINP"):
                if key in record:
                    self.tensorboard.add_scalar(f"eval/{key}", record[key], record["epoch"])
        self.say(evaluation_line(record))

    def finish(self, run_dir: Path, plots: bool) -> None:
        """Close the TensorBoard writer; draw the run's plots (``runtime.plots``) when the run
        has a ``history.jsonl``."""
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if plots and self.is_main and (run_dir / HISTORY_FILE).exists():
            from .plots import plot_run

            plot_run(run_dir)


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
