"""What the supervisor loop can be asked to do: typed commands, one queue.

Commands come from any thread (the public methods of Supervisor, the task pool),
from the control socket (scale, rolling, stop) and from signals (SIGTERM/SIGINT
stop, SIGHUP rolling restart, SIGTTIN/SIGTTOU one worker more/fewer: gunicorn's
convention). They are queued and applied by the loop thread alone, in order.
"""

from __future__ import annotations

import os
import signal
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pool.spec import MAX_WORKERS, workers_error

if TYPE_CHECKING:
    from pool.supervision.loop import Loop


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


def control_request(request: dict[str, Any], inbox: Inbox, *, stopping: bool) -> str | None:
    """Turn a control-socket request into a command; the error line to answer, or None."""
    op = request.get("op")
    if op == "scale":
        workers = request.get("workers")
        if (error := workers_error(workers)) is not None:
            return error
        assert isinstance(workers, int)
        inbox.put(Scale(workers))
    elif op == "rolling":
        inbox.put(Roll())
    elif op == "stop":
        inbox.put(Stop("stop requested (control socket)"))
    else:
        return f"unknown op {op!r}"
    if stopping and op != "stop":
        return "the pool is stopping"
    return None


def apply(inbox: Inbox, loop: Loop, now: float) -> None:
    """Apply what came in since the last wake, in order: signals first (as commands),
    then the commands. Once the pool is stopping, only Stop still means something."""
    while inbox.signals:
        name = signal.Signals(inbox.signals.popleft()).name
        command, meaning = SIGNAL_COMMANDS[name]
        loop.log.info("received %s: %s", name, meaning)
        inbox.commands.append(command)
        if isinstance(command, Stop):
            inbox.note_stop_reason(command.reason)
    lives, replacements = loop.lives, loop.replacements
    while inbox.commands:
        command = inbox.commands.popleft()
        if isinstance(command, Stop):
            loop.begin_stop(inbox.stop_reason or command.reason, now)
        elif lives.stopping:
            continue
        elif isinstance(command, Scale):
            lives.resize(command.workers, now)
        elif isinstance(command, Nudge):
            lives.resize(min(MAX_WORKERS, max(1, lives.desired + command.delta)), now)
        elif isinstance(command, Roll):
            replacements.start_rolling()
        elif isinstance(command, Kill):
            replacements.kill_and_replace(command, now)
        elif isinstance(command, Recycle):
            replacements.queue_recycle(command)
        else:
            replacements.release_drained(command, now)
