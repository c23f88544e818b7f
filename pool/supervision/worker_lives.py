"""The slots' lives, as the supervisor loop drives them: spawn, first beat, hang, exit,
the decision after it (pool/supervision/leaving.py), backoff, and the stop escalation (flag,
SIGTERM, SIGKILL, confirm), each worker's tree with it (pool/supervision/containment.py).

WorkerLives owns the slots; it tells the loop (pool/supervision/loop.py) what it must know
through LifeEvents and two flags (``changed``: flush runtime.json soon;
``exits_version``: the set of exit fds to poll changed).
"""

from __future__ import annotations

import os
import time
from typing import Protocol

from pool.supervision import shutdown, spawn_guard
from pool.supervision.budget import RestartBudget
from pool.supervision.leaving import AfterExit, Leaving, after_exit
from pool.supervision.oom import oom_kills, sigkill_cause
from pool.supervision.recycle import age_limit
from pool.supervision.run import Run
from pool.supervision.slot import Slot
from pool.supervision.slot_stops import SlotStops
from pool.supervision.transitions import Event, next_state
from pool.supervision.worker import BOOT_ERROR_EXIT, WorkerArgs
from statusboard.health import describe_exit
from statusboard.states import WorkerState as S

SWEEP_S = 5.0  # also reap every worker this often, whether or not its fd said so (belt and braces)


class LifeEvents(Protocol):
    """What the rest of the supervisor hears of the slots' lives."""

    def first_beat(self, slot: Slot) -> None:
        """A worker beat for the first time (a replacement is in service)."""

    def given_up(self, slot: Slot, was_replacing: bool) -> None:
        """A slot will not be restarted (FAILED, or DONE by policy)."""

    def boot_failed(self, reason: str, now: float) -> None:
        """A worker's code cannot start: the pool must stop, restarting would loop."""


