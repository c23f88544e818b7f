"""One run of the supervisor loop: made by Supervisor.run() once the lock is held.

Data flow::

    workers --heartbeat stores--> board (shm) <--lifecycle stores-- supervisor
    workers --pipe: reports (tracebacks, boot errors)--> supervisor
    supervisor --pipe byte + board flag: stop requests--> workers
    signals / commands --wake pipe--> supervisor loop
    supervisor --atomic replace--> runtime.json ; --lines--> supervisor.log

The parts, each made here with what it needs (pool/supervision/run.py's Run: never None):
the slots' lives (pool/supervision/worker_lives.py), planned replacements (pool/supervision/replacements.py),
the workers' process trees (pool/supervision/containment.py), the pool's own files
(pool/supervision/own_state.py). This module owns the loop, its commands and the stop.

The loop blocks in exactly one place, a kept ``select.poll`` on the workers' exit
fds plus the wake pipe, the control socket and the /metrics server, with the next
deadline as timeout (hang check, escalation step, restart delay, flush, and a 1 s
supervisor heartbeat). After each wake it reaps exits, applies the restart policy,
advances stops and replacements, and flushes runtime.json if a lifecycle changed.
"""

from __future__ import annotations

import logging
import os
import random
import select
import threading
import time
from pathlib import Path
from typing import Any

from pool.errors import PoolError
from pool.integrations.control import ControlServer, address
from pool.integrations.metrics_http import MetricsServer
from pool.integrations.sdnotify import SystemdNotifier
from pool.integrations.signals import queued_signals
from pool.spec import PoolSpec
from pool.supervision import commands as cmd
from pool.supervision import shutdown
from pool.supervision.containment import TreeKeeper
from pool.supervision.lock import SupervisorLock
from pool.supervision.own_state import OwnState
from pool.supervision.proctree import set_child_subreaper
from pool.supervision.readiness import Readiness
from pool.supervision.recycle import RssSampler
from pool.supervision.replacements import Replacements
from pool.supervision.run import Run
from pool.supervision.runtime_report import cleanup_previous, runtime_document
from pool.supervision.slot import Slot, StopResult, WorkerHooks
from pool.supervision.spawn_guard import Headroom
from pool.supervision.worker_lives import WorkerLives
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


