"""Seqlocked rows are never read torn, by either reader, while another process rewrites them.

A writer process rewrites several rows as fast as it can. Every lifecycle field
it stores is a known function of one counter k, and so is the task region
(task id k started at 5k after k finished tasks, every third one failed). A
reader process reads the rows >= 200,000 times through both readers (the stdlib
one the CLI uses, and the numpy snapshot) and counts rows whose fields are not
all functions of the same k. The single-word fields (heartbeat, beats, progress)
are outside the seqlocks by design and are not checked against the others.

A negative control runs the same reader against a writer that skips the
sequence counters: it must find torn rows, or this test could not fail.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from statusboard import layout
from statusboard.board import Board
from statusboard.layout import H, R
from statusboard.reader import BoardReader
from statusboard.rows import read_board, read_row
from statusboard.states import PoolState

SLOTS = 8
STOP_WORD = H["reserved_15"]  # this test's own stop flag for the writer; unused by the product
MIN_DISTINCT_K = 1000  # different k a reader must see: proof the writer wrote while it read

# The relation between k and every field, shared by writer and reader (exec'd in both).
_RELATION = """
def lifecycle(k):
    return {"pid": k, "pid_start_ticks": k * 2, "state": k % 9, "generation": k * 3,
            "started_ns": k * 7, "restarts": k + 1, "last_exit_code": -k, "rss_bytes": k * 11,
            "recycled": k * 13, "stop_requested": k & 1}
"""

_WRITER = (
    _RELATION
    + """
import sys
from pathlib import Path
from statusboard import layout
from statusboard.board import Board, WorkerRow
from statusboard.layout import R

path, slots, mode, stop = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
board = Board.open(path, writable=True)
w = board.words
rows = [WorkerRow(board, s) for s in range(slots)]
bases = [layout.HEADER_WORDS + s * layout.ROW_WORDS for s in range(slots)]
TASK, TSTART, DONE, FAILED = R["task_id"], R["task_started_ns"], R["tasks_done"], R["tasks_failed"]
offsets = [R[name] for name in lifecycle(0)]

for s in range(slots):
    board.set_lifecycle(s, **lifecycle(0))
print("ready", flush=True)
k = 0
while not w[stop]:
    k += 1
    ok = k % 3 != 0
    if mode == "seqlock":
        fields = lifecycle(k)
        for s in range(slots):
            board.set_lifecycle(s, **fields)
            row = rows[s]
            row.finish_task(ok)
            row.start_task(k, k * 5)
            row.beat(k)
    else:  # "raw": the same stores without the sequence counters (negative control)
        values = list(lifecycle(k).values())
        for base in bases:
            for offset, value in zip(offsets, values):
                w[base + offset] = value
            w[base + TASK] = layout.NO_TASK
            w[base + TSTART] = 0
            w[base + (DONE if ok else FAILED)] += 1
            w[base + TASK] = k
            w[base + TSTART] = k * 5
print(k, flush=True)
"""
)

_READER = (
    _RELATION
    + """
import json, sys, time
from pathlib import Path
import numpy as np
from statusboard import layout
from statusboard.board import Board
from statusboard.reader import BoardReader
from statusboard.rows import read_board, read_row

path, slots, target, limit_s = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
min_distinct = int(sys.argv[5])  # read on until this many different k were seen: the writer ran meanwhile
reader = BoardReader(Board.open(path), None)
board = reader.board
NO_TASK = layout.NO_TASK
NAMES = list(lifecycle(0))


def task_ok(task, started, done, failed):
    n = done + failed
    if task == NO_TASK:
        return started == 0 and failed == n // 3
    return started == task * 5 and n == task and failed == task // 3


def new_stats():
    return {"rows": 0, "bad_lifecycle": 0, "bad_task": 0, "flagged": 0, "regressions": 0,
            "ks": set(), "examples": []}


stdlib, numpy_ = new_stats(), new_stats()
last_std = [-1] * slots
last_np = np.full(slots, -1, dtype=np.int64)


def check_dict(row, consistent):
    st = stdlib
    st["rows"] += 1
    st["flagged"] += not consistent
    k = row["pid"]
    st["ks"].add(k)
    if k < last_std[row["slot"]]:
        st["regressions"] += 1
    last_std[row["slot"]] = k
    want = lifecycle(k)
    bad_lifecycle = any(row[name] != want[name] for name in NAMES)
    bad_task = not task_ok(row["task_id"], row["task_started_ns"], row["tasks_done"], row["tasks_failed"])
    st["bad_lifecycle"] += bad_lifecycle
    st["bad_task"] += bad_task
    if (bad_lifecycle or bad_task) and len(st["examples"]) < 5:
        # Odd sup_seq/wk_seq here: the reader gave up and said so; even: a silent tear.
        st["examples"].append(dict(row, consistent=consistent))


