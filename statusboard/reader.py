"""The board reader for other programs: ``statusboard.attach(runtime_dir)``.

Built for health probes that poll thousands of times per second: numpy int64
views into the mapping are made once, so ``healthy()`` is a handful of vector
reductions plus one flock probe, and ``snapshot()`` is one block copy with a
vectorised sequence-counter check (torn rows, rare, are re-read one by one).

Attaching maps the segment read-only with ``os.open`` + ``mmap``: no resource
tracker is involved, so neither reading nor exiting (even by SIGKILL) can unlink
or otherwise disturb the supervisor's board.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from statusboard import layout, liveness, runtime_file
from statusboard.board import Board
from statusboard.errors import BoardError, BoardMissing
from statusboard.layout import H, R
from statusboard.rows import read_header, seq_retries, worker_status
from statusboard.states import PoolState, WorkerState, pool_state_label

_ROW_DTYPE = layout.numpy_dtypes()[1]
_ROW_NAMES = tuple(name for name, _ in layout.ROW_FIELDS)
_SUP_HB, _POOL_STATE = H["supervisor_heartbeat_ns"], H["pool_state"]
_SLOTS_USED, _DESIRED, _HB_TIMEOUT = H["slots_used"], H["workers_desired"], H["heartbeat_timeout_ns"]
_RUNNING, _EMPTY, _RUNNING_POOL = int(WorkerState.RUNNING), int(WorkerState.EMPTY), int(PoolState.RUNNING)
# Bound ufunc methods: calling them directly skips numpy's Python-level dispatch.
_equal, _all, _any = np.equal, np.logical_and.reduce, np.logical_or.reduce
_min, _count = np.minimum.reduce, np.count_nonzero
DEFAULT_SUPERVISOR_TIMEOUT_S = 5.0


@dataclass
class Snapshot:
    """A consistent copy of the board taken at ``now_ns`` (monotonic)."""

    header: dict[str, Any]
    rows: np.ndarray  # structured, layout.numpy_dtypes()[1], one per used slot
    now_ns: int
    wall_now: float
    torn_rows: int

    @property
    def supervisor_heartbeat_age_s(self) -> float:
        return (self.now_ns - int(self.header["supervisor_heartbeat_ns"])) / 1e9

    @property
    def pool_state(self) -> str:
        return pool_state_label(int(self.header["pool_state"]))

    def raw_rows(self) -> list[dict[str, Any]]:
        out = []
        for slot, values in enumerate(self.rows.tolist()):
            row = dict(zip(_ROW_NAMES, values, strict=True))
            row["slot"] = slot
            out.append(row)
        return out

    def workers(self) -> list[dict[str, Any]]:
        """Every used slot as a status dict (the `status --json` worker shape), ages computed."""
        timeout = int(self.header["heartbeat_timeout_ns"])
        return [
            worker_status(row, self.now_ns, self.wall_now, timeout)
            for row in self.raw_rows()
            if row["state"] != WorkerState.EMPTY
        ]


class BoardReader:
    """A read-only view of a live board, with the supervisor's lock to check liveness."""

    def __init__(
        self,
        board: Board,
        lock_path: Path | None,
        *,
        supervisor_timeout_s: float = DEFAULT_SUPERVISOR_TIMEOUT_S,
    ) -> None:
        self.board = board
        self.supervisor_timeout_ns = int(supervisor_timeout_s * 1e9)
        words = np.frombuffer(board.buffer, dtype="<i8")
        grid = words[layout.HEADER_WORDS :].reshape(board.capacity, layout.ROW_WORDS)
        self._grid = grid
        self._state = grid[:, R["state"]]
        self._heartbeat = grid[:, R["heartbeat_ns"]]
        self._sup_seq = grid[:, R["sup_seq"]]
        self._wk_seq = grid[:, R["wk_seq"]]
        self._records = np.frombuffer(
            board.buffer, dtype=_ROW_DTYPE, count=board.capacity, offset=layout.HEADER_BYTES
        )
        # None: no lock to check (a bare board); -1: the lock file is gone, so no
        # supervisor can hold it.
        self._lock_fd: int | None = None
        if lock_path is not None:
            try:
                self._lock_fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                self._lock_fd = -1

    def close(self) -> None:
        """Release the mapping and the lock fd. Safe to call twice."""
        if self._lock_fd is not None and self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = None
        for name in ("_grid", "_state", "_heartbeat", "_sup_seq", "_wk_seq", "_records"):
            setattr(self, name, None)
        self.board.close()

    def __enter__(self) -> BoardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def supervisor_lock_held(self) -> bool:
        if self._lock_fd is None:
            return True
        return self._lock_fd >= 0 and liveness.probe_lock_fd(self._lock_fd)

    def healthy(self) -> bool:
        """True when the supervisor is live and every desired worker runs with a fresh heartbeat.

        Header words are read through the memoryview (~35 ns each; a numpy scalar
        read costs ~100 ns), rows with ufunc reductions on the kept column views.
        """
        w = self.board.words
        now = time.monotonic_ns()
        if now - w[_SUP_HB] > self.supervisor_timeout_ns or w[_POOL_STATE] != _RUNNING_POOL:
            return False
        used = w[_SLOTS_USED]
        if used < w[_DESIRED]:
            return False
        states = self._state[:used]
        if not _all(_equal(states, _RUNNING)):
            # Rare: a retired (EMPTY) slot below slots_used. Count what does run.
            running = _equal(states, _RUNNING)
            empty = _equal(states, _EMPTY)
            if _count(running) < w[_DESIRED] or not _all(running | empty):
                return False
            if now - _min(self._heartbeat[:used][running]) > w[_HB_TIMEOUT]:
                return False
        elif used and now - _min(self._heartbeat[:used]) > w[_HB_TIMEOUT]:
            return False
        return self.supervisor_lock_held()

    def snapshot(self) -> Snapshot:
        """A consistent copy of header and used rows, with ages computed at one instant."""
        header = self._read_header()
        used = min(int(header["slots_used"]), self.board.capacity)
        sup_before = self._sup_seq[:used].copy()
        wk_before = self._wk_seq[:used].copy()
        rows = self._records[:used].copy()
        torn_mask = (
            (sup_before != self._sup_seq[:used])
            | (wk_before != self._wk_seq[:used])
            | ((sup_before | wk_before) & 1).astype(bool)
        )
        torn = 0
        if _any(torn_mask):
            for slot in np.flatnonzero(torn_mask).tolist():
                torn += not self._reread_row(rows, slot)
        return Snapshot(header, rows, time.monotonic_ns(), time.time(), torn)

    def _reread_row(self, rows: np.ndarray, slot: int) -> bool:
        sup, wk = self._sup_seq, self._wk_seq
        for _ in seq_retries():
            s1, w1 = int(sup[slot]), int(wk[slot])
            rows[slot] = self._records[slot]
            if (s1 | w1) & 1 == 0 and int(sup[slot]) == s1 and int(wk[slot]) == w1:
                return True
        return False

    def _read_header(self) -> dict[str, Any]:
        return read_header(self.board)


