"""The supervisor: keep N workers alive and tell the truth about them.

This is the public face: commands safe from any thread, ``run()`` (the daemon and
foreground case: it blocks) and ``with Supervisor(...)`` (embedded: the loop runs in a
thread of this program). ``run()`` takes the runtime directory's lock, opens the log
and makes a Loop (pool/supervision/loop.py), which owns everything that exists only while the
pool runs: the board, the slots' lives, the replacements, the process trees.

Start method: "auto" forks when the loop runs in a single-threaded process (the
daemon and foreground cases: forking is 1.5 ms and nothing else holds a lock), and
uses forkserver when the loop runs in a thread of a bigger program (embedded, the
task pool), where fork could copy a lock held by another thread into the child.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
import time
from collections.abc import Callable
from typing import Any

import multiprocess

from pool.errors import PoolError, SpecError, StopFailed
from pool.integrations.logfile import close_log, open_log
from pool.integrations.sdnotify import SystemdNotifier
from pool.spec import MAX_WORKERS, PoolSpec, workers_error
from pool.supervision import commands as cmd
from pool.supervision.lock import SupervisorLock
from pool.supervision.loop import Loop
from pool.supervision.proctree import command_line
from pool.supervision.readiness import Readiness
from pool.supervision.slot import StopResult, WorkerHooks
from statusboard import runtime_dir as rdir
from statusboard.board import Board
from statusboard.states import WorkerState as S

FDS_PER_WORKER = 6  # pidfd, pipe, sentinel, /proc statm, /proc children, task channel


def _allow_fds(wanted: int) -> None:
    """Raise the soft open-files limit toward ``wanted`` (never above the hard limit, never
    lower it): the common soft default of 1024 would stop a pool near 200 workers with
    EMFILE, while the hard limit (systemd: 524288) allows the full 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass  # then EMFILE, reported as any spawn failure would be


