"""What the supervisor writes to runtime.json, and the clean-up after a dead predecessor."""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pool.spec import PoolSpec
from pool.supervision.proctree import command_line
from pool.supervision.remnants import kill_remnants, remnants, report
from statusboard import runtime_file
from statusboard.board import Board, segment_owner, shm_dir
from statusboard.errors import RuntimeFileError
from statusboard.health import failed_reason
from statusboard.liveness import LOCK_NAME, is_alive, parse_lock_record
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
    if state in ("starting", "running"):
        # Every desired slot given up on: say "failed", the verdict `status` reads from the
        # board (statusboard.health.failed_reason), so the file agrees with it.
        given_up = failed_reason(view.rows, int(view.header["workers_desired"]))
        if given_up is not None:
            state, reason = "failed", reason or given_up
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
        # The workers' descendants when last looked at (pool.supervision.containment), so that the
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


@dataclass
class Cleanup:
    notes: list[str]  # log lines: what was found and removed or killed
    survivors: list[int]  # processes of the old pool still alive after SIGKILL
    killed: int = 0  # processes of the old pool found and killed


def cleanup_previous(runtime_dir: Path, name: str, *, grace: float) -> list[str]:
    """clean_predecessor's log lines (``name`` is not used: boards are found by their
    owner's identity, never by a name prefix, which another pool's name may share)."""
    return clean_predecessor(runtime_dir, grace=grace).notes


def clean_predecessor(runtime_dir: Path, *, grace: float, document: dict[str, Any] | None = None) -> Cleanup:
    """Clean what this directory's dead predecessor left: its processes, its board, temp files.

    Only the holder of supervisor.lock calls this, so no earlier supervisor of this
    directory still runs. Only what is provably the predecessor's is touched:

    - processes: pool.supervision.remnants on the predecessor's runtime.json (``document``, else the
      file), when the supervisor it names is dead;
    - boards: the segments whose name encodes (pid, start ticks) of a dead supervisor
      that this directory's lock record or runtime.json names. Never a name prefix: a
      pool's name may be another's plus '-1', and '--name pool' would match every
      anonymous pool.Pool ('pool-PID-N').
    """
    notes = []
    removed = runtime_file.remove_stale_temps(runtime_dir)
    if removed:
        notes.append(f"removed {removed} temp file(s) left by an interrupted runtime.json write")
    me = os.getpid()
    dead: set[tuple[int, int]] = set()
    for recorded in _lock_record(runtime_dir):
        if recorded is not None and recorded[1] is not None and recorded[0] != me and not is_alive(*recorded):
            dead.add((recorded[0], recorded[1]))
    if document is None:
        try:
            document = runtime_file.read(runtime_dir)
        except RuntimeFileError:
            document = None
    survivors: list[int] = []
    killed = 0
    sup = document.get("supervisor") if document is not None else None
    if document is not None and isinstance(sup, dict):
        pid, ticks = sup.get("pid"), sup.get("start_ticks")
        if isinstance(pid, int) and isinstance(ticks, int) and pid != me:
            if is_alive(pid, ticks):
                notes.append(
                    f"runtime.json names supervisor pid {pid}, which is alive but does not hold "
                    "supervisor.lock: left alone"
                )
            else:
                dead.add((pid, ticks))
                found = remnants(document)
                if found:
                    survivors = kill_remnants(found, grace=min(grace, 1.0))
                    killed = len(found) - len(survivors)
                    notes.append(report(found, survivors, pid))
    if dead:
        try:
            segments = list(shm_dir().iterdir())
        except FileNotFoundError:
            segments = []
        for segment in segments:
            owner = segment_owner(segment.name)
            if owner in dead:
                try:
                    segment.unlink()
                    notes.append(f"removed board {segment} of dead supervisor pid {owner[0]}")
                except FileNotFoundError:
                    pass
    return Cleanup(notes, survivors, killed)


def _lock_record(runtime_dir: Path) -> tuple[tuple[int, int | None] | None, ...]:
    """Both lines of supervisor.lock's record (the holder, the one before it)."""
    try:
        fd = os.open(runtime_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return ()
    try:
        return parse_lock_record(os.pread(fd, 128, 0))
    finally:
        os.close(fd)
