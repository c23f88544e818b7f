"""Consistent reads of a board with the stdlib only (struct), and rows as status dicts.

The CLI's status path and the supervisor's flush use this; in-process pollers
use the numpy reader (statusboard.reader), which is faster per call but costs
numpy's import. Both derive from statusboard.layout.
"""

from __future__ import annotations

import struct
import time

from statusboard import layout
from statusboard.board import Board
from statusboard.health import Record, describe_exit, progress_value, worker_verdict
from statusboard.layout import H, R
from statusboard.states import worker_state_label

TYPE_CHECKING = False  # keep typing off the status path
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

_HEADER = struct.Struct(layout.HEADER_STRUCT_FORMAT)
_ROW = struct.Struct(layout.ROW_STRUCT_FORMAT)
_HEADER_NAMES = tuple(name for name, _ in layout.HEADER_FIELDS)
_ROW_NAMES = tuple(name for name, _ in layout.ROW_FIELDS)
_SEQ_SPINS = 200  # tight retries first: a running writer finishes an update in ~1 us
_SEQ_PATIENCE_S = 0.1  # then paced retries until this deadline (see seq_retries)


class BoardView(Record):
    """A consistent copy of a board: header and rows as plain dicts."""

    __slots__ = ("header", "now_ns", "rows", "torn_rows")

    def __init__(
        self, header: dict[str, Any], rows: list[dict[str, Any]], now_ns: int, torn_rows: int
    ) -> None:
        self.header = header
        self.rows = rows
        self.now_ns = now_ns
        self.torn_rows = torn_rows  # rows whose writer died mid-update (counter stuck odd)


def seq_retries() -> Iterator[None]:
    """Paces a seqlock reader's attempts: a tight spin, then short sleeps until a deadline.

    A writer can be preempted (or its vCPU stolen) between its two counter
    increments for a scheduler slice or more, far longer than a spin of a few
    hundred tries; a reader that gave up then would report a live row torn. Only
    a writer that died mid-update leaves the counter odd past the deadline.
    """
    for _ in range(_SEQ_SPINS):
        yield
    deadline = time.monotonic() + _SEQ_PATIENCE_S
    while time.monotonic() < deadline:
        time.sleep(0.0001)
        yield


def read_header(board: Board) -> dict[str, Any]:
    words = board.words
    seq_at = H["header_seq"]
    buf = board.buffer
    before = words[seq_at]
    values = _HEADER.unpack_from(buf, 0)
    if before & 1 or words[seq_at] != before:  # rare: a header update in flight
        for _ in seq_retries():
            before = words[seq_at]
            values = _HEADER.unpack_from(buf, 0)
            if before & 1 == 0 and words[seq_at] == before:
                break
    return dict(zip(_HEADER_NAMES, values, strict=True))


def read_row(board: Board, slot: int) -> tuple[dict[str, Any], bool]:
    """(row dict, consistent). A row whose counter stays odd is returned as read."""
    words = board.words
    buf = board.buffer
    offset = layout.row_offset(slot)
    base = offset // layout.WORD
    sup, wk = base + R["sup_seq"], base + R["wk_seq"]
    consistent = False
    for _ in seq_retries():
        s1, w1 = words[sup], words[wk]
        values = _ROW.unpack_from(buf, offset)
        if (s1 | w1) & 1 == 0 and words[sup] == s1 and words[wk] == w1:
            consistent = True
            break
    row = dict(zip(_ROW_NAMES, values, strict=True))
    row["slot"] = slot
    return row, consistent


def read_board(board: Board) -> BoardView:
    header = read_header(board)
    used = min(int(header["slots_used"]), board.capacity)
    rows = []
    torn = 0
    for slot in range(used):
        row, ok = read_row(board, slot)
        rows.append(row)
        torn += not ok
    return BoardView(header, rows, time.monotonic_ns(), torn)


def worker_status(
    row: dict[str, Any],
    now_ns: int,
    wall_now: float,
    heartbeat_timeout_ns: int,
) -> dict[str, Any]:
    """One worker as it appears in `status --json` (CONTRACT), from a raw board row."""
    verdict = worker_verdict(row, now_ns, heartbeat_timeout_ns)
    beats = row["beats"]
    started = row["started_ns"]
    task = row["task_id"]
    exit_code = row["last_exit_code"]
    return {
        "slot": row["slot"],
        "pid": row["pid"] or None,
        "state": worker_state_label(row["state"]),
        "healthy": verdict.healthy,
        "reason": verdict.reason or None,
        "heartbeat_age_s": round((now_ns - row["heartbeat_ns"]) / 1e9, 3) if beats else None,
        "beats": beats,
        "progress": progress_value(row["progress"]),
        "tasks_done": row["tasks_done"],
        "tasks_failed": row["tasks_failed"],
        "restarts": row["restarts"],
        "last_exit_code": None if exit_code == layout.NO_EXIT_CODE else exit_code,
        "last_exit": None if exit_code == layout.NO_EXIT_CODE else describe_exit(exit_code),
        "started_at": iso_from_monotonic(started, now_ns, wall_now) if started else None,
        "generation": row["generation"],
        "task": None if task == layout.NO_TASK else task,
        "task_age_s": None if task == layout.NO_TASK else round((now_ns - row["task_started_ns"]) / 1e9, 3),
        "rss_bytes": row["rss_bytes"] or None,  # the worker's tree: it and its descendants
        "rss_self_bytes": row["rss_self_bytes"] or None,  # the worker process alone
        "recycled": row["recycled"],
    }


def iso_from_monotonic(mono_ns: int, now_ns: int, wall_now: float) -> str:
    return iso(wall_now - (now_ns - mono_ns) / 1e9)


def iso(wall: float) -> str:
    """Local ISO-8601 with offset and milliseconds (time.strftime: datetime costs ~3 ms to import)."""
    local = time.localtime(wall)
    offset = local.tm_gmtoff
    sign = "+" if offset >= 0 else "-"
    hours, minutes = divmod(abs(offset) // 60, 60)
    millis = int(wall % 1 * 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', local)}.{millis:03d}{sign}{hours:02d}:{minutes:02d}"
