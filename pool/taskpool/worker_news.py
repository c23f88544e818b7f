"""What the task pool's dispatcher hears of its workers' lives.

The supervisor thread calls PoolHooks (a supervision WorkerHooks); each call makes
the worker's task channel or posts one typed piece of news to the dispatcher thread,
which applies it in order (pool/taskpool/executor.py). The hooks hold the Pool
weakly: a Pool nobody references can still be collected and shut down.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pool.supervision.slot import WorkerHooks
from statusboard.layout import NO_TASK

if TYPE_CHECKING:
    from pool.taskpool.executor import Pool


@dataclass(frozen=True)
class Started:
    slot: int
    generation: int
    pid: int


@dataclass(frozen=True)
class Recycling:
    """The supervisor is recycling this worker: send it nothing more, release it when done."""

    slot: int
    generation: int
    reason: str


@dataclass(frozen=True)
class Exited:
    slot: int
    generation: int
    pid: int
    running: int  # the task id it was running when it died (NO_TASK: none)
    how: str  # how it ended, for the WorkerCrashed message


WorkerNews = Started | Recycling | Exited


class PoolHooks(WorkerHooks):
    """Supervisor-thread callbacks: make the channel, then hand news to the dispatcher."""

    def __init__(self, pool: Pool) -> None:
        self._pool = weakref.ref(pool)
        self._channels: dict[tuple[int, int], Any] = {}
        self._lock = threading.Lock()

    def channel(self, slot: int, generation: int) -> Any:
        pool = self._pool()
        if pool is None:
            return None
        parent_end, child_end = pool._supervisor.mp_context.Pipe(duplex=True)
        with self._lock:
            self._channels[(slot, generation)] = parent_end
        return child_end

    def take_channel(self, slot: int, generation: int) -> Any:
        """The dispatcher's end of a started worker's channel (None if none was made)."""
        with self._lock:
            return self._channels.pop((slot, generation), None)

    def started(self, slot: int, generation: int, pid: int) -> None:
        self._post(Started(slot, generation, pid))

    def recycle(self, slot: int, generation: int, reason: str) -> bool:
        # Always drain: the worker finishes what it holds before it is stopped, so a
        # recycle never fails or loses a task (the dispatcher calls release_worker).
        self._post(Recycling(slot, generation, reason))
        return True

    def exited(self, slot: int, generation: int, pid: int, code: int, how: str) -> None:
        # Which task it was running is read here, in the supervisor thread, before this
        # returns: the supervisor may respawn the slot at once, and the new worker's row
        # reset clears task_id before the dispatcher could look at it (the crashed task
        # would then pass for one that never started and run again, retries or not).
        pool = self._pool()
        board = pool._supervisor.board if pool is not None else None
        running = board.word(slot, "task_id") if board is not None else NO_TASK
        self._post(Exited(slot, generation, pid, running, how))

    def _post(self, news: WorkerNews) -> None:
        pool = self._pool()
        if pool is not None:
            pool._events.append(news)
            pool._wake()
