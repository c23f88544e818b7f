"""Stopping a pool from outside (`poolctl stop`), with every pid verified gone.

The pool's identity is the process holding its supervisor.lock (pid + start ticks,
from the lock's record, confirmed by the kernel's /proc/locks): that process is
the one signalled, never a pid read from runtime.json alone.

1. Find the lock holder. The lock free: no supervisor runs; clean up what a dead one
   left (step 4) and say so. Held but the holder not (yet) named in the record: a
   supervisor in its first microseconds; wait for it up to ``timeout``, else refuse.
2. Collect the holder's workers from its own board (found by the holder's identity,
   not by the path runtime.json gives), then ask: SIGTERM to the holder, which stops
   its workers (flag, SIGTERM, SIGKILL after grace), flushes a final runtime.json,
   removes its board. A supervisor still booting (no signal handlers yet) just dies.
3. If it has not exited within ``timeout`` (frozen, wedged), SIGKILL its process
   group (it is a session leader), and every collected worker.
4. The holder is now proven dead, so take supervisor.lock (without recording
   ourselves in it) and clean up after it: whatever of the pool is left
   (pool.supervision.remnants: workers, their descendants and process groups), its board, and a
   final runtime.json that says ``stopped``, or ``stop_failed`` naming what survived.
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
from pool.integrations.logfile import append_to_log
from pool.supervision.lock import START_LOCK_NAME, SupervisorLock
from pool.supervision.runtime_report import clean_predecessor
from pool.supervision.shutdown import CONFIRM_S, kill_and_confirm, send, wait_gone
from statusboard import runtime_file
from statusboard.board import Board, segment_owner, shm_dir
from statusboard.errors import BoardError, RuntimeFileError, RuntimeFileMissing, RuntimeFileUnsafe
from statusboard.liveness import LOCK_NAME, flock_pids, is_alive, lock_holder, lock_holder_present
from statusboard.rows import iso, read_board

Identity = tuple[int, int]


@dataclass
class StopOutcome:
    ok: bool
    message: str
    survivors: list[int] = field(default_factory=list)
    was_running: bool = True


class _Refused(Exception):
    """The stop cannot act safely; the message is the one line to print."""


def stop_pool(runtime_dir: Path, *, timeout: float) -> StopOutcome:
    """Stop the pool in ``runtime_dir`` and verify that nothing of it survives."""
    try:
        document: dict[str, Any] | None = runtime_file.read(runtime_dir)
    except RuntimeFileUnsafe as exc:
        return StopOutcome(False, f"cannot stop: {exc}")
    except RuntimeFileMissing:
        document, problem = None, None
    except RuntimeFileError as exc:
        document, problem = None, str(exc)  # unreadable: the lock still says whether a supervisor runs
    else:
        problem = None
    try:
        holder = _await_holder(runtime_dir / LOCK_NAME, timeout)
    except _Refused as exc:
        return StopOutcome(False, str(exc))
    if holder is None:
        return _clean_dead(runtime_dir, document, problem)
    return _stop_holder(runtime_dir, holder, document, timeout)


def _await_holder(lock_path: Path, timeout: float) -> Identity | None:
    """The verified lock holder, or None when the lock is free and no `start` is launching
    a supervisor (start.lock, pool.supervision.lock.StartLock): a supervisor on its way is waited for.
    A holder that does not name itself within ``timeout`` is refused (raises _Refused): it
    is not signalled; so is a start still launching at ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    start_lock = lock_path.with_name(START_LOCK_NAME)
    while True:
        try:
            held, holder = lock_holder(lock_path)
        except OSError as exc:
            raise _Refused(f"cannot stop: {lock_path}: {exc.strerror or exc}") from None
        if holder is not None:
            return holder
        if not held:
            if not _start_in_progress(start_lock):
                return None
            if time.monotonic() >= deadline:
                raise _Refused(
                    f"cannot stop: a start of this pool ({_kernel_holders(start_lock)}) is still launching "
                    f"its supervisor after {timeout:g}s; nothing signalled"
                )
        elif time.monotonic() >= deadline:
            raise _Refused(
                f"cannot stop: {lock_path} is held by {_kernel_holders(lock_path)}, which does not name itself in it; nothing signalled"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _start_in_progress(start_lock: Path) -> bool:
    try:
        return lock_holder_present(start_lock)
    except OSError:
        return False


def _kernel_holders(lock_path: Path) -> str:
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return "a process"
    try:
        pids = flock_pids(fd)
    finally:
        os.close(fd)
    return f"pid {', '.join(map(str, sorted(pids)))}" if pids else "a process"


def _stop_holder(
    runtime_dir: Path, holder: Identity, document: dict[str, Any] | None, timeout: float
) -> StopOutcome:
    notes = []
    recorded = _supervisor_of(document)
    if document is not None and recorded != holder:
        shown = recorded[0] if recorded is not None else "none"
        notes.append(
            f"runtime.json named supervisor pid {shown}, not the lock holder pid {holder[0]}: "
            "it was wrong; acted on the lock holder"
        )
    workers = _board_workers(holder)
    forced = False
    if is_alive(*holder):
        send(os.kill, holder[0], signal.SIGTERM)
        if wait_gone([holder], timeout):
            forced = True
            _kill_group(holder)
            wait_gone([holder], CONFIRM_S)
    leftovers: list[tuple[int, int | None]] = [w for w in workers if is_alive(*w)]
    if leftovers:
        kill_and_confirm(leftovers, grace=1.0 if not forced else 0.1)

    # What the holder left, as it knew it: its own final flush if it wrote one, else its
    # board's rows (a forged or stale runtime.json says nothing about this supervisor).
    try:
        after: dict[str, Any] | None = runtime_file.read(runtime_dir)
    except RuntimeFileError:
        after = None
    own = after if after is not None and _supervisor_of(after) == holder else None
    last = _as_document(holder, workers, own)
    survivors = [pid for pid, ticks in [holder, *workers] if is_alive(pid, ticks)]
    cleaned = _finalise(runtime_dir, own or after or document, last, forced, holder, survivors)
    notes += cleaned.notes
    survivors += [pid for pid in cleaned.survivors if pid not in survivors]
    detail = "".join(f"; {note}" for note in notes)
    if survivors:
        return StopOutcome(
            False, f"stop failed: still alive: pid {', '.join(map(str, survivors))}{detail}", survivors
        )
    if cleaned.lock_taken_by is not None:
        # Something holds the lock again (a supervisor started meanwhile): the pool runs.
        return StopOutcome(
            False, f"stop failed: supervisor.lock is held again, by {cleaned.lock_taken_by}{detail}"
        )
    how = "stopped (supervisor did not exit in time; killed)" if forced else "stopped"
    return StopOutcome(True, how + detail)


def _clean_dead(runtime_dir: Path, document: dict[str, Any] | None, problem: str | None) -> StopOutcome:
    """No supervisor holds the lock: clean what a dead one left, if anything."""
    if document is None and not (runtime_dir / LOCK_NAME).exists():
        return StopOutcome(True, f"not running ({problem or 'never started'})", was_running=False)
    state = document["state"] if document is not None else None
    cleaned = _finalise(runtime_dir, document, None, False, None, [])
    detail = "".join(f"; {note}" for note in cleaned.notes)
    if cleaned.survivors:
        return StopOutcome(
            False,
            f"stop failed: still alive: pid {', '.join(map(str, cleaned.survivors))}{detail}",
            cleaned.survivors,
        )
    if state in (None, "stopped") and not cleaned.killed:
        why = "stopped" if state == "stopped" else problem or "never started"
        return StopOutcome(True, f"not running ({why}){detail}", was_running=False)
    return StopOutcome(True, f"stopped (the supervisor was already dead){detail}", was_running=False)


@dataclass
class _Finalised:
    notes: list[str]
    survivors: list[int]
    killed: bool
    lock_taken_by: str | None = None  # another process held supervisor.lock when we came to clean up


def _finalise(
    runtime_dir: Path,
    current: dict[str, Any] | None,
    last: dict[str, Any] | None,
    forced: bool,
    holder: Identity | None,
    survivors: list[int],
) -> _Finalised:
    """With no supervisor alive, take its lock, clean up after it, and write the truth if
    it could not. ``last`` describes the supervisor just stopped (else runtime.json does);
    ``survivors`` are the stop's own, found before the clean-up."""
    lock = SupervisorLock(runtime_dir)
    try:
        lock.acquire(record=False)
    except AlreadyRunning:
        # A new supervisor started meanwhile (runtime.json is its to write), or a child of
        # the old one kept its lock open.
        return _Finalised([], [], False, _kernel_holders(lock.path))
    except OSError as exc:
        return _Finalised([f"cannot take {lock.path} to clean up: {exc.strerror or exc}"], [], False)
    try:
        cleanup = clean_predecessor(runtime_dir, grace=0.5, document=last)
        spec = (current or last or {}).get("spec") or {}
        append_to_log(  # the pool's own log says what stop found and killed, too
            runtime_dir,
            cleanup.notes,
            log_format=str(spec.get("log_format", "text")),
            pool=(current or last or {}).get("pool"),
        )
        killed = cleanup.killed > 0
        if current is None:
            return _Finalised(cleanup.notes, cleanup.survivors, killed)
        survivors = survivors + [pid for pid in cleanup.survivors if pid not in survivors]
        final_state = "stop_failed" if survivors else "stopped"
        if (
            current["state"] == final_state
            and not forced
            and not killed
            and holder in (None, _supervisor_of(current))
        ):
            return _Finalised(cleanup.notes, survivors, killed)  # the supervisor's own final word, and true
        by_pid = {s: None for s in survivors}
        update = dict(current)
        update.update(
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
        if holder is not None and _supervisor_of(current) != holder:
            update["supervisor"] = {
                **current.get("supervisor", {}),
                "pid": holder[0],
                "start_ticks": holder[1],
            }
        update.pop("schema", None)
        try:
            runtime_file.write(runtime_dir, update)
        except OSError as exc:
            cleanup.notes.append(f"cannot write runtime.json: {exc.strerror or exc}")
        return _Finalised(cleanup.notes, survivors, killed)
    finally:
        lock.release()


def _supervisor_of(document: dict[str, Any] | None) -> Identity | None:
    sup = document.get("supervisor") if document is not None else None
    if isinstance(sup, dict) and isinstance(sup.get("pid"), int) and isinstance(sup.get("start_ticks"), int):
        return sup["pid"], sup["start_ticks"]
    return None


def _board_workers(holder: Identity) -> list[Identity]:
    """The holder's live workers (pid, start ticks), from the board it made (its name and
    header both name the holder)."""
    try:
        segments = [p for p in shm_dir().iterdir() if segment_owner(p.name) == holder]
    except FileNotFoundError:
        return []
    found: list[Identity] = []
    for path in segments:
        try:
            with Board.open(path) as board:
                if board.owner != holder:
                    continue
                for row in read_board(board).rows:
                    pid, ticks = int(row["pid"]), int(row["pid_start_ticks"])
                    if pid > 0 and ticks > 0 and is_alive(pid, ticks) and (pid, ticks) not in found:
                        found.append((pid, ticks))
        except BoardError:
            continue
    return found


def _as_document(holder: Identity, workers: list[Identity], own: dict[str, Any] | None) -> dict[str, Any]:
    """The stopped supervisor as pool.supervision.remnants reads it: its own last flush, plus the
    workers its board showed (a flush may be older than the last spawn)."""
    document: dict[str, Any] = dict(own) if own is not None else {}
    document["supervisor"] = {"pid": holder[0], "start_ticks": holder[1]}
    listed = {w.get("pid") for w in document.get("workers", []) if isinstance(w, dict)}
    document["workers"] = list(document.get("workers", [])) + [
        {"pid": pid, "start_ticks": ticks} for pid, ticks in workers if pid not in listed
    ]
    return document


def _kill_group(holder: Identity) -> None:
    """SIGKILL the supervisor's process group (it leads one), or just it."""
    pid = holder[0]
    if not is_alive(*holder):
        return
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
            return
    except ProcessLookupError:
        return
    send(os.kill, pid, signal.SIGKILL)
