"""pool.Pool survives its workers: crashes fail exactly their own task (or rerun it),
hangs are replaced, long tasks are not taken for hangs, and a SIGKILLed caller
leaves no process and no shared-memory segment behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pool_tasks
import pytest
from scripts.supkit import is_gone as gone

import statusboard
from pool import Pool, WorkerCrashed

pytestmark = [pytest.mark.usefixtures("forkserver_stopped", "private_runtime_root"), pytest.mark.timeout(90)]
ORPHAN_SCRIPT = Path(__file__).resolve().parent / "scripts" / "pool_orphan.py"
KINDS = ("kill", "exit", "segv")
EXPECTED_EXIT = {"kill": "signal SIGKILL", "exit": "code 3", "segv": "signal SIGSEGV"}


def attempts(directory: Path, key: object) -> int:
    path = directory / f"attempts-{key}"
    return path.read_text().count("\n") if path.exists() else 0


# -- crash survival ----------------------------------------------------------------------


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_crashes_fail_exactly_their_own_futures_and_the_pool_serves_on(
    make_pool, tmp_path, wait_until, start_method
):
    p = make_pool(3, start_method=start_method)
    plan = {i: (KINDS[(i // 10) % 3] if i % 10 == 3 else None) for i in range(100)}
    futures = {i: p.submit(pool_tasks.crash, kind, i, tmp_path) for i, kind in plan.items()}

    crashed = {}
    for i, future in futures.items():
        exc = future.exception(timeout=60)
        if exc is None:
            assert future.result() == i
        else:
            assert isinstance(exc, WorkerCrashed), f"task {i}: {exc!r}"
            crashed[i] = str(exc)
    assert sorted(crashed) == sorted(i for i, kind in plan.items() if kind)
    assert len(crashed) == 10 and {plan[i] for i in crashed} == set(KINDS)
    for i, message in crashed.items():
        assert EXPECTED_EXIT[plan[i]] in message, message
        assert "died running task" in message
    # Each task ran exactly once: a crash neither reran its own task (retries=0) nor
    # took a task it had prefetched but not started with it.
    runs = {i: attempts(tmp_path, i) for i in plan}
    assert runs == dict.fromkeys(plan, 1)

    assert list(p.map(pool_tasks.square, range(30), chunksize=4)) == [i * i for i in range(30)]
    with statusboard.attach(p.runtime_dir) as reader:
        # The last replacement may still be starting: the pool served the map without it.
        def all_running():
            workers = reader.snapshot().workers()
            return workers if all(w["state"] == "running" for w in workers) else None

        workers = wait_until(all_running, 10, "every worker running again")
    assert len(workers) == 3
    assert sum(w["restarts"] for w in workers) == 10


def test_with_retries_a_task_that_crashes_once_succeeds_on_its_rerun(make_pool, tmp_path):
    p = make_pool(2, retries=1)
    futures = {
        i: (
            p.submit(pool_tasks.crash_once, tmp_path, i, i * 10)
            if i % 5 == 0
            else p.submit(pool_tasks.mul, i, 10)
        )
        for i in range(30)
    }
    assert {i: f.result(timeout=60) for i, f in futures.items()} == {i: i * 10 for i in range(30)}
    assert {i: attempts(tmp_path, i) for i in range(0, 30, 5)} == dict.fromkeys(range(0, 30, 5), 2)


def test_with_retries_a_task_that_always_crashes_fails_after_retries_plus_one_runs(make_pool, tmp_path):
    p = make_pool(2, retries=1)
    future = p.submit(pool_tasks.crash_always, tmp_path, "doomed")
    with pytest.raises(WorkerCrashed, match="signal SIGKILL"):
        future.result(timeout=30)
    assert attempts(tmp_path, "doomed") == 2
    assert p.submit(pool_tasks.square, 9).result(timeout=10) == 81


def test_retries_must_not_be_negative():
    with pytest.raises(ValueError, match="retries"):
        Pool(1, retries=-1)


# -- heartbeats while a task runs -------------------------------------------------------


def test_a_long_task_keeps_its_worker_beating(make_pool):
    p = make_pool(1, heartbeat_timeout=1.0)
    pid = p.submit(pool_tasks.getpid).result(timeout=10)
    assert p.submit(pool_tasks.sleep_and_return, 3.0, "done").result(timeout=20) == "done"
    assert p.submit(pool_tasks.getpid).result(timeout=10) == pid  # not killed as hung
    with statusboard.attach(p.runtime_dir) as reader:
        (worker,) = reader.snapshot().workers()
    assert worker["restarts"] == 0 and worker["state"] == "running"


def test_a_task_holding_the_gil_is_replaced_as_hung(make_pool, runtime_dir):
    """libc sleep() called through ctypes.PyDLL keeps the GIL: the worker's beat thread
    cannot run, exactly like a C extension stuck without releasing it."""
    p = make_pool(1, heartbeat_timeout=1.0, grace=0.5, name="gil", runtime_dir=runtime_dir)
    pid = p.submit(pool_tasks.getpid).result(timeout=10)
    future = p.submit(pool_tasks.hold_gil, 30)
    # WorkerCrashed, not the task's result after its 30 s nor result()'s own TimeoutError: the
    # worker was killed while it held the GIL (the log line below says why).
    with pytest.raises(WorkerCrashed, match=f"pid {pid}"):
        future.result(timeout=25)
    assert gone(pid)
    assert p.submit(pool_tasks.getpid).result(timeout=10) != pid
    log = (runtime_dir / "supervisor.log").read_text()
    assert f"worker 0 (pid {pid}) hung: no heartbeat" in log


# -- the caller dies --------------------------------------------------------------------


@pytest.mark.parametrize("busy", [True, False], ids=["busy", "idle"])
@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_no_process_or_segment_survives_a_sigkilled_caller(
    spawn, read_line, wait_until, runtime_dir, start_method, busy
):
    proc = spawn(
        [sys.executable, ORPHAN_SCRIPT, start_method, runtime_dir, "busy" if busy else "idle"],
        stderr=subprocess.DEVNULL,
    )
    info = json.loads(read_line(proc, timeout=30))
    board = Path(info["board"])
    pids = info["workers"] + info["helpers"]
    assert len(info["workers"]) == 2 and board.exists()
    assert not any(gone(pid) for pid in pids)
    if start_method == "forkserver":
        assert info["helpers"], "no forkserver pid reported"

    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    t0 = time.monotonic()
    # On their own (nothing here signals them); how soon is a figure, printed below.
    wait_until(lambda: all(gone(pid) for pid in pids), 30.0, f"pids {pids} to be gone")
    # The workers remove the board: the supervisor that would have is dead.
    wait_until(lambda: not board.exists(), 30.0, f"{board} to be removed")
    print(
        f"\nFIGURE pool orphans ({start_method}, {'busy' if busy else 'idle'}): "
        f"all gone {(time.monotonic() - t0) * 1000:.0f} ms after SIGKILL"
    )
