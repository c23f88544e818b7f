"""What one run of a supervisor has: made by Supervisor.run() once the lock is held.

Everything here exists for the whole run and is never None, so the parts that get
a Run (pool/supervision/worker_lives.py, pool/supervision/replacements.py, pool/supervision/loop.py) need no checks.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pool.spec import PoolSpec
from pool.supervision.containment import TreeKeeper
from pool.supervision.recycle import RssSampler
from pool.supervision.slot import WorkerHooks
from pool.supervision.spawn_guard import Headroom
from statusboard.board import Board


@dataclass
class Run:
    spec: PoolSpec
    log: logging.Logger
    board: Board
    mp: Any  # the multiprocess context of the start method in use
    fork: bool  # workers are forked from this process (they inherit every fd)
    ticks: int  # this supervisor's start ticks (with its pid: its identity)
    kill: Callable[[int, int], None]  # os.kill, injectable (a process that will not die)
    hooks: WorkerHooks | None  # what an embedding program (the task pool) hears
    trees: TreeKeeper  # the workers' process trees (pool/supervision/containment.py)
    rss: RssSampler
    headroom: Headroom  # fds kept free for the supervisor itself (pool/supervision/spawn_guard.py)
    rng: random.Random
    parent_fds: Callable[[], list[int]]  # this process's fds a forked worker must close
