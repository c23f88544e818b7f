"""Signal handlers that only enqueue; the supervisor loop dispatches.

The handler appends the signal number to a deque, and ``signal.set_wakeup_fd``
writes a byte to the loop's wake pipe, so the one place that blocks
(multiprocess.connection.wait) returns at once. Handlers are installed in a
context manager that restores the previous ones, so an embedding program gets
its own handlers back.
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

# SIGTERM/SIGINT: graceful stop. SIGHUP: rolling restart. SIGTTIN/SIGTTOU: one
# worker more / fewer (gunicorn's convention).
HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)


@contextmanager
def queued_signals(queue: deque[int], wake_fd: int) -> Iterator[None]:
    """Route HANDLED signals into ``queue`` (and a byte into ``wake_fd``) while inside."""

    def enqueue(signum: int, frame: FrameType | None) -> None:
        queue.append(signum)

    previous = {signum: signal.signal(signum, enqueue) for signum in HANDLED}
    old_wake = signal.set_wakeup_fd(wake_fd, warn_on_full_buffer=False)
    try:
        yield
    finally:
        signal.set_wakeup_fd(old_wake)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
