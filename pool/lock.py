"""supervisor.lock: held (flock) by the live supervisor for its whole life.

The lock, not a pid file, proves a supervisor is alive: the kernel drops it the
instant the holder dies, whatever the cause. Readers test it with a shared
non-blocking flock (statusboard.liveness), which can collide with our
exclusive attempt for a few microseconds, so acquiring retries briefly before it
concludes that another supervisor holds the lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from pool.errors import AlreadyRunning
from statusboard.liveness import LOCK_NAME

_RETRY_S = 0.5


class SupervisorLock:
    def __init__(self, runtime_dir: Path) -> None:
        self.path = runtime_dir / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunning naming the holder recorded in the file."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        deadline = time.monotonic() + _RETRY_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").split()
                    os.close(fd)
                    who = f" by pid {holder[0]}" if holder else ""
                    raise AlreadyRunning(
                        f"{self.path} is held{who}: a supervisor is already running"
                    ) from None
                time.sleep(0.01)
        # Informational only (readers verify pid + start time from runtime.json and /proc).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        """Drop the lock. The file stays: unlinking lock files invites two holders."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