class Loop:
    """The loop of one run. ``settings`` are the Supervisor's (spec, clock, kill ...)."""

    def __init__(
        self,
        *,
        spec: PoolSpec,
        runtime_dir: Path,
        log: logging.Logger,
        lock: SupervisorLock,
        mp: Any,
        clock: Any,
        kill: Any,
        hooks: WorkerHooks | None,
        systemd: SystemdNotifier | None,
        inbox: cmd.Inbox,
        ready: threading.Event,
        readiness: Readiness,
        own_process: bool,
    ) -> None:
        self.spec = spec
        self.runtime_dir = runtime_dir
        self.log = log
        self._lock = lock
        self._clock = clock
        self._inbox = inbox
        self.ready = ready
        self._readiness = readiness
        self._own_process = own_process
        self._systemd = systemd
        self._systemd_status = ""
        self._watchdog_at = 0.0
        self._metrics: MetricsServer | None = None
        self._stop_started = False
        self._emergency_survivors: list[tuple[int, int]] = []
        self._next_flush = 0.0
        self._poller: select.poll | None = None
        self._poller_version = -1
        self._started_wall = time.time()
        self.run = self._prepare(mp, kill, hooks, clock)
        self.board = self.run.board
        self.lives = WorkerLives(self.run, _Events(self), spec.workers)
        self.replacements = Replacements(self.run, self.lives)
        self._own = OwnState(self, lock, runtime_dir)  # runtime.json, its directory, the board file
        self._control = ControlServer(address(spec.name, os.getpid(), self.run.ticks), self._on_control)

    def _prepare(self, mp: Any, kill: Any, hooks: WorkerHooks | None, clock: Any) -> Run:
        """End what a dead predecessor left, make this run's board, and the Run its parts share."""
        spec, log = self.spec, self.log
        # A loop that owns its process (daemon, foreground: it installs the signal
        # handlers) reaps its workers' orphans; embedded in a bigger program it does not
        # (the host's own children's orphans are none of ours): pool.supervision.containment.
        trees = TreeKeeper(
            kill=kill,
            log=log,
            subreaper=self._own_process and set_child_subreaper(),
            exempt=self._not_orphans,
        )
        for line in cleanup_previous(self.runtime_dir, spec.name, grace=spec.grace):
            log.warning(line)
            self._readiness.note(line)
        pid = os.getpid()
        ticks = start_ticks(pid) or 0
        board = _new_board(spec, pid, ticks)
        return Run(
            spec=spec,
            log=log,
            board=board,
            mp=mp,
            fork=mp.get_start_method() == "fork",
            ticks=ticks,
            kill=kill,
            hooks=hooks,
            trees=trees,
            rss=RssSampler(),
            headroom=Headroom(clock),
            rng=random.Random(),
            parent_fds=self._parent_fds,
        )

    # -- the run -----------------------------------------------------------------

    def supervise(self) -> StopResult:
        """Run until stopped; on an internal error, kill everything (verified) and re-raise."""
        try:
            self.log.info(
                "supervisor started: pool %s, pid %d, target %s, %d workers, start method %s",
                self.spec.name,
                os.getpid(),
                self.spec.target,
                self.lives.desired,
                self.run.mp.get_start_method(),
            )
            if self.spec.metrics_port is not None:
                self._metrics = self._serve_metrics(self.spec.metrics_port)
            self._flush(self._clock())
            if self._own_process:
                with queued_signals(self._inbox.signals, self._inbox.wake_w):
                    self._loop()
            else:
                self._loop()
        except BaseException as exc:
            self.log.exception("supervisor error: %s", exc)
            self._inbox.note_stop_reason(  # what a waiting `poolctl start` hears
                str(exc) if isinstance(exc, PoolError) else f"supervisor error: {type(exc).__name__}: {exc}"
            )
            self._emergency_stop()
            raise
        finally:
            result = self._finish()
        return result

    def _loop(self) -> None:
        now = self._clock()
        lives, replacements, trees = self.lives, self.replacements, self.run.trees
        lives.resize(lives.desired, now)
        while not (
            lives.stopping
            and not lives.any_alive
            and not trees.pending
            and not trees.settle(self._clock())  # what a killed remnant forked at the last moment
        ):
            timeout = max(0.0, self._next_deadline(now) - self._clock())
            ready = {fd for fd, _ in self._waiter().poll(timeout * 1000)}
            now = self._clock()
            self._own.guard_board()  # before this wake's first store: a truncated board is SIGBUS
            self.board.supervisor_beat(time.monotonic_ns())
            self._serve_io(ready, now)
            self._dispatch(now)
            lives.reap(now, ready)
            trees.advance(now)
            lives.watch_beats(now)
            replacements.sample_rss(now)
            replacements.check_limits(now)
            lives.escalate(now)
            lives.start_due(now)
            replacements.advance_rolling(now)
            replacements.advance_recycling(now)
            self._check_ready()
            if lives.changed or now >= self._next_flush:
                self._flush(now)

    def _serve_io(self, ready: set[int], now: float) -> None:
        """The wake pipe, the control socket, /metrics and the systemd watchdog."""
        if self._inbox.wake_r in ready:
            self._inbox.drain_wake()
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

    def _waiter(self) -> select.poll:
        """The poll set: wake pipe, control socket, one exit fd per live worker.

        The exit fd is a pidfd (Linux 5.3+), which becomes readable when the process
        exits even if a grandchild inherited its sentinel pipe; else the sentinel.
        Kept between wakes and rebuilt only when a worker starts or ends: building a
        selector on every wake (multiprocess.connection.wait) costs more idle CPU than
        everything else the loop does.
        """
        if self._poller is None or self._poller_version != self.lives.exits_version:
            self._poller = select.poll()
            self._poller_version = self.lives.exits_version
            for fd in (self._inbox.wake_r, self._control.fileno()):
                self._poller.register(fd, select.POLLIN)
            if self._metrics is not None:
                self._poller.register(self._metrics.fileno(), select.POLLIN)
            for fd in self.lives.map_exit_fds():
                self._poller.register(fd, select.POLLIN)
        return self._poller

    def _next_deadline(self, now: float) -> float:
        deadline = min(now + TICK_S, self._next_flush, self.lives.next_deadline(now, STARTING_POLL_S))
        if self.spec.rss_interval:
            deadline = min(deadline, self.replacements.next_rss)
        if self._systemd is not None and self._systemd.watchdog_interval:
            deadline = min(deadline, self._watchdog_at)
        if self._metrics is not None:
            deadline = min(deadline, self._metrics.next_deadline() or deadline)
        return min(deadline, self.run.trees.next_deadline(now) or deadline)

    def _not_orphans(self) -> set[int]:
        """Our children that are not orphans of dead workers: the live workers and
        multiprocess's own helpers (the forkserver, the resource tracker)."""
        pids = {s.pid for s in self.lives.slots if s.alive}
        from multiprocess import forkserver, resource_tracker

        for helper in (
            getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None),
            getattr(getattr(resource_tracker, "_resource_tracker", None), "_pid", None),
        ):
            if isinstance(helper, int):
                pids.add(helper)
        return pids

    def _parent_fds(self) -> list[int]:
        """This process's fds a forked worker must close (it inherits them all)."""
        fds = [fd for fd in (self._lock.fd, self._readiness.fd) if fd is not None]
        if self._metrics is not None:
            fds.extend(self._metrics.fds())  # else a worker that outlives us holds the port
        return fds

    # -- commands ---------------------------------------------------------------------

    def _on_control(self, request: dict[str, Any]) -> str | None:
        """A control-socket request (pool.integrations.control), answered from the loop thread."""
        return cmd.control_request(request, self._inbox, stopping=self.lives.stopping)

    def _dispatch(self, now: float) -> None:
        cmd.apply(self._inbox, self, now)

    def _check_ready(self) -> None:
        if self.ready.is_set() or self.lives.stopping:
            return
        serving = self.lives.serving()
        if len(serving) == self.lives.desired and all(s.state is S.RUNNING for s in serving):
            self.board.set_header(pool_state=PoolState.RUNNING)
            self.log.info("pool ready: %d workers running", self.lives.desired)
            self.ready.set()
            self.lives.changed = True
            self._readiness.say("ready")
            if self._systemd is not None:
                self._systemd_status = self._summary()
                self._systemd.ready(self._systemd_status)

    @property
    def pool_state(self) -> PoolState:
        """What the board header's pool state should say now (own_state rebuilds it)."""
        if self.lives.stopping:
            return PoolState.STOPPING
        return PoolState.RUNNING if self.ready.is_set() else PoolState.STARTING

    # -- stopping ------------------------------------------------------------------------

    def begin_stop(self, reason: str, now: float) -> None:
        if self._stop_started:
            return
        self._stop_started = True
        self._inbox.note_stop_reason(reason)
        self.replacements.stop()
        self.board.set_header(pool_state=PoolState.STOPPING)
        self.log.info("stopping: %s", reason)
        if self._systemd is not None:
            self._systemd.stopping(f"stopping: {reason}")
        self.lives.stop_all(now)

    def _emergency_stop(self) -> None:
        """After an internal error: kill every worker and its tree and confirm, without the loop."""
        self._own.free_spare_fd()  # confirming needs /proc reads, even when we ran out of fds
        alive = [s for s in self.lives.slots if s.alive]
        live: list[tuple[int, int | None]] = [(s.pid, s.ticks or None) for s in alive]
        live.extend((p, t) for s in alive for p, t in self.run.trees.look(s.pid, full=True))
        survivors = shutdown.kill_and_confirm(live, grace=min(self.spec.grace, 1.0), kill=self.run.kill)
        for slot in alive:
            slot.process.join(0)
            slot.survivor = slot.pid in survivors
            if not slot.survivor:
                slot.process = None
        self._emergency_survivors = [(pid, ticks or 0) for pid, ticks in live if pid in survivors]

    def _finish(self) -> StopResult:
        lost = self._lost_processes()
        survivors = [pid for pid, _ in lost]
        reason = self._inbox.stop_reason or "stopped"
        final = PoolState.STOP_FAILED if survivors else PoolState.STOPPED
        self.board.set_header(pool_state=final)
        if survivors:
            self.log.error("stop FAILED: still alive after SIGKILL: pid %s", ", ".join(map(str, survivors)))
        try:
            self._flush(self._clock(), final=True, survivors=lost)
        finally:
            for slot in self.lives.slots:
                self.lives.close_exit_fd(slot)
            self.run.rss.close()
            self._own.close()
            self.run.trees.close()
            self._control.close()
            if self._metrics is not None:
                self._metrics.close()
            self.board.unlink()
            self.board.close()
        self.log.info("supervisor stopped%s", "" if not survivors else " (with survivors)")
        if not self.ready.is_set():
            self._readiness.say(f"failed: {self.lives.boot_error or reason}")
        return StopResult(reason, survivors, self.lives.boot_error)

    def _lost_processes(self) -> list[tuple[int, int]]:
        """Every process of the pool not confirmed gone after SIGKILL: workers and any
        process of their trees, by (pid, start ticks)."""
        lost = {s.pid: s.ticks for s in self.lives.slots if s.survivor}
        lost.update({pid: ticks for (pid, ticks), _ in self.run.trees.survivors})
        lost.update(dict(self._emergency_survivors))
        return sorted(lost.items())

    # -- what it publishes -------------------------------------------------------------

    def _summary(self) -> str:
        """One line for `systemctl status`: how many of the desired workers serve."""
        running = sum(s.state is S.RUNNING for s in self.lives.serving())
        restarts = sum(s.restarts for s in self.lives.slots)
        recycled = sum(s.recycled for s in self.lives.slots)
        return f"{running} of {self.lives.desired} workers running; {restarts} restarts, {recycled} recycled"

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

    def notify(self, line: str) -> None:
        self._readiness.say(line)

    def _flush(
        self, now: float, *, final: bool = False, survivors: list[tuple[int, int]] | None = None
    ) -> None:
        document = runtime_document(
            self.spec,
            self.board,
            supervisor_pid=os.getpid(),
            supervisor_ticks=self.run.ticks,
            started_wall=self._started_wall,
            reason=self._inbox.stop_reason or None,
            final=final,
            survivors=survivors or [],
            control=None if final else self._control.name,
            descendants=self.run.trees.record(),
        )
        self._own.flush(now, document, final=final)  # logs and retries its failures, never raises
        self.lives.changed = False
        if self._systemd is not None and self.ready.is_set() and not self.lives.stopping:
            summary = self._summary()
            if summary != self._systemd_status:
                self._systemd_status = summary
                self._systemd.status(summary)
        self._next_flush = now + self.spec.flush_interval


