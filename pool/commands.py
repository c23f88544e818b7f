"""What the supervisor loop can be asked to do: typed commands, one queue.

Commands come from any thread (the public methods of Supervisor, the task pool),
from the control socket (scale, rolling, stop) and from signals (SIGTERM/SIGINT
stop, SIGHUP rolling restart, SIGTTIN/SIGTTOU one worker more/fewer: gunicorn's
convention). They are queued and applied by the loop thread alone, in order.
"""

from __future__ import annotations

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
