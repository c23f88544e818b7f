"""What a dead supervisor's pool left running, and only that.

After a supervisor dies (SIGKILL, OOM) its workers normally end on their own
(parent-death signal, the supervisor-heartbeat check), but a worker that ignores
SIGTERM, or whatever it started, can outlive it. The next `stop` or `start` of the
pool finds those processes here and kills them. A process is the old pool's only
when that is provable from what the dead supervisor recorded in runtime.json:

- a recorded worker or failed-stop survivor (``workers``, ``survivors``) that is still
  that very process (pid + start ticks);
- a recorded descendant (``descendants``: [{"pid", "start_ticks", "slot"}], written at
  every flush, whatever process group the descendant moved to);
- a member of a recorded worker's process group (the supervisor makes each worker lead
  its own group) that started at or after that worker: the kernel does not reuse a pid
  as long as a process group of that id exists, so while the group lives its id still
  means the old worker's group. If the pid itself is alive as another process (other
  start ticks) it was reused, which proves the old group ended: nothing is taken from it;
- a descendant of any process found so far (pool.supervision.proctree's walk of /proc children
  lists) that started at or after it: its ancestor is that very process.

Everything else is left alone: a pid alone proves nothing. One residual case is not
excluded: the old group ended, its id was reused by a process that made a group of its
own and died, and that group's members live on, all between two starts of this pool;
that needs the pid space to wrap around first.

Read from /proc with the stdlib (this runs in `poolctl stop`'s fast path, without
psutil): one scan of /proc for the groups (pool.supervision.proctree), at stop and start only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pool.supervision.proctree import descendants, group_members
from pool.supervision.shutdown import kill_and_confirm
from statusboard.liveness import is_alive, start_ticks


@dataclass(frozen=True)
class Remnant:
    pid: int
    start_ticks: int
    why: str  # "worker 2", "descendant of worker 2", "in worker 2's process group", "descendant of pid 812"


def remnants(document: dict[str, Any]) -> list[Remnant]:
    """The live processes provably left by the pool whose runtime.json ``document`` this is.

    Empty when the document's supervisor is alive: a running supervisor's processes are
    its own, not leftovers (the caller holds supervisor.lock, so a live one there would
    be a process runtime.json names wrongly, whose processes are not ours to judge).
    """
    sup = document.get("supervisor")
    if not isinstance(sup, dict):
        return []
    sup_pid, sup_ticks = _int(sup.get("pid")), _int(sup.get("start_ticks"))
    if sup_pid is None or sup_ticks is None or is_alive(sup_pid, sup_ticks):
        return []
    workers = _recorded(document.get("workers"), sup_ticks)
    recorded = {
        **{pid: (ticks, f"worker {slot}") for pid, (ticks, slot) in workers.items()},
        **{
            pid: (ticks, f"descendant of worker {slot}")
            for pid, (ticks, slot) in _recorded(document.get("descendants"), sup_ticks).items()
        },
        **{
            pid: (ticks, "survivor of a failed stop")
            for pid, (ticks, _) in _recorded(document.get("survivors"), sup_ticks).items()
        },
    }
    if not recorded:
        return []
    found: dict[int, Remnant] = {}
    for pid, (ticks, why) in recorded.items():
        if is_alive(pid, ticks):
            found[pid] = Remnant(pid, ticks, why)
    # A worker's group id still means that worker's group unless the pid runs as another
    # process now (reused, so the old group had ended): then nothing is taken from it.
    leaders = {
        pid: (ticks, slot) for pid, (ticks, slot) in workers.items() if start_ticks(pid) in (None, ticks)
    }
    for leader, members in group_members(set(leaders)).items():
        ticks, slot = leaders[leader]
        for pid, member_ticks in members:
            if member_ticks >= ticks and pid not in found:
                found[pid] = Remnant(pid, member_ticks, f"in worker {slot}'s process group")
    for remnant in list(found.values()):
        for pid, ticks in descendants(remnant.pid):
            if ticks >= remnant.start_ticks and pid not in found:
                found[pid] = Remnant(pid, ticks, f"descendant of pid {remnant.pid}")
    mine = _ancestors()
    return sorted((r for r in found.values() if r.pid not in mine), key=lambda r: r.pid)


def kill_remnants(found: list[Remnant], *, grace: float) -> list[int]:
    """SIGTERM, ``grace``, SIGKILL, confirm; each signal only to that very process.
    Returns the pids still alive (empty: all gone)."""
    return kill_and_confirm([(r.pid, r.start_ticks) for r in found], grace=grace)


def report(found: list[Remnant], survivors: list[int], supervisor_pid: object) -> str:
    """The one line that says what was found and killed."""
    killed = [r for r in found if r.pid not in survivors]
    line = f"killed {len(killed)} process(es) left by dead supervisor pid {supervisor_pid}: " + ", ".join(
        f"pid {r.pid} ({r.why})" for r in killed
    )
    if survivors:
        line += f"; still alive after SIGKILL: pid {', '.join(map(str, survivors))}"
    return line


def _int(value: object) -> int | None:
    """``value`` if it is a positive int (a pid or start ticks), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _recorded(entries: object, sup_ticks: int) -> dict[int, tuple[int, object]]:
    """{pid: (start ticks, slot)} of well-formed entries that started after their supervisor."""
    out: dict[int, tuple[int, object]] = {}
    if not isinstance(entries, list):
        return out
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        pid, ticks = _int(entry.get("pid")), _int(entry.get("start_ticks"))
        # A process of the pool started after its supervisor; anything else is a bad record.
        if pid is not None and ticks is not None and ticks >= sup_ticks:
            slot = entry.get("slot")
            out[pid] = (ticks, slot if isinstance(slot, int) and slot >= 0 else "?")
    return out


def _ancestors() -> set[int]:
    """This process and its ancestors: never a remnant, whatever a record says."""
    mine: set[int] = set()
    pid = os.getpid()
    while pid > 0 and pid not in mine:
        mine.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read()
            pid = int(raw[raw.rfind(b")") + 2 :].split()[1])  # field 4, ppid
        except (OSError, IndexError, ValueError):
            break
    return mine
