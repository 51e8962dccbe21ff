"""The run folder: who owns it, what a new run may overwrite, how a resume finds its state, and
what a run writes into it.

A run folder holds ``config.yaml``, ``metrics.jsonl``, ``history.jsonl``, ``train.log``,
``state/`` (for ``--resume``), ``last/`` and ``best/``. Rules that keep one run from destroying
another:

* **One live owner.** The main process holds ``.lock`` (JSON: pid, host, start time, and the
  hosts of every node the run spans) while it trains. A second run into the same folder is
  refused while the owner lives. A lock whose process is gone on this host is stale and taken
  over, with a line saying so (and naming the run's other nodes, where processes of it may be
  left); a lock from another host cannot be checked from here, and the message says how to
  clear it.
* **No accidental overwrite.** A new run (no ``--resume``) refuses a folder that already holds a
  run; ``--overwrite`` removes that run's files first (and only them).
* **Resumable whatever the moment of a kill.** ``state/`` is written as ``.state.tmp`` and
  renamed, the old copy passing through ``.state.old``; ``trainer.json`` is written last, so a
  copy that has it is complete. When ``state/`` is missing, ``--resume`` takes the complete
  ``.state.tmp`` (the newer) or ``.state.old``, and says which.
* **No duplicated lines.** Lines of ``metrics.jsonl`` and ``history.jsonl`` past the resumed
  epoch (an epoch logged but killed before its state was saved) are dropped on resume, as is a
  partial last line.

What a run writes there and reads back on ``--resume`` applies those rules:


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
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from accelerate import Accelerator
from accelerate.utils import gather_object

from reid_backbones import ReIDModel, save_checkpoint

from .config import TrainConfig, config_to_dict, save_config

__all__ = [
    "BEST_DIR",
    "CONFIG_FILE",
    "HISTORY_FILE",
    "LAST_DIR",
    "LOCK_FILE",
    "LOG_FILE",
    "METRICS_FILE",
    "RUN_ENTRIES",
    "STATE_DIR",
    "TRAINER_STATE",
    "Progress",
    "RunDirError",
    "RunLock",
    "append_line",
    "check_new_run",
    "check_resumed_config",
    "claim_run_dir",
    "clear_run",
    "fault_point",
    "load_state",
    "process_hosts",
    "recover_state",
    "replace_dir",
    "save_model",
    "save_state",
    "truncate_logs",
]

STATE_DIR, BEST_DIR, LAST_DIR = "state", "best", "last"
METRICS_FILE, HISTORY_FILE, TRAINER_STATE = "metrics.jsonl", "history.jsonl", "trainer.json"
CONFIG_FILE, LOCK_FILE, LOG_FILE = "config.yaml", ".lock", "train.log"
#: What a run writes into its folder (``--overwrite`` removes exactly these).
RUN_ENTRIES: tuple[str, ...] = (
    CONFIG_FILE, METRICS_FILE, HISTORY_FILE, LOG_FILE, STATE_DIR, LAST_DIR, BEST_DIR, "plots",
    "tensorboard", "aim", f".{STATE_DIR}.tmp", f".{STATE_DIR}.old", f".{LAST_DIR}.tmp",
    f".{LAST_DIR}.old", f".{BEST_DIR}.tmp", f".{BEST_DIR}.old",
)  # fmt: skip
# Entries whose presence means the folder holds a run.
_RUN_MARKERS = (CONFIG_FILE, METRICS_FILE, HISTORY_FILE, STATE_DIR, LAST_DIR, BEST_DIR)


#: Testing only: ``NAME:EPOCH`` kills the training process (SIGKILL) at that point
#: (:func:`fault_point`), so that tests can interrupt a real run at a chosen moment.
FAULT_ENV = "REID_TRAIN_FAULT"


class RunDirError(RuntimeError):
    """The run folder cannot be used as asked (the message says what to do instead)."""


def check_new_run(out: Path, overwrite: bool) -> list[str]:
    """Refuse to start a new run in a folder that holds one, unless ``overwrite``.

    Returns the run entries found (what ``--overwrite`` will remove).
    """
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--output-dir '{out}' is a file; give a folder")
    found = [name for name in _RUN_MARKERS if (out / name).exists()]
    if found and not overwrite:
        raise RunDirError(
            f"'{out}' already holds a run ({', '.join(found)}); continue it with --resume, "
            "replace it with --overwrite, or choose another --output-dir"
        )
    return found


def clear_run(out: Path) -> None:
    """Remove the files a run wrote into ``out`` (``--overwrite``), nothing else."""
    for name in RUN_ENTRIES:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def recover_state(out: Path) -> tuple[Path, str | None]:
    """The state folder to resume from, moving a complete leftover copy into place if needed.

    Returns ``(state_dir, note)``; ``note`` says what was recovered (None when nothing was).

    Raises:
        RunDirError: no complete state anywhere (the message lists what the folder holds).
    """
    state = out / STATE_DIR
    if (state / TRAINER_STATE).is_file():
        return state, None
    for name, when in ((f".{STATE_DIR}.tmp", "newer"), (f".{STATE_DIR}.old", "previous")):
        copy = out / name
        if (copy / TRAINER_STATE).is_file():
            if state.exists():
                shutil.rmtree(state)  # incomplete: it has no trainer.json
            copy.rename(state)
            epoch = json.loads((state / TRAINER_STATE).read_text())["epoch"]
            return state, (
                f"'{state}' was missing or incomplete (a run killed while saving); recovered "
                f"the {when} complete copy '{name}' (after epoch {epoch})"
            )
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    where = f"it holds: {', '.join(held)}" if held else "it does not exist or is empty"
    raise RunDirError(
        f"--resume: '{out}' holds no saved training state ({where}); point --output-dir at the "
        "run to continue, or start a new run without --resume (into an empty folder, or with "
        "--overwrite to replace what is there)"
    )


def replace_dir(tmp: Path, final: Path, between: Callable[[], None] | None = None) -> None:
    """Put the complete folder ``tmp`` in place of ``final``; the old copy goes to
    ``.NAME.old`` first and is removed only once ``tmp`` is in place (``between`` runs in the
    window where neither ``final`` exists, a moment :func:`recover_state` handles)."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    if between is not None:
        between()
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def fault_point(name: str, epoch: int) -> None:
    """Kill this process (SIGKILL, as ``kill -9``) when ``$REID_TRAIN_FAULT`` is
    ``NAME:EPOCH`` (testing only: ``logged``, ``state_written``, ``state_moved``)."""
    if os.environ.get(FAULT_ENV) == f"{name}:{epoch}":
        os.kill(os.getpid(), signal.SIGKILL)


