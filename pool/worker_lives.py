"""One worker slot's life, as the supervisor loop drives it: spawn, first beat, hang,
exit, the restart decision (pool.budget.after_exit), backoff, and the stop
escalation (flag, SIGTERM, SIGKILL, confirm). Part of Supervisor (pool/supervisor.py).
"""

from __future__ import annotations

import os
import time
from typing import Any

from pool import shutdown, spawn_guard
from pool.budget import RestartBudget
from pool.containment import CRASH_GRACE_S
from pool.leaving import AfterExit, Leaving, after_exit
from pool.loop_state import LoopState
from pool.oom import oom_kills, sigkill_cause
from pool.recycle import age_limit
from pool.slot import Slot
from pool.state import Event, next_state
from pool.worker import BOOT_ERROR_EXIT, WorkerArgs, worker_main
from statusboard.health import describe_exit
from statusboard.liveness import start_ticks
from statusboard.states import WorkerState as S

SWEEP_S = 5.0  # also reap every worker this often, whether or not its fd said so (belt and braces)


class WorkerLives(LoopState):
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
                if slot.leaving is Leaving.RETIRE:
                    # Wanted again before it exited: respawn it, not a crash.
                    slot.leaving = Leaving.RESPAWN if slot.alive else None
                if slot.state is S.EMPTY:
                    self._spawn(slot, now)
            elif slot.leaving is not Leaving.RETIRE:
                slot.leaving = Leaving.RETIRE
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
        made: list[Any] = []  # what this attempt opened, closed again if it fails
        process: Any = None
        try:
            self._headroom.check()
            parent_end, child_end = self._mp.Pipe(duplex=True)
            made += (parent_end, child_end)
            args = WorkerArgs(
                slot=slot.index,
                pool=self.spec.name,
                generation=slot.generation + 1,
                target=self.spec.target,
                cwd=self.spec.cwd,
                board_path=board.handle_path,  # the kept fd, not the name: a removed name must not matter
                supervisor_pid=os.getpid(),
                supervisor_ticks=self._ticks,
                conn=child_end,
                channel=self._hooks.channel(slot.index, slot.generation + 1) if self._hooks else None,
                close_fds=self._parent_fds() if self._fork else [],
            )
            if args.channel is not None:
                made.append(args.channel)
            process = self._mp.Process(target=worker_main, args=(args,), name=f"poolctl-worker-{slot.index}")
            spawn_guard.start(process, fork=self._fork)
            if self._hooks is not None:
                self._hooks.forked(slot.index, slot.generation + 1, process.pid)
            ticks = start_ticks(process.pid) or 0
        except OSError as exc:
            for end in made:
                end.close()
            if process is not None:
                spawn_guard.abandon(process)
            self._spawn_failed(slot, exc, now)
            return
        slot.generation += 1
        try:
            slot.pidfd = os.pidfd_open(process.pid)
        except (AttributeError, OSError):
            slot.pidfd = -1  # no pidfds here: the sentinel pipe and the sweep tell its exit
        self._poller = None
        child_end.close()
        if args.channel is not None:
            args.channel.close()
        slot.process, slot.conn, slot.pid = process, parent_end, process.pid
        self._trees.track(slot.index, process.pid)
        slot.ticks = ticks
        slot.started = now
        slot.oom_kills_at_start = oom_kills()  # to tell an OOM kill from a kill -9 (pool.oom)
        slot.restart_at = None
        slot.born_over_rss = False
        limit = age_limit(self.spec, self._rng)
        slot.recycle_at = None if limit is None else now + limit
        slot.rss = 0
        if self.spec.rss_interval:
            self._rss.track(process.pid)
            slot.rss = self._rss.sample(process.pid) or 0  # so a live worker never shows "not sampled"
        slot.rss_self = slot.rss  # no descendants yet
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
            rss_self_bytes=slot.rss_self,
        )
        self.log.info("worker %d started pid %d (generation %d)", slot.index, slot.pid, slot.generation)
        if self._hooks is not None:
            self._hooks.started(slot.index, slot.generation, slot.pid)

    def _spawn_failed(self, slot: Slot, exc: OSError, now: float) -> None:
        """No process could be started (EMFILE, ENFILE, EAGAIN, ENOMEM: the machine's limits,
        not the worker's code): a slot failure, counted like a crash, always after a backoff
        (retrying at once would fail the same way), FAILED once the budget is spent."""
        assert self.board is not None
        slot.last_error = f"could not start: {exc}"
        self.log.error("worker %d could not start: %s", slot.index, exc)
        self._set_state(slot, Event.SPAWN_FAILED)
        delay = slot.budget.record_exit(now, 0.0)
        if delay is None:
            self._set_state(slot, Event.GIVE_UP)
            self.log.error(
                "worker %d failed: more than %d failed starts or restarts in %gs; giving up",
                slot.index,
                self.spec.max_restarts,
                self.spec.restart_window,
            )
            self._slot_given_up(slot)
            return
        slot.restarts += 1
        self.board.set_lifecycle(slot.index, restarts=slot.restarts)
        self._set_state(slot, Event.BACKOFF)
        slot.restart_at = now + max(delay, self.spec.backoff_base)

    def _parent_fds(self) -> list[int]:
        """The supervisor's own fds a forked worker must close (it inherits them all)."""
        fds = [fd for fd in (self._lock_fd, self._notify_fd) if fd is not None]
        if self._metrics is not None:
            fds.extend(self._metrics.fds())  # else a worker that outlives us holds the port
        return fds

    def _close_exit_fd(self, slot: Slot) -> None:
        if slot.pidfd >= 0:
            os.close(slot.pidfd)
            slot.pidfd = -1

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
            self._trees.sweep(now, self.spec.grace)
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
        self._close_exit_fd(slot)
        self._poller = None
        self._rss.forget(slot.pid)
        slot.recycle_at = None
        prev = slot.state
        escalation, slot.escalation = slot.escalation, None
        self._set_state(slot, Event.EXIT)
        assert self.board is not None
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
        self._end_tree(slot, escalation, now)
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
            slot.leaving,
            stopping=self._stopping,
            code=code,
            hung=prev is S.HUNG,
            booted=prev is not S.STARTING,
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

    def _end_tree(self, slot: Slot, escalation: shutdown.Escalation | None, now: float) -> None:
        """What the worker started ends with it: SIGTERM now, SIGKILL when its stop's grace
        ends (a crash: shortly), at once when its stop had reached SIGKILL."""
        killed = escalation is not None and escalation.stage >= shutdown.Stage.KILL
        grace_until = None if escalation is None else escalation.started + escalation.grace
        left = self._trees.release(slot.index, slot.pid, now, grace_until=grace_until, killed=killed)
        if left:
            self.log.warning(
                "worker %d (pid %d) left %d process(es) running; ending them: %s",
                slot.index,
                slot.pid,
                left,
                "SIGKILL"
                if killed
                else f"SIGTERM, SIGKILL after {max(0.0, (grace_until or now + CRASH_GRACE_S) - now):.1f}s",
            )

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
                if slot.replacing:
                    slot.leaving = None
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
            self._trees.signal_tree(slot.pid, shutdown.SIGNAL_FOR[shutdown.Stage.TERM])
            shutdown.send(self._kill, slot.pid, shutdown.SIGNAL_FOR[shutdown.Stage.TERM])
            return
        # Know its tree now: a worker that leaves at the flag leaves its children to us.
        self._trees.look(slot.pid, full=True)
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
                self._trees.signal_tree(slot.pid, signum)
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
        if not slot.replacing:
            return
        slot.leaving = None
        if self._rolling and self._rolling[0] == slot.index:
            self._rolling.clear()
            self.log.error(
                "rolling restart stopped: the replacement of worker %d failed; "
                "the workers not yet replaced keep running",
                slot.index,
            )