class Supervisor:
    """Runs a pool. ``run()`` blocks (daemon, foreground); ``with Supervisor(...)`` runs it
    in a thread of this program and stops it on exit.

    ``clock`` (seconds) and ``kill`` are injectable so tests can step time and
    simulate a process that will not die.
    """

    def __init__(
        self,
        spec: PoolSpec,
        *,
        runtime_dir: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        kill: Callable[[int, int], None] = os.kill,
        echo_log: bool = False,
        notify_fd: int | None = None,
        hooks: WorkerHooks | None = None,
        systemd: SystemdNotifier | None = None,
    ) -> None:
        self.spec = spec
        self.runtime_dir = rdir.resolve(spec.name, runtime_dir)
        self._clock = clock
        self._kill = kill
        self._echo_log = echo_log
        self._readiness = Readiness(notify_fd)
        self._hooks = hooks
        # Type=notify under systemd (foreground only): READY=1, STATUS=, WATCHDOG=1, STOPPING=1.
        self._systemd = systemd
        self._inbox = cmd.Inbox()
        self._ready = threading.Event()
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: StopResult | None = None
        self._setup_error: BaseException | None = None
        self.loop: Loop | None = None  # the run under way (or last run)
        self.log: logging.Logger = logging.getLogger("poolctl.unstarted")

    @property
    def board(self) -> Board | None:
        """The live board of the run under way (None before run() made it)."""
        return self.loop.board if self.loop is not None else None

    @property
    def mp_context(self) -> Any:
        """The multiprocess context the workers start with (None before run())."""
        return self.loop.run.mp if self.loop is not None else None

    # -- commands, safe from any thread ------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        self._inbox.put(cmd.Stop(reason))

    def scale(self, workers: int) -> None:
        if (error := workers_error(workers)) is not None:
            raise SpecError(error)
        self._inbox.put(cmd.Scale(workers))

    def rolling_restart(self) -> None:
        self._inbox.put(cmd.Roll())

    def replace_worker(self, slot: int, generation: int, reason: str) -> None:
        """SIGKILL the worker of ``slot`` (and its tree) if it is still ``generation``, and
        start a new one. A planned replacement (a task timeout): it does not count as a crash.
        """
        self._inbox.put(cmd.Kill(slot, generation, reason))

    def recycle_worker(self, slot: int, generation: int, reason: str) -> None:
        """Replace the worker of ``slot`` (if still ``generation``) gracefully, when its
        turn comes: one recycle at a time, never below N-1 serving, not a crash."""
        self._inbox.put(cmd.Recycle(slot, generation, reason))

    def release_worker(self, slot: int, generation: int) -> None:
        """The embedder finished the work of a worker it was asked to drain: stop it now."""
        self._inbox.put(cmd.Release(slot, generation))

    def report_failure(self, reason: str) -> None:
        """Tell a waiting `poolctl start` that this supervisor failed (readiness pipe)."""
        self._readiness.say(f"failed: {reason}")

    # -- embedded use --------------------------------------------------------

    def start(self, timeout: float | None = 30.0) -> Supervisor:
        """Run the loop in a background thread; return once every worker has beaten."""
        self._thread = threading.Thread(target=self._run_in_thread, name="poolctl-supervisor", daemon=True)
        self._thread.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready.wait(0.01):
            if self._finished.is_set():
                self._thread.join()
                if self._setup_error is not None:
                    raise self._setup_error
                result = self._result
                raise PoolError(
                    f"pool {self.spec.name!r} stopped before it was ready: "
                    f"{result.boot_error or result.reason if result else 'unknown'}"
                )
            if deadline is not None and time.monotonic() > deadline:
                waiting = self._not_ready()
                self.stop()
                raise PoolError(f"pool {self.spec.name!r} not ready within {timeout}s{waiting}")
        return self

    def stop(self) -> StopResult:
        """Stop the pool started by start(); raise StopFailed if any process survived."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join()
        result = self._result or StopResult("never started")
        if result.survivors:
            raise StopFailed(
                f"pool {self.spec.name!r}: processes survived the stop: "
                + ", ".join(f"{pid} ({command_line(pid)})" for pid in result.survivors),
                result.survivors,
            )
        return result

    def _not_ready(self) -> str:
        """What a pool that is late to be ready is waiting for (read from another thread:
        a glance at plain attributes, good enough for an error message)."""
        slots = list(self.loop.lives.slots) if self.loop is not None else []
        late = [
            f"worker {s.index} {s.state.label}"
            + (f" after {s.restarts} restarts" if s.restarts else "")
            + (f" ({s.last_error})" if s.last_error else "")
            for s in slots
            if s.state is not S.RUNNING
        ]
        return f": {'; '.join(late)}" if late else ""

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run_in_thread(self) -> None:
        try:
            self._result = self.run(install_signals=False)
        except BaseException as exc:
            self._setup_error = exc
        finally:
            self._finished.set()

    # -- the run -------------------------------------------------------------

    def run(self, *, install_signals: bool | None = None) -> StopResult:
        """Supervise until stopped. Takes the lock; raises AlreadyRunning if it is held.

        ``install_signals`` (default: when called in the main thread) also means this
        loop owns its process: it handles SIGTERM/SIGHUP/... and reaps its workers'
        orphans as a child subreaper (pool.supervision.containment).
        """
        if install_signals is None:
            install_signals = threading.current_thread() is threading.main_thread()
        method = self.spec.start_method
        if method == "auto":
            method = "fork" if threading.active_count() == 1 else "forkserver"
        mp = multiprocess.get_context(method)
        if method == "forkserver":
            # Workers fork from a server that has already imported what they run (and the
            # caller's __main__, as multiprocess does by default): ~50 ms less per worker.
            mp.set_forkserver_preload(["__main__", "pool.supervision.worker", "pool.taskpool.taskworker"])
        _allow_fds(FDS_PER_WORKER * MAX_WORKERS + 64)
        rdir.ensure(self.runtime_dir)
        lock = SupervisorLock(self.runtime_dir)
        self._inbox.open()
        try:
            lock.acquire()
            try:
                self.log = open_log(
                    self.runtime_dir,
                    echo=self._echo_log,
                    log_format=self.spec.log_format,
                    pool=self.spec.name,
                )
                try:
                    self.loop = Loop(
                        spec=self.spec,
                        runtime_dir=self.runtime_dir,
                        log=self.log,
                        lock=lock,
                        mp=mp,
                        clock=self._clock,
                        kill=self._kill,
                        hooks=self._hooks,
                        systemd=self._systemd,
                        inbox=self._inbox,
                        ready=self._ready,
                        readiness=self._readiness,
                        own_process=install_signals,
                    )
                    return self.loop.supervise()
                finally:
                    close_log(self.log)
            finally:
                lock.release()
        finally:
            self._inbox.close()
