"""Stopping one slot's process and its tree: the stop flag, SIGTERM, SIGKILL after the
grace, a bounded confirmation, and ending what the process left when it is gone.

The timing of a stop is pool/supervision/shutdown.py's (pure: an Escalation moves by
the clock); this part carries it out on a slot: it signals the worker and its whole
tree (pool/supervision/containment.py) at each step and says so in the log. A part
of WorkerLives, which owns the slots.
"""

from __future__ import annotations

from collections.abc import Callable

from pool.supervision import shutdown
from pool.supervision.containment import CRASH_GRACE_S
from pool.supervision.run import Run
from pool.supervision.slot import Slot
from pool.supervision.transitions import Event
from statusboard.states import WorkerState as S


class SlotStops:
    def __init__(self, run: Run, set_state: Callable[[Slot, Event], None]) -> None:
        self.run = run
        self.log = run.log
        self.set_state = set_state

    def begin(self, slot: Slot, why: str, now: float) -> None:
        """Start stopping the slot's process: the flag first (a hang: SIGTERM at once)."""
        esc = shutdown.begin(why, now, self.run.spec.grace)
        slot.escalation = esc
        if why == "hang":
            self.set_state(slot, Event.HANG)
            self.run.trees.signal_tree(slot.pid, shutdown.SIGNAL_FOR[shutdown.Stage.TERM])
            shutdown.send(self.run.kill, slot.pid, shutdown.SIGNAL_FOR[shutdown.Stage.TERM])
            return
        # Know its tree now: a worker that leaves at the flag leaves its children to us.
        self.run.trees.look(slot.pid, full=True)
        if slot.state is not S.STOPPING:
            self.set_state(slot, Event.STOP)
        self.run.board.set_lifecycle(slot.index, stop_requested=1)
        try:
            slot.conn.send_bytes(b"S")
        except (OSError, ValueError):
            pass  # the worker is already gone; its sentinel will say so

    def advance(self, slot: Slot, now: float) -> bool:
        """Take the slot's stop its next step if due. True when the process has survived
        SIGKILL past the confirmation window (it is marked a survivor)."""
        esc = slot.escalation
        assert esc is not None
        stage = shutdown.advance(esc, now)
        if stage in shutdown.SIGNAL_FOR:
            signum = shutdown.SIGNAL_FOR[stage]
            self.log.warning(
                "worker %d (pid %d) still running %.1fs after %s; escalated to %s",
                slot.index,
                slot.pid,
                now - esc.started,
                "the stop flag" if stage is shutdown.Stage.TERM else "SIGTERM",
                signum.name,
            )
            self.run.trees.signal_tree(slot.pid, signum)
            shutdown.send(self.run.kill, slot.pid, signum)
        elif stage is shutdown.Stage.GAVE_UP:
            slot.survivor = True
            self.log.error(
                "worker %d (pid %d) survived SIGKILL for %gs: NOT confirmed gone",
                slot.index,
                slot.pid,
                shutdown.CONFIRM_S,
            )
            return True
        return False

    def end_tree(self, slot: Slot, escalation: shutdown.Escalation | None, now: float) -> None:
        """What the worker started ends with it: SIGTERM now, SIGKILL when its stop's grace
        ends (a crash: shortly), at once when its stop had reached SIGKILL."""
        killed = escalation is not None and escalation.stage >= shutdown.Stage.KILL
        grace_until = None if escalation is None else escalation.started + escalation.grace
        left = self.run.trees.release(slot.index, slot.pid, now, grace_until=grace_until, killed=killed)
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
