"""Processes seen through /proc: children of a pid, CPU time, liveness, and adopted orphans.

This kernel has no ``/proc/PID/task/TID/children``, so a supervisor's children
are found by scanning ``/proc`` for processes whose parent is that pid; the
parent of each pid is read once and cached, so a scan costs one ``listdir``
plus one ``stat`` read per process that appeared since the last scan.

CPU time comes from ``/proc/PID/task/*/schedstat`` (nanoseconds on the CPU,
per thread), not from ``/proc/PID/stat``'s clock ticks: an idle supervisor
uses a few milliseconds in 20 s, below the 10 ms tick.

Orphans: ``poolctl start`` leaves its daemon running after the CLI exits, and a
library's helper (a resource tracker) may outlive the program that started it.
Without a subreaper they would be re-parented to PID 1 (which here does not
reap), out of sight of the harness's leak check. ``adopting_orphans()`` makes
this process their subreaper for a group's duration; ``settle_adopted()``
reaps those that exit and stops, names and reaps any that do not.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections.abc import Callable, Iterator

import psutil

from bench import reaper

_PR_SET_CHILD_SUBREAPER = 36


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 = state), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].decode().split()


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie runs nothing)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def cpu_ns(pid: int) -> int:
    """Nanoseconds ``pid`` has run on a CPU, summed over its live threads."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


class ChildScanner:
    """The children of ``parent``, by scanning /proc (parents cached per pid)."""

    def __init__(self, parent: int) -> None:
        self.parent = parent
        self._ppid: dict[int, int] = {}

    def children(self, *, live_only: bool = False) -> set[int]:
        pids = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        for gone in self._ppid.keys() - pids:
            del self._ppid[gone]
        for pid in pids - self._ppid.keys():
            fields = stat_fields(pid)
            self._ppid[pid] = int(fields[1]) if fields is not None else -1
        found = {pid for pid, ppid in self._ppid.items() if ppid == self.parent}
        return {pid for pid in found if alive(pid)} if live_only else found

    def wait_new(self, before: set[int], started: float, timeout: float) -> float | None:
        """Poll until a child not in ``before`` exists; the ``time.monotonic()`` it was seen.

        The poll interval grows with the time waited (0.2 ms at first, at most 5 ms),
        so the error stays near 2 % of the figure without spinning a core for
        seconds while a slow peer gets round to it.
        """
        return poll_until(lambda: bool(self.children() - before), started, timeout)


def poll_until(check: Callable[[], bool], started: float, timeout: float) -> float | None:
    """``time.monotonic()`` when ``check()`` first held (adaptive interval), None on timeout."""
    while True:
        if check():
            return time.monotonic()
        now = time.monotonic()
        waited = now - started
        if waited > timeout:
            return None
        time.sleep(min(max(waited / 50, 0.0002), 0.005))


def _set_subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


@contextlib.contextmanager
def adopting_orphans() -> Iterator[None]:
    """Orphans of our descendants become our children for the block (see the module docstring)."""
    _set_subreaper(True)
    try:
        yield
    finally:
        _set_subreaper(False)


def reap(pid: int, timeout: float = 0.0) -> bool:
    """Wait up to ``timeout`` s for our child ``pid`` to exit and reap it; True once it is gone."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return not alive(pid)  # not (or no longer) our child
        if done:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def settle_adopted(timeout: float) -> list[str]:
    """Reap every direct child (call only when no child of ours is expected to run).

    Children that do not exit within ``timeout`` s are stopped by pid and named in
    the returned list (empty: nothing outlived what started it).
    """
    deadline = time.monotonic() + timeout
    stragglers: list[str] = []
    while True:
        children = psutil.Process().children()
        if not children:
            return stragglers
        for child in children:
            reap(child.pid)
        remaining = [c for c in psutil.Process().children() if alive(c.pid)]
        if not remaining:
            for child in psutil.Process().children():
                reap(child.pid, 1.0)
            continue
        if time.monotonic() >= deadline:
            for child in remaining:
                try:
                    stragglers.append(f"pid {child.pid} ({' '.join(child.cmdline())[:70]})")
                except psutil.Error:
                    stragglers.append(f"pid {child.pid}")
            survivors = reaper.stop_all(remaining, grace=2.0)
            for child in remaining:
                reap(child.pid, 1.0)
            if survivors:
                raise RuntimeError(f"adopted processes survived SIGKILL: {', '.join(survivors)}")
            return stragglers
        time.sleep(0.02)
