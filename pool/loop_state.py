"""What the supervisor's parts share, declared once for the type checker.

Supervisor (pool/supervisor.py: the loop, commands, stop) is made of WorkerLives
(pool/worker_lives.py: one slot's life) and Replacements (pool/replacements.py:
planned replacements). They are one object at run time, all state set in
Supervisor.__init__; this base only names the attributes and the methods one part
calls in another, so each part reads on its own.
"""

from __future__ import annotations

import logging
import random
import select
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from pool.containment import TreeKeeper
from pool.metrics_http import MetricsServer
from pool.recycle import RssSampler
from pool.slot import Slot, WorkerHooks
from pool.spawn_guard import Headroom
from pool.spec import PoolSpec
from pool.state import Event
from statusboard.board import Board


class LoopState:
    spec: PoolSpec
    board: Board | None
    log: logging.Logger
    _slots: list[Slot]
    _desired: int
    _stopping: bool
    _dirty: bool
    _ready: threading.Event
    _boot_error: str | None
    _hooks: WorkerHooks | None
    _kill: Callable[[int, int], None]
    _clock: Callable[[], float]
    _mp: Any  # the multiprocess context of the start method in use
    _fork: bool
    _ticks: int
    _lock_fd: int | None
    _notify_fd: int | None
    _metrics: MetricsServer | None
    _poller: select.poll | None
    _exit_fds: dict[int, Slot]
    _next_sweep: float
    _beat_due: float
    _rolling: deque[int]
    _recycles: deque[tuple[int, int, str]]
    _rss: RssSampler
    _trees: TreeKeeper
    _next_rss: float
    _rng: random.Random
    _headroom: Headroom

    # Called across parts (defined in the part named).
    def _begin_stop(self, reason: str, now: float) -> None:  # supervisor
        raise NotImplementedError

    def _notify(self, line: str) -> None:  # supervisor
        raise NotImplementedError

    def _spawn(self, slot: Slot, now: float) -> None:  # worker_lives
        raise NotImplementedError

    def _set_state(self, slot: Slot, event: Event) -> None:  # worker_lives
        raise NotImplementedError

    def _begin_escalation(self, slot: Slot, why: str, now: float) -> None:  # worker_lives
        raise NotImplementedError

    def _check_birth_rss(self, slot: Slot) -> None:  # replacements
        raise NotImplementedError
