"""What runs in the processes around a board: a reader, a busy writer, a worker.

Each function is a ``bench.fresh_process`` target (first argument: the Control),
so it runs in a new interpreter that did nothing but import statusboard and
attach, as a health probe in another program would.
"""

from __future__ import annotations

import os
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

import statusboard
from bench import timing, writer_switch
from bench.fake_pool import SUPERVISOR_TIMEOUT_S
from bench.figures import Stats
from bench.fresh_process import Control
from bench.writer_switch import WriterSwitch
from statusboard import layout
from statusboard.board import Board, WorkerRow
from statusboard.health import PoolVerdict, StatusCode, pool_verdict
from statusboard.probe import probe
from statusboard.reader import BoardReader
from statusboard.states import WorkerState

# What the reader can time, as a poller would write it.
STATEMENTS = {
    "healthy": "reader.healthy()",
    "snapshot": "reader.snapshot()",
    "snapshot_verdict": "snapshot_verdict(reader)",
    "numpy_copy": "view.copy()",
    "mmap_copy": "mm[:nbytes]",
    "probe": "probe(directory, 'bench', supervisor_timeout_s=timeout)",
}
IDLE_FIGURES = ("healthy", "snapshot", "snapshot_verdict", "numpy_copy", "mmap_copy", "probe", "reads_per_s")
BUSY_FIGURES = ("healthy", "snapshot", "snapshot_verdict")
_CONSISTENCY_READS = 2000


def snapshot_verdict(reader: BoardReader) -> PoolVerdict:
    """What a status poller does: a snapshot, then the pool verdict over its rows."""
    snap = reader.snapshot()
    header = snap.header
    return pool_verdict(
        snap.raw_rows(),
        workers_desired=int(header["workers_desired"]),
        pool_state=snap.pool_state,
        now_ns=snap.now_ns,
        heartbeat_timeout_ns=int(header["heartbeat_timeout_ns"]),
    )


def measure_reads(
    control: Control,
    runtime_dir: str,
    budget: timing.Budget,
    idle: tuple[str, ...] = IDLE_FIGURES,
    busy: tuple[str, ...] = (),
    switch_path: str | None = None,
) -> dict[str, Any]:
    """Time the reader's calls on the pool in ``runtime_dir``, idle and (with a switch) busy.

    One round = one sample of every idle figure with the writer paused, then one
    of every busy figure with it running. Returns {"idle": {figure: Stats},
    "busy": {...}, "checks": {...}}: seconds per call, reads/s for "reads_per_s";
    "checks" says what the reads saw (healthy results, torn rows), so a figure
    taken on a wrong path is caught instead of printed.
    """
    directory = Path(runtime_dir)
    switch = WriterSwitch(Path(switch_path)) if switch_path else None
    if busy and switch is None:
        raise ValueError("busy figures need the writer's switch")
    reader = statusboard.attach(directory, supervisor_timeout_s=SUPERVISOR_TIMEOUT_S)
    try:
        used = int(reader.board.header_word("slots_used"))
        nbytes = layout.board_bytes(used)
        buffer = reader.board.buffer
        _require(reader.healthy(), "healthy() is False before timing: the fake pool is not live")
        _require(snapshot_verdict(reader).state == "running", "the pool verdict is not 'running'")
        if "probe" in idle:
            report = probe(directory, "bench", supervisor_timeout_s=SUPERVISOR_TIMEOUT_S)
            _require(report.code == StatusCode.RUNNING, f"probe says {report.document['state']}")
        namespace = {
            "reader": reader,
            "snapshot_verdict": snapshot_verdict,
            "probe": probe,
            "directory": directory,
            "timeout": SUPERVISOR_TIMEOUT_S,
            "view": np.frombuffer(buffer, dtype=np.uint8, count=nbytes),
            "mm": buffer,
            "nbytes": nbytes,
        }
        needed = {"healthy" if name == "reads_per_s" else name for name in (*idle, *busy)}
        samplers = {
            name: timing.Sampler(STATEMENTS[name], namespace, min_time=budget.min_time) for name in needed
        }
        samples: dict[str, dict[str, list[float]]] = {
            "idle": {name: [] for name in idle},
            "busy": {name: [] for name in busy},
        }
        for _ in range(budget.repeats):
            if switch is not None:
                switch.request(writer_switch.PAUSE)
            for name in idle:
                if name == "reads_per_s":
                    samples["idle"][name].append(samplers["healthy"].rate(budget.min_time))
                else:
                    samples["idle"][name].append(samplers[name].sample())
            if busy and switch is not None:
                switch.request(writer_switch.RUN)
                for name in busy:
                    samples["busy"][name].append(samplers[name].sample())
        checks = {}
        if switch is not None:
            switch.request(writer_switch.PAUSE)
        checks["idle"] = _consistency(reader)
        if busy and switch is not None:
            switch.request(writer_switch.RUN)
            checks["busy"] = _consistency(reader)
            switch.request(writer_switch.PAUSE)
        _require(reader.healthy(), "healthy() is False after timing")
        namespace.clear()  # drop the numpy view into the mapping before it is closed
        numbers = {name: sampler.number for name, sampler in samplers.items()}
        samplers.clear()  # their namespaces hold the view too
        return {
            phase: {name: Stats.of(values, number=numbers.get(name, 1)) for name, values in figures.items()}
            for phase, figures in samples.items()
        } | {"checks": checks}
    finally:
        reader.close()
        if switch is not None:
            switch.close()


