"""The supervisor's own state: runtime.json, its directory (lock and log inside), and the
board file. Each is an observation of the pool, never a reason to kill it.

What can happen to them under a running pool, and what this part does about it:

- a flush fails (disk full, the directory removed, runtime.json replaced): logged, one
  line per distinct error and then at most one per RATE_S, and retried at the next flush;
  the loop goes on supervising. A directory squatting on runtime.json's name is moved
  aside (``runtime.json.displaced-<time>``) so ``status`` can read the pool again.
- the runtime directory removed (``rm -rf``; logind removing /run/user/UID): our
  supervisor.lock fd now locks an unlinked inode, so ``status`` and ``stop`` would not
  find the pool. Noticed at the next flush (the lock path no longer names our fd's inode);
  the directory is made again, a NEW supervisor.lock there is locked and put in place of
  the old fd's number (dup2: whoever kept that number, the forked workers' close list
  among them, keeps a valid fd), supervisor.log is reopened, runtime.json written. If
  another process holds the new lock first (a second supervisor started meanwhile), the
  directory is theirs: we log loudly, never write there again, and keep supervising.
- the board file's name removed (logind's RemoveIPC=): noticed at flush time and
  published again (statusboard.board.Board.publish). Workers attach through the
  supervisor's kept fd, never the name, so replacements start regardless.
- the board file truncated: a store into the map past the new end would kill us with
  SIGBUS, so its size is checked (one fstat) after every wake before the loop's first
  store, restored, and the header and our rows rewritten from what we know. What remains:
  a truncation after the check and before a store of the same wake still kills the
  supervisor, and a worker storing its heartbeat before we restore the size dies of
  SIGBUS (a crash, restarted as any other).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pool.integrations.logfile import reopen_log
from pool.supervision.lock import SupervisorLock, open_locked
from statusboard import runtime_dir as rdir
from statusboard import runtime_file
from statusboard.errors import RuntimeDirError
from statusboard.states import WorkerState as S

if TYPE_CHECKING:
    from pool.supervision.loop import Loop  # the loop holds us: imported for the type checker only

RATE_S = 30.0  # the same failure is logged at most this often
LOCK_RETRY_S = 0.5  # as pool.supervision.lock: a status probe's shared flock lasts microseconds


class RateLimitedLog:
    """Log a failure once per distinct message, then at most once per ``interval`` seconds
    (with how many were held back), so a full disk costs a line, not a line per flush."""

    def __init__(self, log: logging.Logger, interval: float = RATE_S) -> None:
        self.log = log
        self.interval = interval
        self._last: dict[str, tuple[str, float, int]] = {}  # topic -> (message, logged at, held back)

    def note(self, topic: str, message: str, now: float, level: int = logging.ERROR) -> bool:
        """Log ``message`` unless it repeats the last one of ``topic`` within the interval."""
        last = self._last.get(topic)
        if last is not None and last[0] == message and now - last[1] < self.interval:
            self._last[topic] = (last[0], last[1], last[2] + 1)
            return False
        held = (
            f" (and {last[2]} more times since)"
            if last is not None and last[0] == message and last[2]
            else ""
        )
        self.log.log(level, "%s%s", message, held)
        self._last[topic] = (message, now, 0)
        return True

    def clear(self, topic: str) -> bool:
        """The failure of ``topic`` is over; True when there was one."""
        return self._last.pop(topic, None) is not None


def _why(exc: BaseException) -> str:
    """An error without the temp file's random name, so repeats compare equal."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"[Errno {exc.errno}] {exc.strerror}"
    return str(exc)


def _take_lock(path: Path) -> int | None:
    """flock a (new) supervisor.lock at ``path``: its fd, or None when another process holds it.

    Like pool.supervision.lock.SupervisorLock.acquire (a reader's shared probe can collide with us for
    microseconds, so retry briefly), but the fd is closed on every failure, and the pid
    written into the file is informational, so failing to write it (a full disk) is no
    failure: a leaked fd holding this lock would make our own next attempt see "another".
    """
    fd, held = open_locked(path, LOCK_RETRY_S)
    if not held:
        os.close(fd)
        return None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass
    return fd


