"""Planned replacements: rolling restart, recycling (max_rss, max_age, the task pool's
drain) and task-timeout kills. None counts as a crash, and at most one runs at a
time, never leaving fewer than N-1 workers serving. A part of the supervisor loop
(pool/supervision/loop.py) working on the slots of WorkerLives (pool/supervision/worker_lives.py); the
policy pieces are pool/supervision/recycle.py.
"""

from __future__ import annotations

from collections import deque

from pool.spec import format_size
from pool.supervision import commands as cmd
from pool.supervision import shutdown
from pool.supervision.leaving import Leaving
from pool.supervision.recycle import may_start, over_rss
from pool.supervision.run import Run
from pool.supervision.slot import Slot
from pool.supervision.worker_lives import WorkerLives
from statusboard.states import WorkerState as S

AGE_LIMIT = "max_age"  # a queued recycle for age: its log line is worded when it starts


class Replacements:
    def __init__(self, run: Run, lives: WorkerLives) -> None:
        self.run = run
        self.spec = run.spec
        self.log = run.log
        self.board = run.board
        self.lives = lives
        self.rolling: deque[int] = deque()  # slots still to replace in a rolling restart, in order
        self.recycles: deque[tuple[int, int, str]] = deque()  # (slot, generation, reason), one at a time
        self.next_rss = 0.0  # when RSS is next sampled

    def kill_and_replace(self, command: cmd.Kill, now: float) -> None:
        slot = self.lives.slots[command.slot] if command.slot < len(self.lives.slots) else None
        if slot is None or not slot.alive or slot.generation != command.generation:
            return  # that process is gone already
        if slot.leaving is Leaving.RETIRE:
            return  # being retired: it goes anyway, and is not replaced
        self.log.warning("worker %d (pid %d) killed: %s; replacing it", slot.index, slot.pid, command.reason)
        slot.leaving = Leaving.KILL
        # Its tree goes with it (a task's subprocess too), and the kill is confirmed like
        # any stop's last step: a worker that survives SIGKILL is a survivor.
        slot.escalation = shutdown.begin_kill("kill", now)
        self.run.trees.signal_tree(slot.pid, shutdown.SIGNAL_FOR[shutdown.Stage.KILL])
        shutdown.send(self.run.kill, slot.pid, shutdown.SIGNAL_FOR[shutdown.Stage.KILL])

    def sample_rss(self, now: float) -> None:
        interval = self.spec.rss_interval
        if not interval or now < self.next_rss:
            return
        self.next_rss = now + interval
        for slot in self.lives.slots:
            if slot.alive:
                self._sample_into(slot)
        if self.run.trees.changed:  # a new or ended descendant: runtime.json records trees
            self.run.trees.changed = False
            self.lives.changed = True

    def _sample_into(self, slot: Slot) -> int | None:
        """Sample the RSS of the worker's tree (it and its descendants: a helper that leaks
        is the worker's leak); a change goes to the slot and its board row, with the
        worker's own RSS beside it."""
        own = self.run.rss.sample(slot.pid)
        if own is None:
            return None
        tree = own + (self.run.trees.tree_rss(slot.pid) if self.run.trees.look(slot.pid) else 0)
        if tree != slot.rss or own != slot.rss_self:
            slot.rss, slot.rss_self = tree, own
            self.board.set_lifecycle(slot.index, rss_bytes=tree, rss_self_bytes=own)
        return tree

    def check_limits(self, now: float) -> None:
        """Queue the workers past max_rss or max_age for recycling (once per process)."""
        if self.lives.stopping:
            return
        for slot in self.lives.slots:
            if slot.state is not S.RUNNING or slot.leaving is not None:
                continue  # already queued, being replaced or retired
            reason = None if slot.born_over_rss else over_rss(self.spec, slot.rss)
            if reason is None and slot.recycle_at is not None and now >= slot.recycle_at:
                reason = AGE_LIMIT  # worded when it starts, with the age it then has
            if reason is not None:
                slot.leaving = Leaving.RECYCLE_DUE
                self.recycles.append((slot.index, slot.generation, reason))

    def on_first_beat(self, slot: Slot) -> None:
        """A worker beat for the first time: a rolling restart's replacement is in
        service (the roll moves on), and a worker born over max_rss is noted."""
        if slot.replacing and self.rolling and self.rolling[0] == slot.index:
            self.rolling.popleft()
        self._check_birth_rss(slot)

    def on_given_up(self, slot: Slot, was_replacing: bool) -> None:
        """A replacement that failed for good ends a rolling restart; the rest keep serving."""
        if was_replacing and self.rolling and self.rolling[0] == slot.index:
            self.rolling.clear()
            self.log.error(
                "rolling restart stopped: the replacement of worker %d failed; "
                "the workers not yet replaced keep running",
                slot.index,
            )

    def queue_recycle(self, command: cmd.Recycle) -> None:
        self.recycles.append((command.slot, command.generation, command.reason))

    def stop(self) -> None:
        """The pool stops: no rolling restart goes on."""
        self.rolling.clear()

    def _check_birth_rss(self, slot: Slot) -> None:
        """A worker already past max_rss when it first beats (big imports, or forked from a
        big parent) gains nothing from a replacement, which starts just as big: recycling
        it would churn processes forever. Say so once and leave it to the operator."""
        if self.spec.max_rss is None or not self.spec.rss_interval:
            return
        rss = self._sample_into(slot)
        if rss is not None and over_rss(self.spec, rss) is not None:
            slot.born_over_rss = True
            self.log.warning(
                "worker %d (pid %d) starts at rss %s, already over max_rss %s: not recycling it "
                "for memory (a replacement would start as big); raise --max-rss",
                slot.index,
                slot.pid,
                format_size(rss),
                format_size(self.spec.max_rss),
            )

    def advance_recycling(self, now: float) -> None:
        """Start the next queued recycle once no other replacement is under way."""
        while self.recycles and not self.lives.stopping and not self.rolling:
            index, generation, reason = self.recycles[0]
            slot = self.lives.slots[index] if index < len(self.lives.slots) else None
            if (
                slot is None
                or not slot.alive
                or slot.generation != generation
                or slot.leaving not in (None, Leaving.RECYCLE_DUE)
            ):
                self.recycles.popleft()  # that process is gone already, or leaves for another reason
                continue
            if any(s.replacing for s in self.lives.slots) or not may_start(
                slot, self.lives.slots, self.lives.desired
            ):
                return  # one at a time, and never fewer than N-1 serving
            self.recycles.popleft()
            if reason == AGE_LIMIT:
                reason = f"max_age {self.spec.max_age:g}s reached (age {now - slot.started:.1f}s)"
            slot.leaving = Leaving.RECYCLE
            slot.recycled += 1
            self.board.set_lifecycle(slot.index, recycled=slot.recycled)
            self.log.info(
                "worker %d (pid %d) recycled: %s (recycle %d; not a crash)",
                slot.index,
                slot.pid,
                reason,
                slot.recycled,
            )
            if self.run.hooks is not None and self.run.hooks.recycle(slot.index, slot.generation, reason):
                slot.leaving = Leaving.DRAIN  # the embedder finishes its work, then release_worker()
            else:
                self.lives.begin_escalation(slot, "recycle", now)
            return

    def release_drained(self, command: cmd.Release, now: float) -> None:
        slot = self.lives.slots[command.slot] if command.slot < len(self.lives.slots) else None
        if slot is None or not slot.alive or slot.generation != command.generation:
            return
        if slot.leaving is Leaving.DRAIN:
            slot.leaving = Leaving.RECYCLE
            if slot.escalation is None:
                self.lives.begin_escalation(slot, "recycle", now)

    def start_rolling(self) -> None:
        if self.rolling:
            self.log.info("rolling restart already in progress")
            return
        self.board.set_header(generation=self.board.header_word("generation") + 1)
        self.rolling.extend(s.index for s in self.lives.slots if s.index < self.lives.desired)
        self.log.info("rolling restart of %d workers, one at a time", len(self.rolling))

    def advance_rolling(self, now: float) -> None:
        while self.rolling and not self.lives.stopping:
            slot = self.lives.slots[self.rolling[0]] if self.rolling[0] < len(self.lives.slots) else None
            if slot is not None and slot.replacing:
                return  # being replaced (maybe in backoff after a crash): wait for its first beat
            if (
                slot is None
                or slot.leaving is Leaving.RETIRE
                or slot.state in (S.FAILED, S.EXITED, S.BACKOFF, S.EMPTY)
            ):
                self.rolling.popleft()
                continue
            if slot.state is S.RUNNING and slot.escalation is None:
                if any(s.replacing for s in self.lives.slots):
                    return  # a recycle is under way: one replacement at a time
                slot.leaving = Leaving.ROLL
                self.lives.begin_escalation(slot, "rolling", now)
            return
