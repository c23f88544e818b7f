"""The supervisor: keep N workers alive and tell the truth about them.

Data flow::

    workers --heartbeat stores--> board (shm) <--lifecycle stores-- supervisor
    workers --pipe: reports (tracebacks, boot errors)--> supervisor
    supervisor --pipe byte + board flag: stop requests--> workers
    signals / commands --wake pipe--> supervisor loop
    supervisor --atomic replace--> runtime.json ; --lines--> supervisor.log

The parts: this module owns the loop, its commands and the stop; one slot's life
(spawn, exit, restart, hang, kill escalation) is pool/worker_lives.py; planned
replacements (rolling restart, recycling, task-timeout kills) pool/replacements.py.
Their shared attributes are declared once in pool/loop_state.py.

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

from pool import commands as cmd
from pool import shutdown
from pool.containment import TreeKeeper
from pool.control import ControlServer, address
from pool.errors import PoolError, SpecError, StopFailed
from pool.lock import SupervisorLock
from pool.logfile import close_log, open_log
from pool.metrics_http import MetricsServer
from pool.own_state import OwnState
from pool.proctree import command_line, set_child_subreaper
from pool.recycle import RssSampler
from pool.replacements import Replacements
from pool.runtime_doc import cleanup_previous, runtime_document
from pool.sdnotify import SystemdNotifier
from pool.signals import queued_signals
from pool.slot import Slot, StopResult, WorkerHooks
from pool.spawn_guard import Headroom
from pool.spec import MAX_WORKERS, PoolSpec
from pool.state import Event
from pool.worker_lives import WorkerLives
from statusboard import runtime_dir as rdir
from statusboard.board import Board, segment_path
from statusboard.layout import MAX_CAPACITY
from statusboard.liveness import start_ticks
from statusboard.states import PoolState
from statusboard.states import WorkerState as S

# Longest sleep: the supervisor heartbeat on the board is at most this old, so a
# `status --supervisor-timeout` should be 2 s or more (the default is 5 s). Every
# wake costs CPU; 1 s is gunicorn's arbiter tick, the idle-CPU figure to beat.
TICK_S = 1.0
STARTING_POLL_S = 0.001  # while a worker has not beaten yet, look for its first beat this often (boot only)
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


class Supervisor(WorkerLives, Replacements):
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
        self._emergency_survivors: list[tuple[int, int]] = []
        self._signals: deque[int] = deque()
        self._commands: deque[cmd.Command] = deque()
        self._stopping = False
        self._stop_reason = ""
        self._boot_error: str | None = None
        self._rolling: deque[int] = deque()
        self._recycles: deque[tuple[int, int, str]] = deque()  # (slot, generation, reason), one at a time
        self._rss = RssSampler()
        self._next_rss = 0.0
        self._rng = random.Random()
        self._headroom = Headroom(clock)  # fds kept free for the supervisor itself (pool/spawn_guard.py)
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
        self._command(cmd.Stop(reason))

    def scale(self, workers: int) -> None:
        if not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
            raise SpecError(f"workers: must be an integer in 1..{MAX_WORKERS}, got {workers!r}")
        self._command(cmd.Scale(workers))

    def rolling_restart(self) -> None:
        self._command(cmd.Roll())

    def replace_worker(self, slot: int, generation: int, reason: str) -> None:
        """SIGKILL the worker of ``slot`` (and its tree) if it is still ``generation``, and
        start a new one. A planned replacement (a task timeout): it does not count as a crash.
        """
        self._command(cmd.Kill(slot, generation, reason))

    def recycle_worker(self, slot: int, generation: int, reason: str) -> None:
        """Replace the worker of ``slot`` (if still ``generation``) gracefully, when its
        turn comes: one recycle at a time, never below N-1 serving, not a crash."""
        self._command(cmd.Recycle(slot, generation, reason))

    def release_worker(self, slot: int, generation: int) -> None:
        """The embedder finished the work of a worker it was asked to drain: stop it now."""
        self._command(cmd.Release(slot, generation))

    def _command(self, command: cmd.Command) -> None:
        if isinstance(command, cmd.Stop):  # what a waiting `poolctl start` hears
            self._stop_reason = self._stop_reason or command.reason
        self._commands.append(command)
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
                + ", ".join(f"{pid} ({command_line(pid)})" for pid in result.survivors),
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
        # A loop that owns its process (daemon, foreground: it installs the signal
        # handlers) reaps its workers' orphans; embedded in a bigger program it does not
        # (the host's own children's orphans are none of ours): pool.containment.
        self._trees = TreeKeeper(
            kill=self._kill,
            log=self.log,
            subreaper=install_signals and set_child_subreaper(),
            exempt=self._not_orphans,
        )
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
        self._own = OwnState(self, lock, self.runtime_dir)  # runtime.json, its directory, the board file
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
        while not (self._stopping and not any(s.alive for s in self._slots) and not self._trees.pending):
            timeout = max(0.0, self._next_deadline(now) - self._clock())
            ready = {fd for fd, _ in self._waiter().poll(timeout * 1000)}
            now = self._clock()
            assert self.board is not None
            self._own.guard_board()  # before this wake's first store: a truncated board is SIGBUS
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
            self._trees.advance(now)
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
        deadline = min(deadline, self._beat_due, self._trees.next_deadline(now) or deadline)
        for slot in self._slots:
            if slot.restart_at is not None:
                deadline = min(deadline, slot.restart_at)
            if slot.recycle_at is not None and slot.leaving is None:  # else it is not due (again)
                deadline = min(deadline, slot.recycle_at)
            if slot.escalation is not None:
                deadline = min(deadline, slot.escalation.next_at)
            if slot.state is S.STARTING:
                deadline = min(deadline, now + STARTING_POLL_S)
        return deadline

    def _not_orphans(self) -> set[int]:
        """Our children that are not orphans of dead workers: the live workers and
        multiprocess's own helpers (the forkserver, the resource tracker)."""
        pids = {s.pid for s in self._slots if s.alive}
        from multiprocess import forkserver, resource_tracker

        for helper in (
            getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None),
            getattr(getattr(resource_tracker, "_resource_tracker", None), "_pid", None),
        ):
            if isinstance(helper, int):
                pids.add(helper)
        return pids

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
            self._commands.append(cmd.Scale(workers))
        elif op == "rolling":
            self._commands.append(cmd.Roll())
        elif op == "stop":
            self._stop_reason = self._stop_reason or "stop requested (control socket)"
            self._commands.append(cmd.Stop("stop requested (control socket)"))
        else:
            return f"unknown op {op!r}"
        if self._stopping and op != "stop":
            return "the pool is stopping"
        return None

    def _dispatch(self, now: float) -> None:
        while self._signals:
            name = signal.Signals(self._signals.popleft()).name
            command, meaning = cmd.SIGNAL_COMMANDS[name]
            self.log.info("received %s: %s", name, meaning)
            if isinstance(command, cmd.Stop):
                self._stop_reason = self._stop_reason or command.reason
            self._commands.append(command)
        while self._commands:
            command = self._commands.popleft()
            if isinstance(command, cmd.Stop):
                self._begin_stop(self._stop_reason or command.reason, now)
            elif self._stopping:
                continue
            elif isinstance(command, cmd.Scale):
                self._resize(command.workers, now)
            elif isinstance(command, cmd.Nudge):
                self._resize(min(MAX_WORKERS, max(1, self._desired + command.delta)), now)
            elif isinstance(command, cmd.Roll):
                self._start_rolling()
            elif isinstance(command, cmd.Kill):
                self._kill_and_replace(command, now)
            elif isinstance(command, cmd.Recycle):
                self._recycles.append((command.slot, command.generation, command.reason))
            else:
                self._release_drained(command, now)

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
        self._own.free_spare_fd()  # confirming needs /proc reads, even when we ran out of fds
        live: list[tuple[int, int | None]] = [(s.pid, s.ticks or None) for s in self._slots if s.alive]
        # The workers' trees too, with the same grace.
        live.extend((p, t) for s in self._slots if s.alive for p, t in self._trees.look(s.pid, full=True))
        survivors = shutdown.kill_and_confirm(live, grace=min(self.spec.grace, 1.0), kill=self._kill)
        for slot in self._slots:
            if slot.alive:
                slot.process.join(0)
                slot.survivor = slot.pid in survivors
                if not slot.survivor:
                    slot.process = None
        self._emergency_survivors = [(pid, ticks or 0) for pid, ticks in live if pid in survivors]

    def _finish(self) -> StopResult:
        lost = self._lost_processes()
        survivors = [pid for pid, _ in lost]
        reason = self._stop_reason or "stopped"
        assert self.board is not None
        final = PoolState.STOP_FAILED if survivors else PoolState.STOPPED
        self.board.set_header(pool_state=final)
        if survivors:
            self.log.error("stop FAILED: still alive after SIGKILL: pid %s", ", ".join(map(str, survivors)))
        try:
            self._flush(self._clock(), final=True, survivors=lost)
        finally:
            for slot in self._slots:
                self._close_exit_fd(slot)
            self._rss.close()
            self._own.close()
            self._trees.close()
            self._control.close()
            if self._metrics is not None:
                self._metrics.close()
            self.board.unlink()
            self.board.close()
        self.log.info("supervisor stopped%s", "" if not survivors else " (with survivors)")
        if not self._ready.is_set():
            self._notify(f"failed: {self._boot_error or reason}")
        return StopResult(reason, survivors, self._boot_error)

    def _lost_processes(self) -> list[tuple[int, int]]:
        """Every process of the pool not confirmed gone after SIGKILL: workers and any
        process of their trees, by (pid, start ticks)."""
        lost = {s.pid: s.ticks for s in self._slots if s.survivor}
        lost.update({pid: ticks for (pid, ticks), _ in self._trees.survivors})
        lost.update(dict(self._emergency_survivors))
        return sorted(lost.items())

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

    def _flush(
        self, now: float, *, final: bool = False, survivors: list[tuple[int, int]] | None = None
    ) -> None:
        assert self.board is not None
        document = runtime_document(
            self.spec,
            self.board,
            supervisor_pid=os.getpid(),
            supervisor_ticks=self._ticks,
            started_wall=self._started_wall,
            reason=self._stop_reason or None,
            final=final,
            survivors=survivors or [],
            control=None if final else self._control.name,
            descendants=self._trees.record(),
        )
        self._own.flush(now, document, final=final)  # logs and retries its failures, never raises
        self._dirty = False
        if self._systemd is not None and self._ready.is_set() and not self._stopping:
            summary = self._summary()
            if summary != self._systemd_status:
                self._systemd_status = summary
                self._systemd.status(summary)
        self._next_flush = now + self.spec.flush_interval