def _consistency(reader: BoardReader) -> dict[str, int]:
    unhealthy = torn = not_running = 0
    for _ in range(_CONSISTENCY_READS):
        unhealthy += not reader.healthy()
        snap = reader.snapshot()
        torn += snap.torn_rows
        not_running += int(np.count_nonzero(snap.rows["state"] != int(WorkerState.RUNNING)))
    return {"reads": _CONSISTENCY_READS, "unhealthy": unhealthy, "torn": torn, "not_running": not_running}


def busy_writer(control: Control, segment: str, slots: int, switch_path: str) -> dict[str, float]:
    """Rewrite every row (lifecycle under its seqlock, then a heartbeat) while the switch says RUN.

    Returns the rows rewritten and the seconds spent running (pauses excluded).
    """
    board = Board.open(Path(segment), writable=True)
    switch = WriterSwitch(Path(switch_path))
    try:
        rows = [WorkerRow(board, slot) for slot in range(slots)]
        running = int(WorkerState.RUNNING)
        updates = 0
        generation = 1
        busy_seconds = 0.0
        control.ready()
        while not control.should_stop():
            command = switch.command
            if command == writer_switch.STOP:
                break
            if command == writer_switch.PAUSE:
                switch.report(writer_switch.PAUSE)
                time.sleep(0.002)
                continue
            switch.report(writer_switch.RUN)
            start = time.perf_counter()
            while switch.command == writer_switch.RUN and not control.should_stop():
                generation += 1
                for slot in range(slots):
                    board.set_lifecycle(slot, state=running, generation=generation)
                    rows[slot].beat(time.monotonic_ns())
                updates += slots
            busy_seconds += time.perf_counter() - start
        return {"updates": updates, "seconds": busy_seconds}
    finally:
        switch.close()
        board.close()


def measure_heartbeat(control: Control, segment: str, slot: int, budget: timing.Budget) -> dict[str, Any]:
    """A worker's heartbeat and what it is compared with; seconds per call.

    gunicorn's own ``WorkerTmp`` (its heartbeat: ``os.utime`` on an unlinked temp
    file in the default temp dir) when gunicorn is installed; else the same two
    lines, marked as a re-implementation.
    """
    board = Board.open(Path(segment), writable=True)
    try:
        row = WorkerRow(board, slot)
        words = np.frombuffer(board.buffer, dtype="<i8")
        heartbeat_word = layout.HEADER_WORDS + slot * layout.ROW_WORDS + layout.R["heartbeat_ns"]
        gunicorn_tmp, gunicorn_note = _gunicorn_heartbeat()
        namespace = {
            "row": row,
            "time": time,
            "view": words,
            "k": heartbeat_word,
            "v": time.monotonic_ns(),
            "tmp": gunicorn_tmp,
        }
        statements = {
            "beat": "row.beat(time.monotonic_ns())",
            "clock": "time.monotonic_ns()",
            "gunicorn": "tmp.notify()",
            "numpy_store": "view[k] = v",
        }
        if hasattr(row, "heartbeat"):  # the clock read moved inside WorkerRow: what a worker binds
            statements["heartbeat"] = "row.heartbeat()"
        results: dict[str, Any] = dict(
            timing.interleaved(statements, namespace, min_time=budget.min_time, repeats=budget.repeats)
        )
        results["gunicorn_note"] = gunicorn_note
        results["loop_overhead_ns"] = timing.loop_overhead() * 1e9
        namespace.clear()  # drop the numpy view into the mapping before it is closed
        del words
        gunicorn_tmp.close()
        return results
    finally:
        board.close()


