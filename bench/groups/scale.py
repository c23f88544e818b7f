"""Group ``scale``: how what we cost grows with the pool, at 4, 64 and 256 workers.

Three real pools (``poolctl start``, idle ``bench.sup_workers`` workers, each in
its own temp runtime dir) run side by side for the whole group, so every size
is measured under the same machine load and each figure can be read as a ratio
to the 4-worker one:

- ``poolctl status`` and ``poolctl status --json``, whole process (the venv's
  console script), every size and ``python -c pass`` round-robin
  (``bench.timing.walls``); one ``status --json`` per pool must first say
  running, from the live board, with every worker listed;
- ``healthy()`` and ``snapshot()`` after ``statusboard.attach``, timed in one
  fresh interpreter that attached to all three pools, round-robin across
  sizes, beside a numpy copy of the same board bytes (the floor);
- the supervisor's idle CPU (% of one core, schedstat of the supervisor
  process only), the three supervisors over the same windows, each window a
  whole number of flush intervals long so it holds the same number of
  runtime.json flushes for every pool; RSS sampling is on (the default: every
  worker's /proc/PID/statm once a second).

``--quick`` keeps all three sizes (a 256-worker pool starts in about 3 s on 2
cores, 8 s when the machine is busy) with fewer rounds, and takes its one idle
window while the status and read figures are timed, padded to a whole flush
interval: neither wakes a supervisor (``poolctl status`` and ``healthy()`` read
the board and probe the supervisor's lock; nothing is sent to it), so the
window costs no extra time. The full run adds three quiet windows instead.
``--plot FILE.png`` draws the curve (``ctx.curves``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import fresh_process, proc_watch, timing
from bench.figures import Measure, Row, Stats, in_unit
from bench.plot import Curve, Series
from bench.poolctl_pool import PoolctlPool, poolctl
from bench.registry import Context
from pool.spec import PoolSpec
from statusboard import runtime_file

GROUP = "scale"
SIZES = (4, 64, 256)
BASE = SIZES[0]
_DEFAULTS = PoolSpec(target="bench.sup_workers:idle")  # what `poolctl start` uses unless told
FLUSH_INTERVAL_S = _DEFAULTS.flush_interval
STATUS = "poolctl status"
STATUS_JSON = "poolctl status --json"
PASS = "python -c pass"
FLOOR = "numpy copy of the same bytes"
VS_BASE = f"{BASE} workers"
_SETTLE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Plan:
    quiet_windows: int  # idle windows with nothing else running (0: one spanning the timings)
    idle_window_s: float

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        return cls(quiet_windows=0 if quick else 3, idle_window_s=FLUSH_INTERVAL_S)

    def describe(self, windows: list[float]) -> str:
        lengths = "/".join(f"{w:.0f}" for w in windows)
        if self.quiet_windows:
            return f"{len(windows)} \N{MULTIPLICATION SIGN} {lengths} s"
        return f"{lengths} s spanning the timings"


@dataclass
class Measured:
    """Every figure of the group, by pool size; seconds per call for walls and reads, % for idle."""

    walls: dict[str, Stats]  # "poolctl status@64", ..., "python -c pass"
    reads: dict[str, dict[int, Stats]]  # "healthy" / "snapshot" / "numpy_copy" -> size -> Stats
    idle: dict[int, list[float]]
    windows: list[float]  # seconds, per idle window
    starts: dict[int, float]
    documents: dict[int, dict[str, Any]]


def run(ctx: Context) -> list[Row]:
    plan = Plan.for_run(ctx.quick)
    with proc_watch.adopting_orphans():
        try:
            measured, accounts = _measure(ctx, plan)
        finally:
            stragglers = proc_watch.settle_adopted(10.0)
            if stragglers:
                ctx.notes.append(f"{GROUP}: processes outlived their parents and were killed: {stragglers}")
    ctx.curves.append(_curve(measured))
    return _rows(ctx, plan, measured, accounts)


def _measure(ctx: Context, plan: Plan) -> tuple[Measured, list[str]]:
    pools: dict[int, PoolctlPool] = {}
    with contextlib.ExitStack() as stack:
        for workers in SIZES:
            ctx.progress.step(f"{GROUP}: poolctl start, {workers} idle workers")
            pools[workers] = stack.enter_context(PoolctlPool(workers))
        documents = {}
        for workers, pool in pools.items():
            _wait(pool.all_running, f"poolctl: {workers} workers running")
            # start-up is over once the supervisor has flushed the all-running state
            _wait(functools.partial(_flushed_running, pool), f"poolctl: runtime.json says {workers} running")
            documents[workers] = pool.running_status()

        supervisors = {workers: pool.supervisor_pid for workers, pool in pools.items()}
        watched = {workers: pid for workers, pid in supervisors.items() if pid is not None}
        spanning = None if plan.quiet_windows else CpuWindow(watched)

        commands: dict[str, list[str]] = {PASS: [sys.executable, "-c", "pass"]}
        for workers, pool in pools.items():
            commands[f"{STATUS}@{workers}"] = pool.argv("status")
            commands[f"{STATUS_JSON}@{workers}"] = pool.argv("status", "--json")
        rounds = ctx.budget.wall_repeats + 2

        def on_round(i: int) -> None:
            ctx.progress.step(f"{GROUP}: status commands at {SIZES} workers, round {i + 1}/{rounds}")

        walls = timing.walls(commands, repeats=ctx.budget.wall_repeats, warmup=2, on_round=on_round)

        ctx.progress.step(f"{GROUP}: healthy() / snapshot() at {SIZES} workers, from a second process")
        reads: dict[str, dict[int, Stats]] = fresh_process.run(
            "bench.board_side:measure_sizes",
            {workers: str(pool.runtime_dir) for workers, pool in pools.items()},
            ctx.budget,
        )

        windows = [spanning] if spanning is not None else []
        if spanning is not None:
            ctx.progress.step(f"{GROUP}: idle CPU of {len(pools)} supervisors, to a whole flush interval")
            spanning.finish(plan.idle_window_s)
        else:
            ctx.progress.step(
                f"{GROUP}: idle CPU of {len(pools)} supervisors side by side, "
                f"{plan.quiet_windows} \N{MULTIPLICATION SIGN} {plan.idle_window_s:g} s"
            )
        for _ in range(plan.quiet_windows):
            windows.append(CpuWindow(watched))
            windows[-1].finish(plan.idle_window_s)
        idle = {workers: [w.percent[workers] for w in windows] for workers in watched}
    measured = Measured(
        walls,
        reads,
        idle,
        [w.seconds for w in windows],
        {n: p.start_seconds for n, p in pools.items()},
        documents,
    )
    return measured, [pool.account for pool in pools.values()]


def _wait(check: Callable[[], bool], what: str, timeout: float = _SETTLE_TIMEOUT_S) -> None:
    if proc_watch.poll_until(check, time.monotonic(), timeout) is None:
        raise TimeoutError(f"{what} not reached within {timeout:g} s")


def _flushed_running(pool: PoolctlPool) -> bool:
    workers = runtime_file.read(pool.runtime_dir).get("workers") or []
    return len(workers) == pool.workers and all(w.get("state") == "running" for w in workers)


class CpuWindow:
    """CPU the supervisors use from now until ``finish``: % of one core, per supervisor."""

    def __init__(self, supervisors: dict[int, int]) -> None:
        self.supervisors = supervisors  # workers -> supervisor pid
        self.before = {workers: proc_watch.cpu_ns(pid) for workers, pid in supervisors.items()}
        self.started = time.monotonic_ns()
        self.percent: dict[int, float] = {}
        self.seconds = 0.0

    def finish(self, unit_s: float) -> None:
        """End the window at the next whole multiple of ``unit_s`` after its start (sleeping till then)."""
        ran = (time.monotonic_ns() - self.started) / 1e9
        length = unit_s * max(1, math.ceil(ran / unit_s))
        time.sleep(max(0.0, self.started / 1e9 + length - time.monotonic_ns() / 1e9))  # the window itself
        after = {workers: proc_watch.cpu_ns(pid) for workers, pid in self.supervisors.items()}
        elapsed = time.monotonic_ns() - self.started
        for workers, pid in self.supervisors.items():
            if not proc_watch.alive(pid):
                raise RuntimeError(f"the {workers}-worker supervisor (pid {pid}) died while idle")
            self.percent[workers] = 100.0 * (after[workers] - self.before[workers]) / elapsed
        self.seconds = elapsed / 1e9


# -- rows and curve ------------------------------------------------------------------------


def _status_stats(measured: Measured, label: str) -> dict[int, Stats]:
    return {workers: in_unit(measured.walls[f"{label}@{workers}"], "ms") for workers in SIZES}


def _read_stats(measured: Measured, name: str) -> dict[int, Stats]:
    return {workers: in_unit(measured.reads[name][workers], "µs") for workers in SIZES}


def _idle_stats(measured: Measured) -> dict[int, Stats]:
    return {workers: Stats.of(measured.idle[workers]) for workers in SIZES}


def _growth(stats: dict[int, Stats], unit: str) -> str:
    """'x3.1 from 4 to 256 workers, about +0.05 ms per added worker' (from the medians)."""
    low, high = stats[BASE].median, stats[SIZES[-1]].median
    per_worker = (high - low) / (SIZES[-1] - BASE)
    ratio = high / low if low > 0 else None
    factor = (
        "from zero"
        if ratio is None
        else f"\N{MULTIPLICATION SIGN}{ratio:.1f}"
        if ratio >= 1
        else f"\N{MULTIPLICATION SIGN}{ratio:.2g}"
    )
    return f"{factor} from {BASE} to {SIZES[-1]} workers, about {per_worker:+.3g} {unit} per added worker"


def _curve_rows(
    figure: str,
    unit: str,
    stats: dict[int, Stats],
    floor: dict[int, Measure] | None = None,
    note: str = "",
) -> list[Row]:
    rows = []
    for workers in SIZES:
        alternatives = [] if workers == BASE else [Measure(VS_BASE, stats[BASE])]
        if floor is not None:
            alternatives.append(floor[workers])
        ratio_to = VS_BASE if workers != BASE else floor[workers].label if floor is not None else None
        last = workers == SIZES[-1]
        rows.append(
            Row(
                GROUP,
                f"{figure}, {workers} workers",
                unit,
                Measure("", stats[workers]),
                alternatives,
                ratio_to,
                note="; ".join(filter(None, [_growth(stats, unit), note])) if last else "",
            )
        )
    return rows


def _rows(ctx: Context, plan: Plan, measured: Measured, accounts: list[str]) -> list[Row]:
    passes = in_unit(measured.walls[PASS], "ms")
    pass_floor = {workers: Measure(PASS, passes) for workers in SIZES}
    copies = _read_stats(measured, "numpy_copy")
    copy_floor = {workers: Measure(FLOOR, copies[workers]) for workers in SIZES}
    rounds = ctx.budget.wall_repeats
    status_note = (
        f"fresh process per call ({poolctl()}), {rounds} rounds after 2 warm-up rounds, all "
        f"sizes and {PASS} round-robin; before timing, `status --json` said "
        + ", ".join(
            f"{measured.documents[n].get('state')} from {measured.documents[n].get('source')} "
            f"with {len(measured.documents[n].get('workers') or [])} workers"
            for n in SIZES
        )
    )
    read_note = (
        f"one fresh interpreter attached to all {len(SIZES)} pools (statusboard.attach, default "
        "supervisor timeout); every call sampled round-robin across sizes; each pool healthy with "
        "every worker RUNNING before and after timing"
    )
    starts = ", ".join(f"{n} workers {measured.starts[n]:.2f} s" for n in SIZES)
    idle_note = (
        f"schedstat CPU ns of each supervisor process only (all its threads), the {len(SIZES)} "
        f"supervisors idle side by side over the same window(s): {plan.describe(measured.windows)}, "
        f"each a whole number of flush intervals ({FLUSH_INTERVAL_S:g} s), so every pool flushed "
        "runtime.json equally often in it"
        + (
            ""
            if plan.quiet_windows
            else " (--quick: the window spans the status and read timings, which never wake a "
            "supervisor: they read the board and probe its lock)"
        )
        + "; "
        f"RSS sampling on (--rss-interval {_DEFAULTS.rss_interval:g}, the default). "
        f"`poolctl start` took {starts}. " + "; ".join(accounts)
    )
    return [
        *_curve_rows(f"`{STATUS}`, whole process", "ms", _status_stats(measured, STATUS), pass_floor),
        *_curve_rows(
            f"`{STATUS_JSON}`, whole process",
            "ms",
            _status_stats(measured, STATUS_JSON),
            pass_floor,
            status_note,
        ),
        *_curve_rows("healthy(), another process", "µs", _read_stats(measured, "healthy"), copy_floor),
        *_curve_rows(
            "snapshot(), another process", "µs", _read_stats(measured, "snapshot"), copy_floor, read_note
        ),
        *_curve_rows(
            f"supervisor idle CPU, {plan.describe(measured.windows)} (% of one core)",
            "%",
            _idle_stats(measured),
            note=idle_note,
        ),
    ]


def _curve(measured: Measured) -> Curve:
    def series(label: str, unit: str, stats: dict[int, Stats], *, reference: bool = False) -> Series:
        return Series(label, unit, [(float(n), stats[n]) for n in SIZES], reference)

    passes = in_unit(measured.walls[PASS], "ms")
    return Curve(
        "poolctl at 4 / 64 / 256 idle workers",
        "workers",
        {
            "ms": "status, whole process",
            "µs": "board read from another process",
            "%": "supervisor idle CPU (% of a core)",
        },
        [
            series(STATUS, "ms", _status_stats(measured, STATUS)),
            series(STATUS_JSON, "ms", _status_stats(measured, STATUS_JSON)),
            series(PASS, "ms", dict.fromkeys(SIZES, passes), reference=True),
            series("healthy()", "µs", _read_stats(measured, "healthy")),
            series("snapshot()", "µs", _read_stats(measured, "snapshot")),
            series(FLOOR, "µs", _read_stats(measured, "numpy_copy"), reference=True),
            series("supervisor, idle", "%", _idle_stats(measured)),
        ],
    )
