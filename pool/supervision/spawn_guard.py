"""Starting a worker process when the machine may say no, without leaking what a failed
start made.

A start fails for reasons that are the machine's, not the worker's: EMFILE/ENFILE (file
descriptors), EAGAIN (the process limit), ENOMEM. The supervisor treats that as a slot
failure (pool/supervision/worker_lives.py ``_spawn_failed``); this module makes sure the failure
costs nothing:

- ``Headroom`` refuses a start that would leave the supervisor fewer than RESERVE_FDS
  free descriptors. Without it, scaling up eats every fd and the next thing to need one
  (a runtime.json flush, a control connection, /proc reads of a stop) fails instead of
  the spawn.
- ``LeakFreeForkPopen`` is multiprocess's fork Popen with the one thing it lacks: when its
  second pipe() or its fork() fails, the pipes it already made are closed (stock
  popen_fork leaks up to four fds per failed fork, so a process limit hit repeatedly
  would end in EMFILE for ever).
- ``abandon`` kills and reaps a process whose start was only half done.

What remains: forkserver and spawn starts use multiprocess's own Popen, which can leak
a pipe pair when its second pipe() fails; the headroom check makes that unlikely (it
needs another program in the process, or the system-wide ENFILE, to take the fds).
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from multiprocess import popen_fork

from pool.supervision.worker import WorkerArgs, worker_main
from statusboard.liveness import start_ticks

if TYPE_CHECKING:
    from pool.supervision.run import Run

RESERVE_FDS = 16  # kept free for the supervisor itself: flushes, log rollover, control, stop
# At a start's peak: 2 pipe ends, 2 task-channel ends, 4 popen pipes, pidfd, tree, statm, a /proc read.
FDS_PER_START = 12


def open_fds() -> int | None:
    """How many fds this process has open, or None where /proc cannot say."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the one listdir itself used
    except FileNotFoundError:
        return None


class Headroom:
    """Refuses a start that would eat into RESERVE_FDS (OSError EMFILE, before anything is made).

    Counting /proc/self/fd costs ~0.3 ms at 1000 fds, as much as a fork at 5000, so a count
    buys credit: the starts that certainly fit in what was free, each assumed to keep
    FDS_PER_START. Credit expires after RECOUNT_S (exits free fds; another thread of an
    embedding program may take some). Best effort: a start that still meets EMFILE fails
    as a slot failure all the same.
    """

    RECOUNT_S = 1.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._credit = 0
        self._expires = 0.0

    def check(self) -> None:
        now = self._clock()
        if self._credit > 0 and now < self._expires:
            self._credit -= 1
            return
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        used = open_fds()  # EMFILE itself when not even one fd is free
        if soft == resource.RLIM_INFINITY or used is None:
            self._credit, self._expires = 1 << 30, float("inf")
            return
        starts = (soft - used - RESERVE_FDS) // FDS_PER_START
        if starts < 1:
            raise OSError(
                errno.EMFILE,
                f"{os.strerror(errno.EMFILE)} ({used} of {soft} open, {RESERVE_FDS} kept free for the supervisor)",
            )
        self._credit, self._expires = starts - 1, now + self.RECOUNT_S


class LeakFreeForkPopen(popen_fork.Popen):  # type: ignore[misc]  # multiprocess is untyped
    """popen_fork.Popen whose failed launch closes the pipes it made (see the module doc)."""

    def _launch(self, process_obj: Any) -> None:
        made: list[int] = []
        try:
            parent_r, child_w = os.pipe()
            made += (parent_r, child_w)
            child_r, parent_w = os.pipe()
            made += (child_r, parent_w)
            pid = os.fork()
        except BaseException:
            for fd in made:
                os.close(fd)
            raise
        self.pid = pid
        if pid == 0:
            code = 1
            try:
                os.close(parent_r)
                os.close(parent_w)
                code = process_obj._bootstrap(parent_sentinel=child_r)
            finally:
                os._exit(code)
        os.close(child_w)
        os.close(child_r)
        self.finalizer = popen_fork.util.Finalize(self, popen_fork.util.close_fds, (parent_r, parent_w))
        self.sentinel = parent_r


def start(process: Any, *, fork: bool) -> None:
    """``process.start()``, with the leak-free Popen when the start method is fork."""
    if fork:
        # An instance attribute shadows the class's staticmethod; BaseProcess.start calls
        # self._Popen(self), so this is the one place a Popen class is chosen.
        process._Popen = LeakFreeForkPopen
    process.start()


def abandon(process: Any) -> None:
    """Kill, reap and close a process whose start failed half way (its pid is known)."""
    pid = getattr(process, "pid", None)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        process.join(5.0)
        if process.exitcode is not None:
            process.close()
    except (OSError, ValueError):
        pass


@dataclass
class Started:
    process: Any  # the multiprocess Process
    conn: Any  # the supervisor's end of its pipe
    ticks: int  # its start ticks (with its pid: its identity)
    pidfd: int  # readable once it exits; -1 where pidfds do not exist


def start_worker(run: Run, args: WorkerArgs) -> Started:
    """Start one worker process for ``args`` (its pipe made here). On OSError everything
    this attempt made is closed or killed and reaped, then the error is raised."""
    made: list[Any] = [] if args.channel is None else [args.channel]
    process: Any = None
    try:
        run.headroom.check()
        parent_end, child_end = run.mp.Pipe(duplex=True)
        made += (parent_end, child_end)
        args.conn = child_end
        process = run.mp.Process(target=worker_main, args=(args,), name=f"poolctl-worker-{args.slot}")
        start(process, fork=run.fork)
        if run.hooks is not None:
            run.hooks.forked(args.slot, args.generation, process.pid)
        ticks = start_ticks(process.pid) or 0
    except OSError:
        for end in made:
            end.close()
        if process is not None:
            abandon(process)
        raise
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        pidfd = -1  # no pidfds here: the sentinel pipe and the sweep tell its exit
    child_end.close()  # the child has its copy (fork) or was sent it (forkserver, spawn)
    if args.channel is not None:
        args.channel.close()
    return Started(process, parent_end, ticks, pidfd)