class _UtimeHeartbeat:
    """gunicorn's WorkerTmp heartbeat, re-implemented for when gunicorn is absent."""

    def __init__(self) -> None:
        fd, name = tempfile.mkstemp(prefix="wgunicorn-")
        os.unlink(name)
        self._fd = fd

    def notify(self) -> None:
        new_time = time.monotonic()
        os.utime(self._fd, (new_time, new_time))

    def close(self) -> None:
        os.close(self._fd)


def _gunicorn_heartbeat() -> tuple[Any, str]:
    try:
        from gunicorn.workers.workertmp import WorkerTmp  # type: ignore[import-untyped]
    except ImportError:
        return _UtimeHeartbeat(), "gunicorn not installed: its WorkerTmp.notify re-implemented"
    cfg = types.SimpleNamespace(umask=0o022, worker_tmp_dir=None, uid=os.geteuid(), gid=os.getegid())
    return WorkerTmp(cfg), f"gunicorn's WorkerTmp.notify, temp file in {tempfile.gettempdir()}"


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise AssertionError(problem)


def measure_sizes(control: Control, runtime_dirs: dict[int, str], budget: timing.Budget) -> dict[str, Any]:
    """``healthy()`` and ``snapshot()`` on several live pools, round-robin across the pools.

    ``runtime_dirs`` maps a pool's worker count to its runtime dir. Every reader
    attaches as a health probe would (the default supervisor timeout), and must
    see its pool healthy with every worker RUNNING before and after timing.
    Returns {"healthy": {workers: Stats}, "snapshot": {...}, "numpy_copy": {...}}
    in seconds per call; "numpy_copy" copies the same board bytes (the floor).
    """
    readers = {workers: statusboard.attach(Path(path)) for workers, path in runtime_dirs.items()}
    try:
        namespace: dict[str, Any] = {}
        statements: dict[tuple[str, int], str] = {}
        for workers, reader in readers.items():
            _check_live(reader, workers, "before timing")
            used = int(reader.board.header_word("slots_used"))
            namespace[f"r{workers}"] = reader
            namespace[f"v{workers}"] = np.frombuffer(
                reader.board.buffer, dtype=np.uint8, count=layout.board_bytes(used)
            )
            statements[("healthy", workers)] = f"r{workers}.healthy()"
            statements[("snapshot", workers)] = f"r{workers}.snapshot()"
            statements[("numpy_copy", workers)] = f"v{workers}.copy()"
        got = timing.interleaved(
            {f"{name}@{workers}": stmt for (name, workers), stmt in statements.items()},
            namespace,
            min_time=budget.min_time,
            repeats=budget.repeats,
        )
        namespace.clear()  # drop the numpy views into the mappings before they are closed
        for workers, reader in readers.items():
            _check_live(reader, workers, "after timing")
        results: dict[str, Any] = {name: {} for name in ("healthy", "snapshot", "numpy_copy")}
        for name, workers in statements:
            results[name][workers] = got[f"{name}@{workers}"]
        return results
    finally:
        for reader in readers.values():
            reader.close()


def _check_live(reader: BoardReader, workers: int, when: str) -> None:
    running = int(np.count_nonzero(reader.snapshot().rows["state"] == int(WorkerState.RUNNING)))
    _require(reader.healthy(), f"{workers}-worker pool: healthy() is False {when}")
    _require(running == workers, f"{workers}-worker pool: {running} workers RUNNING {when}")
