"""Run one command as a child process and measure it: wall and CPU time, peak RSS, and (when
sampled) peak anonymous memory. Shared by the benchmarks that time pipeline stages."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent


def anonymous_mb(pid: int) -> float:
    """Resident anonymous memory of a process tree (RSS less file-backed pages), in MB."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            info = process.memory_info()
            total += info.rss - info.shared
    return total / 2**20


def run_measured(command: list[str], environment: dict, stdout=None,
                 sample_seconds: float | None = None) -> dict:
    """Runs `command` in the repository root; {seconds, cpu_seconds, peak_rss_mb} from wait4
    (the process and the children it waited for), plus peak_anonymous_mb sampled every
    `sample_seconds` when given (the wall time then ends at the first sample after the exit)."""
    started = time.time()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=stdout)
    peak_anonymous = 0.0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG if sample_seconds else 0)
        if pid:
            break
        peak_anonymous = max(peak_anonymous, anonymous_mb(process.pid))
        time.sleep(sample_seconds)
    seconds = time.time() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with status {process.returncode}")
    result = {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
              "peak_rss_mb": usage.ru_maxrss / 1024}
    if sample_seconds:
        result["peak_anonymous_mb"] = peak_anonymous
    return result
