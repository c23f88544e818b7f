"""The worker side: the child's entry point and the WorkerContext a target receives.

A worker process, in order: resets the signal handlers it inherited (SIGINT is
ignored so a terminal Ctrl-C reaches the supervisor, which stops the pool
gracefully), leads its own process group as a child subreaper (its tree stays
below it: pool.supervision.containment), closes the supervisor's lock fd (an inherited flock would keep a
dead supervisor's lock "held"), asks the kernel for SIGTERM when its parent dies
and checks the parent did not die before that, maps the board, imports its
target, and runs it. A target that cannot be imported is reported as a boot
error and exits with BOOT_ERROR_EXIT, which stops the pool instead of looping.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pool.errors import TargetError
from pool.integrations.titles import set_title, worker_title
from pool.supervision.proctree import set_child_subreaper, set_parent_death_signal
from pool.supervision.target import load_target
from statusboard.board import Board, WorkerRow
from statusboard.liveness import is_alive

BOOT_ERROR_EXIT = 3  # gunicorn's WORKER_BOOT_ERROR
ORPHAN_CHECK_S = 1.0  # how often wait() looks for a dead supervisor
ORPHAN_AFTER_S = 10.0  # supervisor heartbeat age that triggers the pid check
REPORT_LIMIT = 16_384  # bytes of traceback sent to the supervisor
_RESET_SIGNALS = ("SIGTERM", "SIGHUP", "SIGTTIN", "SIGTTOU", "SIGCHLD", "SIGUSR1", "SIGUSR2")


@dataclass
class WorkerArgs:
    """Everything a worker needs; picklable for the spawn and forkserver methods."""

    slot: int
    pool: str
    generation: int
    target: str
    cwd: str
    board_path: str  # how to open the board (the supervisor's kept fd under /proc)
    supervisor_pid: int
    supervisor_ticks: int
    conn: Any  # multiprocess Connection: stop requests in, reports out
    close_fds: list[int] = field(default_factory=list)
    board_name: str = ""  # the board's name in the shm directory (its path when published)
    channel: Any = None  # an extra Connection for the task pool (pool.taskpool.executor), else None


class WorkerContext:
    """What a worker target gets: its slot, heartbeats, and stop requests.

    ``beat`` is bound straight to the row's store (a clock read and two int64
    stores, no syscall, no lock). ``wait(seconds)`` sleeps until a stop is
    requested or the time is up, beating as it goes.
    """

    def __init__(self, args: WorkerArgs, board: Board) -> None:
        self.slot = args.slot
        self.pool = args.pool
        self.generation = args.generation
        self._row = WorkerRow(board, args.slot)
        self.beat = self._row.heartbeat
        self._board = board
        self._conn = args.conn
        self.channel = args.channel
        self._stopping = False
        self._parent = os.getppid()
        self._supervisor = (args.supervisor_pid, args.supervisor_ticks)

    @property
    def stopping(self) -> bool:
        """True once a stop was requested (a board word: no syscall)."""
        if not self._stopping and self._row.stop_requested:
            self._stopping = True
        return self._stopping

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as a stop is requested (or the supervisor died)."""
        self.beat()
        if self.stopping:
            return True
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                signalled = self._conn.poll(min(remaining, ORPHAN_CHECK_S))
            except (OSError, EOFError):
                signalled = True
            if signalled or self._orphaned():
                self._stopping = True
                return True
            self.beat()

    def task_done(self, ok: bool = True) -> None:
        """Count one unit of work done (or failed) on the board."""
        self._row.finish_task(ok)

    def supervisor_alive(self) -> bool:
        return is_alive(*self._supervisor)

    def _orphaned(self) -> bool:
        if os.getppid() != self._parent:
            return True
        age_ns = time.monotonic_ns() - self._board.header_word("supervisor_heartbeat_ns")
        if age_ns < ORPHAN_AFTER_S * 1e9:
            return False
        # A frozen (SIGSTOPped) supervisor is alive: only a dead one orphans us.
        return not is_alive(*self._supervisor)


def worker_main(args: WorkerArgs) -> None:
    """Entry point of a worker process (the multiprocess Process target)."""
    _reset_signals()
    _hold_own_tree()
    for fd in args.close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    _die_with_parent()
    if not is_alive(args.supervisor_pid, args.supervisor_ticks):
        os._exit(0)  # the supervisor died before we could ask to die with it
    set_title(worker_title(args.slot, args.pool, args.generation))
    board = Board.open(Path(args.board_path), writable=True)
    # Opened through the supervisor's kept fd (a removed name must not matter), but named
    # by its name: an orphaned task worker removes the dead supervisor's board by it.
    board.path = Path(args.board_name or args.board_path)
    ctx = WorkerContext(args, board)
    try:
        target = load_target(args.target, args.cwd)
    except TargetError as exc:
        detail = "".join(traceback.format_exception(exc.__cause__)) if exc.__cause__ else ""
        _report(args.conn, "boot_error", str(exc), detail)
        sys.exit(BOOT_ERROR_EXIT)
    try:
        target(ctx)
    except SystemExit:
        raise
    except BaseException as exc:
        _report(args.conn, "error", f"{type(exc).__name__}: {exc}", traceback.format_exc())
        sys.exit(1)


def _reset_signals() -> None:
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass  # not the main thread: nothing was inherited there
    for name in _RESET_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is not None:
            signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _hold_own_tree() -> None:
    """Lead a process group of our own and be the reaper of our orphans (pool.supervision.containment):
    whatever this worker starts stays findable below it, whatever it does (``setsid()``,
    a double fork), until the supervisor ends the whole tree with the worker.

    Cost: a descendant that re-parents here and exits stays a zombie until this worker
    exits (Python reaps only the children it started); a pid entry, no memory.
    """
    try:
        os.setpgid(0, 0)
    except OSError:
        pass  # already a group leader (spawned by a process manager as one): keep it
    set_child_subreaper()


def _die_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGTERM) on Linux; elsewhere wait() checks the parent."""
    set_parent_death_signal(signal.SIGTERM)


def _report(conn: Any, kind: str, summary: str, detail: str) -> None:
    """Send (kind, summary, detail) to the supervisor; never let reporting kill the report."""
    try:
        conn.send((kind, summary[:REPORT_LIMIT], detail[-REPORT_LIMIT:]))
    except Exception:
        pass
