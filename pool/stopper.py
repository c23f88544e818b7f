"""Stopping a pool from outside (`poolctl stop`), with every pid verified gone.

1. Collect every process of the pool: the supervisor (pid + start ticks from
   runtime.json) and the workers, from the live board when there is one (it is
   newer than the last flush) and from runtime.json.
2. Ask: SIGTERM to the supervisor, which stops its workers (flag, SIGTERM,
   SIGKILL after grace), flushes a final runtime.json, removes its board.
3. If it has not exited within ``timeout`` (frozen, wedged), SIGKILL its process
   group (it is a session leader), and every collected worker.
4. The supervisor is now proven dead, so take supervisor.lock and clean up after
   it: leftover workers, its board, and a final runtime.json that says
   ``stopped``, or ``stop_failed`` naming what survived.
5. Verify every collected pid: success only when none is alive.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pool.errors import AlreadyRunning
from pool.lock import SupervisorLock
from pool.runtime_doc import cleanup_previous
from pool.shutdown import CONFIRM_S, kill_and_confirm, send, wait_gone
from statusboard import runtime_file
from statusboard.board import Board
from statusboard.errors import BoardError, RuntimeFileError, RuntimeFileMissing
from statusboard.liveness import is_alive, lock_holder_present
from statusboard.rows import iso, read_board


@dataclass
class StopOutcome:
    ok: bool
    message: str
    survivors: list[int] = field(default_factory=list)
    was_running: bool = True


def stop_pool(runtime_dir: Path, *, timeout: float) -> StopOutcome:
    """Stop the pool in ``runtime_dir`` and verify that nothing of it survives."""
    lock_path = runtime_dir / "supervisor.lock"
    try:
        document = runtime_file.read(runtime_dir)
    except RuntimeFileMissing:
        return StopOutcome(True, "not running (never started)", was_running=False)
    except RuntimeFileError as exc:
        if lock_holder_present(lock_path):
            return StopOutcome(False, f"cannot stop: {exc}, and a supervisor holds the lock")
        return StopOutcome(True, f"not running ({exc})", was_running=False)

    sup = document["supervisor"]
    supervisor = (int(sup["pid"]), sup.get("start_ticks"))
    processes = _pool_processes(document)
    if document["state"] == "stopped" and not is_alive(*supervisor):
        return StopOutcome(True, "not running (stopped)", was_running=False)

    forced = False
    if is_alive(*supervisor):
        send(os.kill, supervisor[0], signal.SIGTERM)
        if wait_gone([supervisor], timeout):
            forced = True
            _kill_group(supervisor[0])
            wait_gone([supervisor], CONFIRM_S)
    leftovers = [p for p in processes if is_alive(*p)]
    if leftovers:
        kill_and_confirm(leftovers, grace=1.0 if not forced else 0.1)

    survivors = [pid for pid, ticks in [supervisor, *processes] if is_alive(pid, ticks)]
    try:
        _finalise(runtime_dir, document, survivors, forced)
    except OSError as exc:  # a full disk: the stop stands, runtime.json could not record it
        unrecorded = f" (runtime.json not updated: {exc.strerror or exc})"
    else:
        unrecorded = ""
    if survivors:
        return StopOutcome(
            False, f"stop failed: still alive: pid {', '.join(map(str, survivors))}{unrecorded}", survivors
        )
    how = "stopped (supervisor did not exit in time; killed)" if forced else "stopped"
    return StopOutcome(True, how + unrecorded)


def _pool_processes(document: dict[str, Any]) -> list[tuple[int, int | None]]:
    """Workers by (pid, start ticks): the live board's rows, plus the last flush's."""
    found: dict[int, int | None] = {}
    board_path = document.get("board")
    if board_path:
        try:
            with Board.open(Path(board_path)) as board:
                for row in read_board(board).rows:
                    if row["pid"] > 0:
                        found[int(row["pid"])] = int(row["pid_start_ticks"]) or None
        except BoardError:
            pass
    for worker in document.get("workers", []):
        pid = worker.get("pid") if isinstance(worker, dict) else None
        if isinstance(pid, int) and pid > 0 and pid not in found:
            found[pid] = worker.get("start_ticks")
    for survivor in document.get("survivors", []):
        if isinstance(survivor, dict) and isinstance(survivor.get("pid"), int):
            found.setdefault(survivor["pid"], survivor.get("start_ticks"))
    return [(pid, ticks) for pid, ticks in found.items() if is_alive(pid, ticks)]


def _kill_group(pid: int) -> None:
    """SIGKILL the supervisor's process group (it leads one), or just it."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
            return
    except ProcessLookupError:
        return
    send(os.kill, pid, signal.SIGKILL)


def _finalise(runtime_dir: Path, document: dict[str, Any], survivors: list[int], forced: bool) -> None:
    """With the supervisor proven dead, take its lock and write the truth, if it could not."""
    lock = SupervisorLock(runtime_dir)
    try:
        lock.acquire()
    except AlreadyRunning:
        return  # a new supervisor started meanwhile; runtime.json is its to write
    try:
        cleanup_previous(runtime_dir, document["pool"], grace=0.5)
        try:
            current = runtime_file.read(runtime_dir)
        except RuntimeFileError:
            current = document
        final_state = "stop_failed" if survivors else "stopped"
        if current["state"] == final_state and not forced:
            return  # the supervisor wrote its own final word, and it is true
        by_pid = {s: None for s in survivors}
        current.update(
            state=final_state,
            board=None,
            control=None,
            flushed_at=iso(time.time()),
            reason=("stop failed" if survivors else "stopped")
            + (" (supervisor killed after timeout)" if forced else ""),
            survivors=[{"pid": pid, "start_ticks": by_pid[pid]} for pid in survivors],
            workers=[
                {**w, "state": "stopped", "healthy": False}
                if isinstance(w, dict) and w.get("pid") not in by_pid
                else w
                for w in current.get("workers", [])
            ],
        )
        current.pop("schema", None)
        runtime_file.write(runtime_dir, current)
    finally:
        lock.release()
