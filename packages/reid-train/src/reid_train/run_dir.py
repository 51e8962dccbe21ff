"""The run folder: who owns it, what a new run may overwrite, and how a resume finds its state.

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
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "BEST_DIR",
    "HISTORY_FILE",
    "LAST_DIR",
    "LOCK_FILE",
    "METRICS_FILE",
    "RUN_ENTRIES",
    "STATE_DIR",
    "TRAINER_STATE",
    "RunDirError",
    "RunLock",
    "check_new_run",
    "clear_run",
    "fault_point",
    "recover_state",
    "replace_dir",
    "truncate_logs",
]

STATE_DIR, BEST_DIR, LAST_DIR = "state", "best", "last"
METRICS_FILE, HISTORY_FILE, TRAINER_STATE = "metrics.jsonl", "history.jsonl", "trainer.json"
CONFIG_FILE, LOCK_FILE, LOG_FILE = "config.yaml", ".lock", "train.log"
#: What a run writes into its folder (``--overwrite`` removes exactly these).
RUN_ENTRIES: tuple[str, ...] = (
    CONFIG_FILE, METRICS_FILE, HISTORY_FILE, LOG_FILE, STATE_DIR, LAST_DIR, BEST_DIR, "plots",
    "tensorboard", f".{STATE_DIR}.tmp", f".{STATE_DIR}.old", f".{LAST_DIR}.tmp",
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
