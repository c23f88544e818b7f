"""The benchmark groups, in one place, and the contract a group fulfils.

A group is a module with ``run(ctx: Context) -> list[Row]``. To add one, write
``bench/groups/<name>.py`` and point its entry below at it (replace ``None``).
A group must: run readers in a second process (``bench.fresh_process``); start
peers with their own config in a temp dir on a unix socket or 127.0.0.1 only;
stop everything it started by pid and confirm it (``bench.reaper``); turn a peer
that is not installed into a ``figures.skipped`` measure instead of failing; and
keep ``--quick`` (``ctx.quick``) to a share of the one-minute budget.

Groups are imported only when run, so one with a missing dependency cannot
break the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.figures import Row
from bench.plot import Curve
from bench.progress import Progress
from bench.timing import Budget


@dataclass
class Context:
    """What a group gets: how hard to measure, where to report progress, run-wide notes.

    A group that measures a curve (a cost against pool size) appends it to
    ``curves``; ``--plot FILE`` draws them after the run.
    """

    quick: bool
    budget: Budget
    progress: Progress
    notes: list[str] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)


GroupRun = Callable[[Context], list[Row]]


@dataclass(frozen=True)
class Group:
    name: str
    entry: str | None  # "module:function"; None while the group is planned, not written
    summary: str


GROUPS: tuple[Group, ...] = (
    Group(
        "board",
        "bench.groups.board:run",
        "issue 3: healthy()/snapshot()/verdict from another process at 64 and 1024 workers, idle and "
        "with a busy writer; reads/s; heartbeat; runtime.json flush; stdlib probe",
    ),
    Group(
        "peers-board",
        "bench.groups.peers_board:run",
        "issue 7: health read vs supervisord XML-RPC and circus status (16, 64 programs); "
        "status whole-process wall time vs supervisorctl, circusctl, python -c pass",
    ),
    Group(
        "supervisor",
        "bench.groups.supervisor:run",
        "issue 7: crash -> replacement, hang detection, idle CPU, start/stop vs supervisord, circus, gunicorn",
    ),
    Group(
        "cli",
        "bench.groups.cli:run",
        "issue 7: `poolctl status` wall time, 16 workers, vs supervisorctl / circusctl / gunicornc / python -c pass",
    ),
    Group(
        "taskpool",
        "bench.groups.taskpool:run",
        "issue 7: throughput (chunksize 1 / 64), first result, results lost vs ProcessPoolExecutor, "
        "loky, pebble, multiprocess.Pool",
    ),
    Group(
        "containment",
        "bench.groups.containment:run",
        "issue 13: `poolctl stop` of 8 workers with one child each vs without; crash -> replacement "
        "beating with a child vs without, and the killed worker's child gone",
    ),
    Group(
        "scale",
        "bench.groups.scale:run",
        "growth with pool size (4, 64, 256 workers): `poolctl status` (+ --json) wall time, "
        "healthy()/snapshot() from another process, supervisor idle CPU; --plot draws the curve",
    ),
)


def by_name(name: str) -> Group:
    for group in GROUPS:
        if group.name == name:
            return group
    known = ", ".join(g.name for g in GROUPS)
    raise KeyError(f"no benchmark group {name!r} (known: {known})")


def implemented() -> list[Group]:
    return [g for g in GROUPS if g.entry is not None]


def load(group: Group) -> GroupRun:
    if group.entry is None:
        raise LookupError(f"group {group.name!r} is planned but not written yet ({group.summary})")
    module_name, _, function_name = group.entry.partition(":")
    run: GroupRun = getattr(importlib.import_module(module_name), function_name)
    return run
