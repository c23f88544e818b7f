"""A pool that looks live to every reader, without running any worker.

This process plays the supervisor: it creates the board at the real segment path
with its own pid and start ticks, marks N rows RUNNING with a fresh heartbeat,
writes runtime.json naming the board, and holds ``flock(LOCK_EX)`` on
supervisor.lock, so ``statusboard.attach``, ``healthy()`` and the stdlib
``probe`` all take their full "alive" path.

Timeouts are an hour (worker heartbeats) and readers are told the same for the
supervisor heartbeat: a figure must never come from the cheap "stale" exit of a
check because the harness sat still for five seconds. The reader processes
assert ``healthy()`` is True before and after timing it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path

from bench import scratch
from statusboard import liveness, runtime_file
from statusboard.board import SEGMENT_PREFIX, Board, WorkerRow, segment_path, shm_dir
from statusboard.states import PoolState, WorkerState

HOUR_NS = 3600 * 1_000_000_000
SUPERVISOR_TIMEOUT_S = 3600.0
POOL_PREFIX = "bench-"


def segment_prefix() -> str:
    """Name prefix of every board segment the harness creates (for the leak check)."""
    return f"{SEGMENT_PREFIX}{os.getuid()}-{POOL_PREFIX}"


def shm_directory() -> Path:
    return shm_dir()


class FakePool:
    """Board + runtime dir + held lock for ``workers`` rows. A context manager; closes idempotently."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool = f"{POOL_PREFIX}{workers}"
        self.runtime_dir = scratch.make_dir("run")  # mode 0700
        self._lock_fd: int | None = None
        self.board: Board | None = None
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def _create(self) -> None:
        pid = os.getpid()
        ticks = liveness.start_ticks(pid)
        if ticks is None:
            raise RuntimeError("cannot read this process's start ticks from /proc")
        self.segment = segment_path(self.pool, pid, ticks)
        board = Board.create(
            self.segment,
            self.workers,
            supervisor_pid=pid,
            supervisor_start_ticks=ticks,
            heartbeat_timeout_ns=HOUR_NS,
            workers_desired=self.workers,
        )
        self.board = board
        board.set_header(
            pool_state=int(PoolState.RUNNING), slots_used=self.workers, workers_desired=self.workers
        )
        now = time.monotonic_ns()
        for slot in range(self.workers):
            board.set_lifecycle(slot, state=int(WorkerState.RUNNING), generation=1, started_ns=now)
            WorkerRow(board, slot).beat(time.monotonic_ns())
        board.supervisor_beat(time.monotonic_ns())

        lock_path = self.runtime_dir / liveness.LOCK_NAME
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        runtime_file.write(
            self.runtime_dir,
            {
                "pool": self.pool,
                "state": "running",
                "supervisor": {"pid": pid, "start_ticks": ticks},
                "workers_desired": self.workers,
                "workers": [],
                "board": str(self.segment),
            },
        )

    def refresh(self) -> None:
        """Fresh supervisor and worker heartbeats (call before handing the pool to a reader)."""
        board = self.board
        if board is None:
            raise RuntimeError("the fake pool is closed")
        now = time.monotonic_ns()
        board.supervisor_beat(now)
        for slot in range(self.workers):
            WorkerRow(board, slot).beat(now)

    def close(self) -> None:
        """Unmap and unlink the board, release the lock, remove the runtime dir. Idempotent."""
        if self.board is not None:
            self.board.close()
            self.board.unlink()
            self.board = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def __enter__(self) -> FakePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
