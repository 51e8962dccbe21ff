"""A subprocess in its own process group, its output echoed with a prefix and its tail kept,
killed (the whole group) at its timeout; the working tree's packages on its ``PYTHONPATH``."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import threading

from benchmarks.common import ROOT
from benchmarks.gpu_check.deps import child_pythonpath


def run_logged(
    cmd: list[str],
    *,
    timeout: float,
    prefix: str = "",
    env: dict[str, str] | None = None,
    echo: bool = True,
) -> tuple[int | None, list[str]]:
    """Run ``cmd`` in its own process group, echoing its output with ``prefix``.

    Returns (exit status, or None when it was killed at ``timeout``; the last 60 lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=60)
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": child_pythonpath(), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            if echo:
                print(prefix + line, flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code: int | None = proc.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        code = None
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    reader.join(timeout=5)
    return code, list(tail)
