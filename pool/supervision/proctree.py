"""Process trees from /proc: who descends from whom, and who is in a process group.

Stateless and stdlib-only. A process is named by (pid, start ticks) — field 22 of
/proc/PID/stat — so a pid reused by a stranger is never taken for ours.

Why a walk of ``/proc/PID/task/TID/children`` finds a worker's whole tree: every
worker is a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``, see
pool.supervision.worker), so a descendant that double-forks or calls ``setsid()`` is
re-parented to the worker, not to init, and stays below it while the worker lives.
Children are listed per thread (a child belongs to the thread that forked it), so
a complete walk reads every thread's file; ``main_thread_children`` is the cheap
look (one pread of a kept fd) for the 1 Hz sampling.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable

from statusboard.liveness import start_ticks

ProcId = tuple[int, int]  # (pid, start ticks)

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return int(ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def set_child_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux 3.4+). False elsewhere."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(signum: int) -> bool:
    """Have the kernel send ``signum`` to this process when its parent (thread) dies.
    False where it cannot (not Linux): callers keep their own check of the parent."""
    return _prctl(_PR_SET_PDEATHSIG, signum)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all its threads'), or [] when it is gone."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                found.extend(int(c) for c in f.read().split())
        except OSError:
            continue  # that thread ended meanwhile
    return found


def identify(pids: Iterable[int]) -> list[ProcId]:
    """(pid, start ticks) of each pid that runs now (zombies and the gone are dropped)."""
    return [(pid, ticks) for pid in pids if (ticks := start_ticks(pid)) is not None]


def descendants(pid: int, *, limit: int = 100_000) -> list[ProcId]:
    """Every live process below ``pid`` (not ``pid`` itself), breadth first."""
    seen: set[int] = set()
    queue = children(pid)
    while queue and len(seen) < limit:
        child = queue.pop()
        if child in seen:
            continue
        seen.add(child)
        queue.extend(children(child))
    return identify(seen)


def group_members(pgids: set[int]) -> dict[int, list[ProcId]]:
    """Live processes by process group, for the groups in ``pgids``: one pass over /proc.

    Only called where it matters (a worker's exit whose group still has members, a
    stop), never on the idle path.
    """
    found: dict[int, list[ProcId]] = {}
    if not pgids:
        return found
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        rest = raw[raw.rfind(b")") + 2 :].split()
        # rest[0] state (field 3), rest[2] pgrp (field 5), rest[19] starttime (field 22)
        pgid = int(rest[2])
        if rest[0] not in (b"Z", b"X") and pgid in pgids:
            found.setdefault(pgid, []).append((int(name), int(rest[19])))
    return found


def group_exists(pgid: int) -> bool:
    """True when some process (a zombie included) is still in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (0 when gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our zombie child (an orphan re-parented to
    this subreaper); harmless when it is not our child."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def command_line(pid: int) -> str:
    """``pid``'s command line (its comm when it has none, "?" when gone), for messages."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            line = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        if not line:
            with open(f"/proc/{pid}/comm", "rb") as f:
                line = f"[{f.read().decode(errors='replace').strip()}]"
        return line[:200]
    except OSError:
        return "?"
