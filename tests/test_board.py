"""The board segment: life cycle, validation, attaching from other processes, what readers see."""

from __future__ import annotations

import json
import math
import os
import signal
import stat
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import statusboard
from statusboard import layout, liveness
from statusboard.board import SEGMENT_PREFIX, Board, WorkerRow, segment_path, shm_dir
from statusboard.errors import BoardClosed, BoardError, BoardLayoutError, BoardMissing
from statusboard.layout import H, R
from statusboard.reader import BoardReader
from statusboard.rows import read_board
from statusboard.states import PoolState, WorkerState

S = 1_000_000_000


def ours(pool: str) -> list[str]:
    """Names in the shm directory that belong to ``pool`` (any supervisor instance)."""
    prefix = f"{SEGMENT_PREFIX}{os.getuid()}-{pool}-"
    return [p.name for p in shm_dir().iterdir() if p.name.startswith(prefix)]


# -- create / open / close / unlink ---------------------------------------------------


def test_create_writes_header_and_fresh_rows(shm_segment: Callable[..., Board]) -> None:
    board = shm_segment("fresh", capacity=3, heartbeat_timeout_ns=7 * S, workers_desired=2)
    me, ticks = os.getpid(), liveness.start_ticks(os.getpid())
    assert board.path == segment_path("fresh", me, ticks)
    st = os.stat(board.path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_size == layout.board_bytes(3)

    header = struct.unpack_from(layout.HEADER_STRUCT_FORMAT, board.path.read_bytes())
    fields = dict(zip((n for n, _ in layout.HEADER_FIELDS), header, strict=True))
    assert fields["magic"] == layout.MAGIC
    assert fields["version"] == layout.VERSION
    assert fields["capacity"] == 3
    assert fields["row_bytes"] == layout.ROW_BYTES
    assert (fields["supervisor_pid"], fields["supervisor_start_ticks"]) == (me, ticks)
    assert fields["heartbeat_timeout_ns"] == 7 * S
    assert fields["workers_desired"] == 2
    assert 0 < fields["created_ns"] <= time.monotonic_ns()
    assert fields["supervisor_heartbeat_ns"] == fields["created_ns"]
    for slot in range(3):
        assert board.word(slot, "last_exit_code") == layout.NO_EXIT_CODE
        assert board.word(slot, "task_id") == layout.NO_TASK
        assert board.word(slot, "state") == WorkerState.EMPTY
        assert board.word(slot, "beats") == 0
        assert math.isnan(board.floats[(layout.row_offset(slot) // 8) + R["progress"]])


def test_create_refuses_an_existing_segment_and_bad_capacity(
    shm_segment: Callable[..., Board], tmp_path: Path
) -> None:
    board = shm_segment("twice")
    with pytest.raises(FileExistsError):
        Board.create(
            board.path,
            4,
            supervisor_pid=1,
            supervisor_start_ticks=1,
            heartbeat_timeout_ns=S,
            workers_desired=1,
        )
    with Board.open(board.path) as existing:  # untouched
        assert existing.header_word("supervisor_pid") == os.getpid()
    for capacity in (0, layout.MAX_CAPACITY + 1):
        with pytest.raises(ValueError, match="capacity"):
            Board.create(
                tmp_path / f"cap{capacity}",
                capacity,
                supervisor_pid=1,
                supervisor_start_ticks=1,
                heartbeat_timeout_ns=S,
                workers_desired=1,
            )
        assert not (tmp_path / f"cap{capacity}").exists()


def test_close_and_unlink_are_idempotent(shm_segment: Callable[..., Board]) -> None:
    board = shm_segment("idem")
    mapping = board.buffer
    reader = Board.open(board.path)
    board.close()
    board.close()
    assert board.closed
    assert mapping.closed, "close() must really unmap when no view is left"
    with pytest.raises(BoardClosed):
        _ = board.buffer
    board.unlink()
    board.unlink()
    assert not board.path.exists()
    # Another process's (here: another Board's) mapping survives both.
    assert reader.header_word("magic") == layout.MAGIC
    reader.close()
    with pytest.raises(BoardMissing):
        Board.open(board.path)


def test_close_with_a_reader_view_outstanding(shm_segment: Callable[..., Board]) -> None:
    board = shm_segment("views")
    reader = BoardReader(Board.open(board.path), None)
    view_board = reader.board
    view_board.close()  # numpy views still point into the mapping: close must not raise
    assert view_board.closed
    reader.close()
    reader.close()


def test_open_missing_segment(tmp_path: Path) -> None:
    path = tmp_path / "poolctl-nothing"
    with pytest.raises(BoardMissing, match=str(path)):
        Board.open(path)


def _valid_board_bytes(tmp_path: Path, capacity: int = 4) -> bytearray:
    path = tmp_path / "template"
    board = Board.create(
        path,
        capacity,
        supervisor_pid=os.getpid(),
        supervisor_start_ticks=1,
        heartbeat_timeout_ns=S,
        workers_desired=1,
    )
    board.close()
    data = bytearray(path.read_bytes())
    path.unlink()
    return data


def _set_word(data: bytearray, name: str, value: int) -> bytearray:
    struct.pack_into("<q", data, H[name] * 8, value)
    return data


BAD_SEGMENTS = {
    "wrong magic": (lambda d: _set_word(d, "magic", 0x1234), "wrong magic 0x1234"),
    "zero magic": (lambda d: _set_word(d, "magic", 0), "magic is zero"),
    "wrong version": (lambda d: _set_word(d, "version", 99), "layout version 99"),
    "wrong row size": (lambda d: _set_word(d, "row_bytes", 96), "row size 96"),
    "capacity out of range": (lambda d: _set_word(d, "capacity", 0), "capacity 0 out of range"),
    "truncated": (lambda d: d[: layout.board_bytes(2)], "does not match capacity 4"),
    "capacity larger than file": (lambda d: _set_word(d, "capacity", 8), "does not match capacity 8"),
    "trailing bytes": (lambda d: d + bytes(8), "does not match capacity 4"),
    "smaller than a header": (lambda d: d[:64], "64 bytes, smaller than a header"),
    "empty file": (lambda d: d[:0], "0 bytes, smaller than a header"),
}


@pytest.mark.parametrize("case", list(BAD_SEGMENTS))
def test_open_rejects_a_bad_segment(case: str, tmp_path: Path) -> None:
    mutate, message = BAD_SEGMENTS[case]
    path = tmp_path / "bad"
    path.write_bytes(bytes(mutate(_valid_board_bytes(tmp_path))))
    with pytest.raises(BoardLayoutError, match=message) as info:
        Board.open(path)
    assert str(path) in str(info.value)


def test_open_accepts_the_untouched_template(tmp_path: Path) -> None:
    # The control for the table above: the same bytes, unmutated, open fine.
    path = tmp_path / "good"
    path.write_bytes(bytes(_valid_board_bytes(tmp_path)))
    with Board.open(path) as board:
        assert board.capacity == 4


# -- other processes ---------------------------------------------------------------

_ATTACH_AND_READ = """
import json, sys, statusboard
reader = statusboard.attach(sys.argv[1])
snap = reader.snapshot()
print(json.dumps({"pool_state": snap.pool_state, "workers": snap.workers(),
                  "healthy": reader.healthy(), "torn": snap.torn_rows}), flush=True)
reader.close()
"""

_ATTACH_AND_HOLD = """
import sys, statusboard
reader = statusboard.attach(sys.argv[1])
snap = reader.snapshot()
print("attached", len(snap.workers()), flush=True)
sys.stdin.read()
"""


def _live_pool(
    shm_segment: Callable[..., Board],
    runtime_dir: Path,
    write_runtime: Callable[..., dict],
    make_running: Callable[..., None],
    pool: str,
) -> Board:
    board = shm_segment(pool, capacity=4, heartbeat_timeout_ns=30 * S)
    make_running(board, 2)
    write_runtime(runtime_dir, board, pool=pool)
    (runtime_dir / liveness.LOCK_NAME).touch(mode=0o600)
    return board


def _creator_still_owns(board: Board) -> None:
    assert board.path.exists()
    board.set_lifecycle(1, restarts=41)
    WorkerRow(board, 1).beat(time.monotonic_ns(), progress=0.25)
    with Board.open(board.path) as again:
        assert again.word(1, "restarts") == 41
        assert again.floats[layout.row_offset(1) // 8 + R["progress"]] == 0.25
    assert board.word(1, "restarts") == 41


def test_second_process_attaches_reads_and_exits(
    shm_segment: Callable[..., Board],
    runtime_dir: Path,
    write_runtime: Callable[..., dict],
    make_running: Callable[..., None],
    lock_holder: Callable,
    spawn,
) -> None:
    board = _live_pool(shm_segment, runtime_dir, write_runtime, make_running, "attach-read")
    lock_holder(runtime_dir)
    proc = spawn.python(_ATTACH_AND_READ, runtime_dir)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    seen = json.loads(out)
    assert seen["pool_state"] == "running"
    assert seen["healthy"] is True
    assert seen["torn"] == 0
    assert [(w["slot"], w["pid"], w["state"]) for w in seen["workers"]] == [
        (0, 10_000, "running"),
        (1, 10_001, "running"),
    ]
    _creator_still_owns(board)
    board.unlink()
    assert ours("attach-read") == []


def test_second_process_sigkilled_while_attached(
    shm_segment: Callable[..., Board],
    runtime_dir: Path,
    write_runtime: Callable[..., dict],
    make_running: Callable[..., None],
    spawn,
    read_line: Callable[..., str],
) -> None:
    board = _live_pool(shm_segment, runtime_dir, write_runtime, make_running, "attach-kill")
    proc = spawn.python(_ATTACH_AND_HOLD, runtime_dir)
    assert read_line(proc) == "attached 2"
    maps = Path(f"/proc/{proc.pid}/maps").read_text()
    assert str(board.path) in maps, "the reader should have the segment mapped when it is killed"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    _creator_still_owns(board)
    with statusboard.attach(runtime_dir) as reader:  # and a new reader still attaches
        assert reader.snapshot().workers()[1]["restarts"] == 41
    board.unlink()
    assert not board.path.exists()
    assert ours("attach-kill") == []


def test_attach_refuses_another_supervisors_board(
    shm_segment: Callable[..., Board], runtime_dir: Path, write_runtime: Callable[..., dict]
) -> None:
    board = shm_segment("other")
    write_runtime(
        runtime_dir, board, pid=os.getpid(), start_ticks=board.header_word("supervisor_start_ticks") + 1
    )
    with pytest.raises(BoardError, match=f"runtime.json names pid {os.getpid()}"):
        statusboard.attach(runtime_dir)


def test_attach_without_a_board(
    shm_segment: Callable[..., Board], runtime_dir: Path, write_runtime: Callable[..., dict]
) -> None:
    write_runtime(runtime_dir, None, pool="boardless", state="stopped")
    with pytest.raises(BoardMissing, match="'boardless' has no board"):
        statusboard.attach(runtime_dir)
    board = shm_segment("gone")
    write_runtime(runtime_dir, board)
    board.unlink()
    with pytest.raises(BoardMissing, match="does not exist"):
        statusboard.attach(runtime_dir)


# -- what the reader sees ------------------------------------------------------------


def test_worker_stores_are_visible_in_snapshot(shm_segment: Callable[..., Board]) -> None:
    board = shm_segment("visible", capacity=4, heartbeat_timeout_ns=5 * S)
    now = time.monotonic_ns()
    board.set_header(pool_state=int(PoolState.RUNNING), slots_used=3, workers_desired=3)
    board.set_lifecycle(0, pid=4121, state=int(WorkerState.RUNNING), started_ns=now - 60 * S, restarts=2)
    board.set_lifecycle(1, pid=4122, state=int(WorkerState.BACKOFF), last_exit_code=-9, restarts=5)
    # slot 2 stays EMPTY: not listed

    row = WorkerRow(board, 0)
    for _ in range(3):
        row.beat(now - S // 4, progress=0.5)
    row.start_task(7, now - 9 * S)
    row.finish_task(ok=True)
    row.start_task(8, now - 9 * S)
    row.finish_task(ok=False)
    row.start_task(42, now - 2 * S)

    with BoardReader(Board.open(board.path), None) as reader:
        snap = reader.snapshot()
        workers = snap.workers()
        # Ages are "now" minus the stored stamp: now is between ``now`` and this moment, so each
        # age lies in [stamp age at ``now``, that + the time this took] (rounded to 1 ms).
        waited = (time.monotonic_ns() - now) / S + 0.001
        assert [w["slot"] for w in workers] == [0, 1]
        w0, w1 = workers
        assert w0["pid"] == 4121
        assert w0["state"] == "running"
        assert w0["healthy"] is True
        assert w0["beats"] == 3
        assert w0["progress"] == 0.5
        assert 0.25 - 0.001 <= w0["heartbeat_age_s"] <= 0.25 + waited
        assert w0["task"] == 42
        assert 2.0 - 0.001 <= w0["task_age_s"] <= 2.0 + waited
        assert (w0["tasks_done"], w0["tasks_failed"]) == (1, 1)
        assert w0["restarts"] == 2
        assert w0["last_exit_code"] is None
        assert w0["started_at"] is not None

        assert w1["state"] == "backoff"
        assert w1["healthy"] is False
        assert w1["last_exit_code"] == -9
        assert w1["last_exit"] == "signal SIGKILL"
        assert w1["beats"] == 0 and w1["heartbeat_age_s"] is None
        assert w1["task"] is None and w1["task_age_s"] is None
        assert w1["progress"] is None

        row.finish_task(ok=True)
        w0 = reader.snapshot().workers()[0]
        assert (w0["task"], w0["task_age_s"], w0["tasks_done"]) == (None, None, 2)

        # The stdlib reader (the CLI's path) sees exactly the same rows.
        snap = reader.snapshot()
        view = read_board(board)
        assert view.torn_rows == 0
        assert _same_rows(view.rows, snap.raw_rows())


def _same_rows(a: list[dict], b: list[dict]) -> bool:
    # NaN != NaN: compare progress separately.
    def norm(rows: list[dict]) -> list[dict]:
        return [
            {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows
        ]

    return norm(a) == norm(b)


def test_heartbeat_uses_the_clock_and_counts(shm_segment: Callable[..., Board]) -> None:
    board = shm_segment("hb")
    row = WorkerRow(board, 1)
    before = time.monotonic_ns()
    row.heartbeat()
    row.heartbeat(progress=3.0)
    after = time.monotonic_ns()
    assert before <= board.word(1, "heartbeat_ns") <= after
    assert board.word(1, "beats") == 2
    assert board.floats[layout.row_offset(1) // 8 + R["progress"]] == 3.0
    assert board.word(0, "beats") == 0  # a worker writes only its own row


def test_stop_requested_and_reset_worker_region(shm_segment: Callable[..., Board]) -> None:
    board = shm_segment("reset")
    row = WorkerRow(board, 0)
    assert row.stop_requested is False
    board.set_lifecycle(0, stop_requested=1)
    assert row.stop_requested is True
    row.beat(123, progress=1.0)
    row.start_task(5, 99)
    board.reset_worker_region(0)
    assert (board.word(0, "task_id"), board.word(0, "task_started_ns")) == (layout.NO_TASK, 0)
    assert (board.word(0, "heartbeat_ns"), board.word(0, "beats")) == (0, 0)
    assert math.isnan(board.floats[layout.row_offset(0) // 8 + R["progress"]])
    assert board.word(0, "wk_seq") % 2 == 0


# -- healthy() -------------------------------------------------------------------------

HB_TIMEOUT = 2 * S


def _ago(seconds: float) -> int:
    return time.monotonic_ns() - int(seconds * S)


UNHEALTHY = {
    "stale supervisor heartbeat": lambda b: b.supervisor_beat(_ago(10)),
    "a worker not running": lambda b: b.set_lifecycle(1, state=int(WorkerState.BACKOFF)),
    "a worker hung": lambda b: b.set_lifecycle(0, state=int(WorkerState.HUNG)),
    "an old worker heartbeat": lambda b: WorkerRow(b, 1).beat(_ago(60)),
    "pool stopping": lambda b: b.set_header(pool_state=int(PoolState.STOPPING)),
    "pool starting": lambda b: b.set_header(pool_state=int(PoolState.STARTING)),
    "fewer slots than desired": lambda b: b.set_header(workers_desired=3),
    "empty slot leaves too few running": lambda b: (
        b.set_header(workers_desired=2),
        b.set_lifecycle(1, state=int(WorkerState.EMPTY)),
    ),
}


@pytest.fixture
def healthy_pool(
    shm_segment: Callable[..., Board],
    runtime_dir: Path,
    write_runtime: Callable[..., dict],
    make_running: Callable[..., None],
    lock_holder: Callable,
) -> tuple[Board, Path]:
    board = shm_segment(capacity=4, heartbeat_timeout_ns=HB_TIMEOUT)
    make_running(board, 2)
    write_runtime(runtime_dir, board)
    lock_holder(runtime_dir)
    return board, runtime_dir


def test_healthy_when_everything_is_fine(healthy_pool: tuple[Board, Path]) -> None:
    board, directory = healthy_pool
    with statusboard.attach(directory) as reader:
        assert reader.supervisor_lock_held() is True
        assert reader.healthy() is True
        # A retired (EMPTY) slot below slots_used is fine while enough others run.
        board.set_header(slots_used=3)
        board.set_lifecycle(2, pid=10_002, state=int(WorkerState.RUNNING))
        WorkerRow(board, 2).beat(time.monotonic_ns())
        board.set_lifecycle(1, state=int(WorkerState.EMPTY))
        assert reader.healthy() is True


@pytest.mark.parametrize("case", list(UNHEALTHY))
def test_unhealthy(case: str, healthy_pool: tuple[Board, Path]) -> None:
    board, directory = healthy_pool
    with statusboard.attach(directory) as reader:
        assert reader.healthy() is True  # the control
        UNHEALTHY[case](board)
        assert reader.healthy() is False


def test_unhealthy_when_the_lock_is_not_held(
    shm_segment: Callable[..., Board],
    runtime_dir: Path,
    write_runtime: Callable[..., dict],
    make_running: Callable[..., None],
    lock_holder: Callable,
) -> None:
    board = shm_segment(capacity=2, heartbeat_timeout_ns=HB_TIMEOUT)
    make_running(board, 2)
    write_runtime(runtime_dir, board)
    # No lock file at all: nobody can hold it.
    with statusboard.attach(runtime_dir) as reader:
        assert reader.supervisor_lock_held() is False
        assert reader.healthy() is False
    holder = lock_holder(runtime_dir)
    with statusboard.attach(runtime_dir) as reader:
        assert reader.healthy() is True
        holder.release()  # the supervisor is gone: the same reader notices
        assert reader.supervisor_lock_held() is False
        assert reader.healthy() is False


def test_supervisor_timeout_is_the_readers_choice(healthy_pool: tuple[Board, Path]) -> None:
    board, directory = healthy_pool
    board.supervisor_beat(_ago(3))
    with statusboard.attach(directory, supervisor_timeout_s=5.0) as reader:
        assert reader.healthy() is True
    with statusboard.attach(directory, supervisor_timeout_s=1.0) as reader:
        assert reader.healthy() is False


@pytest.mark.parametrize("case", ["healthy", "one_hung", "one_starting", "one_short", "stopping"])
def test_snapshot_verdict_agrees_with_the_dict_verdict(
    shm_segment: Callable[..., Board], make_running: Callable[..., None], case: str
) -> None:
    """Snapshot.verdict() (numpy columns) must say what health.pool_verdict says over dicts."""
    from statusboard.health import pool_verdict

    board = shm_segment(capacity=8, heartbeat_timeout_ns=1_000_000_000)
    make_running(board, 4)
    now = time.monotonic_ns()
    if case == "one_hung":
        WorkerRow(board, 2).beat(now - 5_000_000_000)
    elif case == "one_starting":
        board.set_lifecycle(1, state=WorkerState.STARTING)
    elif case == "one_short":
        board.set_header(workers_desired=5)
    elif case == "stopping":
        board.set_header(pool_state=PoolState.STOPPING)
    with BoardReader(Board.open(board.path), None) as reader:
        snap = reader.snapshot()
        fast = snap.verdict()
        slow = pool_verdict(
            snap.raw_rows(),
            workers_desired=int(snap.header["workers_desired"]),
            pool_state=snap.pool_state,
            now_ns=snap.now_ns,
            heartbeat_timeout_ns=int(snap.header["heartbeat_timeout_ns"]),
        )
    assert (fast.state, fast.code) == (slow.state, slow.code)
    assert (fast.state == "running") == (case == "healthy")
    if case == "one_hung":
        assert "worker 2" in fast.reason and "no heartbeat" in fast.reason
    if case == "one_starting":
        assert "worker 1" in fast.reason and "starting" in fast.reason
