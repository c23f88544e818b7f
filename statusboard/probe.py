"""The status probe: verified liveness first, then the board, else the file.

This is what `poolctl status` runs, so it imports the stdlib only (no numpy, no
psutil, no typer): liveness comes from flock + /proc, the board is read with
struct. The decision, in order:

1. no runtime.json                      -> not running (3), source none
2. runtime.json unreadable / unknown    -> unknown (4)
3. runtime.json says stopped            -> not running (3), source file
4. says stop_failed                     -> stale (1) while a survivor lives, else stopped (3)
5. says starting/running/stopping: the supervisor is alive only if its pid is
   that very process (start ticks), it holds supervisor.lock (the lock is held
   and its record names no other process), and its board heartbeat is fresh.
   Alive -> the live board, source shm, running (0), degraded (2), or failed
   (1: every desired slot FAILED, nothing will restart them;
   health.failed_reason). Not alive -> stale (1), source file, with the reason.
"""

from __future__ import annotations

import os
import time

from statusboard import liveness, runtime_dir, runtime_file
from statusboard.board import Board
from statusboard.errors import BoardError, RuntimeDirError, RuntimeFileError, RuntimeFileMissing
from statusboard.health import PoolVerdict, StatusCode, pool_verdict, supervisor_verdict
from statusboard.rows import iso, read_board, worker_status
from statusboard.states import pool_state_label

TYPE_CHECKING = False  # typing, pathlib, dataclasses: ~15 ms of imports this path avoids
if TYPE_CHECKING:
    from typing import Any

    StrPath = str | os.PathLike[str]

DEFAULT_SUPERVISOR_TIMEOUT_S = 5.0


class StatusReport:
    __slots__ = ("code", "document")

    def __init__(self, code: StatusCode, document: dict[str, Any]) -> None:
        self.code = code
        self.document = document  # the `status --json` object


def probe(
    directory: StrPath,
    pool: str,
    *,
    supervisor_timeout_s: float = DEFAULT_SUPERVISOR_TIMEOUT_S,
) -> StatusReport:
    """Work out the truth about the pool whose runtime directory is ``directory``."""
    checked_at = iso(time.time())
    base: dict[str, Any] = {
        "pool": pool,
        "state": "unknown",
        "source": "none",
        "reason": None,
        "supervisor": None,
        "target": None,
        "workers_desired": None,
        "workers": [],
        "checked_at": checked_at,
        "flushed_at": None,
        "runtime_dir": os.fspath(directory),
    }
    try:
        runtime_dir.check(directory)
    except RuntimeDirError as exc:
        if not os.path.lexists(directory):
            return _report(base, "stopped", StatusCode.NOT_RUNNING, "never started (no runtime directory)")
        return _report(base, "unknown", StatusCode.UNKNOWN, str(exc))
    try:
        document = runtime_file.read(directory)
    except RuntimeFileMissing:
        return _report(base, "stopped", StatusCode.NOT_RUNNING, "never started (no runtime.json)")
    except RuntimeFileError as exc:
        return _report(base, "unknown", StatusCode.UNKNOWN, str(exc))

    sup = document["supervisor"]
    base.update(
        pool=document["pool"],  # the pool's own name: --runtime-dir alone does not say it
        target=document.get("target"),
        workers_desired=document["workers_desired"],
        flushed_at=document.get("flushed_at"),
        workers=document["workers"],
        source="file",
        supervisor={
            "pid": sup["pid"],
            "alive": False,
            "started_at": sup.get("started_at"),
            "uptime_s": None,
        },
    )
    state = document["state"]
    if state == "stopped":
        return _report(base, "stopped", StatusCode.NOT_RUNNING, document.get("reason") or "stopped")
    if state == "stop_failed":
        survivors = [
            s
            for s in document.get("survivors", [])
            if isinstance(s, dict)
            and isinstance(s.get("pid"), int)
            and liveness.is_alive(
                s["pid"], s.get("start_ticks") if isinstance(s.get("start_ticks"), int) else None
            )
        ]
        if survivors:
            pids = ", ".join(str(s["pid"]) for s in survivors)
            return _report(base, "stop_failed", StatusCode.STALE, f"stop failed; still alive: pid {pids}")
        return _report(
            base, "stopped", StatusCode.NOT_RUNNING, "stopped (a failed stop's survivors are gone now)"
        )

    return _probe_live(base, directory, document, int(supervisor_timeout_s * 1e9))


def _probe_live(
    base: dict[str, Any], directory: StrPath, document: dict[str, Any], timeout_ns: int
) -> StatusReport:
    sup = document["supervisor"]
    pid, ticks = sup["pid"], sup["start_ticks"]
    identity_ok = liveness.is_alive(pid, ticks)
    # Held by THAT process, not merely by someone: a pid in runtime.json that the lock's
    # record does not name is not this pool's supervisor (a forged or stale file).
    lock_held = identity_ok and liveness.lock_held_by(os.path.join(directory, liveness.LOCK_NAME), pid, ticks)
    board: Board | None = None
    heartbeat_age: int | None = None
    board_problem = ""
    if identity_ok and lock_held and document.get("board"):
        try:
            board = Board.open(str(document["board"]))
            if board.owner != (pid, ticks):
                board_problem = "the board belongs to another supervisor"
                board.close()
                board = None
            else:
                heartbeat_age = time.monotonic_ns() - board.header_word("supervisor_heartbeat_ns")
        except BoardError as exc:
            board_problem = str(exc)
    verdict = supervisor_verdict(
        lock_held=lock_held,
        pid=pid,
        identity_ok=identity_ok,
        heartbeat_age_ns=heartbeat_age,
        timeout_ns=timeout_ns,
    )
    if not verdict.alive or board is None:
        reason = verdict.reason + (f" ({board_problem})" if board_problem else "")
        flushed = document.get("flushed_at")
        reason += f"; workers as last flushed at {flushed}" if flushed else ""
        if board is not None:
            board.close()
        return _report(base, "stale", StatusCode.STALE, reason)
    try:
        view = read_board(board)
    finally:
        board.close()
    header = view.header
    wall_now = time.time()
    hb_timeout = int(header["heartbeat_timeout_ns"])
    workers = [
        worker_status(row, view.now_ns, wall_now, hb_timeout) for row in view.rows if row["state"] != 0
    ]
    pool_state = pool_state_label(int(header["pool_state"]))
    result: PoolVerdict = pool_verdict(
        view.rows,
        workers_desired=int(header["workers_desired"]),
        pool_state=pool_state,
        now_ns=view.now_ns,
        heartbeat_timeout_ns=hb_timeout,
    )
    started_wall = sup.get("started_wall")
    base.update(
        source="shm",
        workers=workers,
        workers_desired=int(header["workers_desired"]),
        supervisor={
            "pid": pid,
            "alive": True,
            "started_at": sup.get("started_at"),
            "uptime_s": round(wall_now - started_wall, 3) if isinstance(started_wall, float) else None,
            "heartbeat_age_s": round((view.now_ns - header["supervisor_heartbeat_ns"]) / 1e9, 3),
        },
    )
    return _report(base, result.state, result.code, result.reason or None)


def _report(base: dict[str, Any], state: str, code: StatusCode, reason: str | None) -> StatusReport:
    base["state"] = state
    base["reason"] = reason
    return StatusReport(code, base)
