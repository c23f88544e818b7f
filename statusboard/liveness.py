"""Process identity and the supervisor lock, from /proc and flock only.

A pid alone proves nothing (pids are reused), so a process is identified by
(pid, start ticks): field 22 of /proc/PID/stat, the start time in clock ticks
since boot, which no other process can share with a live one. A zombie runs
nothing and holds no lock, so it counts as gone (PID 1 here does not reap
orphans, so zombies of dead supervisors linger).

This module uses the stdlib only: it is on the ``poolctl status`` fast path,
where psutil's import (~18 ms) would cost more than the whole check.
"""

from __future__ import annotations

import errno
import fcntl
import os

LOCK_NAME = "supervisor.lock"


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start ticks) of ``pid``, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may itself contain ") ".
    rest = raw[raw.rfind(b")") + 2 :].split()
    # rest[0] is field 3 (state); field 22 (starttime) is rest[19].
    return rest[0].decode(), int(rest[19])


def start_ticks(pid: int) -> int | None:
    """Start ticks of a running (non-zombie) ``pid``, or None."""
    stat = proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return None
    return stat[1]


def is_alive(pid: int, ticks: int | None = None) -> bool:
    """True when ``pid`` runs (not a zombie) and, if given, started at ``ticks``."""
    if pid <= 0:
        return False
    current = start_ticks(pid)
    if current is None:
        return False
    return ticks is None or current == ticks


def lock_holder_present(lock_path: str | os.PathLike[str]) -> bool:
    """True when some process holds an flock on ``lock_path``.

    Tested with a shared, non-blocking flock that is released at once: it never
    blocks, and never conflicts with another reader. A supervisor that starts in
    that microsecond retries its own lock (see pool.daemon), so probing cannot make
    a start fail.
    """
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        return probe_lock_fd(fd)
    finally:
        os.close(fd)


def probe_lock_fd(fd: int) -> bool:
    """Like lock_holder_present, on an fd the caller keeps open (cheap polling)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False
