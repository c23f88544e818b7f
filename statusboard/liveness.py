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
    that microsecond retries its own lock (see pool.ops.daemon), so probing cannot make
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


# -- who holds the lock ------------------------------------------------------------
#
# supervisor.lock's content is the holder's record: line 1 "PID START_TICKS" of the
# process that holds it (written by it right after it took the lock), line 2 the same
# for the holder before it (this directory's predecessor, whose leftovers a new holder
# may clean up). The flock, not the record, proves someone holds the lock; the record
# says who, and is believed only when the kernel agrees (/proc/locks) and that very
# process (pid + start ticks) is alive.
#
# Why /proc/locks and not fcntl(F_OFD_GETLK): the lock is an flock(2) lock, which
# F_GETLK/F_OFD_GETLK do not report (they see POSIX/OFD record locks only); switching
# to OFD locks would change every reader's shared probe. /proc/locks lists each flock
# with the pid that took it and the file's device:inode.

Identity = tuple[int, int]


def parse_lock_record(raw: bytes) -> tuple[tuple[int, int | None] | None, tuple[int, int | None] | None]:
    """(holder, predecessor) as supervisor.lock records them; None where a line is absent or
    unreadable. A record of an older poolctl has the pid alone (ticks None)."""
    entries: list[tuple[int, int | None] | None] = []
    for line in raw.decode("ascii", "replace").splitlines()[:2]:
        fields = line.split()
        try:
            pid = int(fields[0])
            ticks = int(fields[1]) if len(fields) > 1 else None
        except (IndexError, ValueError):
            entries.append(None)
            continue
        entries.append((pid, ticks) if pid > 0 else None)
    entries += [None, None]
    return entries[0], entries[1]


def flock_pids(fd: int) -> set[int] | None:
    """Pids the kernel lists as holding an flock on the file of ``fd`` (waiters excluded),
    or None when /proc/locks cannot say (unreadable, or pids hidden by a pid namespace)."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}".encode()
    pids: set[int] = set()
    try:
        with open("/proc/locks", "rb") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[1] == b"FLOCK" and fields[5] == key:
                    pids.add(int(fields[4]))
    except (OSError, ValueError):
        return None
    return pids if pids and 0 not in pids else None


def lock_holder(lock_path: str | os.PathLike[str]) -> tuple[bool, Identity | None]:
    """(held, holder) for a supervisor.lock.

    ``held`` is whether any process holds the lock; ``holder`` the verified (pid, start
    ticks) of the one that does, or None when it cannot be verified: it has not written
    its record yet (the microseconds after it took the lock), the record names a process
    that is gone or that the kernel does not list as the holder. Raises OSError when the
    lock file is a symlink (ELOOP) or otherwise unusable.
    """
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False, None
    try:
        if not probe_lock_fd(fd):
            return False, None
        recorded, _ = parse_lock_record(os.pread(fd, 128, 0))
        if recorded is None:
            return True, None
        pid, ticks = recorded
        current = start_ticks(pid)
        if current is None or (ticks is not None and ticks != current):
            return True, None
        kernel = flock_pids(fd)
        if kernel is not None and pid not in kernel:
            return True, None
        if kernel is None and ticks is None:
            return True, None  # an old pid-only record, and nothing to confirm it with
        if not probe_lock_fd(fd):
            return False, None  # released while we looked
        return True, (pid, current)
    finally:
        os.close(fd)


def lock_held_by(lock_path: str | os.PathLike[str], pid: int, ticks: int) -> bool:
    """True when supervisor.lock is held and its record does not name another process than
    (pid, ticks): the cheap check for the status path (one open, one flock probe, one
    pread), where the caller has already verified that (pid, ticks) is alive.

    An empty or unreadable record (a holder in the microseconds before it writes it)
    does not contradict: the flock alone decides, as it always did. A record naming
    someone else does: runtime.json's pid is then not this pool's supervisor.
    """
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if not probe_lock_fd(fd):
            return False
        recorded, _ = parse_lock_record(os.pread(fd, 128, 0))
    finally:
        os.close(fd)
    return recorded is None or (recorded[0] == pid and recorded[1] in (None, ticks))
