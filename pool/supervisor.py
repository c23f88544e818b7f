"""The supervisor: keep N workers alive and tell the truth about them.

Data flow::

    workers --heartbeat stores--> board (shm) <--lifecycle stores-- supervisor
    workers --pipe: reports (tracebacks, boot errors)--> supervisor
    supervisor --pipe byte + board flag: stop requests--> workers
    signals / commands --wake pipe--> supervisor loop
    supervisor --atomic replace--> runtime.json ; --lines--> supervisor.log

The loop blocks in exactly one place, a kept ``select.poll`` on the
worker sentinels plus the wake pipe, with the next deadline as timeout (hang
check, escalation step, restart delay, flush, and a 1 s supervisor heartbeat).
After each wake it reaps exits, applies the restart policy, advances stop
escalations, and flushes runtime.json if a lifecycle changed.

Start method: "auto" forks when this loop runs in a single-threaded process
(the daemon and foreground cases: forking is 1.5 ms and nothing else holds a
lock), and uses forkserver when the loop runs in a thread of a bigger program
(embedded ``with Supervisor(...)``, the task pool), where fork could copy a lock
held by another thread into the child.
"""

from __future__ import annotations

import logging
import os
import random
import resource
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import multiprocess

from pool import shutdown
from pool.budget import AfterExit, RestartBudget, after_exit
from pool.control import ControlServer, address
from pool.errors import PoolError, SpecError, StopFailed
from pool.lock import SupervisorLock
from pool.logfile import close_log, open_log
from pool.metrics_http import MetricsServer
from pool.recycle import RssSampler, age_limit, may_start, over_rss
from pool.runtime_doc import cleanup_previous, runtime_document
from pool.sdnotify import SystemdNotifier
from pool.signals import queued_signals
from pool.slot import Slot, StopResult, WorkerHooks
from pool.spec import MAX_WORKERS, PoolSpec, format_size
from pool.state import Event, next_state
from pool.worker import BOOT_ERROR_EXIT, WorkerArgs, worker_main
from statusboard import runtime_dir as rdir
from statusboard import runtime_file
from statusboard.board import Board, segment_path
from statusboard.health import describe_exit
from statusboard.layout import MAX_CAPACITY
from statusboard.liveness import start_ticks
from statusboard.states import PoolState
from statusboard.states import WorkerState as S

# Longest sleep: the supervisor heartbeat on the board is at most this old, so a
# `status --supervisor-timeout` should be 2 s or more (the default is 5 s). Every
# wake costs CPU; 1 s is gunicorn's arbiter tick, the idle-CPU figure to beat.
TICK_S = 1.0
SWEEP_S = 5.0  # also reap every worker this often, whether or not its fd said so (belt and braces)
STARTING_POLL_S = 0.001  # while a worker has not beaten yet, look for its first beat this often (boot only)
AGE_LIMIT = "max_age"  # a queued recycle for age: its log line is worded when it starts
FDS_PER_WORKER = 5  # sentinel, pipe, pidfd, /proc statm, task channel


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


