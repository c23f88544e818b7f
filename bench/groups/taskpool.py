"""Group ``taskpool`` (issue 6): pool.Pool against ProcessPoolExecutor, loky, pebble, multiprocess.Pool.

Every library runs in its own fresh interpreter (``bench.taskpool_side``),
rounds interleaved: round r runs each library once, in table order, so a
slow stretch of the machine hits every library alike. Per run: time to a
first result (a new executor, one task), then no-op ``map`` throughput at
chunksize 1 and 64 on 2 workers. Separately, per round and library: 2,000
1 ms tasks with one worker SIGKILLed half-way, counting the results lost.

Ours is ``pool.Pool`` as users get it (default start method: forkserver, since
its supervisor runs in a thread of the caller); ``start_method="fork"`` is
shown beside it. After every run, anything the library left running (helper
processes re-parented to the harness) is waited for, reaped, and named if it
had to be killed.
"""

from __future__ import annotations

import os
import shutil
import statistics
from dataclasses import dataclass
from typing import Any

from bench import fresh_process, proc_watch, scratch
from bench.figures import Measure, Row, Stats
from bench.registry import Context
from bench.taskpool_side import LIBRARIES, LOSS_LIBRARIES

GROUP = "taskpool"
OURS = "pool.Pool"
OURS_FORK = 'pool.Pool(start_method="fork")'
OURS_RETRY = "pool.Pool(retries=1)"
PPE = "ProcessPoolExecutor"
TASKS = 2000
TARGET_C64_X_PPE = 0.9
TARGET_FIRST_X_PPE = 2.0
_LIBRARY_MODULES = {"loky": "loky", "pebble.ProcessPool": "pebble", "multiprocess.Pool": "multiprocess"}


@dataclass(frozen=True)
class Plan:
    rounds: int
    samples: int  # throughput samples per figure per run
    n1: int
    n64: int
    loss_rounds: int
    hang_wait_s: float

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        if quick:
            return cls(rounds=2, samples=1, n1=2000, n64=50_000, loss_rounds=1, hang_wait_s=5.0)
        return cls(rounds=4, samples=2, n1=5000, n64=200_000, loss_rounds=3, hang_wait_s=10.0)


def run(ctx: Context) -> list[Row]:
    plan = Plan.for_run(ctx.quick)
    with proc_watch.adopting_orphans():
        try:
            return _run(ctx, plan)
        finally:
            stragglers = proc_watch.settle_adopted(10.0)
            if stragglers:
                ctx.notes.append(f"taskpool: processes outlived their parents and were killed: {stragglers}")


def _missing(label: str) -> str | None:
    import importlib.util

    module = _LIBRARY_MODULES.get(label)
    if module is not None and importlib.util.find_spec(module) is None:
        return f"{module} is not installed"
    return None


def _in_fresh_process(ctx: Context, target: str, label: str, *args: Any, timeout: float = 600.0) -> Any:
    """Run one library in a new interpreter; reap what it leaves; raise if something had to be killed."""
    directory = scratch.make_dir("taskpool")
    name = f"bench-{os.getpid()}-{directory.name.rsplit('-', 1)[-1]}"
    try:
        result = fresh_process.run(target, label, str(directory / "run"), name, *args, timeout=timeout)
    finally:
        stragglers = proc_watch.settle_adopted(5.0)
        shutil.rmtree(directory, ignore_errors=True)
    if stragglers:
        ctx.notes.append(f"taskpool: {label} left processes running after its program exited: {stragglers}")
    return result