class WorkerLives:
    def __init__(self, run: Run, events: LifeEvents, desired: int) -> None:
        self.run = run
        self.spec = run.spec
        self.log = run.log
        self.board = run.board
        self.events = events
        self.slots: list[Slot] = []
        self.desired = desired
        self.stopping = False  # the pool is stopping: exits are not restarted
        self.boot_error: str | None = None  # the first worker boot error, which stopped the pool
        self.changed = True  # a lifecycle moved since the loop last flushed runtime.json
        self.exit_fds: dict[int, Slot] = {}  # fd readable when that slot's process exits
        self.exits_version = 0  # bumped when a process starts or ends: rebuild the poll set
        self.beat_due = 0.0  # when a heartbeat could next be too old (set by watch_beats)
        self._next_sweep = 0.0
        self.stops = SlotStops(run, self.set_state)

    def resize(self, desired: int, now: float) -> None:
        if desired != self.desired:
            self.log.info("scaling from %d to %d workers", self.desired, desired)
        self.desired = desired
        spec = self.spec
        while len(self.slots) < desired:
            self.slots.append(
                Slot(
                    len(self.slots),
                    RestartBudget(
                        spec.max_restarts,
                        spec.restart_window,
                        spec.backoff_base,
                        spec.backoff_cap,
                        spec.backoff_reset,
                    ),
                )
            )
        for slot in self.slots:
            if slot.index < desired:
                if slot.leaving is Leaving.RETIRE:
                    # Wanted again before it exited: respawn it, not a crash.
                    slot.leaving = Leaving.RESPAWN if slot.alive else None
                if slot.state is S.EMPTY:
                    self.spawn(slot, now)
            elif slot.leaving is not Leaving.RETIRE:
                slot.leaving = Leaving.RETIRE
                if slot.alive:
                    self.begin_escalation(slot, "retire", now)
                elif slot.state is not S.EMPTY:
                    self.set_state(slot, Event.RETIRE)
                    slot.restart_at = None
        self._trim_slots()
        self.board.set_header(workers_desired=desired, slots_used=len(self.slots))
        self.changed = True

    def _trim_slots(self) -> None:
        while self.slots and self.slots[-1].state is S.EMPTY and self.slots[-1].index >= self.desired:
            self.slots.pop()
        self.board.set_header(slots_used=len(self.slots))

    def spawn(self, slot: Slot, now: float) -> None:
        board = self.board
        board.reset_worker_region(slot.index)
        # Before the child exists: a stop flag left by the previous process (rolling
        # restart, retire) would otherwise be read by the new one as its own stop, and
        # the old pid would name the new process's first heartbeats until its row is set.
        board.set_lifecycle(slot.index, stop_requested=0, pid=0, pid_start_ticks=0)
        generation = slot.generation + 1
        try:
            started = spawn_guard.start_worker(
                self.run,
                WorkerArgs(
                    slot=slot.index,
                    pool=self.spec.name,
                    generation=generation,
                    target=self.spec.target,
                    cwd=self.spec.cwd,
                    board_path=board.handle_path,  # the kept fd, not the name: a removed name must not matter
                    board_name=str(board.path),
                    supervisor_pid=os.getpid(),
                    supervisor_ticks=self.run.ticks,
                    conn=None,  # start_worker makes the pipe
                    channel=self.run.hooks.channel(slot.index, generation) if self.run.hooks else None,
                    close_fds=self.run.parent_fds() if self.run.fork else [],
                ),
            )
        except OSError as exc:
            self._spawn_failed(slot, exc, now)
            return
        self._occupy(slot, started, generation, now)

    def _occupy(self, slot: Slot, started: spawn_guard.Started, generation: int, now: float) -> None:
        """A new process runs in the slot: set the slot's books and its board row."""
        board = self.board
        process, ticks = started.process, started.ticks
        slot.generation = generation
        slot.pidfd = started.pidfd
        self.exits_version += 1
        slot.process, slot.conn, slot.pid = process, started.conn, process.pid
        self.run.trees.track(slot.index, process.pid)
        slot.ticks = ticks
        slot.started = now
        slot.oom_kills_at_start = oom_kills()  # to tell an OOM kill from a kill -9 (pool.supervision.oom)
        slot.restart_at = None
        slot.born_over_rss = False
        limit = age_limit(self.spec, self.run.rng)
        slot.recycle_at = None if limit is None else now + limit
        slot.rss = 0
        if self.spec.rss_interval:
            self.run.rss.track(process.pid)
            slot.rss = self.run.rss.sample(process.pid) or 0  # so a live worker never shows "not sampled"
        slot.rss_self = slot.rss  # no descendants yet
        self.set_state(slot, Event.SPAWN)
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
            rss_self_bytes=slot.rss_self,
        )
        self.log.info("worker %d started pid %d (generation %d)", slot.index, slot.pid, slot.generation)
        if self.run.hooks is not None:
            self.run.hooks.started(slot.index, slot.generation, slot.pid)

    def _spawn_failed(self, slot: Slot, exc: OSError, now: float) -> None:
        """No process could be started (EMFILE, ENFILE, EAGAIN, ENOMEM: the machine's limits,
        not the worker's code): a slot failure, counted like a crash, always after a backoff
        (retrying at once would fail the same way), FAILED once the budget is spent."""
        slot.last_error = f"could not start: {exc}"
        self.log.error("worker %d could not start: %s", slot.index, exc)
        self.set_state(slot, Event.SPAWN_FAILED)
        delay = self._count_failure(slot, now, ran_for=0.0, what="failed starts or restarts")
        if delay is None:
            return
        self.set_state(slot, Event.BACKOFF)
        slot.restart_at = now + max(delay, self.spec.backoff_base)

    def close_exit_fd(self, slot: Slot) -> None:
        if slot.pidfd >= 0:
            os.close(slot.pidfd)
            slot.pidfd = -1

    def set_state(self, slot: Slot, event: Event) -> None:
        slot.state = next_state(slot.state, event)
        self.board.set_lifecycle(slot.index, state=slot.state)
        self.changed = True

    def map_exit_fds(self) -> list[int]:
        """One fd per live worker, readable once it exits: its pidfd (Linux 5.3+, readable
        even if a grandchild holds its sentinel pipe), else the sentinel. Remembered for
        reap(); the loop polls them."""
        self.exit_fds = {
            (slot.pidfd if slot.pidfd >= 0 else slot.process.sentinel): slot
            for slot in self.slots
            if slot.alive
        }
        return list(self.exit_fds)

    def reap(self, now: float, ready: set[int]) -> None:
        """Reap the workers whose exit fd fired (waitpid per worker per wake would be the
        biggest idle cost of a large pool), and every worker once per SWEEP_S."""
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_S
            self.run.trees.sweep(now, self.spec.grace)
            due = [s for s in self.slots if s.alive]
        else:
            due = [self.exit_fds[fd] for fd in ready if fd in self.exit_fds]
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
        hung = slot.state is S.HUNG
        booted = slot.state is not S.STARTING
        boot_error = self._close_process(slot, code, now)
        outcome = after_exit(
            self.spec.restart,
            slot.leaving,
            stopping=self.stopping,
            code=code,
            hung=hung,
            booted=booted,
            boot_error=boot_error,
        )
        if slot.leaving in (Leaving.RECYCLE_DUE, Leaving.DRAIN, Leaving.RETIRE) or outcome in (
            AfterExit.STOPPED,
            AfterExit.BOOT_ERROR,
        ):
            # The change ended with this process: a queued or draining recycle died under
            # it (a crash), a retire emptied the slot, or the pool stops. A replacement
            # keeps its reason until its successor beats (or the slot gives up).
            slot.leaving = None
        if outcome is AfterExit.BOOT_ERROR:
            self.set_state(slot, Event.GIVE_UP)
            self.boot_error = self.boot_error or slot.last_error
            self.log.error("boot error in worker %d: stopping the pool instead of restarting", slot.index)
            self.events.boot_failed(f"boot error: {slot.last_error}", now)
        elif outcome is AfterExit.RETIRED:
            self.set_state(slot, Event.RETIRE)
            self._trim_slots()
        elif outcome is AfterExit.STOPPED:
            self.set_state(slot, Event.STOP)
        elif outcome is AfterExit.REPLACE:
            self.spawn(slot, now)
        elif outcome is AfterExit.DONE:
            self.set_state(slot, Event.DONE)
            self.log.info("worker %d not restarted (policy %s)", slot.index, self.spec.restart.value)
            self._slot_given_up(slot)
        else:
            self._restart(slot, now)

    def _close_process(self, slot: Slot, code: int, now: float) -> bool:
        """The slot's process has exited (reaped): release what it held, end its tree, say
        how it ended (log, hooks). True when it reported a boot error (its code cannot start)."""
        report = self._read_report(slot)
        slot.conn.close()
        slot.process.close()
        slot.process = slot.conn = None
        self.close_exit_fd(slot)
        self.exits_version += 1
        self.run.rss.forget(slot.pid)
        slot.recycle_at = None
        prev = slot.state
        escalation, slot.escalation = slot.escalation, None
        self.set_state(slot, Event.EXIT)
        self.board.set_lifecycle(slot.index, last_exit_code=code, rss_bytes=0, rss_self_bytes=0)
        slot.rss = slot.rss_self = 0
        how = describe_exit(code)
        if (
            code == -9
            and not slot.replacing
            and (escalation is None or escalation.stage < shutdown.Stage.KILL)
        ):
            how += f"; {sigkill_cause(slot.oom_kills_at_start)}"
        self.log.info("worker %d (pid %d) exited: %s", slot.index, slot.pid, how)
        self.stops.end_tree(slot, escalation, now)
        if self.run.hooks is not None:
            if prev is S.HUNG:
                how = f"killed as hung (no heartbeat for {self.spec.heartbeat_timeout:g}s), {how}"
            self.run.hooks.exited(slot.index, slot.generation, slot.pid, code, how)
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
        return boot_error

    def _count_failure(self, slot: Slot, now: float, *, ran_for: float, what: str) -> float | None:
        """Count a crash or a failed start in the slot's budget: the restart delay, or None
        when the intensity limit is passed and the slot has FAILED (given up)."""
        delay = slot.budget.record_exit(now, ran_for)
        if delay is None:
            self.set_state(slot, Event.GIVE_UP)
            self.log.error(
                "worker %d failed: more than %d %s in %gs; giving up",
                slot.index,
                self.spec.max_restarts,
                what,
                self.spec.restart_window,
            )
            self._slot_given_up(slot)
            return None
        slot.restarts += 1
        self.board.set_lifecycle(slot.index, restarts=slot.restarts)
        return delay

    def _restart(self, slot: Slot, now: float) -> None:
        """After a crash: restart now, after a backoff, or give up (intensity exceeded)."""
        delay = self._count_failure(slot, now, ran_for=now - slot.started, what="restarts")
        if delay is None:
            return
        if delay == 0:
            self.log.info("worker %d restarting (restart %d)", slot.index, slot.restarts)
            self.spawn(slot, now)
        else:
            self.set_state(slot, Event.BACKOFF)
            slot.restart_at = now + delay
            self.log.info(
                "worker %d restarting in %.2fs (restart %d, %d in the last %gs)",
                slot.index,
                delay,
                slot.restarts,
                slot.budget.recent,
                self.spec.restart_window,
            )

    def watch_beats(self, now: float) -> None:
        """Promote first beats, start hang kills, and note when the next hang could be due
        (``_beat_due``, for the loop's sleep: one pass over the board per wake, not two)."""
        board = self.board
        mono = time.monotonic_ns()
        timeout_ns = int(self.spec.heartbeat_timeout * 1e9)
        soonest_ns = timeout_ns
        for slot in self.slots:
            if slot.state not in (S.STARTING, S.RUNNING) or slot.escalation is not None:
                continue
            beats = board.word(slot.index, "beats")
            if slot.state is S.STARTING and beats:
                self.set_state(slot, Event.FIRST_BEAT)
                self.events.first_beat(slot)  # while slot.leaving still says why it started
                if slot.replacing:
                    slot.leaving = None  # the replacement is in service
            reference = (
                board.word(slot.index, "heartbeat_ns") if beats else board.word(slot.index, "started_ns")
            )
            age_ns = mono - reference
            if age_ns <= timeout_ns:
                soonest_ns = min(soonest_ns, timeout_ns - age_ns)
            else:
                self.log.warning(
                    "worker %d (pid %d) hung: %s for %.1fs (timeout %gs); sending SIGTERM",
                    slot.index,
                    slot.pid,
                    "no heartbeat" if beats else "no heartbeat (none since it started)",
                    age_ns / 1e9,
                    self.spec.heartbeat_timeout,
                )
                self.begin_escalation(slot, "hang", now)
        self.beat_due = now + soonest_ns / 1e9

    def begin_escalation(self, slot: Slot, why: str, now: float) -> None:
        self.stops.begin(slot, why, now)

    def escalate(self, now: float) -> None:
        """Move every stop under way on: SIGTERM, SIGKILL, then a survivor if it will not die."""
        for slot in self.slots:
            if slot.escalation is not None and slot.alive and self.stops.advance(slot, now):
                self.exits_version += 1  # a survivor: no longer polled
                self.changed = True

    def start_due(self, now: float) -> None:
        for slot in self.slots:
            if slot.state is S.BACKOFF and slot.restart_at is not None and now >= slot.restart_at:
                self.spawn(slot, now)

    def _slot_given_up(self, slot: Slot) -> None:
        """A slot that will not be restarted: its planned change ends with it."""
        was_replacing = slot.replacing
        if was_replacing:
            slot.leaving = None
        self.events.given_up(slot, was_replacing)

    def stop_all(self, now: float) -> None:
        """The pool stops: no more restarts; every live worker gets its stop (flag, SIGTERM,
        SIGKILL after the grace, its tree with it)."""
        self.stopping = True
        for slot in self.slots:
            slot.restart_at = None
            if slot.alive and slot.escalation is None:
                self.begin_escalation(slot, "stop", now)
            elif slot.alive and slot.escalation is not None:
                if slot.state is S.STARTING or slot.state is S.RUNNING:
                    self.set_state(slot, Event.STOP)
            elif slot.state in (S.BACKOFF, S.EXITED):
                self.set_state(slot, Event.STOP)

    @property
    def any_alive(self) -> bool:
        return any(s.alive for s in self.slots)

    def serving(self) -> list[Slot]:
        """The slots of the pool's desired size."""
        return [s for s in self.slots if s.index < self.desired]

    def next_deadline(self, now: float, starting_poll: float) -> float:
        """The earliest moment a slot needs the loop: a restart, an escalation step, a
        max_age recycle coming due, or a first beat to look for (``starting_poll``)."""
        deadline = self.beat_due
        for slot in self.slots:
            if slot.restart_at is not None:
                deadline = min(deadline, slot.restart_at)
            if slot.recycle_at is not None and slot.leaving is None:  # else it is not due (again)
                deadline = min(deadline, slot.recycle_at)
            if slot.escalation is not None:
                deadline = min(deadline, slot.escalation.next_at)
            if slot.state is S.STARTING:
                deadline = min(deadline, now + starting_poll)
        return deadline
