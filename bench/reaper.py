"""Stopping what the harness started, by pid, and proving it is gone.

Never by name (no pkill/killall): other sessions' processes share this machine.
A tree is stopped as: (optionally wait for a voluntary exit) -> SIGTERM to the
root -> grace -> SIGKILL -> then every descendant recorded *before* the stop gets
the same treatment, and each one is confirmed gone. A zombie counts as gone (it
runs nothing; PID 1 here does not reap orphans), but is reported in the notes.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psutil


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid} ({' '.join(proc.cmdline())[:60]})"
    except psutil.Error:
        return f"pid {proc.pid}"


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def descendants(pid: int) -> list[psutil.Process]:
    try:
        found: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
        return found
    except psutil.NoSuchProcess:
        return []


def stop_popen(popen: subprocess.Popen[bytes], *, grace: float, wait_first: float = 0.0) -> list[str]:
    """Stop ``popen`` and all its descendants; return descriptions of any survivors.

    ``wait_first`` seconds are given for a voluntary exit before SIGTERM.
    """
    family = descendants(popen.pid)
    if popen.poll() is None and wait_first > 0:
        try:
            popen.wait(timeout=wait_first)
        except subprocess.TimeoutExpired:
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if popen.poll() is not None:
            break
        try:
            os.kill(popen.pid, sig)
        except ProcessLookupError:
            pass
        try:
            popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    survivors = [] if popen.poll() is not None else [f"pid {popen.pid} (root)"]
    return survivors + stop_all(family, grace=grace)


def stop_all(procs: list[psutil.Process], *, grace: float) -> list[str]:
    """SIGTERM, wait, SIGKILL, confirm, for processes that are not our children."""
    live = [p for p in procs if _alive(p)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not live:
            break
        for proc in live:
            try:
                proc.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        _, still = psutil.wait_procs(live, timeout=grace)
        live = [p for p in still if _alive(p)]
    return [_describe(p) for p in live]


def leftover_processes() -> list[str]:
    """Descendants of this process that still run (zombies included: we must reap ours)."""
    return [_describe(p) for p in psutil.Process().children(recursive=True)]


def leftover_segments(shm_dir: Path, prefix: str) -> list[str]:
    """Entries in ``shm_dir`` whose names start with ``prefix``."""
    try:
        return sorted(entry.name for entry in shm_dir.iterdir() if entry.name.startswith(prefix))
    except FileNotFoundError:
        return []