def _run(ctx: Context, plan: Plan) -> list[Row]:
    first: dict[str, list[float]] = {label: [] for label in LIBRARIES}
    c1: dict[str, list[float]] = {label: [] for label in LIBRARIES}
    c64: dict[str, list[float]] = {label: [] for label in LIBRARIES}
    failures: dict[str, str] = {label: why for label in LOSS_LIBRARIES if (why := _missing(label))}
    for r in range(plan.rounds):
        for label in LIBRARIES:
            if label in failures:
                continue
            ctx.progress.step(f"{GROUP}: round {r + 1}/{plan.rounds}, {label}: first result, throughput")
            try:
                got = _in_fresh_process(
                    ctx, "bench.taskpool_side:measure", label, plan.n1, plan.n64, plan.samples
                )
            except Exception as exc:
                failures[label] = f"failed: {str(exc).strip().splitlines()[-1]}"
                ctx.progress.note(f"{label}: {exc}")
                continue
            first[label].append(got["first_s"])
            c1[label].extend(got["c1"])
            c64[label].extend(got["c64"])

    lost: dict[str, list[dict[str, Any]]] = {label: [] for label in LOSS_LIBRARIES}
    loss_failures = {label: why for label in LOSS_LIBRARIES if (why := _missing(label))}
    for r in range(plan.loss_rounds):
        for label in LOSS_LIBRARIES:
            if _missing(label) or label in loss_failures:
                continue
            ctx.progress.step(
                f"{GROUP}: round {r + 1}/{plan.loss_rounds}, {label}: {TASKS} tasks, one worker SIGKILLed"
            )
            try:
                lost[label].append(
                    _in_fresh_process(
                        ctx, "bench.taskpool_side:lose", label, TASKS, plan.hang_wait_s, timeout=120.0
                    )
                )
            except Exception as exc:
                ctx.progress.note(f"{label} crash run: {exc}")
                loss_failures[label] = f"crash run failed: {str(exc).strip().splitlines()[-1]}"

    def measure(label: str, samples: list[float], scale: float = 1.0) -> Measure:
        shown = label
        if not samples:
            return Measure(shown, None, f"skipped: {failures.get(label, 'not measured')}")
        return Measure(shown, Stats.of([s * scale for s in samples]))

    def alternatives(source: dict[str, list[float]], scale: float = 1.0) -> list[Measure]:
        return [measure(label, source[label], scale) for label in LIBRARIES if label != OURS]

    peers = [label for label in LIBRARIES if label not in (OURS, OURS_FORK)]
    best_c1 = max(
        (label for label in peers if c1[label]), key=lambda label: statistics.median(c1[label]), default=None
    )
    rows: list[Row] = []
    ours_c1 = measure(OURS, c1[OURS])
    best_stats = statistics.median(c1[best_c1]) if best_c1 else None
    rows.append(
        Row(
            GROUP,
            "no-op task throughput, 2 workers, map chunksize 1",
            "/s",
            ours_c1,
            alternatives(c1),
            best_c1,
            "≥ the best of them",
            None if ours_c1.stats is None or best_stats is None else ours_c1.stats.median >= best_stats,
            note=_per_task(c1) + f"; {plan.rounds} fresh processes per library \N{MULTIPLICATION SIGN} "
            f"{plan.samples} map({plan.n1:,} tasks) each, round-robin across libraries",
        )
    )
    ours_c64 = measure(OURS, c64[OURS])
    ppe_c64 = statistics.median(c64[PPE]) if c64[PPE] else None
    rows.append(
        Row(
            GROUP,
            "no-op task throughput, 2 workers, map chunksize 64",
            "/s",
            ours_c64,
            alternatives(c64),
            PPE,
            f"≥ {TARGET_C64_X_PPE:g}\N{MULTIPLICATION SIGN} ProcessPoolExecutor",
            None
            if ours_c64.stats is None or ppe_c64 is None
            else ours_c64.stats.median >= TARGET_C64_X_PPE * ppe_c64,
            note=_per_task(c64) + f"; map({plan.n64:,} tasks)",
        )
    )
    ours_first = measure(OURS, first[OURS], 1e3)
    ppe_first = statistics.median(first[PPE]) * 1e3 if first[PPE] else None
    rows.append(
        Row(
            GROUP,
            "time to first result (new executor, 2 workers, one task)",
            "ms",
            ours_first,
            alternatives(first, 1e3),
            PPE,
            f"≤ {TARGET_FIRST_X_PPE:g}\N{MULTIPLICATION SIGN} ProcessPoolExecutor",
            None
            if ours_first.stats is None or ppe_first is None
            else ours_first.stats.median <= TARGET_FIRST_X_PPE * ppe_first,
            note=f"one sample per fresh process ({plan.rounds} per library): executor creation (its workers "
            "started from nothing) + submit + result; pool.Pool's default start method is forkserver "
            "(its supervisor runs in a thread of the caller), which starts a forkserver process first",
        )
    )
    rows.append(_loss_row(lost, loss_failures, plan))
    return rows


def _per_task(rates: dict[str, list[float]]) -> str:
    parts = [f"{label} {1e6 / statistics.median(values):.0f} µs" for label, values in rates.items() if values]
    return "per-task cost (1 / median rate): " + ", ".join(parts)


def _loss_row(lost: dict[str, list[dict[str, Any]]], failures: dict[str, str], plan: Plan) -> Row:
    def measure(label: str) -> Measure:
        runs = lost[label]
        if not runs:
            return Measure(label, None, f"skipped: {failures.get(label, 'not measured')}")
        hung = [run for run in runs if run["hung"]]
        if hung:
            never = sorted(run["hung"] for run in hung)
            stuck = sum(bool(run["stop_problem"]) for run in hung)
            also = (
                f"; terminate() itself hung in {stuck} of {len(hung)} (workers then SIGKILLed by pid)"
                if stuck
                else "; ended with terminate()"
            )
            others = sorted(run["failed"] for run in runs if not run["hung"])
            rest = f"; the other runs lost {', '.join(map(str, others))}" if others else ""
            return Measure(
                label,
                None,
                f"hung in {len(hung)} of {len(runs)} runs: {never[len(never) // 2]} result(s) never arrived "
                f"(waited {plan.hang_wait_s:g} s after the kill){also}{rest}",
            )
        return Measure(label, Stats.of([float(run["failed"]) for run in runs]))

    ours = measure(OURS)
    retry = measure(OURS_RETRY)
    errors: dict[str, set[str]] = {}
    for label, runs in lost.items():
        for run in runs:
            errors.setdefault(label, set()).update(run["errors"])
    met = None
    if ours.stats is not None and retry.stats is not None:
        met = ours.stats.high <= 1 and retry.stats.high == 0
    return Row(
        GROUP,
        f"results lost when one of 2 workers is SIGKILLed half-way through {TASKS:,} tasks",
        "results",
        ours,
        [measure(label) for label in LOSS_LIBRARIES if label != OURS],
        None,  # a count, not a cost: no ratio
        "the one task in flight (0 with retries)",
        met,
        note=f"{plan.loss_rounds} run(s) per library, each in a fresh process: {TASKS:,} submit()-ed 1 ms tasks, "
        "a thread SIGKILLs the worker that reported the latest result once half are done; lost = futures "
        "that raised or never finished (a run that hangs is ended after the wait). Errors seen: "
        + "; ".join(f"{label}: {', '.join(sorted(kinds)) or 'none'}" for label, kinds in errors.items()),
    )