class OwnState:
    """Made by Supervisor._run_locked once the lock, log and board exist.

    It holds the supervisor (``sup``) for what a truncated board must be rebuilt from
    (slots, desired count, stopping/ready) and for its log; the lock object, whose fd
    number it keeps valid across a re-created directory.
    """

    def __init__(self, sup: Loop, lock: SupervisorLock, runtime_dir: Path) -> None:
        self._sup = sup
        self._lock = lock
        self._dir = runtime_dir
        self._notes = RateLimitedLog(sup.log)
        self._failed_flushes = 0
        self._foreign = False  # the directory now belongs to another lock holder
        # One fd kept spare for the emergency stop: killing and confirming needs /proc reads,
        # which must not fail with EMFILE just when everything else did.
        self._spare: int | None = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    @property
    def log(self) -> logging.Logger:
        return self._sup.log

    # -- runtime.json and its directory ------------------------------------------------------

    def flush(self, now: float, document: dict[str, Any], *, final: bool = False) -> bool:
        """Write runtime.json; never raises for the state's own faults. True when written."""
        if not final:
            self.check_board_name(now)
        if self._foreign:
            return False
        try:
            if not self._lock_in_place() and not self._reclaim_directory(now):
                return False
            self._write(document)
        except (OSError, RuntimeDirError) as exc:
            self._failed_flushes += 1
            self._notes.note(
                "flush",
                f"runtime.json not written: {_why(exc)}"
                + ("" if final else "; the pool goes on, retrying at the next flush"),
                now,
            )
            return False
        if self._notes.clear("flush"):
            self.log.info("runtime.json written again after %d failed flush(es)", self._failed_flushes)
            self._failed_flushes = 0
        return True

    def _write(self, document: dict[str, Any]) -> None:
        try:
            runtime_file.write(self._dir, document)
        except IsADirectoryError:
            # Someone made a directory at runtime.json. It is in our own 0700 directory, so it
            # is the user's doing, not a stranger's: move it aside (never delete it) and write.
            path = runtime_file.path_in(self._dir)
            aside = f"{path}.displaced-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
            os.rename(path, aside)
            self.log.warning(
                "runtime.json was a directory; moved it to %s so status can read the pool", aside
            )
            runtime_file.write(self._dir, document)

    def _lock_in_place(self) -> bool:
        """Does the runtime directory's supervisor.lock name the inode our lock fd holds?"""
        assert self._lock.fd is not None
        try:
            there = os.lstat(self._lock.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(self._lock.fd)
        return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)

    def _reclaim_directory(self, now: float) -> bool:
        """The directory or its lock was removed: make them again and lock the new file.
        False (logged) when that cannot be done now, or when someone else holds it."""
        existed = os.path.lexists(self._dir)
        rdir.ensure(self._dir)  # RuntimeDirError, e.g. /run/user/UID gone and not ours to make
        fd = _take_lock(self._lock.path)
        if fd is None:
            self._foreign = True
            self.log.error(
                "runtime directory %s was replaced and its supervisor.lock is held by another process "
                "(another supervisor?): this supervisor (pid %d) goes on supervising its workers WITHOUT "
                "a runtime directory and never writes there again; status and stop cannot find it; "
                "stop it with SIGTERM",
                self._dir,
                os.getpid(),
            )
            return False
        assert self._lock.fd is not None
        try:
            os.dup2(fd, self._lock.fd, inheritable=False)  # same number, the new lock's file
        finally:
            os.close(fd)
        reopen_log(self.log, self._dir)
        if existed:
            self.log.warning("supervisor.lock in %s was removed or replaced: locked a new one", self._dir)
        else:
            self.log.warning(
                "runtime directory %s was removed: re-created it with supervisor.lock, supervisor.log "
                "and runtime.json",
                self._dir,
            )
        return True

    # -- the board file ----------------------------------------------------------------------

    def check_board_name(self, now: float) -> None:
        """Publish the board again if its name no longer leads to it (flush time: a stat)."""
        board = self._sup.board
        try:
            if board.published():
                self._notes.clear("board")
                return
            how = board.publish()
        except OSError as exc:
            self._notes.note(
                "board", f"board {board.path} is gone and cannot be published again: {_why(exc)}", now
            )
            return
        self.log.warning("board %s was removed (logind RemoveIPC?); published it again (%s)", board.path, how)

    def guard_board(self) -> None:
        """Before the loop's first store after a wake: a truncated board would SIGBUS us."""
        board = self._sup.board
        if board.size_ok():
            return
        was = board.restore_size()
        self._rebuild_board()
        self.log.error(
            "board %s was truncated to %d bytes under the running pool: restored its size, header and "
            "rows; workers that stored into it meanwhile died of SIGBUS and are restarted",
            board.path,
            was,
        )

    def _rebuild_board(self) -> None:
        """Rewrite what the truncation zeroed: the pool header and each slot's lifecycle words.
        Live workers get a fresh heartbeat (they beat again at once, or are judged by it)."""
        sup = self._sup
        board = sup.board
        lives = sup.lives
        board.set_header(
            pool_state=sup.pool_state, workers_desired=lives.desired, slots_used=len(lives.slots)
        )
        now_ns = time.monotonic_ns()
        for slot in lives.slots:
            board.set_lifecycle(
                slot.index,
                pid=slot.pid if slot.alive else 0,
                pid_start_ticks=slot.ticks if slot.alive else 0,
                state=slot.state,
                generation=slot.generation,
                started_ns=now_ns,
                restarts=slot.restarts,
                recycled=slot.recycled,
                rss_bytes=slot.rss,
                stop_requested=int(slot.escalation is not None),
            )
            if slot.state is S.RUNNING:
                board.seed_heartbeat(slot.index, now_ns)
        board.supervisor_beat(now_ns)

    # -- the end ---------------------------------------------------------------------------------

    def free_spare_fd(self) -> None:
        """Give the emergency stop its fd back (see __init__)."""
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

    def close(self) -> None:
        self.free_spare_fd()
