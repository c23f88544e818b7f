"""Worker and pool states: the exact integers the board stores.

The transition rules live with the supervisor (``pool.supervision.transitions``); this module only
names the values, so a reader can decode a board without importing ``pool``.
"""

from __future__ import annotations

from enum import IntEnum


class WorkerState(IntEnum):
    EMPTY = 0  # slot never used (or retired by a scale-down)
    STARTING = 1  # process started, no heartbeat yet
    RUNNING = 2  # has beaten at least once
    STOPPING = 3  # stop requested, waiting for it to exit
    EXITED = 4  # exited; the policy has not decided yet
    BACKOFF = 5  # waiting out a restart delay
    HUNG = 6  # heartbeat too old; being killed
    FAILED = 7  # gave up: too many restarts, or a boot error
    STOPPED = 8  # down on purpose (pool stopped, or policy said no restart)

    @property
    def label(self) -> str:
        return self.name.lower()


class PoolState(IntEnum):
    STARTING = 1
    RUNNING = 2
    STOPPING = 3
    STOPPED = 4
    STOP_FAILED = 5

    @property
    def label(self) -> str:
        return self.name.lower()


def worker_state_label(value: int) -> str:
    """Label of a stored worker state; an unknown value reads as ``unknown(N)``."""
    try:
        return WorkerState(value).label
    except ValueError:
        return f"unknown({value})"


def pool_state_label(value: int) -> str:
    try:
        return PoolState(value).label
    except ValueError:
        return f"unknown({value})"
