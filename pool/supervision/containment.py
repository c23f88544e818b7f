"""Containment: whatever a worker started ends when the worker ends, verified.

A worker's *tree* is the unit. How it is held together without a cgroup:

- every worker leads its own process group and is a child subreaper (pool.supervision.worker),
  so while it lives its whole tree, escapers included (``setsid()``, double fork),
  is found by walking /proc below it (pool.supervision.proctree);
- a supervisor that owns its process (daemon, foreground) is a child subreaper too:
  when a worker dies, its orphans re-parent to the supervisor, which finds them as
  its own children that are not workers, kills them and reaps them;
- embedded in a bigger program (whose own children are none of our business) the
  supervisor is not a subreaper: a dead worker's orphans go to init and are found by
  their process group (the dead worker's pid: a group id is not reused while the
  group exists) and by the last look at the worker's tree.

Ending a tree follows the worker's own stop: SIGTERM to the tree when the worker gets
SIGTERM, SIGKILL when it gets SIGKILL; what outlives the worker (a child that exited
cooperatively left, a crashed worker's children) becomes a *remnant*: SIGTERM now,
SIGKILL at the end of the grace, then a bounded confirmation. A remnant that survives
that is a survivor, named like a worker that survives SIGKILL, and a stop with a
survivor fails.

Costs: nothing on the idle loop but one pread of a kept fd per worker and RSS sample
(``look``); walks, group scans and signals happen at an exit, a stop or a kill.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from pool.supervision import proctree
from pool.supervision.proctree import ProcId
from pool.supervision.shutdown import CONFIRM_S
from statusboard.liveness import is_alive

CRASH_GRACE_S = 1.0  # SIGTERM -> SIGKILL for what a crashed worker left behind
POLL_S = 0.02  # how often remnants are looked at while some remain (exit/stop windows only)
# A worker seen childless is looked at again every this many samples. Owning its process,
# the supervisor does not need the look to catch escapees (a dead worker's orphans come to
# it): every fifth keeps a 256-worker pool's idle cost unchanged. Embedded, the look is
# what catches a setsid()'d child after a crash: every sample.
QUIET_LOOKS = 5
MAX_SETTLES = 100  # looks for late orphans before a stop ends (each SIGKILLs what it finds)


@dataclass
class Remnant:
    proc: ProcId
    slot: int  # the slot whose worker it descends from; -1 when not known
    kill_at: float  # SIGKILL due (end of the grace)
    confirm_by: float = 0.0  # set when SIGKILL is sent
    killed: bool = False


@dataclass
class _Tracked:
    slot: int
    children_fd: int  # /proc/PID/task/PID/children, kept open (a pread costs ~2 us)
    tree: list[ProcId]  # its descendants when last looked at
    quiet: int = 0  # samples since a look found no children


class TreeKeeper:
    """The process trees of one pool's workers.

    ``kill`` is the supervisor's injectable ``os.kill``: every signal to a process of a
    tree goes through it (a process group as ``kill(-pgid, sig)``), so tests can make a
    descendant unkillable. ``exempt`` names the supervisor's children that are not
    orphans (live workers, multiprocess's forkserver and resource tracker).
    """

    def __init__(
        self,
        *,
        kill: Callable[[int, int], None],
        log: logging.Logger,
        subreaper: bool,
        exempt: Callable[[], set[int]],
    ) -> None:
        self._kill = kill
        self.log = log
        self.subreaper = subreaper
        self._quiet_looks = QUIET_LOOKS if subreaper else 1
        self._exempt = exempt
        self._tracked: dict[int, _Tracked] = {}  # worker pid -> its tree
        self._remnants: dict[ProcId, Remnant] = {}
        self._groups: dict[int, tuple[int, float]] = {}  # dead worker's pgid -> (slot, kill_at), to scan
        self.survivors: list[tuple[ProcId, int]] = []  # (process, slot) not gone after SIGKILL
        self.changed = False  # a tree changed since the caller last cleared this
        self._dead_groups: set[int] = set()  # process groups of exited workers that had members
        self._settles = 0
        self._lost: set[ProcId] = set()  # survivors: never taken up again

    # -- living workers -------------------------------------------------------

    def track(self, slot: int, pid: int) -> None:
        try:
            fd = os.open(f"/proc/{pid}/task/{pid}/children", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = -1  # already gone: its exit is on the way
        self._tracked[pid] = _Tracked(slot, fd, [])

    def look(self, pid: int, *, full: bool = False) -> list[ProcId]:
        """The worker's descendants now (also kept, for after it is gone).

        Cheap unless it has children: one pread of its main thread's children, and for
        a worker seen childless only every few calls (see QUIET_LOOKS). ``full`` walks
        every thread's children regardless (at a kill or a stop): a child started by
        another thread of a worker is seen then, or once the main thread has one too.
        """
        tracked = self._tracked.get(pid)
        if tracked is None:
            return []
        if not full and not tracked.tree:
            tracked.quiet += 1
            if tracked.quiet < self._quiet_looks or tracked.children_fd < 0:
                return []
            tracked.quiet = 0
            try:
                if not os.pread(tracked.children_fd, 64, 0).strip():
                    return []
            except OSError:
                return []
        tree = proctree.descendants(pid)
        if tree != tracked.tree:
            self.changed = True  # runtime.json should record it soon: see record()
        tracked.tree = tree
        tracked.quiet = 0
        return tree

    def tree_rss(self, pid: int) -> int:
        """Resident memory of the worker's descendants at the last look (bytes)."""
        tracked = self._tracked.get(pid)
        if tracked is None:
            return 0
        return sum(proctree.rss_bytes(p) for p, _ in tracked.tree)

    def signal_tree(self, pid: int, signum: int) -> None:
        """Send ``signum`` to the worker's descendants and its process group (not to the
        worker itself: the caller signals it as its stop says)."""
        for proc in self.look(pid, full=True):
            self._send(proc, signum)
        self._send_group(pid, signum)

    # -- after a worker is gone -------------------------------------------------

    def release(self, slot: int, pid: int, now: float, *, grace_until: float | None, killed: bool) -> int:
        """The worker ``pid`` has exited (and been reaped): end what it left behind.

        ``grace_until``: when its stop's grace ends (None: it crashed; a short grace).
        ``killed``: its stop already reached SIGKILL, so its tree gets SIGKILL at once.
        Returns the number of processes it left (known so far).
        """
        tracked = self._tracked.pop(pid, None)
        if tracked is not None and tracked.children_fd >= 0:
            os.close(tracked.children_fd)
        kill_at = now if killed else (grace_until if grace_until is not None else now + CRASH_GRACE_S)
        left = [p for p in (tracked.tree if tracked else []) if is_alive(*p)]
        found = self._add(left, slot, kill_at, now)
        if self.subreaper:
            # Re-parented to us: its orphans, and any another exited worker left (not yet
            # looked at: its exit is handled in this same wake, as -1 when found here).
            for proc in self._orphans():
                found += self._add([proc], slot if _in_group(proc[0], pid) else -1, kill_at, now)
        if proctree.group_exists(pid):
            self._groups[pid] = (slot, kill_at)  # scanned once per wake, for every dead group
            self._dead_groups.add(pid)  # and again before a stop ends (settle)
        return found

    def _orphans(self) -> list[ProcId]:
        """Our children that are not workers (nor multiprocess's helpers), with their trees:
        re-parented here because their worker died (we are a subreaper)."""
        exempt = self._exempt()
        found: list[ProcId] = []
        for child in proctree.children(os.getpid()):
            proc = proctree.identify([child])
            if child in exempt or not proc or proc[0] in self._remnants:
                continue  # a worker, a helper, gone, or being ended already (its tree with it)
            found.extend(proc)
            found.extend(proctree.descendants(child))
        return found

    def _add(self, procs: list[ProcId], slot: int, kill_at: float, now: float) -> int:
        added = 0
        for proc in procs:
            if proc in self._remnants or proc in self._lost:
                continue  # being ended already, or known not to die
            remnant = Remnant(proc, slot, kill_at)
            self._remnants[proc] = remnant
            added += 1
            if kill_at <= now:
                self._kill_remnant(remnant, now)
            else:
                self._send(proc, signal.SIGTERM)
        return added

    def sweep(self, now: float, grace: float) -> None:
        """The periodic check (every few seconds): orphans that arrived late (a remnant's
        child forked just before the kill) and zombies of ours to reap."""
        if self.subreaper:
            self._add(self._orphans(), -1, now + min(grace, CRASH_GRACE_S), now)
            exempt = self._exempt()
            for child in proctree.children(os.getpid()):
                if child not in exempt and not proctree.identify([child]):
                    proctree.reap(child)

    def settle(self, now: float) -> bool:
        """A stop is about to end: look once more for what a killed remnant forked just
        before its SIGKILL (re-parented to us as a subreaper; embedded: still in a dead
        worker's process group). Found ones get SIGKILL at once (the grace is over).
        True when something was found: the stop goes on until a look finds nothing."""
        if self._settles >= MAX_SETTLES:
            return False  # a process tree that outruns this many looks: what is left is lost
        self._settles += 1
        found = self._add(self._orphans(), -1, now, now) if self.subreaper else 0
        self._dead_groups = {
            g for g in self._dead_groups if proctree.group_exists(g) and g not in self._tracked
        }
        for procs in proctree.group_members(self._dead_groups).values():
            found += self._add(procs, -1, now, now)
        return found > 0

    def advance(self, now: float) -> None:
        """Move remnants on: scan dead groups, reap the gone, SIGKILL at the grace's end,
        give up (survivor) after the confirmation window."""
        if self._groups:
            groups, self._groups = self._groups, {}
            # A pid now used by a live worker proves that old group gone (a group's id
            # is not reused while it exists): never scan for it.
            live = {p for p in groups if p in self._tracked}
            for pgid, procs in proctree.group_members(set(groups) - live).items():
                slot, kill_at = groups[pgid]
                self._add(procs, slot, kill_at, now)
        for proc, remnant in list(self._remnants.items()):
            proctree.reap(proc[0])
            if not is_alive(*proc):
                del self._remnants[proc]
            elif not remnant.killed and now >= remnant.kill_at:
                self._kill_remnant(remnant, now)
            elif remnant.killed and now >= remnant.confirm_by:
                del self._remnants[proc]
                self.survivors.append((proc, remnant.slot))
                self._lost.add(proc)
                self.log.error(
                    "pid %d (%s), left by worker %s, survived SIGKILL for %gs: NOT confirmed gone",
                    proc[0],
                    proctree.command_line(proc[0]),
                    remnant.slot if remnant.slot >= 0 else "?",
                    CONFIRM_S,
                )

    def _kill_remnant(self, remnant: Remnant, now: float) -> None:
        # Its own children first (a fork racing the kill re-parents to a subreaper: the
        # sweep finds it; embedded, its group does).
        for child in proctree.descendants(remnant.proc[0]):
            if child not in self._remnants:
                self._remnants[child] = Remnant(child, remnant.slot, now, now + CONFIRM_S, True)
                self._send(child, signal.SIGKILL)
        self._send(remnant.proc, signal.SIGKILL)
        remnant.killed = True
        remnant.confirm_by = now + CONFIRM_S

    @property
    def pending(self) -> bool:
        """Remnants still being ended (a stop waits for them)."""
        return bool(self._remnants or self._groups)

    def next_deadline(self, now: float) -> float | None:
        return now + POLL_S if self.pending else None

    def record(self) -> list[dict[str, int]]:
        """What runtime.json keeps, so a next start or stop can end the trees of a
        supervisor that was SIGKILLed: every known descendant, by pid and start ticks."""
        out = [
            {"pid": p, "start_ticks": t, "slot": tracked.slot}
            for tracked in self._tracked.values()
            for p, t in tracked.tree
        ]
        out.extend({"pid": p, "start_ticks": t, "slot": r.slot} for (p, t), r in self._remnants.items())
        return out

    def close(self) -> None:
        for tracked in self._tracked.values():
            if tracked.children_fd >= 0:
                os.close(tracked.children_fd)
        self._tracked.clear()

    # -- signals ---------------------------------------------------------------------

    def _send(self, proc: ProcId, signum: int) -> None:
        if is_alive(*proc):  # never a pid reused by a stranger
            try:
                self._kill(proc[0], signum)
            except (ProcessLookupError, PermissionError):
                pass

    def _send_group(self, pgid: int, signum: int) -> None:
        try:
            self._kill(-pgid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _in_group(pid: int, pgid: int) -> bool:
    try:
        return os.getpgid(pid) == pgid
    except OSError:
        return False