def check_snapshots(snaps):
    # A batch at once: numpy's per-call overhead would dominate per snapshot.
    global last_np
    st = numpy_
    rows = np.stack([snap.rows for snap in snaps])  # (snapshots, slots)
    st["rows"] += rows.size
    st["flagged"] += sum(snap.torn_rows for snap in snaps)
    k = rows["pid"]
    st["ks"].update(np.unique(k).tolist())
    order = np.concatenate([last_np[None, :], k])
    st["regressions"] += int(np.count_nonzero(np.diff(order, axis=0) < 0))
    last_np = k[-1].copy()
    want = lifecycle(k)
    bad = np.zeros(k.shape, dtype=bool)
    for name in NAMES:
        bad |= rows[name] != want[name]
    task, started = rows["task_id"], rows["task_started_ns"]
    done, failed = rows["tasks_done"], rows["tasks_failed"]
    n = done + failed
    idle = task == NO_TASK
    bad_task = np.where(
        idle,
        (started != 0) | (failed != n // 3),
        (started != task * 5) | (n != task) | (failed != task // 3),
    )
    st["bad_lifecycle"] += int(np.count_nonzero(bad))
    st["bad_task"] += int(np.count_nonzero(bad_task))
    flat = rows.reshape(-1)
    for i in np.flatnonzero((bad | bad_task).reshape(-1))[: 5 - len(st["examples"])].tolist():
        st["examples"].append(dict(zip(flat.dtype.names, flat[i].tolist())))


def more(st):
    return st["rows"] < target or len(st["ks"]) < min_distinct


print("reading", flush=True)
deadline = time.monotonic() + limit_s  # a bound for the wait, generous: not a pass mark
while (more(stdlib) or more(numpy_)) and time.monotonic() < deadline:
    if more(stdlib):
        for _ in range(10):
            view = read_board(board)  # counts torn rows without saying which
            stdlib["flagged"] += view.torn_rows
            for row in view.rows:
                check_dict(row, True)
            for slot in range(slots):
                check_dict(*read_row(board, slot))
    if more(numpy_):
        check_snapshots([reader.snapshot() for _ in range(20)])

for st in (stdlib, numpy_):
    st["distinct_k"] = len(st["ks"])
    st["max_k"] = max(st["ks"])
    del st["ks"]
print(json.dumps({"stdlib": stdlib, "numpy": numpy_}, default=str), flush=True)
"""
)


def _run(
    board: Board,
    mode: str,
    target: int,
    limit_s: float,
    spawn,
    read_line: Callable[..., str],
    min_distinct: int = MIN_DISTINCT_K,
) -> tuple[dict, int]:
    """Each read path reads ``target`` rows and sees ``min_distinct`` different k (or runs out
    of ``limit_s``, which the caller's assertions then show)."""
    board.words[STOP_WORD] = 0
    writer = spawn.python(_WRITER, board.path, SLOTS, mode, STOP_WORD)
    assert read_line(writer, timeout=30) == "ready"
    reader = spawn.python(_READER, board.path, SLOTS, target, limit_s, min_distinct)
    out, err = reader.communicate(timeout=limit_s + 60)
    assert reader.returncode == 0, err.decode()
    board.words[STOP_WORD] = 1
    final_k = int(read_line(writer, timeout=30))
    assert writer.wait(timeout=30) == 0
    lines = out.decode().splitlines()
    assert lines[0] == "reading"
    return json.loads(lines[-1]), final_k


@pytest.fixture
def busy_board(shm_segment: Callable[..., Board]) -> Board:
    board = shm_segment("torn", capacity=SLOTS)
    board.set_header(pool_state=int(PoolState.RUNNING), slots_used=SLOTS, workers_desired=SLOTS)
    return board


@pytest.mark.timeout(400)
def test_no_torn_rows_under_a_concurrent_writer(busy_board: Board, spawn, read_line) -> None:
    stats, final_k = _run(busy_board, "seqlock", 100_000, 300.0, spawn, read_line)
    for path in ("stdlib", "numpy"):
        st = stats[path]
        assert st["rows"] >= 100_000, (path, st)
        assert st["bad_lifecycle"] == 0, (path, st["examples"])
        assert st["bad_task"] == 0, (path, st["examples"])
        assert st["flagged"] == 0, (path, st)
        assert st["regressions"] == 0, (path, st)  # k never goes backwards for a later read
        # The writer really ran while we read: many different k values were seen,
        # all of them ones the writer had written by the time it stopped.
        assert st["distinct_k"] >= MIN_DISTINCT_K, (path, st)
        assert st["max_k"] <= final_k


@pytest.mark.timeout(300)
def test_the_check_detects_tearing_without_the_seqlock(busy_board: Board, spawn, read_line) -> None:
    """Negative control: the same reader against a writer that skips the counters."""
    stats, _ = _run(busy_board, "raw", 20_000, 200.0, spawn, read_line)
    torn = sum(stats[p]["bad_lifecycle"] + stats[p]["bad_task"] for p in ("stdlib", "numpy"))
    assert torn > 0, stats


# -- a writer that died mid-update ------------------------------------------------------


@pytest.mark.parametrize("counter", ["sup_seq", "wk_seq"])
def test_a_counter_stuck_odd_is_reported_torn(counter: str, busy_board: Board) -> None:
    board = busy_board
    board.set_lifecycle(1, pid=77)
    base = layout.row_offset(1) // 8
    board.words[base + R[counter]] += 1  # a writer SIGKILLed between its two increments

    row, consistent = read_row(board, 1)
    assert consistent is False
    assert row["pid"] == 77 and row["slot"] == 1  # returned as read, not dropped
    assert read_row(board, 0)[1] is True
    assert read_board(board).torn_rows == 1
    with BoardReader(Board.open(board.path), None) as reader:
        snap = reader.snapshot()
        assert snap.torn_rows == 1
        assert snap.rows["pid"][1] == 77

    board.words[base + R[counter]] += 1  # the next owner's write completes the pair
    assert read_row(board, 1)[1] is True
    assert read_board(board).torn_rows == 0


def test_reset_repairs_a_row_whose_worker_died_mid_update(busy_board: Board) -> None:
    """A worker SIGKILLed inside start_task leaves wk_seq odd; the supervisor's reset
    for the next worker must leave the row consistent, not torn forever."""
    board = busy_board
    base = layout.row_offset(2) // 8
    board.words[base + R["wk_seq"]] += 1  # the dead worker's first increment, never the second
    board.words[base + R["task_id"]] = 5
    assert read_row(board, 2)[1] is False

    board.reset_worker_region(2)
    row, consistent = read_row(board, 2)
    assert consistent is True
    assert (row["task_id"], row["task_started_ns"], row["beats"]) == (layout.NO_TASK, 0, 0)
    assert board.word(2, "wk_seq") % 2 == 0
    # ... and it stays consistent through the new worker's own updates.
    from statusboard.board import WorkerRow

    WorkerRow(board, 2).start_task(6, 60)
    assert read_row(board, 2)[1] is True
    with BoardReader(Board.open(board.path), None) as reader:
        assert reader.snapshot().torn_rows == 0


def test_a_reader_waits_out_a_writer_paused_mid_update(busy_board: Board, spawn, read_line) -> None:
    """A writer preempted between its two increments is not a torn row: the reader waits.

    The writer here pauses mid-update for ~20 ms (far longer than the tight spin a
    reader first tries), then completes; the reader must return the completed row.
    """
    code = """
import sys, time
from pathlib import Path
from statusboard import layout
from statusboard.board import Board
from statusboard.layout import R
board = Board.open(Path(sys.argv[1]), writable=True)
w = board.words
base = layout.row_offset(3) // 8
w[base + R["sup_seq"]] += 1
w[base + R["pid"]] = 1234
print("odd", flush=True)
deadline = time.monotonic() + 0.02
while time.monotonic() < deadline:
    pass
w[base + R["restarts"]] = 5
w[base + R["sup_seq"]] += 1
"""
    writer = spawn.python(code, busy_board.path)
    assert read_line(writer) == "odd"
    row, consistent = read_row(busy_board, 3)
    assert consistent is True
    assert (row["pid"], row["restarts"]) == (1234, 5)
    assert writer.wait(timeout=10) == 0


def test_header_fields_are_read_under_their_seqlock(busy_board: Board) -> None:
    board = busy_board
    board.set_header(workers_desired=9, generation=4)
    with BoardReader(Board.open(board.path), None) as reader:
        header = reader.snapshot().header
    assert (header["workers_desired"], header["generation"], header["slots_used"]) == (9, 4, SLOTS)
    assert board.header_word("header_seq") % 2 == 0
    assert header["magic"] == layout.MAGIC
