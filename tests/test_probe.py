"""The status probe: verified liveness first, then the live board, else the runtime file.

The test process plays the supervisor when a live one is needed (its pid and start
ticks are real), a helper process holds supervisor.lock as a live supervisor does.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cli_targets import STATUS_KEYS, STATUS_SUPERVISOR_KEYS, STATUS_WORKER_KEYS

from statusboard import liveness
from statusboard.board import Board, WorkerRow
from statusboard.health import StatusCode
from statusboard.probe import probe
from statusboard.states import PoolState, WorkerState

S = 1_000_000_000


def check_shape(document: dict[str, Any]) -> None:
    """The `status --json` contract: every key present, JSON-serialisable, ISO times."""
    assert set(document) >= STATUS_KEYS, STATUS_KEYS - set(document)
    json.dumps(document)  # plain Python values only (no numpy scalars, no NaN surprises)
    datetime.fromisoformat(document["checked_at"])
    if document["supervisor"] is not None:
        assert set(document["supervisor"]) >= STATUS_SUPERVISOR_KEYS, document["supervisor"]


def run(directory: Path, pool: str = "test", **kwargs: Any) -> tuple[int, dict[str, Any]]:
    report = probe(directory, pool, **kwargs)
    check_shape(report.document)
    return int(report.code), report.document


# -- no pool, unreadable pool ---------------------------------------------------------------


def test_no_runtime_directory(tmp_path: Path) -> None:
    code, doc = run(tmp_path / "never", pool="ghost")
    assert code == StatusCode.NOT_RUNNING == 3
    assert (doc["pool"], doc["state"], doc["source"]) == ("ghost", "stopped", "none")
    assert "no runtime directory" in doc["reason"]
    assert doc["supervisor"] is None and doc["workers"] == [] and doc["flushed_at"] is None


def test_no_runtime_file(runtime_dir: Path) -> None:
    code, doc = run(runtime_dir)
    assert code == 3
    assert (doc["state"], doc["source"]) == ("stopped", "none")
    assert "no runtime.json" in doc["reason"]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "is empty"),
        (b'{"schema": 1, "pool": "te', "truncated or not JSON"),
        (b"\x00\x01\x02garbage", "not JSON"),
        (b'{"schema": 99}', "schema 99"),
        (b'{"schema": 1, "pool": "test"}', "missing key"),
    ],
    ids=["empty", "truncated", "garbage", "unknown-schema", "missing-keys"],
)
def test_unreadable_runtime_file_is_unknown(runtime_dir: Path, raw: bytes, fragment: str) -> None:
    (runtime_dir / "runtime.json").write_bytes(raw)
    code, doc = run(runtime_dir)
    assert code == StatusCode.UNKNOWN == 4
    assert doc["state"] == "unknown"
    assert fragment in doc["reason"]


def test_unsafe_runtime_directory_is_unknown(runtime_dir: Path) -> None:
    os.chmod(runtime_dir, 0o777)
    code, doc = run(runtime_dir)
    assert code == 4
    assert "writable by group or others" in doc["reason"]


# -- what the file says ----------------------------------------------------------------------


def test_stopped(runtime_dir: Path, write_runtime: Callable[..., dict]) -> None:
    workers = [{"slot": 0, "pid": None, "state": "stopped"}]
    write_runtime(
        runtime_dir,
        None,
        state="stopped",
        workers=workers,
        target="app:work",
        flushed_at="2026-11-24T15:00:00.000+00:00",
        reason="stopped by request",
    )
    code, doc = run(runtime_dir)
    assert code == 3
    assert (doc["state"], doc["source"], doc["reason"]) == ("stopped", "file", "stopped by request")
    assert doc["target"] == "app:work"
    assert doc["workers"] == workers
    assert doc["flushed_at"] == "2026-11-24T15:00:00.000+00:00"
    assert doc["supervisor"]["alive"] is False


def test_stop_failed_with_a_live_survivor_then_dead(
    runtime_dir: Path, write_runtime: Callable[..., dict], spawn
) -> None:
    survivor = spawn.python("import sys; sys.stdin.read()")
    ticks = liveness.start_ticks(survivor.pid)
    assert ticks is not None
    write_runtime(
        runtime_dir, None, state="stop_failed", survivors=[{"pid": survivor.pid, "start_ticks": ticks}]
    )
    code, doc = run(runtime_dir)
    assert code == StatusCode.STALE == 1
    assert (doc["state"], doc["source"]) == ("stop_failed", "file")
    assert f"pid {survivor.pid}" in doc["reason"]

    survivor.kill()
    survivor.wait(timeout=10)
    code, doc = run(runtime_dir)
    assert code == 3
    assert doc["state"] == "stopped"
    assert "survivors are gone" in doc["reason"]


def test_stop_failed_whose_survivor_pid_was_reused(
    runtime_dir: Path, write_runtime: Callable[..., dict], spawn
) -> None:
    other = spawn.python("import sys; sys.stdin.read()")
    ticks = liveness.start_ticks(other.pid)
    assert ticks is not None
    write_runtime(
        runtime_dir, None, state="stop_failed", survivors=[{"pid": other.pid, "start_ticks": ticks - 1}]
    )
    code, doc = run(runtime_dir)
    assert (code, doc["state"]) == (3, "stopped")


# -- running, but is it? ---------------------------------------------------------------------------


def test_running_but_the_supervisor_is_dead(
    runtime_dir: Path, write_runtime: Callable[..., dict], spawn
) -> None:
    dead = spawn.python("pass")
    ticks = liveness.start_ticks(dead.pid) or 1
    assert dead.wait(timeout=30) == 0  # exited and reaped: the pid is gone
    write_runtime(
        runtime_dir, None, pid=dead.pid, start_ticks=ticks, flushed_at="2026-11-24T15:00:00.000+00:00"
    )
    code, doc = run(runtime_dir)
    assert code == StatusCode.STALE == 1
    assert (doc["state"], doc["source"]) == ("stale", "file")
    assert f"supervisor pid {dead.pid} is gone" in doc["reason"]
    assert "as last flushed at 2026-11-24T15:00:00.000+00:00" in doc["reason"]
    assert doc["supervisor"]["alive"] is False


def test_running_but_the_pid_was_reused(
    runtime_dir: Path, write_runtime: Callable[..., dict], lock_holder: Callable
) -> None:
    lock_holder(runtime_dir)  # even with the lock held: the identity is wrong
    me = os.getpid()
    write_runtime(runtime_dir, None, pid=me, start_ticks=(liveness.start_ticks(me) or 0) + 1)
    code, doc = run(runtime_dir)
    assert (code, doc["state"]) == (1, "stale")
    assert "is now a different process" in doc["reason"]


@pytest.fixture
def live_pool(
    shm_segment: Callable[..., Board],
    runtime_dir: Path,
    write_runtime: Callable[..., dict],
    make_running: Callable[..., None],
) -> Board:
    """This process as supervisor of a running 3-worker pool, runtime.json written; no lock yet."""
    board = shm_segment(capacity=4, heartbeat_timeout_ns=10 * S)
    make_running(board, 3)
    write_runtime(
        runtime_dir,
        board,
        pool="live",
        target="app:work",
        workers_desired=3,
        supervisor={"started_at": "2026-11-24T14:00:00.000+00:00", "started_wall": time.time() - 12.5},
        flushed_at="2026-11-24T15:00:00.000+00:00",
        workers=[{"slot": 0, "state": "running", "from": "file"}],
    )
    return board


def test_running_but_the_lock_is_not_held(runtime_dir: Path, live_pool: Board) -> None:
    (runtime_dir / liveness.LOCK_NAME).touch(mode=0o600)
    code, doc = run(runtime_dir)
    assert (code, doc["state"], doc["source"]) == (1, "stale", "file")
    assert "does not hold supervisor.lock" in doc["reason"]
    assert doc["workers"] == [{"slot": 0, "state": "running", "from": "file"}]  # the last flush
    assert doc["supervisor"] == {
        "pid": os.getpid(),
        "alive": False,
        "started_at": "2026-11-24T14:00:00.000+00:00",
        "uptime_s": None,
    }
    assert doc["flushed_at"] == "2026-11-24T15:00:00.000+00:00"


def test_running_and_verified_live(runtime_dir: Path, live_pool: Board, lock_holder: Callable) -> None:
    lock_holder(runtime_dir)
    row = WorkerRow(live_pool, 1)
    stamped = time.monotonic_ns()
    row.start_task(99, stamped - 3 * S)
    row.beat(stamped, progress=0.5)

    code, doc = run(runtime_dir, pool="live")
    # Ages are bracketed by what this test saw, not by a guess at how fast it runs: each lies
    # between its stamp's age when stamped and that plus the time since (rounded to 1 ms).
    waited = (time.monotonic_ns() - stamped) / S + 0.001
    started_wall = json.loads((runtime_dir / "runtime.json").read_text())["supervisor"]["started_wall"]
    assert code == StatusCode.RUNNING == 0
    assert (doc["pool"], doc["state"], doc["source"], doc["reason"]) == ("live", "running", "shm", None)
    assert doc["target"] == "app:work"
    assert doc["workers_desired"] == 3
    sup = doc["supervisor"]
    assert sup["pid"] == os.getpid()
    assert sup["alive"] is True
    assert sup["started_at"] == "2026-11-24T14:00:00.000+00:00"
    assert 12.5 - 0.001 <= sup["uptime_s"] <= time.time() - started_wall + 0.001
    assert len(doc["workers"]) == 3
    for slot, worker in enumerate(doc["workers"]):
        assert set(worker) >= STATUS_WORKER_KEYS, STATUS_WORKER_KEYS - set(worker)
        assert (worker["slot"], worker["pid"], worker["state"], worker["healthy"]) == (
            slot,
            10_000 + slot,
            "running",
            True,
        )
        assert worker["heartbeat_age_s"] >= 0  # fresh: healthy above says so
        datetime.fromisoformat(worker["started_at"])
    w1 = doc["workers"][1]
    assert (w1["task"], w1["beats"], w1["progress"]) == (99, 2, 0.5)
    assert 3.0 - 0.001 <= w1["task_age_s"] <= 3.0 + waited
    assert 0 <= w1["heartbeat_age_s"] <= waited
    w0 = doc["workers"][0]
    assert (w0["task"], w0["task_age_s"], w0["progress"], w0["last_exit_code"]) == (None, None, None, None)


def test_a_frozen_supervisor_is_stale(runtime_dir: Path, live_pool: Board, lock_holder: Callable) -> None:
    lock_holder(runtime_dir)
    live_pool.supervisor_beat(time.monotonic_ns() - 10 * S)
    code, doc = run(runtime_dir, supervisor_timeout_s=5.0)
    assert (code, doc["state"], doc["source"]) == (1, "stale", "file")
    assert "frozen" in doc["reason"]
    assert doc["supervisor"]["alive"] is False
    # A more patient reader calls the same board alive.
    code, doc = run(runtime_dir, supervisor_timeout_s=30.0)
    assert (code, doc["state"]) == (0, "running")


def test_one_worker_hung_is_degraded(runtime_dir: Path, live_pool: Board, lock_holder: Callable) -> None:
    lock_holder(runtime_dir)
    live_pool.set_lifecycle(2, state=int(WorkerState.HUNG))
    code, doc = run(runtime_dir)
    assert code == StatusCode.DEGRADED == 2
    assert (doc["state"], doc["source"]) == ("degraded", "shm")
    assert "worker 2: hung" in doc["reason"]
    assert doc["supervisor"]["alive"] is True
    assert [w["healthy"] for w in doc["workers"]] == [True, True, False]


def test_one_worker_silent_is_degraded(runtime_dir: Path, live_pool: Board, lock_holder: Callable) -> None:
    lock_holder(runtime_dir)
    WorkerRow(live_pool, 0).beat(time.monotonic_ns() - 60 * S)
    code, doc = run(runtime_dir)
    assert (code, doc["state"]) == (2, "degraded")
    assert "worker 0: no heartbeat" in doc["reason"]


def test_a_stopping_pool_is_degraded(runtime_dir: Path, live_pool: Board, lock_holder: Callable) -> None:
    lock_holder(runtime_dir)
    live_pool.set_header(pool_state=int(PoolState.STOPPING))
    code, doc = run(runtime_dir)
    assert (code, doc["state"], doc["reason"]) == (2, "degraded", "pool is stopping")


def test_running_but_the_board_is_gone(runtime_dir: Path, live_pool: Board, lock_holder: Callable) -> None:
    lock_holder(runtime_dir)
    live_pool.unlink()
    code, doc = run(runtime_dir)
    assert (code, doc["state"], doc["source"]) == (1, "stale", "file")
    assert "no readable board" in doc["reason"]
    assert "does not exist" in doc["reason"]


def test_a_board_of_another_supervisor_is_not_trusted(
    runtime_dir: Path,
    shm_segment: Callable[..., Board],
    write_runtime: Callable[..., dict],
    make_running: Callable[..., None],
    lock_holder: Callable,
) -> None:
    lock_holder(runtime_dir)
    me = os.getpid()
    stranger = shm_segment(supervisor_pid=me, supervisor_start_ticks=(liveness.start_ticks(me) or 0) + 7)
    make_running(stranger, 2)
    write_runtime(runtime_dir, stranger, pid=me, start_ticks=liveness.start_ticks(me))
    code, doc = run(runtime_dir)
    assert (code, doc["state"]) == (1, "stale")
    assert "belongs to another supervisor" in doc["reason"]
