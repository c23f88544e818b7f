"""Group ``containment`` (issue 13): what ending a worker's whole process tree costs.

Two real pools of ours side by side, started with ``poolctl start``: one of idle
workers (``bench.sup_workers:idle``), one of idle workers that each first start one
helper process (``bench.sup_workers:idle_with_child``, a ``sleep 1000``). Measured,
alternating between the two so that each ratio is taken under the same machine load:

- stop, 8 workers: wall time of ``poolctl stop`` (the whole command; it returns once
  every process of the pool is verified gone). After each stop of the pool with
  children, every child (found by pid + start time before the stop) is checked gone:
  a round that leaves one is a failure, not a figure.
- crash -> replacement beating, 4 workers: SIGKILL a stable worker (one that has run
  ``backoff_reset`` seconds, so the restart is immediate, as in the supervisor group),
  time until the board shows its slot RUNNING with a new pid. For the pool with
  children, also the time until the killed worker's child is gone (its tree is ended
  with it, "within a second or two" by the issue).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import psutil

from bench import proc_watch
from bench.figures import Measure, Row, Stats, skipped
from bench.poolctl_pool import PoolctlPool
from bench.registry import Context
from pool.spec import PoolSpec
from statusboard.states import WorkerState

GROUP = "containment"
STOP_WORKERS = 8
CRASH_WORKERS = 4
PLAIN = "bench.sup_workers:idle"
WITH_CHILD = "bench.sup_workers:idle_with_child"
OURS = "with one child each"
ALT = "without children"
BACKOFF_RESET_S = PoolSpec(target=PLAIN).backoff_reset
_TIMEOUT_S = 30.0
_RUNNING = int(WorkerState.RUNNING)

Proc = tuple[int, float]  # pid, psutil create time


def run(ctx: Context) -> list[Row]:
    with proc_watch.adopting_orphans():
        try:
            return [_stop(ctx), *_crash(ctx)]
        finally:
            stragglers = proc_watch.settle_adopted(10.0)
            if stragglers:
                ctx.notes.append(
                    f"containment: processes outlived their parents and were killed: {stragglers}"
                )


# -- helpers ---------------------------------------------------------------------


def _ms(samples: list[float]) -> Stats:
    return Stats.of([s * 1e3 for s in samples])


def _measure(label: str, samples: list[float], failure: str) -> Measure:
    if not samples:
        return skipped(label, failure or "no samples")
    return Measure(label, _ms(samples), failure)


def _wait(check: Callable[[], bool], what: str, timeout: float = _TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:g} s")
        time.sleep(0.01)


def _children(pid: int) -> list[Proc]:
    """The live descendants of ``pid`` by (pid, create time)."""
    try:
        found = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    procs = []
    for child in found:
        try:
            procs.append((child.pid, child.create_time()))
        except psutil.Error:
            pass
    return procs


def _running(proc: Proc) -> bool:
    try:
        p = psutil.Process(proc[0])
        return abs(p.create_time() - proc[1]) < 0.005 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _trees(pool: PoolctlPool) -> list[Proc]:
    rows = pool.snapshot().rows
    return [c for pid in rows["pid"].tolist() if pid > 0 for c in _children(int(pid))]


def _kill_left(procs: list[Proc]) -> None:
    for proc in procs:
        if _running(proc):
            try:
                os.kill(proc[0], signal.SIGKILL)
            except ProcessLookupError:
                pass


# -- stop -----------------------------------------------------------------------------


def _stop(ctx: Context) -> Row:
    rounds = 3 if ctx.quick else 9
    samples: dict[str, list[float]] = {OURS: [], ALT: []}
    failures: dict[str, str] = {}
    for n in range(rounds):
        ctx.progress.step(
            f"{GROUP}: stop {STOP_WORKERS} workers, with/without a child each, round {n + 1}/{rounds}"
        )
        for label, target in ((OURS, WITH_CHILD), (ALT, PLAIN)):
            if label in failures:
                continue
            children: list[Proc] = []
            try:
                with PoolctlPool(STOP_WORKERS, target) as pool:
                    _wait(pool.all_running, f"{label}: all running")
                    if target == WITH_CHILD:
                        _wait(lambda p=pool: len(_trees(p)) >= STOP_WORKERS, "every worker's child started")
                        children = _trees(pool)
                    time.sleep(0.2)
                left = [proc for proc in children if _running(proc)]
                if left:
                    raise RuntimeError(f"`poolctl stop` returned with {len(left)} child(ren) still running")
                samples[label].append(pool.stop_seconds)
            except Exception as exc:
                failures[label] = f"stopped after {len(samples[label])} rounds: {exc}"
                ctx.progress.note(f"{GROUP}: {label}: {exc}")
            finally:
                _kill_left(children)
    ours, alt = (
        _measure(OURS, samples[OURS], failures.get(OURS, "")),
        _measure(ALT, samples[ALT], failures.get(ALT, "")),
    )
    return Row(
        GROUP,
        f"stop, {STOP_WORKERS} workers, every process gone: workers with one child each vs without",
        "ms",
        ours,
        [alt],
        ALT,
        note=f"{rounds} rounds, alternating. Wall time of `poolctl stop` (it returns once every process of "
        "the pool, children included, is verified gone); after each stop every child is checked gone by "
        "pid + start time",
    )


# -- crash -> replacement ---------------------------------------------------------------


def _stable_row(pool: PoolctlPool, slot: int) -> dict[str, int]:
    """The slot's row once its worker has run backoff_reset seconds (its crash restarts at once)."""
    row = pool.row(slot)
    wait = row["started_ns"] / 1e9 + BACKOFF_RESET_S + 0.2 - time.monotonic()
    if wait > 0:
        time.sleep(wait)
        row = pool.row(slot)
    return row


