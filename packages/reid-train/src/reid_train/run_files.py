"""What a run writes into its folder and reads back on ``--resume``.

:mod:`reid_train.run_dir` has the folder's rules (the lock, what a new run may overwrite, how
a resume finds a complete state, the fault points of the tests); this module applies them:

* :func:`claim_run_dir`: lock the folder (recording every node of the run, gathered by
  :func:`process_hosts`) and prepare it for a new run (``--overwrite``) or a resumed one
  (recover the state, refuse a config that changes the model, drop log lines past the saved
  epoch), then write ``config.yaml``;
* :func:`save_model`: ``best/`` or ``last/`` via ``reid_backbones.save_checkpoint`` (what
  ``reid-eval`` reads), written to a temporary folder and renamed;
* :func:`save_state` / :func:`load_state`: ``state/`` via ``Accelerator.save_state`` plus
  ``trainer.json`` (:class:`Progress`), and ``last/``;
* :func:`append_line`: one JSON line of ``metrics.jsonl`` or ``history.jsonl``.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from accelerate import Accelerator
from accelerate.utils import gather_object

from reid_backbones import ReIDModel, save_checkpoint

from .config import TrainConfig, config_to_dict, save_config
from .run_dir import (
    CONFIG_FILE,
    HISTORY_FILE,
    LAST_DIR,
    METRICS_FILE,
    STATE_DIR,
    TRAINER_STATE,
    RunDirError,
    RunLock,
    check_new_run,
    clear_run,
    fault_point,
    recover_state,
    replace_dir,
    truncate_logs,
)

__all__ = [
    "Progress",
    "append_line",
    "check_resumed_config",
    "claim_run_dir",
    "load_state",
    "process_hosts",
    "save_model",
    "save_state",
]


@dataclass(frozen=True)
class Progress:
    """Where the training stands (``state/trainer.json``): the last finished epoch, the best
    mAP so far and its epoch, and how many epochs trained (were not skipped)."""

    epoch: int
    best_map: float
    best_epoch: int
    trained_epochs: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "best_mAP": self.best_map, "best_epoch": self.best_epoch,
            "trained_epochs": self.trained_epochs,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> Progress:
        return cls(
            epoch=int(saved["epoch"]),
            best_map=float(saved["best_mAP"]),
            best_epoch=int(saved["best_epoch"]),
            trained_epochs=int(saved.get("trained_epochs", 0)),
        )


def process_hosts(acc: Accelerator) -> list[str]:
    """The host name of every process, in rank order (the main process's first).

    A collective when there are several processes: call it on **every** process (not inside a
    main-process-only block), then pass the result to :func:`claim_run_dir` on the main one.
    """
    if acc.num_processes == 1:
        return [socket.gethostname()]
    return [str(h) for h in gather_object([socket.gethostname()])]


def claim_run_dir(
    out: Path,
    cfg: TrainConfig,
    *,
    resume: bool,
    overwrite: bool,
    say: Callable[[str], None],
    hosts: Sequence[str] | None = None,
) -> RunLock:
    """Main process: lock the run folder, then prepare it for a new or a resumed run.

    ``hosts``: the host names of all the run's processes (:func:`process_hosts`), recorded in
    the lock so that a refusal or a stale-lock takeover names every node; None: this host only.

    Returns the held lock (released again if preparing the folder fails).
    """
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out, hosts).acquire()
    try:
        if lock.note:
            say(lock.note)
        if resume:
            state_dir, note = recover_state(out)
            if note:
                say(f"--resume: {note}")
            saved = json.loads((state_dir / TRAINER_STATE).read_text())
            check_resumed_config(out, cfg, say)
            dropped = truncate_logs(out, int(saved["epoch"]), (METRICS_FILE, HISTORY_FILE))
            if dropped:
                say(
                    f"--resume: dropped {dropped} log line(s) written after the saved state "
                    f"(epoch {saved['epoch']}); those epochs run again"
                )
        else:
            if overwrite and check_new_run(out, overwrite=True):
                clear_run(out)
                say(f"--overwrite: removed the previous run in '{out}'")
        save_config(cfg, out / CONFIG_FILE)
    except BaseException:
        lock.release()
        raise
    return lock


def check_resumed_config(out: Path, cfg: TrainConfig, say: Callable[[str], None]) -> None:
    """Refuse a resume whose config changes the model or the method; name changed keys."""
    path = out / CONFIG_FILE
    if not path.is_file():
        return  # a state without config.yaml (an older run): nothing to compare
    try:
        saved = _flatten(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except yaml.YAMLError as e:
        raise RunDirError(f"--resume: cannot read '{path}': {e}") from None
    now = _flatten(config_to_dict(cfg))
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    fixed = [k for k in changed if _fixes_the_model(k, cfg)]
    if fixed:
        listing = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in fixed)
        raise RunDirError(
            f"--resume: the run in '{out}' was trained with another model or method "
            f"({listing}); resume with the saved settings (drop those overrides), or start "
            "a new run in another --output-dir"
        )
    if changed:
        listing = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
        say(f"--resume: continuing with changed settings ({listing})")


def save_model(
    net: ReIDModel,
    out: Path,
    name: str,
    epoch: int,
    cfg: TrainConfig,
    metrics: dict[str, Any] | None = None,
) -> None:
    """``out/name`` (``best`` or ``last``): the model's checkpoint with the epoch, its metrics,
    the training config and the resize interpolation (``data.interpolation``, which
    ``reid-eval`` reads back), written beside and put in place (:func:`run_dir.replace_dir`)."""
    extra = {"epoch": epoch, "metrics": metrics or {}, "train_config": config_to_dict(cfg)}
    tmp = out / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(net, tmp, extra=extra, interpolation=cfg.data.interpolation)
    replace_dir(tmp, out / name)


def save_state(
    acc: Accelerator, net: ReIDModel, out: Path, cfg: TrainConfig, progress: Progress
) -> None:
    """``last/`` (model) and ``state/`` (everything for --resume), atomically (every process:
    ``Accelerator.save_state`` is collective; the main process writes the files)."""
    epoch = progress.epoch
    tmp = out / f".{STATE_DIR}.tmp"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    if acc.is_main_process:
        (tmp / TRAINER_STATE).write_text(json.dumps(progress.to_dict()) + "\n")
        fault_point("state_written", epoch)
        replace_dir(tmp, out / STATE_DIR, between=lambda: fault_point("state_moved", epoch))
        save_model(net, out, LAST_DIR, epoch, cfg)
    acc.wait_for_everyone()


def load_state(acc: Accelerator, out: Path) -> Progress:
    """Load ``out/state`` (model, optimizer, scheduler; put in place by :func:`claim_run_dir`
    on the main process) into ``acc``'s prepared objects; return the saved :class:`Progress`.

    Raises:
        RunDirError: the state does not fit this model and optimizer.
    """
    state_dir = out / STATE_DIR
    try:
        acc.load_state(str(state_dir))
    except (RuntimeError, ValueError, KeyError) as e:
        raise RunDirError(
            f"--resume: the state in '{state_dir}' does not fit this model and optimizer "
            f"({str(e).splitlines()[0]}); resume with the run's own config.yaml, or start a "
            "new run in another --output-dir"
        ) from e
    return Progress.from_dict(json.loads((state_dir / TRAINER_STATE).read_text()))


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``path`` (``metrics.jsonl``, ``history.jsonl``)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1}}`` → ``{"optim.lr": 1}`` (lists and free-form values kept whole)."""
    if not isinstance(data, dict) or prefix.endswith("dataset_options."):
        return {prefix[:-1]: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


# Keys whose change makes a saved state unusable: the model's shape and input, the method.
_MODEL_KEYS = ("model.", "method.name", "data.height", "data.width", "data.mean", "data.std")


#: Model keys a resume may change: the initial weights (the saved state holds the trained ones).
_FREE_MODEL_KEYS = ("model.pretrained",)


def _fixes_the_model(key: str, cfg: TrainConfig) -> bool:
    if key in _FREE_MODEL_KEYS:
        return False
    if key.startswith(_MODEL_KEYS):
        return True
    # The classifiers' capacity follows the training set size / min_samples when not fixed (a
    # moved data_root is fine: a size change is caught when the state is loaded).
    capacity = ("data.dataset", "data.dataset_options", "cluster.min_samples")
    return cfg.model.max_clusters is None and key.startswith(capacity)