def truncate_logs(out: Path, last_epoch: int, names: Iterable[str]) -> int:
    """Drop lines past ``last_epoch`` (and unparsable partial lines) from JSON-lines logs.

    Returns the number of lines dropped. Each file is rewritten atomically.
    """
    dropped = 0
    for name in names:
        path = out / name
        if not path.is_file():
            continue
        kept = []
        lines = path.read_text(encoding="utf-8").splitlines()
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if isinstance(record, dict) and int(record.get("epoch", -1)) <= last_epoch:
                kept.append(line)
        if len(kept) != len(lines):
            dropped += len(lines) - len(kept)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
            tmp.replace(path)
    return dropped


class RunLock:
    """``.lock`` in the run folder, held by the main process for the run's lifetime.

    Args:
        out: the run folder.
        hosts: the host names of all the run's processes (any order, repeats allowed; e.g.
            gathered from every rank), recorded as ``"hosts"`` with this host first, each once.
            None: this host only (a single-node run).
    """

    def __init__(self, out: Path, hosts: Sequence[str] | None = None) -> None:
        self.path = out / LOCK_FILE
        self.hosts = _run_hosts(hosts)
        self.note: str | None = None
        self._held = False

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunDirError` naming the live owner."""
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "hosts": self.hosts,
            "started": time.time(),
        }
        for _ in range(2):
            if self._create(me):
                self._held = True
                return self
            owner = self._owner()
            if owner is None or not self._stale(owner):
                raise RunDirError(self._busy_message(owner))
            self.path.unlink(missing_ok=True)
            others = [h for h in _owner_hosts(owner) if h != owner.get("host")]
            left = (
                f"; that run also ran on {', '.join(others)}: make sure none of its processes "
                "are left there"
                if others
                else ""
            )
            self.note = (
                f"took over a stale lock '{self.path}' (process {owner.get('pid')} on "
                f"{owner.get('host')} is gone{left})"
            )
        raise RunDirError(self._busy_message(self._owner()))

    def _create(self, me: dict[str, Any]) -> bool:
        """Create the lock with its content in one step (a hard link of a complete temporary
        file), so that a competing run never reads a half-written lock; False if it exists."""
        tmp = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(me))
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links on this filesystem: exclusive create, then write
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def _owner(self) -> dict[str, Any] | None:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # being written by its owner right now, or unreadable
        return owner if isinstance(owner, dict) else None

    @staticmethod
    def _stale(owner: dict[str, Any]) -> bool:
        if owner.get("host") != socket.gethostname():
            return False  # cannot check a process on another machine
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, TypeError, ValueError):
            return False
        return False

    def _busy_message(self, owner: dict[str, Any] | None) -> str:
        if owner is None:
            return (
                f"'{self.path.parent}' is locked by another run ('{self.path}' is unreadable); "
                "choose another --output-dir, or delete the lock file if no run uses the folder"
            )
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
        where = f"process {owner.get('pid')} on {owner.get('host')}, since {since}"
        here = socket.gethostname()
        hosts = _owner_hosts(owner)
        if len(hosts) > 1:
            named = [f"{h} (this machine)" if h == here else h for h in hosts]
            where += f"; the run spans {len(hosts)} nodes: {', '.join(named)}"
        if owner.get("host") != here:
            return (
                f"'{self.path.parent}' is in use by a run on another machine ({where}); choose "
                f"another --output-dir, or delete '{self.path}' if that run has ended"
            )
        return (
            f"'{self.path.parent}' is in use by a live run ({where}); wait for it to finish or "
            "choose another --output-dir"
        )


def _run_hosts(hosts: Sequence[str] | None) -> list[str]:
    """This host first, then the other ``hosts``, each once."""
    here = socket.gethostname()
    if hosts is None:
        return [here]
    if isinstance(hosts, str | bytes) or not all(isinstance(h, str) and h for h in hosts):
        raise TypeError(
            "hosts must be a sequence of host names (one per process, e.g. gathered from every "
            f"rank), got {hosts!r}"
        )
    return list(dict.fromkeys([here, *hosts]))


def _owner_hosts(owner: dict[str, Any]) -> list[str]:
    """The hosts a lock records: its ``hosts`` list (the main host first), or, in a lock written
    before the list was kept, the main host alone."""
    hosts = owner.get("hosts")
    main = owner.get("host")
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        hosts = []
    return list(dict.fromkeys([str(main), *hosts]))


# --------------------------------------------------------------------------------------------
# What a run writes into its folder and reads back on --resume
# --------------------------------------------------------------------------------------------


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
