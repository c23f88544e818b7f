"""What the supervisor loop can be asked to do: typed commands, one queue.

Commands come from any thread (the public methods of Supervisor, the task pool),
from the control socket (scale, rolling, stop) and from signals (SIGTERM/SIGINT
stop, SIGHUP rolling restart, SIGTTIN/SIGTTOU one worker more/fewer: gunicorn's
convention). They are queued and applied by the loop thread alone, in order.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Stop:
    reason: str


@dataclass(frozen=True)
class Scale:
    workers: int  # an absolute size, already checked against 1..MAX_WORKERS


@dataclass(frozen=True)
class Nudge:
    delta: int  # +1 / -1 worker (SIGTTIN / SIGTTOU), clamped to 1..MAX_WORKERS


@dataclass(frozen=True)
class Roll:
    """Rolling restart: one worker at a time, never fewer than N-1 serving."""


@dataclass(frozen=True)
class Kill:
    """SIGKILL this worker (if still this generation) and its tree, and replace it (a task
    timeout): a planned replacement, not a crash."""

    slot: int
    generation: int
    reason: str


@dataclass(frozen=True)
class Recycle:
    """Replace this worker gracefully when its turn comes (one at a time, N-1 serving)."""

    slot: int
    generation: int
    reason: str


@dataclass(frozen=True)
class Release:
    """The embedder has drained this worker's work: stop it now."""

    slot: int
    generation: int


Command = Stop | Scale | Nudge | Roll | Kill | Recycle | Release

# Signals the supervisor answers, and what each asks (a log line says which).
SIGNAL_COMMANDS: dict[str, tuple[Command, str]] = {
    "SIGTERM": (Stop("SIGTERM received"), "graceful stop"),
    "SIGINT": (Stop("SIGINT received"), "graceful stop"),
    "SIGHUP": (Roll(), "rolling restart"),
    "SIGTTIN": (Nudge(+1), "one worker more"),
    "SIGTTOU": (Nudge(-1), "one worker fewer"),
}


class Inbox:
    """The loop's mailbox: commands from any thread, signals from the handlers
    (pool.integrations.signals), and the wake pipe that tells the loop to look.

    ``stop_reason`` is the first reason anyone gave for stopping: what a waiting
    `poolctl start` and runtime.json report.
    """

    def __init__(self) -> None:
        self.commands: deque[Command] = deque()
        self.signals: deque[int] = deque()
        self.stop_reason = ""
        self.wake_r = self.wake_w = -1  # made by open(): a Supervisor never run holds no fds

    def put(self, command: Command) -> None:
        """Queue ``command`` and wake the loop (safe from any thread)."""
        if isinstance(command, Stop):
            self.note_stop_reason(command.reason)
        self.commands.append(command)
        try:
            os.write(self.wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # pipe full (a wake is pending anyway), or not open / already closed

    def note_stop_reason(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason

    def open(self) -> None:
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.commands:
            os.write(self.wake_w, b"\0")  # commands sent before run(): see them at once

    def drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        # -1, not the stale numbers: a late command (stop() after the pool stopped
        # itself) must fail with EBADF, not write into a file that reused the number.
        fds, self.wake_r, self.wake_w = (self.wake_r, self.wake_w), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)