def attach(
    runtime_dir: str | os.PathLike[str],
    *,
    supervisor_timeout_s: float = DEFAULT_SUPERVISOR_TIMEOUT_S,
) -> BoardReader:
    """Attach to the live board of the pool whose runtime directory is ``runtime_dir``.

    Raises RuntimeFileError subclasses when runtime.json is missing or unreadable,
    BoardMissing when the pool has no board (stopped, or its supervisor died and
    the board was cleaned), BoardLayoutError when the segment is not a board this
    version reads or belongs to another supervisor instance.
    """
    directory = Path(runtime_dir)
    document = runtime_file.read(directory)
    board_path = document.get("board")
    if not board_path:
        raise BoardMissing(f"pool {document['pool']!r} has no board ({document['state']})")
    board = Board.open(Path(board_path))
    sup = document["supervisor"]
    pid, ticks = board.header_word("supervisor_pid"), board.header_word("supervisor_start_ticks")
    if (pid, ticks) != (sup["pid"], sup["start_ticks"]):
        board.close()
        raise BoardError(
            f"board {board_path} belongs to supervisor pid {pid}, runtime.json names pid {sup['pid']}"
        )
    return BoardReader(board, directory / liveness.LOCK_NAME, supervisor_timeout_s=supervisor_timeout_s)
