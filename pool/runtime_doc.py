"""What the supervisor writes to runtime.json, and the clean-up after a dead supervisor."""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from pathlib import Path
from typing import Any

from pool import shutdown
from pool.proctree import command_line
from pool.spec import PoolSpec
from statusboard import runtime_file
from statusboard.board import SEGMENT_PREFIX, Board, shm_dir
from statusboard.errors import RuntimeFileError
from statusboard.liveness import is_alive
from statusboard.rows import iso, read_board, worker_status
from statusboard.states import WorkerState, pool_state_label


def runtime_document(
    spec: PoolSpec,
    board: Board,
    *,
    supervisor_pid: int,
    supervisor_ticks: int,
    started_wall: float,
    reason: str | None,
    final: bool,
    survivors: list[tuple[int, int]],
    control: str | None = None,
    descendants: list[dict[str, int]] | None = None,
) -> dict[str, Any]:
    """The runtime.json object for the board as it is now (see statusboard.runtime_file)."""
    view = read_board(board)
    wall_now = time.time()
    timeout_ns = int(view.header["heartbeat_timeout_ns"])
    workers = []
    for row in view.rows:
        if row["state"] == WorkerState.EMPTY:
            continue
        status = worker_status(row, view.now_ns, wall_now, timeout_ns)
        status["start_ticks"] = row["pid_start_ticks"]
        workers.append(status)
    state = pool_state_label(int(view.header["pool_state"]))
    return {
        "pool": spec.name,
        "state": state,
        "target": spec.target,
        "board": None if final else str(board.path),
        "control": control.replace("\0", "@", 1) if control else None,
        "spec": spec_document(spec),
        "supervisor": {
            "pid": supervisor_pid,
            "start_ticks": supervisor_ticks,
            "started_at": iso(started_wall),
            "started_wall": started_wall,
        },
        "workers_desired": int(view.header["workers_desired"]),
        "heartbeat_timeout_s": spec.heartbeat_timeout,
        "grace_s": spec.grace,
        "restart": spec.restart.value,
        "workers": workers,
        "flushed_at": iso(wall_now),
        "reason": reason,
        "survivors": [
            {"pid": pid, "start_ticks": ticks, "cmdline": command_line(pid)} for pid, ticks in survivors
        ],
        # The workers' descendants when last looked at (pool.containment), so that the
        # next start or stop can end them if this supervisor is SIGKILLed.
        "descendants": descendants or [],
    }


@functools.lru_cache(maxsize=64)
def _spec_document(spec: PoolSpec) -> tuple[tuple[str, Any], ...]:
    document = dataclasses.asdict(spec)
    document["restart"] = spec.restart.value
    return tuple(document.items())


def spec_document(spec: PoolSpec) -> dict[str, Any]:
    """The spec as JSON, so `restart` can start the same pool again (cached: every flush needs it)."""
    return dict(_spec_document(spec))


def cleanup_previous(runtime_dir: Path, name: str, *, grace: float) -> list[str]:
    """Clean what a dead supervisor left: leftover workers, its board, temp files.

    Only the holder of supervisor.lock calls this, so the previous supervisor is
    proven dead (a frozen one would still hold the lock). Returns log lines.
    """
    notes = []
    removed = runtime_file.remove_stale_temps(runtime_dir)
    if removed:
        notes.append(f"removed {removed} temp file(s) left by an interrupted runtime.json write")
    try:
        previous = runtime_file.read(runtime_dir)
    except RuntimeFileError:
        previous = None
    if previous is not None and previous["state"] not in ("stopped",):
        leftovers = [
            (int(w["pid"]), w.get("start_ticks"))
            for w in previous["workers"]
            if isinstance(w, dict)
            and isinstance(w.get("pid"), int)
            and is_alive(w["pid"], w.get("start_ticks"))
        ]
        if leftovers:
            survivors = shutdown.kill_and_confirm(leftovers, grace=min(grace, 1.0))
            notes.append(
                f"killed {len(leftovers) - len(survivors)} worker(s) left by dead supervisor pid "
                f"{previous['supervisor']['pid']}" + (f"; still alive: {survivors}" if survivors else "")
            )
    prefix = f"{SEGMENT_PREFIX}{os.getuid()}-{name}-"
    for segment in shm_dir().glob(prefix + "*"):
        pid_ticks = segment.name[len(prefix) :].split("-")
        try:
            pid, ticks = int(pid_ticks[0]), int(pid_ticks[1])
        except (IndexError, ValueError):
            continue
        if not is_alive(pid, ticks):
            try:
                segment.unlink()
                notes.append(f"removed board {segment} of dead supervisor pid {pid}")
            except FileNotFoundError:
                pass
    return notes
