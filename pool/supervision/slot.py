"""One worker slot as the supervisor sees it, the result of a run, and the hooks an
embedding program (the task pool) gets. Plain data; the supervisor moves it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pool.supervision import shutdown
from pool.supervision.budget import RestartBudget
from pool.supervision.leaving import Leaving
from statusboard.states import WorkerState as S

__all__ = ["Slot", "StopResult", "WorkerHooks"]


@dataclass
class Slot:
    index: int
    budget: RestartBudget
    state: S = S.EMPTY
    process: Any = None
    conn: Any = None
    pid: int = 0
    pidfd: int = -1  # readable once the process exits (grandchildren holding its sentinel or not)
    ticks: int = 0
    generation: int = 0
    started: float = 0.0
    restarts: int = 0
    restart_at: float | None = None
    escalation: shutdown.Escalation | None = None
    leaving: Leaving | None = (
        None  # the planned change under way (pool/supervision/leaving.py); None: serving
    )
    recycle_at: float | None = None  # max_age: when this process is due for recycling
    recycled: int = 0  # planned replacements for a limit (not crashes: restarts counts those)
    rss: int = 0  # last sampled resident set size of its tree (it and its descendants), bytes
    rss_self: int = 0  # of the worker process alone
    # Past max_rss at its first beat: a replacement would be too, so never recycled for memory.
    born_over_rss: bool = False
    survivor: bool = False  # did not die after SIGKILL
    last_error: str = ""  # the last exception summary its worker reported
    oom_kills_at_start: int | None = (
        None  # the machine's OOM-kill count when it started (pool.supervision.oom)
    )

    @property
    def alive(self) -> bool:
        return self.process is not None and not self.survivor

    @property
    def replacing(self) -> bool:
        """Out of service to be replaced (until its successor's first beat)."""
        return self.leaving is not None and self.leaving.replacing


class WorkerHooks:
    """What an embedding program (the task pool) learns of worker lives.

    Called from the supervisor thread; implementations hand the news to their
    own thread and return at once.
    """

    def channel(self, slot: int, generation: int) -> Any:
        """An extra Connection end for the new worker (WorkerContext.channel), or None."""
        return None

    def forked(self, slot: int, generation: int, pid: int) -> None:
        """The process exists; its row does not name it yet (a test holds this window open)."""
        pass

    def started(self, slot: int, generation: int, pid: int) -> None:
        pass

    def exited(self, slot: int, generation: int, pid: int, code: int, how: str) -> None:
        """``how``: why it ended, for messages ("signal SIGKILL; killed from outside ...")."""
        pass

    def recycle(self, slot: int, generation: int, reason: str) -> bool:
        """The supervisor is about to recycle this worker. Return True to finish its
        work first and call ``Supervisor.release_worker`` when done; False (the
        default) lets the supervisor stop it at once (stop flag, grace, escalation)."""
        return False


@dataclass
class StopResult:
    reason: str
    survivors: list[int] = field(default_factory=list)
    boot_error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.survivors and self.boot_error is None