def _new_board(spec: PoolSpec, pid: int, ticks: int) -> Board:
    """This run's board, named by this supervisor's identity (pid + start ticks), so a
    crashed supervisor's board never blocks the next one."""
    board = Board.create(
        segment_path(spec.name, pid, ticks),
        MAX_CAPACITY,
        supervisor_pid=pid,
        supervisor_start_ticks=ticks,
        heartbeat_timeout_ns=int(spec.heartbeat_timeout * 1e9),
        workers_desired=spec.workers,
    )
    board.set_header(pool_state=PoolState.STARTING)
    return board


class _Events:
    """What the loop does when the slots' lives report (worker_lives.LifeEvents)."""

    def __init__(self, loop: Loop) -> None:
        self._loop = loop

    def first_beat(self, slot: Slot) -> None:
        self._loop.replacements.on_first_beat(slot)

    def given_up(self, slot: Slot, was_replacing: bool) -> None:
        """A slot that FAILED before the pool was ever ready means it never will be: a
        waiting `poolctl start` hears so at once, with the worker's last error, instead of
        waiting out --wait (it then stops this supervisor). Embedded, the pool stays up,
        degraded, as the restart policy says."""
        loop = self._loop
        if not loop.ready.is_set() and slot.state is S.FAILED and slot.index < loop.lives.desired:
            why = f": {slot.last_error}" if slot.last_error else ""
            loop.notify(f"failed: worker {slot.index} failed before the pool was ready{why}")
        loop.replacements.on_given_up(slot, was_replacing)

    def boot_failed(self, reason: str, now: float) -> None:
        self._loop.begin_stop(reason, now)
