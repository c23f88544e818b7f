"""supervisor.lock: held (flock) by the live supervisor for its whole life.

The lock, not a pid file, proves a supervisor is alive: the kernel drops it the
instant the holder dies, whatever the cause. Readers test it with a shared
non-blocking flock (statusboard.liveness), which can collide with our
exclusive attempt for a few microseconds, so acquiring retries briefly before it
concludes that another supervisor holds the lock.

The file's content is the holders' record (statusboard.liveness.parse_lock_record):
line 1 names the holder (pid + start ticks), line 2 the holder before it. A pool's
identity is its lock holder, so commands act on the process line 1 names once the
kernel confirms it holds the lock; line 2 tells a new supervisor which dead
predecessor's board and processes are provably its to clean up.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from pool.errors import AlreadyRunning
from statusboard.liveness import LOCK_NAME, parse_lock_record, start_ticks

_RETRY_S = 0.5


def open_locked(path: Path, wait: float) -> tuple[int, bool]:
    """Open ``path`` (no symlinks) and try an exclusive flock for up to ``wait`` seconds.

    Returns (fd, True) holding the lock, or (fd, False) when someone else holds it (the
    caller reads the record from the fd, then closes it). A reader's shared probe
    (statusboard.liveness) can collide with us for microseconds: hence the retries.
    Any other error closes the fd and is raised.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd, True
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() >= deadline:
                    return fd, False
                time.sleep(0.01)
    except BaseException:
        os.close(fd)
        raise


class SupervisorLock:
    def __init__(self, runtime_dir: Path) -> None:
        self.path = runtime_dir / LOCK_NAME
        self.fd: int | None = None
        # What the record said when we took the lock: the last holder that named itself.
        self.previous: tuple[int, int | None] | None = None

    def acquire(self, *, record: bool = True) -> None:
        """Take the lock or raise AlreadyRunning naming the holder recorded in the file.

        ``record`` names this process as the holder (a supervisor). `stop` takes the lock
        only to clean up after a dead supervisor and leaves the record alone, so the
        record keeps naming that supervisor, and another command never takes the stop
        for a pool to act on.
        """
        fd, held = open_locked(self.path, _RETRY_S)
        if not held:
            named, _ = parse_lock_record(os.pread(fd, 128, 0))
            os.close(fd)
            who = f" by pid {named[0]}" if named else ""
            raise AlreadyRunning(f"{self.path} is held{who}: a supervisor is already running")
        holder, predecessor = parse_lock_record(os.pread(fd, 128, 0))
        self.previous = holder or predecessor
        if record:
            pid = os.getpid()
            lines = f"{pid} {start_ticks(pid) or 0}\n"
            if self.previous is not None:
                lines += (
                    f"{self.previous[0]} {self.previous[1] if self.previous[1] is not None else ''}".rstrip()
                )
                lines += "\n"
            data = lines.encode()
            # Write, then cut (not cut, then write): a reader never finds the record empty.
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        self.fd = fd

    def release(self) -> None:
        """Drop the lock. The file stays: unlinking lock files invites two holders."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


START_LOCK_NAME = "start.lock"


class StartLock:
    """start.lock: held by `poolctl start` while it launches a detached supervisor, from
    before the daemon exists until it is ready or has failed.

    Between `start` beginning and the daemon taking supervisor.lock there is no
    supervisor to find, so a `stop` in that window would say "not running" and the pool
    would come up after it. `stop` sees this lock held and waits for the supervisor it
    announces (pool.ops.stopper). A concurrent `start` waits its turn, then finds the pool
    running. The fd is close-on-exec and not passed to the daemon: the lock ends with
    this `start`, whatever way it ends.
    """

    def __init__(self, runtime_dir: Path, *, wait: float) -> None:
        self.path = runtime_dir / START_LOCK_NAME
        self._wait = wait
        self.fd: int | None = None

    def __enter__(self) -> StartLock:
        fd, held = open_locked(self.path, self._wait)
        if not held:
            named, _ = parse_lock_record(os.pread(fd, 128, 0))
            os.close(fd)
            who = f" (pid {named[0]})" if named else ""
            raise AlreadyRunning(
                f"another start of this pool{who} is still in progress after {self._wait:g}s"
            )
        pid = os.getpid()
        data = f"{pid} {start_ticks(pid) or 0}\n".encode()
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        except OSError:
            pass  # informational (a full disk): the flock is what stop looks at
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
