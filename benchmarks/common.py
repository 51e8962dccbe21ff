"""Shared by the benchmark modules: machine description, git commit, CUDA sync and timing, memory
figures, JSON lines and the sections of docs/benchmarks.md.

One definition of each helper, used by every module of ``benchmarks``. torch is imported inside
the functions that need it, so that ``python -m benchmarks.gpu_check`` can import this module and
report a missing torch itself.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

#: The repository root (``python -m benchmarks.<module>`` runs from here).
ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"
#: The benchmarks' records (JSON) that the docs' figures come from.
RESULTS = ROOT / "benchmarks" / "results"

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Where and from which code
# --------------------------------------------------------------------------------------------


def machine() -> str:
    """One line describing where the figures were measured."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, {gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch threads"
    )


def commit(*, dirty: bool = False) -> str | None:
    """The short hash of this checkout's ``HEAD``; None when git cannot tell (no git, not a
    checkout). ``dirty``: append `` + local changes`` when tracked files differ from ``HEAD``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            timeout=10,
        ).stdout.strip()  # fmt: skip
        if not sha:
            return None
        if not dirty:
            return sha
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}{' + local changes' if changed else ''}"


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def sync(device: Any) -> None:
    """Wait for the work queued on ``device`` (a ``torch.device`` or its name) when it is a GPU;
    nothing on the CPU."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: Any) -> tuple[float, T]:
    """Seconds of one call of ``fn`` (the device synchronised before and after) and its result."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def best_of(fn: Callable[[], object], repeats: int, device: Any) -> float:
    """The fastest of ``repeats`` :func:`timed` calls, in seconds."""
    return min((timed(fn, device)[0] for _ in range(repeats)), default=float("inf"))


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def peak_rss_gib() -> float:
    """Peak resident set size of this process, in GiB (``ru_maxrss``: KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def current_rss_gib() -> float:
    """Resident set size of this process now, in GiB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


def peak_memory_gib(device: Any) -> float:
    """Peak resident memory of this process (CPU) or peak allocated GPU memory, in GiB."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return peak_rss_gib()


def current_memory_gib(device: Any) -> float:
    """Memory in use now: resident set (CPU, Linux) or allocated GPU memory, in GiB."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**30
    return current_rss_gib()


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``, ...); 0 when absent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class WorkingMemory:
    """Working memory of one stage: its peak minus the memory held when it started (GiB).

    :meth:`start` resets the kernel's peak-RSS counter (``/proc/self/clear_refs``, Linux >= 4.0)
    and, on a GPU, torch's peak allocation; :meth:`stop` returns the figures."""

    def __init__(self, device: Any) -> None:
        import torch

        self.device = torch.device(device)
        self.reset_ok = True

    def start(self) -> None:
        import torch

        try:  # "5": reset the peak resident set size
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.reset_ok = False
        self.rss0 = status_kib("VmRSS")
        self.hwm0 = status_kib("VmHWM")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.gpu0 = torch.cuda.memory_allocated(self.device)

    def stop(self) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = {
            "rss_start_gib": self.rss0 / 2**20,
            "working_gib": max(0, status_kib("VmHWM") - self.rss0) / 2**20,
            # Without the reset the peak may predate the stage (making its inputs).
            "peak_reset": self.reset_ok,
        }
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            out["gpu_working_gib"] = (
                torch.cuda.max_memory_allocated(self.device) - self.gpu0
            ) / 2**30
            out["gpu_inputs_gib"] = self.gpu0 / 2**30
        return out


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def shown(path: Path) -> str:
    """``path`` as a command line run from the repository root gives it (relative there, else
    as given): for the commands a doc section prints."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def read_jsonl(path: Path, *, missing_ok: bool = False) -> list[dict]:
    """The records of a JSON-lines file (blank lines skipped). A missing file raises
    ``FileNotFoundError``, or gives ``[]`` with ``missing_ok``."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        if missing_ok:
            return []
        raise
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the section ``name`` of docs/benchmarks.md with ``body``.

    A section is delimited by ``<!-- BEGIN name -->`` and ``<!-- END name -->`` so that each
    script owns its part and re-running it updates only that part.
    """
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else (text.rstrip() + "\n\n" + block + "\n")
    )
    path.write_text(text)
    print(f"updated section '{name}' of {path}")
