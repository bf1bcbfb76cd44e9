"""Runs a command and measures it: wall seconds and the peak RSS of its whole process tree.

The tree's RSS (the command plus every descendant, e.g. the SDK worker processes of
``--direct_running_mode multi_processing``) is sampled from ``/proc`` every
``interval`` seconds and summed; the peak of those sums is reported. Linux only.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
import time

_PAGE = os.sysconf('SC_PAGE_SIZE')


@dataclasses.dataclass
class Measured:
    returncode: int
    seconds: float
    peak_rss_mb: float
    stdout: str
    stderr: str


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open(f'/proc/{name}/stat', 'rb') as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(b')') + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(name))
    return children


def _rss_bytes(pid: int) -> int:
    try:
        with open(f'/proc/{pid}/statm', 'rb') as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss_bytes(root: int) -> int:
    """Summed resident set size of ``root`` and all its descendants."""
    children = _children()
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += _rss_bytes(pid)
        stack.extend(children.get(pid, ()))
    return total


def run_measured(command: list[str], *, cwd: str | None = None, env: dict | None = None,
                 timeout: float = 3600.0, interval: float = 0.1) -> Measured:
    """Runs ``command`` to completion, sampling its tree's RSS; never raises on exit status."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, errors='replace')
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_bytes(process.pid))
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        stderr += f'\n[bench] killed after {timeout}s'
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    return Measured(process.returncode, seconds, peak / (1024 * 1024), stdout, stderr)
