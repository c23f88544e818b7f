"""Group ``board`` (issue 3): the board's read, write and flush costs.

This process plays the supervisor (``FakePool``: board, runtime.json, held lock).
Reads are timed in a fresh interpreter that attached through runtime.json, first
idle, then while a third process rewrites every row as fast as it can. The
floors are copies of the same bytes made by that same reader. The heartbeat is
timed in a fresh "worker" process through its WorkerRow; the flush here, where
the supervisor does it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import board_side, fresh_process, timing
from bench.fake_pool import FakePool
from bench.figures import Measure, Row, Stats, in_unit
from bench.registry import Context
from bench.writer_switch import WriterSwitch
from statusboard import layout, runtime_file
from statusboard.rows import read_board, worker_status

GROUP = "board"
SIZES = (64, 1024)
TARGET_HEALTH_US = 10.0
TARGET_HEALTH_COPIES = 10.0
TARGET_SNAPSHOT_VERDICT_US = 5.0
TARGET_READS_PER_S = 200_000
TARGET_HEARTBEAT_NS = 250.0
_NUMPY_COPY = "numpy copy of the same bytes"
_MMAP_COPY = "mmap bytes copy"
_IDLE = "same call, writer paused (interleaved)"


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for workers in SIZES:
        rows.extend(_reads(ctx, workers))
    rows.append(_heartbeat(ctx))
    rows.append(_flush(ctx))
    return rows


def _reads(ctx: Context, workers: int) -> list[Row]:
    with FakePool(workers) as pool:
        ctx.progress.step(
            f"board: {workers} workers, reads from a second process, idle and with a busy writer"
        )
        switch = WriterSwitch.create(pool.runtime_dir / "bench-writer-switch")
        try:
            with fresh_process.FreshProcess(
                "bench.board_side:busy_writer", str(pool.segment), workers, str(switch.path)
            ) as writer:
                writer.wait_ready(timeout=60)
                pool.refresh()
                got: dict[str, Any] = fresh_process.run(
                    "bench.board_side:measure_reads",
                    str(pool.runtime_dir),
                    ctx.budget,
                    board_side.IDLE_FIGURES,
                    board_side.BUSY_FIGURES,
                    str(switch.path),
                )
                switch.stop()
                written: dict[str, float] = writer.result(timeout=30)
        finally:
            switch.close()
    idle, busy = got["idle"], got["busy"]

    def us(source: dict[str, Any], name: str) -> Stats:
        return in_unit(source[name], "µs")

    floors = [Measure(_NUMPY_COPY, us(idle, "numpy_copy")), Measure(_MMAP_COPY, us(idle, "mmap_copy"))]
    small = workers == 64
    writer_rate = written["updates"] / written["seconds"]
    checks = got["checks"]["busy"]
    busy_note = (
        f"the writer process rewrote {writer_rate:,.0f} rows/s while running; with it running, "
        f"{checks['reads']} snapshots saw {checks['torn']} rows torn past the retries and "
        f"healthy() was False {checks['unhealthy']} times"
    )

    def health_met(stats: Stats) -> bool | None:
        if not small:
            return None
        copy = floors[0].stats
        assert copy is not None
        return stats.median <= TARGET_HEALTH_US and stats.median <= TARGET_HEALTH_COPIES * copy.median

    def verdict_met(stats: Stats) -> bool | None:
        return stats.median <= TARGET_SNAPSHOT_VERDICT_US if small else None

    health_target = (
        f"≤ {TARGET_HEALTH_US:g} µs and ≤ {TARGET_HEALTH_COPIES:g}\N{MULTIPLICATION SIGN} copy"
        if small
        else ""
    )
    verdict_target = f"≤ {TARGET_SNAPSHOT_VERDICT_US:g} µs" if small else ""

    def row(figure: str, source: dict[str, Any], name: str, **fields: Any) -> Row:
        return Row(GROUP, f"{figure}, {workers} workers", "µs", Measure("", us(source, name)), **fields)

    def against_idle(name: str) -> dict[str, Any]:
        return {"alternatives": [Measure(_IDLE, us(idle, name))], "ratio_to": _IDLE}

    healthy_idle, healthy_busy = us(idle, "healthy"), us(busy, "healthy")
    verdict_idle, verdict_busy = us(idle, "snapshot_verdict"), us(busy, "snapshot_verdict")
    reads = idle["reads_per_s"]
    probe_reference = "numpy snapshot() + pool_verdict"
    return [
        row(
            f"healthy(), another process, idle, board of {layout.board_bytes(workers):,} bytes",
            idle,
            "healthy",
            alternatives=floors,
            ratio_to=_NUMPY_COPY,
            target=health_target,
            met=health_met(healthy_idle),
        ),
        row(
            "healthy(), busy writer",
            busy,
            "healthy",
            **against_idle("healthy"),
            target=health_target,
            met=health_met(healthy_busy),
        ),
        row("snapshot(), another process, idle", idle, "snapshot", alternatives=floors, ratio_to=_NUMPY_COPY),
        row("snapshot(), busy writer", busy, "snapshot", **against_idle("snapshot"), note=busy_note),
        row(
            "snapshot() + pool_verdict(raw_rows()), idle",
            idle,
            "snapshot_verdict",
            alternatives=floors,
            ratio_to=_NUMPY_COPY,
            target=verdict_target,
            met=verdict_met(verdict_idle),
        ),
        row(
            "snapshot() + pool_verdict(raw_rows()), busy writer",
            busy,
            "snapshot_verdict",
            **against_idle("snapshot_verdict"),
            target=verdict_target,
            met=verdict_met(verdict_busy),
        ),
        Row(
            GROUP,
            f"health reads/s (healthy() in a loop), another process, {workers} workers",
            "/s",
            Measure("", reads),
            target=f"≥ {TARGET_READS_PER_S:,}/s" if small else "",
            met=reads.median >= TARGET_READS_PER_S if small else None,
        ),
        row(
            "stdlib probe() (the `poolctl status` path), in-process",
            idle,
            "probe",
            alternatives=[Measure(probe_reference, verdict_idle)],
            ratio_to=probe_reference,
            note=(
                "probe = runtime dir check + runtime.json read + /proc identity + lock probe + map board "
                "+ struct rows + status dicts, no numpy"
            )
            if small
            else "",
        ),
    ]


def _heartbeat(ctx: Context) -> Row:
    ctx.progress.step("board: heartbeat cost in a worker process")
    with FakePool(64) as pool:
        got: dict[str, Any] = fresh_process.run(
            "bench.board_side:measure_heartbeat", str(pool.segment), 0, ctx.budget
        )

    def ns(name: str) -> Stats:
        return in_unit(got[name], "ns")

    gunicorn = "gunicorn heartbeat (os.utime on a tmp file)"
    # ctx.beat() is bound straight to row.heartbeat (pool/supervision/worker.py): that is what a worker pays.
    has_closure = "heartbeat" in got
    beat = ns("heartbeat") if has_closure else ns("beat")
    return Row(
        GROUP,
        "heartbeat in the worker: ctx.beat() (= row.heartbeat(), clock read inside)"
        if has_closure
        else "heartbeat in the worker: row.beat(time.monotonic_ns())",
        "ns",
        Measure("", beat),
        [
            Measure("time.monotonic_ns() alone", ns("clock")),
            Measure(gunicorn, ns("gunicorn")),
            Measure("bare numpy store, kept view", ns("numpy_store")),
            *([Measure("row.beat(time.monotonic_ns()) (explicit time)", ns("beat"))] if has_closure else []),
        ],
        gunicorn,
        f"≤ {TARGET_HEARTBEAT_NS:g} ns incl. the clock read",
        beat.median <= TARGET_HEARTBEAT_NS,
        note=f"{got['gunicorn_note']}; timeit loop overhead ({got['loop_overhead_ns']:.0f} ns) subtracted "
        "from every per-call figure",
    )


def _flush(ctx: Context) -> Row:
    ctx.progress.step("board: runtime.json flush, 64 workers")
    with FakePool(64) as pool:
        assert pool.board is not None
        view = read_board(pool.board)
        timeout = int(view.header["heartbeat_timeout_ns"])
        document = {
            "pool": pool.pool,
            "state": "running",
            "supervisor": {
                "pid": view.header["supervisor_pid"],
                "start_ticks": view.header["supervisor_start_ticks"],
            },
            "workers_desired": pool.workers,
            "workers": [worker_status(row, view.now_ns, 0.0, timeout) for row in view.rows],
            "board": str(pool.segment),
        }
        namespace = {"write": runtime_file.write, "d": pool.runtime_dir, "doc": document, "dumps": json.dumps}
        budget = ctx.budget

        got = timing.interleaved(
            {
                "durable": "write(d, doc, durable=True)",
                "atomic": "write(d, doc, durable=False)",
                "dumps": "dumps(doc, separators=(',', ':'))",
            },
            namespace,
            min_time=budget.rpc_min_time,
            repeats=budget.repeats,
        )
        durable, atomic, dumps = (in_unit(got[name], "ms") for name in ("durable", "atomic", "dumps"))
        size = len(Path(runtime_file.path_in(pool.runtime_dir)).read_bytes())
        filesystem = _filesystem(pool.runtime_dir)
    fsync_share = (durable.median - atomic.median) / durable.median if durable.median else 0.0
    return Row(
        GROUP,
        f"runtime.json flush, 64 workers ({size:,} bytes), atomic replace",
        "ms",
        Measure("durable: fsync file + dir", durable),
        [Measure("durable=False (no fsync)", atomic), Measure("json.dumps alone", dumps)],
        "json.dumps alone",
        "fsync-dominated, not serialisation",
        fsync_share >= 0.5,
        note=f"runtime dir on {filesystem}; fsync share of the durable flush {fsync_share:.0%}",
    )


def _filesystem(path: Path) -> str:
    """'ext4 (/)': the type and mount point of the filesystem holding ``path``."""
    best = ("?", "")
    resolved = str(path.resolve())
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown filesystem"
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount, kind = parts[1], parts[2]
        inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best[1]):
            best = (kind, mount)
    return f"{best[0]} ({best[1]})"