_SIGNAL_COMMANDS = {
    "SIGTERM": "stop",
    "SIGINT": "stop",
    "SIGHUP": "rolling",
    "SIGTTIN": "more",
    "SIGTTOU": "fewer",
}


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
        # Readiness pipe of a detached supervisor (pool.daemon): one line, "ready"
        # or "failed: <reason>", then closed. Forked workers close their copy.
        self._notify_fd = notify_fd
        self._hooks = hooks
        # Type=notify under systemd (foreground only): READY=1, STATUS=, WATCHDOG=1, STOPPING=1.
        self._systemd = systemd
        self._systemd_status = ""
        self._watchdog_at = 0.0
        self._metrics: MetricsServer | None = None
        self._desired = spec.workers
        self._slots: list[Slot] = []
        self._wake_r = self._wake_w = -1  # made by run(): a Supervisor never run holds no fds
        self._signals: deque[int] = deque()
        self._commands: deque[tuple[str, int]] = deque()
        self._stopping = False
        self._stop_reason = ""
        self._boot_error: str | None = None
        self._rolling: deque[int] = deque()
        self._replacements: deque[tuple[int, int, str]] = deque()
        self._recycles: deque[tuple[int, int, str]] = deque()  # (slot, generation, reason), one at a time
        self._releases: deque[tuple[int, int]] = deque()  # recycles the embedder has drained
        self._rss = RssSampler()
        self._next_rss = 0.0
        self._rng = random.Random()
        self._poller: select.poll | None = None
        self._beat_due = 0.0  # when a heartbeat could next be too old (set by _watch_beats)
        self._exit_fds: dict[int, Slot] = {}  # fd readable when that slot's process exits
        self._next_sweep = 0.0
        self._ready = threading.Event()
        self._finished = threading.Event()
        self._dirty = True
        self._next_flush = 0.0
        self._thread: threading.Thread | None = None
        self._result: StopResult | None = None
        self._setup_error: BaseException | None = None
        self.log: logging.Logger = logging.getLogger("poolctl.unstarted")
        self.board: Board | None = None

    # -- commands, safe from any thread ------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        self._command("stop", 0, reason)

    def scale(self, workers: int) -> None:
        if not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
            raise SpecError(f"workers: must be an integer in 1..{MAX_WORKERS}, got {workers!r}")
        self._command("scale", workers)

    def rolling_restart(self) -> None:
        self._command("rolling", 0)

    def replace_worker(self, slot: int, generation: int, reason: str) -> None:
        """SIGKILL the worker of ``slot`` if it is still ``generation``, and start a new one.

        A planned replacement (a task timeout): it does not count as a crash.
        """
        self._replacements.append((slot, generation, reason))
        self._command("replace", 0)

    def recycle_worker(self, slot: int, generation: int, reason: str) -> None:
        """Replace the worker of ``slot`` (if still ``generation``) gracefully, when its
        turn comes: one recycle at a time, never below N-1 serving, not a crash."""
        self._recycles.append((slot, generation, reason))
        self._command("recycle", 0)

    def release_worker(self, slot: int, generation: int) -> None:
        """The embedder finished the work of a worker it was asked to drain: stop it now."""
        self._releases.append((slot, generation))
        self._command("release", 0)

    def _command(self, name: str, value: int, reason: str = "") -> None:
        if name == "stop":
            self._stop_reason = self._stop_reason or reason
        self._commands.append((name, value))
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # pipe full (a wake is pending anyway) or already closed

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
                f"{', '.join(map(str, result.survivors))}",
                result.survivors,
            )
        return result

    def _not_ready(self) -> str:
        """What a pool that is late to be ready is waiting for (read from another thread:
        a glance at plain attributes, good enough for an error message)."""
        late = [
            f"worker {s.index} {s.state.label}"
            + (f" after {s.restarts} restarts" if s.restarts else "")
            + (f" ({s.last_error})" if s.last_error else "")
            for s in list(self._slots)
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

    # -- the loop ------------------------------------------------------------

    def run(self, *, install_signals: bool | None = None) -> StopResult:
        """Supervise until stopped. Takes the lock; raises AlreadyRunning if it is held."""
        if install_signals is None:
            install_signals = threading.current_thread() is threading.main_thread()
        method = self.spec.start_method
        if method == "auto":
            method = "fork" if threading.active_count() == 1 else "forkserver"
        self._mp = multiprocess.get_context(method)
        if method == "forkserver":
            # Workers fork from a server that has already imported what they run (and the
            # caller's __main__, as multiprocess does by default): ~50 ms less per worker.
            self._mp.set_forkserver_preload(["__main__", "pool.worker", "pool.taskworker"])
        self._fork = method == "fork"
        _allow_fds(FDS_PER_WORKER * MAX_WORKERS + 64)
        rdir.ensure(self.runtime_dir)
        lock = SupervisorLock(self.runtime_dir)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._commands:
            os.write(self._wake_w, b"\0")  # commands sent before run(): see them at once
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
                    return self._run_locked(lock, install_signals)
                finally:
                    close_log(self.log)
            finally:
                lock.release()
        finally:
            # -1, not the stale numbers: a late command (stop() after the pool stopped
            # itself) must fail with EBADF, not write into a file that reused the number.
            wake_fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
            for fd in wake_fds:
                os.close(fd)

    def _run_locked(self, lock: SupervisorLock, install_signals: bool) -> StopResult:
        self._lock_fd = lock.fd
        cleaned = cleanup_previous(self.runtime_dir, self.spec.name, grace=self.spec.grace)
        for line in cleaned:
            self.log.warning(line)
        pid = os.getpid()
        self._ticks = start_ticks(pid) or 0
        self._started_wall = time.time()
        self.board = Board.create(
            segment_path(self.spec.name, pid, self._ticks),
            MAX_CAPACITY,
            supervisor_pid=pid,
            supervisor_start_ticks=self._ticks,
            heartbeat_timeout_ns=int(self.spec.heartbeat_timeout * 1e9),
            workers_desired=self._desired,
        )
        self.board.set_header(pool_state=PoolState.STARTING)
        self._control = ControlServer(address(self.spec.name, pid, self._ticks), self._on_control)
        try:
            self.log.info(
                "supervisor started: pool %s, pid %d, target %s, %d workers, start method %s",
                self.spec.name,
                pid,
                self.spec.target,
                self._desired,
                self._mp.get_start_method(),
            )
            if self.spec.metrics_port is not None:
                self._metrics = self._serve_metrics(self.spec.metrics_port)
            self._flush(self._clock())
            if install_signals:
                with queued_signals(self._signals, self._wake_w):
                    self._loop()
            else:
                self._loop()
        except BaseException as exc:
            self.log.exception("supervisor error: %s", exc)
            if not self._stop_reason:  # what a waiting `poolctl start` hears
                self._stop_reason = (
                    str(exc)
                    if isinstance(exc, PoolError)
                    else f"supervisor error: {type(exc).__name__}: {exc}"
                )
            self._emergency_stop()
            raise
        finally:
            result = self._finish()
        return result

    def _loop(self) -> None:
        now = self._clock()
        self._resize(self._desired, now)
        while not (self._stopping and not any(s.alive for s in self._slots)):
            timeout = max(0.0, self._next_deadline(now) - self._clock())
            ready = {fd for fd, _ in self._waiter().poll(timeout * 1000)}
            now = self._clock()
            assert self.board is not None
            self.board.supervisor_beat(time.monotonic_ns())
            if self._wake_r in ready:
                self._drain_wake()
            if self._control.fileno() in ready:
                self._control.serve_pending()
            if self._metrics is not None:
                due = self._metrics.next_deadline()
                if self._metrics.fileno() in ready or (due is not None and now >= due):
                    self._metrics.service()
            if self._systemd is not None and self._systemd.watchdog_interval and now >= self._watchdog_at:
                # Pinged from the loop itself: a wedged loop stops the pings and systemd acts.
                self._systemd.watchdog()
                self._watchdog_at = now + self._systemd.watchdog_interval
            self._dispatch(now)
            self._reap(now, ready)
            self._watch_beats(now)
            self._sample_rss(now)
            self._check_limits(now)
            self._escalate(now)
            self._start_due(now)
            self._advance_rolling(now)
            self._advance_recycling(now)
            self._check_ready()
            if self._dirty or now >= self._next_flush:
                self._flush(now)

    def _waiter(self) -> select.poll:
        """The poll set: wake pipe, control socket, one exit fd per live worker.

        The exit fd is a pidfd (Linux 5.3+), which becomes readable when the process
        exits even if a grandchild inherited its sentinel pipe; else the sentinel.
        Kept between wakes and rebuilt only when a worker starts or ends: building a
        selector on every wake (multiprocess.connection.wait) costs more idle CPU than
        everything else the loop does.
        """
        if self._poller is None:
            self._poller = select.poll()
            for fd in (self._wake_r, self._control.fileno()):
                self._poller.register(fd, select.POLLIN)
            if self._metrics is not None:
                self._poller.register(self._metrics.fileno(), select.POLLIN)
            self._exit_fds = {}
            for slot in self._slots:
                if slot.alive:
                    fd = slot.pidfd if slot.pidfd >= 0 else slot.process.sentinel
                    self._exit_fds[fd] = slot
                    self._poller.register(fd, select.POLLIN)
        return self._poller

    def _next_deadline(self, now: float) -> float:
        deadline = min(now + TICK_S, self._next_flush)
        if self.spec.rss_interval:
            deadline = min(deadline, self._next_rss)
        if self._systemd is not None and self._systemd.watchdog_interval:
            deadline = min(deadline, self._watchdog_at)
        if self._metrics is not None:
            deadline = min(deadline, self._metrics.next_deadline() or deadline)
        deadline = min(deadline, self._beat_due)
        for slot in self._slots:
            if slot.restart_at is not None:
                deadline = min(deadline, slot.restart_at)
            if slot.recycle_at is not None and not slot.recycle_queued:
                deadline = min(deadline, slot.recycle_at)
            if slot.escalation is not None:
                deadline = min(deadline, slot.escalation.next_at)
            if slot.state is S.STARTING:
                deadline = min(deadline, now + STARTING_POLL_S)
        return deadline

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _on_control(self, request: dict[str, Any]) -> str | None:
        """A control-socket request (pool.control), answered from the loop thread."""
        op = request.get("op")
        if op == "scale":
            workers = request.get("workers")
            if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= MAX_WORKERS:
                return f"workers: must be an integer in 1..{MAX_WORKERS}, got {workers!r}"
            self._commands.append(("scale", workers))
        elif op == "rolling":
            self._commands.append(("rolling", 0))
        elif op == "stop":
            self._stop_reason = self._stop_reason or "stop requested (control socket)"
            self._commands.append(("stop", 0))
        else:
            return f"unknown op {op!r}"
        if self._stopping and op != "stop":
            return "the pool is stopping"
        return None

    def _dispatch(self, now: float) -> None:
        while self._signals:
            signum = self._signals.popleft()
            name = signal.Signals(signum).name
            command = _SIGNAL_COMMANDS[name]
            self.log.info(
                "received %s: %s",
                name,
                {
                    "stop": "graceful stop",
                    "rolling": "rolling restart",
                    "more": "one worker more",
                    "fewer": "one worker fewer",
                }[command],
            )
            if command == "stop":
                self._stop_reason = self._stop_reason or f"{name} received"
            self._commands.append((command, 0))
        while self._commands:
            command, value = self._commands.popleft()
            if command == "stop":
                self._begin_stop(self._stop_reason or "stop requested", now)
            elif self._stopping:
                continue
            elif command == "scale":
                self._resize(value, now)
            elif command == "more":
                self._resize(min(MAX_WORKERS, self._desired + 1), now)
            elif command == "fewer":
                self._resize(max(1, self._desired - 1), now)
            elif command == "rolling":
                self._start_rolling()
            elif command == "replace":
                self._replace_now()
            elif command == "release":
                self._release_drained(now)

    # -- workers -------------------------------------------------------------

    def _resize(self, desired: int, now: float) -> None:
        if desired != self._desired:
            self.log.info("scaling from %d to %d workers", self._desired, desired)
        self._desired = desired
        spec = self.spec
        while len(self._slots) < desired:
            self._slots.append(
                Slot(
                    len(self._slots),
                    RestartBudget(
                        spec.max_restarts,
                        spec.restart_window,
                        spec.backoff_base,
                        spec.backoff_cap,
                        spec.backoff_reset,
                    ),
                )
            )
        for slot in self._slots:
            if slot.index < desired:
                if slot.retire and slot.alive:
                    slot.replace = True  # wanted again before it exited: respawn it, not a crash
                slot.retire = False
                if slot.state is S.EMPTY:
                    self._spawn(slot, now)
            elif not slot.retire:
                slot.retire = True
                if slot.alive:
                    self._begin_escalation(slot, "retire", now)
                elif slot.state is not S.EMPTY:
                    self._set_state(slot, Event.RETIRE)
                    slot.restart_at = None
        self._trim_slots()
        assert self.board is not None
        self.board.set_header(workers_desired=desired, slots_used=len(self._slots))
        self._dirty = True

    def _trim_slots(self) -> None:
        while self._slots and self._slots[-1].state is S.EMPTY and self._slots[-1].index >= self._desired:
            self._slots.pop()
        assert self.board is not None
        self.board.set_header(slots_used=len(self._slots))

    def _spawn(self, slot: Slot, now: float) -> None:
        assert self.board is not None
        board = self.board
        board.reset_worker_region(slot.index)
        # Before the child exists: a stop flag left by the previous process (rolling
        # restart, retire) would otherwise be read by the new one as its own stop.
        board.set_lifecycle(slot.index, stop_requested=0)
        parent_end, child_end = self._mp.Pipe(duplex=True)
        slot.generation += 1
        args = WorkerArgs(
            slot=slot.index,
            pool=self.spec.name,
            generation=slot.generation,
            target=self.spec.target,
            cwd=self.spec.cwd,
            board_path=str(board.path),
            supervisor_pid=os.getpid(),
            supervisor_ticks=self._ticks,
            conn=child_end,
            channel=self._hooks.channel(slot.index, slot.generation) if self._hooks else None,
            close_fds=self._parent_fds() if self._fork else [],
        )
        process = self._mp.Process(target=worker_main, args=(args,), name=f"poolctl-worker-{slot.index}")
        process.start()
        try:
            slot.pidfd = os.pidfd_open(process.pid)
        except (AttributeError, OSError):
            slot.pidfd = -1  # no pidfds here: the sentinel pipe and the sweep tell its exit
        self._poller = None
        child_end.close()
        if args.channel is not None:
            args.channel.close()
        slot.process, slot.conn, slot.pid = process, parent_end, process.pid
        slot.ticks = start_ticks(process.pid) or 0
        slot.started = now
        slot.restart_at = None
        slot.draining = slot.recycle_queued = slot.born_over_rss = False
        limit = age_limit(self.spec, self._rng)
        slot.recycle_at = None if limit is None else now + limit
        slot.rss = 0
        if self.spec.rss_interval:
            self._rss.track(process.pid)
            slot.rss = self._rss.sample(process.pid) or 0  # so a live worker never shows "not sampled"
        self._set_state(slot, Event.SPAWN)
        board.set_lifecycle(
            slot.index,
            pid=slot.pid,
            pid_start_ticks=slot.ticks,
            generation=slot.generation,
            started_ns=time.monotonic_ns(),
            stop_requested=0,
            restarts=slot.restarts,
            recycled=slot.recycled,
            rss_bytes=slot.rss,
        )
        self.log.info("worker %d started pid %d (generation %d)", slot.index, slot.pid, slot.generation)
        if self._hooks is not None:
            self._hooks.started(slot.index, slot.generation, slot.pid)

    def _parent_fds(self) -> list[int]:
        """The supervisor's own fds a forked worker must close (it inherits them all)."""
        fds = [fd for fd in (self._lock_fd, self._notify_fd) if fd is not None]
        if self._metrics is not None:
            fds.extend(self._metrics.fds())  # else a worker that outlives us holds the port
        return fds

    def _set_state(self, slot: Slot, event: Event) -> None:
        slot.state = next_state(slot.state, event)
        assert self.board is not None
        self.board.set_lifecycle(slot.index, state=slot.state)
        self._dirty = True

    def _reap(self, now: float, ready: set[int]) -> None:
        """Reap the workers whose exit fd fired (waitpid per worker per wake would be the
        biggest idle cost of a large pool), and every worker once per SWEEP_S."""
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_S
            due = [s for s in self._slots if s.alive]
        else:
            due = [self._exit_fds[fd] for fd in ready if fd in self._exit_fds]
        for slot in due:
            if slot.alive:
                code = slot.process.exitcode  # waitpid(WNOHANG): reaps, so no zombie is left
                if code is not None:
                    self._on_exit(slot, code, now)

    def _read_report(self, slot: Slot) -> tuple[str, str, str] | None:
        report = None
        try:
            while slot.conn.poll(0):
                report = slot.conn.recv()
        except (EOFError, OSError, Exception):
            pass
        return report if isinstance(report, tuple) and len(report) == 3 else None

    def _on_exit(self, slot: Slot, code: int, now: float) -> None:
        report = self._read_report(slot)
        slot.conn.close()
        slot.process.close()
        slot.process = slot.conn = None
        if slot.pidfd >= 0:
            os.close(slot.pidfd)
            slot.pidfd = -1
        self._poller = None
        self._rss.forget(slot.pid)
        slot.recycle_at = None
        if slot.draining:
            # It died while its work was being drained for a recycle: that is a crash.
            slot.draining = slot.replace = False
        prev = slot.state
        escalation, slot.escalation = slot.escalation, None
        self._set_state(slot, Event.EXIT)
        assert self.board is not None
        self.board.set_lifecycle(slot.index, last_exit_code=code, rss_bytes=0)
        slot.rss = 0
        how = describe_exit(code)
        if code == -9 and not slot.replace and (escalation is None or escalation.stage < shutdown.Stage.KILL):
            how += "; perhaps out of memory?"
        self.log.info("worker %d (pid %d) exited: %s", slot.index, slot.pid, how)
        if self._hooks is not None:
            if prev is S.HUNG:
                how = f"killed as hung (no heartbeat for {self.spec.heartbeat_timeout:g}s), {how}"
            self._hooks.exited(slot.index, slot.generation, slot.pid, code, how)
        boot_error = False
        if report is not None:
            kind, summary, detail = report
            slot.last_error = summary
            self.log.error(
                "worker %d (pid %d) %s: %s\n%s",
                slot.index,
                slot.pid,
                "could not boot" if kind == "boot_error" else "raised",
                summary,
                detail.rstrip(),
            )
            boot_error = kind == "boot_error" and code == BOOT_ERROR_EXIT
        outcome = after_exit(
            self.spec.restart,
            code=code,
            hung=prev is S.HUNG,
            booted=prev is not S.STARTING,
            boot_error=boot_error,
            retire=slot.retire,
            stopping=self._stopping,
            planned=slot.replace,
        )
        if outcome is AfterExit.BOOT_ERROR:
            self._set_state(slot, Event.GIVE_UP)
            self._boot_error = self._boot_error or slot.last_error
            self.log.error("boot error in worker %d: stopping the pool instead of restarting", slot.index)
            self._begin_stop(f"boot error: {slot.last_error}", now)
        elif outcome is AfterExit.RETIRED:
            self._set_state(slot, Event.RETIRE)
            self._trim_slots()
        elif outcome is AfterExit.STOPPED:
            self._set_state(slot, Event.STOP)
        elif outcome is AfterExit.REPLACE:
            self._spawn(slot, now)
        elif outcome is AfterExit.DONE:
            self._set_state(slot, Event.DONE)
            self.log.info("worker %d not restarted (policy %s)", slot.index, self.spec.restart.value)
            self._slot_given_up(slot)
        else:
            self._restart(slot, now)

    def _restart(self, slot: Slot, now: float) -> None:
        """After a crash: restart now, after a backoff, or give up (intensity exceeded)."""
        assert self.board is not None
        delay = slot.budget.record_exit(now, now - slot.started)
        if delay is None:
            self._set_state(slot, Event.GIVE_UP)
            self.log.error(
                "worker %d failed: more than %d restarts in %gs; giving up",
                slot.index,
                self.spec.max_restarts,
                self.spec.restart_window,
            )
            self._slot_given_up(slot)
            return
        slot.restarts += 1
        self.board.set_lifecycle(slot.index, restarts=slot.restarts)
        if delay == 0:
            self.log.info("worker %d restarting (restart %d)", slot.index, slot.restarts)
            self._spawn(slot, now)
        else:
            self._set_state(slot, Event.BACKOFF)
            slot.restart_at = now + delay
            self.log.info(
                "worker %d restarting in %.2fs (restart %d, %d in the last %gs)",
                slot.index,
                delay,
                slot.restarts,
                slot.budget.recent,
                self.spec.restart_window,
            )

    def _watch_beats(self, now: float) -> None:
        """Promote first beats, start hang kills, and note when the next hang could be due
        (``_beat_due``, for the loop's sleep: one pass over the board per wake, not two)."""
        assert self.board is not None
        board = self.board
        mono = time.monotonic_ns()
        timeout_ns = int(self.spec.heartbeat_timeout * 1e9)
        soonest_ns = timeout_ns
        for slot in self._slots:
            if slot.state not in (S.STARTING, S.RUNNING) or slot.escalation is not None:
                continue
            beats = board.word(slot.index, "beats")
            if slot.state is S.STARTING and beats:
                self._set_state(slot, Event.FIRST_BEAT)
                self._check_birth_rss(slot)
                if slot.replace:
                    slot.replace = False
                    if self._rolling and self._rolling[0] == slot.index:
                        self._rolling.popleft()
            reference = (
                board.word(slot.index, "heartbeat_ns") if beats else board.word(slot.index, "started_ns")
            )
            age_ns = mono - reference
            if age_ns <= timeout_ns:
                soonest_ns = min(soonest_ns, timeout_ns - age_ns)
            else:
                self.log.warning(
                    "worker %d (pid %d) hung: no heartbeat for %.1fs (timeout %gs); sending SIGTERM",
                    slot.index,
                    slot.pid,
                    age_ns / 1e9,
                    self.spec.heartbeat_timeout,
                )
                self._begin_escalation(slot, "hang", now)
        self._beat_due = now + soonest_ns / 1e9

    def _begin_escalation(self, slot: Slot, why: str, now: float) -> None:
        esc = shutdown.begin(why, now, self.spec.grace)
        slot.escalation = esc
        assert self.board is not None
        if why == "hang":
            self._set_state(slot, Event.HANG)
            shutdown.send(self._kill, slot.pid, shutdown.SIGNAL_FOR[shutdown.Stage.TERM])
            return
        if slot.state is not S.STOPPING:
            self._set_state(slot, Event.STOP)
        self.board.set_lifecycle(slot.index, stop_requested=1)
        try:
            slot.conn.send_bytes(b"S")
        except (OSError, ValueError):
            pass  # the worker is already gone; its sentinel will say so

    def _escalate(self, now: float) -> None:
        for slot in self._slots:
            esc = slot.escalation
            if esc is None or not slot.alive:
                continue
            stage = shutdown.advance(esc, now)
            if stage in shutdown.SIGNAL_FOR:
                signum = shutdown.SIGNAL_FOR[stage]
                waited = now - esc.started
                self.log.warning(
                    "worker %d (pid %d) still running %.1fs after %s; escalated to %s",
                    slot.index,
                    slot.pid,
                    waited,
                    "the stop flag" if stage is shutdown.Stage.TERM else "SIGTERM",
                    signum.name,
                )
                shutdown.send(self._kill, slot.pid, signum)
            elif stage is shutdown.Stage.GAVE_UP:
                slot.survivor = True
                self._poller = None
                self.log.error(
                    "worker %d (pid %d) survived SIGKILL for %gs: NOT confirmed gone",
                    slot.index,
                    slot.pid,
                    shutdown.CONFIRM_S,
                )
                self._dirty = True

    def _start_due(self, now: float) -> None:
        for slot in self._slots:
            if slot.state is S.BACKOFF and slot.restart_at is not None and now >= slot.restart_at:
                self._spawn(slot, now)

    def _replace_now(self) -> None:
        while self._replacements:
            index, generation, reason = self._replacements.popleft()
            if index >= len(self._slots):
                continue
            slot = self._slots[index]
            if slot.alive and slot.generation == generation and not slot.retire:
                self.log.warning("worker %d (pid %d) killed: %s; replacing it", index, slot.pid, reason)
                slot.replace = True
                shutdown.send(self._kill, slot.pid, shutdown.SIGNAL_FOR[shutdown.Stage.KILL])

    # -- recycling -------------------------------------------------------------

    def _sample_rss(self, now: float) -> None:
        interval = self.spec.rss_interval
        if not interval or now < self._next_rss:
            return
        self._next_rss = now + interval
        assert self.board is not None
        for slot in self._slots:
            if slot.alive:
                rss = self._rss.sample(slot.pid)
                if rss is not None and rss != slot.rss:
                    slot.rss = rss
                    self.board.set_lifecycle(slot.index, rss_bytes=rss)

    def _check_limits(self, now: float) -> None:
        """Queue the workers past max_rss or max_age for recycling (once per process)."""
        if self._stopping:
            return
        for slot in self._slots:
            if slot.state is not S.RUNNING or slot.recycle_queued or slot.replace or slot.retire:
                continue
            reason = None if slot.born_over_rss else over_rss(self.spec, slot.rss)
            if reason is None and slot.recycle_at is not None and now >= slot.recycle_at:
                reason = AGE_LIMIT  # worded when it starts, with the age it then has
            if reason is not None:
                slot.recycle_queued = True
                self._recycles.append((slot.index, slot.generation, reason))

    def _check_birth_rss(self, slot: Slot) -> None:
        """A worker already past max_rss when it first beats (big imports, or forked from a
        big parent) gains nothing from a replacement, which starts just as big: recycling
        it would churn processes forever. Say so once and leave it to the operator."""
        if self.spec.max_rss is None or not self.spec.rss_interval:
            return
        rss = self._rss.sample(slot.pid)
        if rss is None:
            return
        slot.rss = rss
        assert self.board is not None
        self.board.set_lifecycle(slot.index, rss_bytes=rss)
        if over_rss(self.spec, rss) is not None:
            slot.born_over_rss = True
            self.log.warning(
                "worker %d (pid %d) starts at rss %s, already over max_rss %s: not recycling it "
                "for memory (a replacement would start as big); raise --max-rss",
                slot.index,
                slot.pid,
                format_size(rss),
                format_size(self.spec.max_rss),
            )

    def _advance_recycling(self, now: float) -> None:
        """Start the next queued recycle once no other replacement is under way."""
        while self._recycles and not self._stopping and not self._rolling:
            index, generation, reason = self._recycles[0]
            slot = self._slots[index] if index < len(self._slots) else None
            if slot is None or not slot.alive or slot.generation != generation or slot.retire:
                self._recycles.popleft()  # that process is gone already
                continue
            if any(s.replace for s in self._slots) or not may_start(slot, self._slots, self._desired):
                return  # one at a time, and never fewer than N-1 serving
            self._recycles.popleft()
            if reason == AGE_LIMIT:
                reason = f"max_age {self.spec.max_age:g}s reached (age {now - slot.started:.1f}s)"
            slot.recycle_queued = True
            slot.replace = True
            slot.recycled += 1
            assert self.board is not None
            self.board.set_lifecycle(slot.index, recycled=slot.recycled)
            self.log.info(
                "worker %d (pid %d) recycled: %s (recycle %d; not a crash)",
                slot.index,
                slot.pid,
                reason,
                slot.recycled,
            )
            if self._hooks is not None and self._hooks.recycle(slot.index, slot.generation, reason):
                slot.draining = True  # the embedder finishes its work, then release_worker()
            else:
                self._begin_escalation(slot, "recycle", now)
            return

    def _release_drained(self, now: float) -> None:
        while self._releases:
            index, generation = self._releases.popleft()
            slot = self._slots[index] if index < len(self._slots) else None
            if slot is not None and slot.alive and slot.generation == generation and slot.draining:
                slot.draining = False
                if slot.escalation is None:
                    self._begin_escalation(slot, "recycle", now)

    def _start_rolling(self) -> None:
        if self._rolling:
            self.log.info("rolling restart already in progress")
            return
        assert self.board is not None
        self.board.set_header(generation=self.board.header_word("generation") + 1)
        self._rolling.extend(s.index for s in self._slots if s.index < self._desired)
        self.log.info("rolling restart of %d workers, one at a time", len(self._rolling))

    def _slot_given_up(self, slot: Slot) -> None:
        """A slot that will not be restarted.

        One that FAILED (crash loop) before the pool was ever ready means it never will
        be: a waiting `poolctl start` hears so at once, with the worker's last error,
        instead of waiting out --wait (it then stops this supervisor). Embedded, the
        pool stays up, degraded, as the restart policy says. After a rolling restart's
        replacement: end the roll, keep the rest serving.
        """
        if not self._ready.is_set() and slot.state is S.FAILED and slot.index < self._desired:
            why = f": {slot.last_error}" if slot.last_error else ""
            self._notify(f"failed: worker {slot.index} failed before the pool was ready{why}")
        if not slot.replace:
            return
        slot.replace = False
        if self._rolling and self._rolling[0] == slot.index:
            self._rolling.clear()
            self.log.error(
                "rolling restart stopped: the replacement of worker %d failed; "
                "the workers not yet replaced keep running",
                slot.index,
            )

    def _advance_rolling(self, now: float) -> None:
        while self._rolling and not self._stopping:
            slot = self._slots[self._rolling[0]] if self._rolling[0] < len(self._slots) else None
            if slot is not None and slot.replace and not slot.retire:
                return  # being replaced (maybe in backoff after a crash): wait for its first beat
            if slot is None or slot.retire or slot.state in (S.FAILED, S.EXITED, S.BACKOFF, S.EMPTY):
                self._rolling.popleft()
                continue
            if slot.state is S.RUNNING and slot.escalation is None:
                if any(s.replace for s in self._slots):
                    return  # a recycle is under way: one replacement at a time
                slot.replace = True
                self._begin_escalation(slot, "rolling", now)
            return

    def _check_ready(self) -> None:
        if self._ready.is_set() or self._stopping:
            return
        serving = [s for s in self._slots if s.index < self._desired]
        if len(serving) == self._desired and all(s.state is S.RUNNING for s in serving):
            assert self.board is not None
            self.board.set_header(pool_state=PoolState.RUNNING)
            self.log.info("pool ready: %d workers running", self._desired)
            self._ready.set()
            self._dirty = True
            self._notify("ready")
            if self._systemd is not None:
                self._systemd_status = self._summary()
                self._systemd.ready(self._systemd_status)

    # -- stopping --------------------------------------------------------------

    def _begin_stop(self, reason: str, now: float) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._stop_reason = reason
        self._rolling.clear()
        assert self.board is not None
        self.board.set_header(pool_state=PoolState.STOPPING)
        self.log.info("stopping: %s", reason)
        if self._systemd is not None:
            self._systemd.stopping(f"stopping: {reason}")
        for slot in self._slots:
            slot.restart_at = None
            if slot.alive and slot.escalation is None:
                self._begin_escalation(slot, "stop", now)
            elif slot.alive and slot.escalation is not None:
                if slot.state is S.STARTING or slot.state is S.RUNNING:
                    self._set_state(slot, Event.STOP)
            elif slot.state in (S.BACKOFF, S.EXITED):
                self._set_state(slot, Event.STOP)

    def _emergency_stop(self) -> None:
        """After an internal error: kill every worker and confirm, without the loop."""
        live = [(s.pid, s.ticks or None) for s in self._slots if s.alive]
        survivors = shutdown.kill_and_confirm(live, grace=min(self.spec.grace, 1.0), kill=self._kill)
        for slot in self._slots:
            if slot.alive:
                slot.process.join(0)
                slot.survivor = slot.pid in survivors
                if not slot.survivor:
                    slot.process = None

    def _finish(self) -> StopResult:
        survivors = [s.pid for s in self._slots if s.survivor]
        reason = self._stop_reason or "stopped"
        assert self.board is not None
        final = PoolState.STOP_FAILED if survivors else PoolState.STOPPED
        self.board.set_header(pool_state=final)
        if survivors:
            self.log.error("stop FAILED: still alive after SIGKILL: pid %s", ", ".join(map(str, survivors)))
        try:
            self._flush(self._clock(), final=True, survivors=[s for s in self._slots if s.survivor])
        finally:
            for slot in self._slots:
                if slot.pidfd >= 0:
                    os.close(slot.pidfd)
                    slot.pidfd = -1
            self._rss.close()
            self._control.close()
            if self._metrics is not None:
                self._metrics.close()
            self.board.unlink()
            self.board.close()
        self.log.info("supervisor stopped%s", "" if not survivors else " (with survivors)")
        if not self._ready.is_set():
            self._notify(f"failed: {self._boot_error or reason}")
        return StopResult(reason, survivors, self._boot_error)

    def _summary(self) -> str:
        """One line for `systemctl status`: how many of the desired workers serve."""
        serving = [s for s in self._slots if s.index < self._desired]
        running = sum(s.state is S.RUNNING for s in serving)
        restarts = sum(s.restarts for s in self._slots)
        recycled = sum(s.recycled for s in self._slots)
        return f"{running} of {self._desired} workers running; {restarts} restarts, {recycled} recycled"

    def _serve_metrics(self, port: int) -> MetricsServer:
        try:
            server = MetricsServer(port, self._render_metrics, self.spec.metrics_host, clock=self._clock)
        except OSError as exc:
            raise PoolError(f"metrics port {port}: {exc.strerror or exc}") from None
        self.log.info("metrics at http://%s:%d/metrics", self.spec.metrics_host, server.port)
        return server

    def _render_metrics(self) -> bytes:
        # Imported here: prometheus_client is only loaded by a supervisor asked to serve it.
        from statusboard.metrics import exposition
        from statusboard.probe import probe

        return exposition(probe(self.runtime_dir, self.spec.name).document)

    def report_failure(self, reason: str) -> None:
        """Tell a waiting `poolctl start` that this supervisor failed (readiness pipe)."""
        self._notify(f"failed: {reason}")

    def _notify(self, line: str) -> None:
        if self._notify_fd is None:
            return
        try:
            os.write(self._notify_fd, line.encode() + b"\n")
            os.close(self._notify_fd)
        except OSError:
            pass
        self._notify_fd = None

    def _flush(self, now: float, *, final: bool = False, survivors: list[Slot] | None = None) -> None:
        assert self.board is not None
        document = runtime_document(
            self.spec,
            self.board,
            supervisor_pid=os.getpid(),
            supervisor_ticks=self._ticks,
            started_wall=self._started_wall,
            reason=self._stop_reason or None,
            final=final,
            survivors=[(s.pid, s.ticks) for s in survivors or []],
            control=None if final else self._control.name,
        )
        runtime_file.write(self.runtime_dir, document)
        self._dirty = False
        if self._systemd is not None and self._ready.is_set() and not self._stopping:
            summary = self._summary()
            if summary != self._systemd_status:
                self._systemd_status = summary
                self._systemd.status(summary)
        self._next_flush = now + self.spec.flush_interval