def _crash_trial(pool: PoolctlPool, slot: int) -> tuple[float, float | None]:
    """(replacement beating, killed worker's tree gone or None without one) seconds after SIGKILL."""
    row = _stable_row(pool, slot)
    pid = row["pid"]
    tree = _children(pid)
    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)

    def beating() -> bool:
        new = pool.row(slot)
        return new["pid"] not in (pid, 0) and new["state"] == _RUNNING

    # Both conditions polled in one loop, each timed when first seen: neither wait delays the other.
    seen: float | None = None
    gone: float | None = None if tree else started
    deadline = started + _TIMEOUT_S
    while seen is None or gone is None:
        now = time.monotonic()
        if seen is None and beating():
            seen = now
        if gone is None and not any(_running(p) for p in tree):
            gone = now
        if now > deadline:
            _kill_left(tree)
            what = (
                "the replacement did not beat" if seen is None else "the killed worker's child was not gone"
            )
            raise TimeoutError(f"{what} within {_TIMEOUT_S:g} s")
        time.sleep(min(max((now - started) / 50, 0.0002), 0.005))
    assert seen is not None and gone is not None
    _wait(pool.all_running, "all workers running again")
    return seen - started, (gone - started) if tree else None


def _crash(ctx: Context) -> list[Row]:
    kills = CRASH_WORKERS if ctx.quick else 2 * CRASH_WORKERS
    beating: dict[str, list[float]] = {OURS: [], ALT: []}
    tree_gone: list[float] = []
    failures: dict[str, str] = {}
    ctx.progress.step(f"{GROUP}: two pools of {CRASH_WORKERS} workers (with / without a child each)")
    with PoolctlPool(CRASH_WORKERS, WITH_CHILD) as with_child, PoolctlPool(CRASH_WORKERS, PLAIN) as plain:
        _wait(lambda: with_child.all_running() and plain.all_running(), "both pools running")
        for trial in range(kills):
            ctx.progress.step(
                f"{GROUP}: crash -> replacement, kill {trial + 1}/{kills} (stable workers only)"
            )
            for label, pool in ((OURS, with_child), (ALT, plain)):
                if label in failures:
                    continue
                try:
                    seen, gone = _crash_trial(pool, trial % CRASH_WORKERS)
                    beating[label].append(seen)
                    if gone is not None:
                        tree_gone.append(gone)
                except Exception as exc:
                    failures[label] = f"stopped after {len(beating[label])} kills: {exc}"
                    ctx.progress.note(f"{GROUP}: {label}: {exc}")
        leftovers = _trees(with_child)
    _kill_left(leftovers)
    note = (
        f"{kills} SIGKILLs per pool, alternating, of workers that ran backoff_reset ({BACKOFF_RESET_S:g} s); "
        "time until the board shows the slot RUNNING with a new pid (its first heartbeat)"
    )
    return [
        Row(
            GROUP,
            f"crash → replacement beating, {CRASH_WORKERS} workers: a worker with one child vs without",
            "ms",
            _measure(OURS, beating[OURS], failures.get(OURS, "")),
            [_measure(ALT, beating[ALT], failures.get(ALT, ""))],
            ALT,
            note=note,
        ),
        Row(
            GROUP,
            "crash → the killed worker's child gone",
            "ms",
            _measure("SIGKILL of the worker → its child gone", tree_gone, failures.get(OURS, "")),
            [],
            None,
            target="within a second or two (issue 13)",
            met=bool(tree_gone) and max(tree_gone) <= 2.0 if tree_gone else None,
            note="same kills as the row above; the child's identity (pid + start time) taken before the kill",
        ),
    ]
