"""A running pool.Pool is a supervised pool like any other: `poolctl status` from
another process, and statusboard.attach(), show each worker's current task, how
long it has run, and the tasks done and failed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pool_tasks
import pytest

import statusboard
from pool import Pool

pytestmark = pytest.mark.timeout(60)
POOLCTL = Path(sys.executable).with_name("poolctl")  # the console script of the venv running the tests


@pytest.fixture
def pools():
    made: list[Pool] = []
    yield made
    for p in made:
        p.shutdown(wait=True, cancel_futures=True)


def poolctl_status(*selector: str) -> tuple[int, dict]:
    done = subprocess.run(
        [str(POOLCTL), *selector, "status", "--json"], capture_output=True, text=True, timeout=30
    )
    assert done.stdout, f"no output (exit {done.returncode}); stderr: {done.stderr}"
    return done.returncode, json.loads(done.stdout)


def totals(workers: list[dict]) -> tuple[int, int]:
    return sum(w["tasks_done"] for w in workers), sum(w["tasks_failed"] for w in workers)


@pytest.mark.parametrize("selector", ["runtime-dir", "name"])
def test_status_shows_each_workers_task_and_age_and_the_counts(
    pools, runtime_dir, tmp_path, monkeypatch, wait_until, selector
):
    name = f"crunch-{uuid.uuid4().hex[:8]}"
    if selector == "runtime-dir":
        p = Pool(2, name=name, runtime_dir=runtime_dir, start_method="fork")
        args = ("--runtime-dir", str(runtime_dir))
    else:  # `poolctl --name NAME status`, found where the program put it
        monkeypatch.setenv("POOLCTL_RUNTIME_DIR", str(runtime_dir))
        p = Pool(2, name=name, start_method="fork")
        args = ("--name", name)
        assert Path(p.runtime_dir) == runtime_dir / name
    pools.append(p)
    reader = statusboard.attach(p.runtime_dir)
    go = tmp_path / "go"
    try:
        # Some history first: three done, one failed.
        assert [p.submit(pool_tasks.square, i).result(timeout=10) for i in range(3)] == [0, 1, 4]
        with pytest.raises(ValueError):
            p.submit(pool_tasks.raise_value_error, "no").result(timeout=10)
        wait_until(lambda: totals(reader.snapshot().workers()) == (3, 1), 5, "3 done, 1 failed on the board")

        long_tasks = [p.submit(pool_tasks.wait_for_file, str(go), 20, f"long{i}") for i in range(2)]
        wait_until(
            lambda: all(w["task"] is not None for w in reader.snapshot().workers()),
            5,
            "both workers to be running a task",
        )
        time.sleep(0.2)  # so that the task age is visibly > 0

        code, status = poolctl_status(*args)
        assert code == 0, status
        assert status["state"] == "running" and status["source"] == "shm"
        if selector == "name":  # with --runtime-dir alone, "pool" is the CLI's default name
            assert status["pool"] == name
        workers = status["workers"]
        assert len(workers) == 2
        tasks = [w["task"] for w in workers]
        assert all(type(t) is int for t in tasks) and len(set(tasks)) == 2
        assert all(w["task_age_s"] >= 0.2 for w in workers), workers
        assert all(w["healthy"] for w in workers)  # beating while they run a task
        assert totals(workers) == (3, 1)

        in_process = reader.snapshot().workers()
        assert sorted(w["task"] for w in in_process) == sorted(tasks)
        assert all(w["task_age_s"] > 0.2 for w in in_process)
        assert {w["pid"] for w in in_process} == {w["pid"] for w in workers}

        go.touch()
        assert sorted(f.result(timeout=10) for f in long_tasks) == ["long0", "long1"]
        wait_until(lambda: totals(reader.snapshot().workers()) == (5, 1), 5, "5 done, 1 failed")
        code, status = poolctl_status(*args)
        assert code == 0
        assert [(w["task"], w["task_age_s"]) for w in status["workers"]] == [(None, None)] * 2
        assert totals(status["workers"]) == (5, 1)
    finally:
        go.touch()  # a failed assertion must not leave the long tasks to run out their 20 s
        reader.close()

    p.shutdown(wait=True)
    code, status = poolctl_status(*args)
    assert (code, status["state"]) == (3, "stopped")


def test_a_crashed_task_is_counted_on_the_board(pools, runtime_dir, wait_until):
    p = Pool(1, name=f"crash-{uuid.uuid4().hex[:8]}", runtime_dir=runtime_dir, start_method="fork")
    pools.append(p)
    with pytest.raises(Exception, match="SIGKILL"):
        p.submit(pool_tasks.crash, "kill").result(timeout=10)
    assert p.submit(pool_tasks.square, 2).result(timeout=10) == 4
    with statusboard.attach(p.runtime_dir) as reader:
        wait_until(lambda: reader.snapshot().workers()[0]["tasks_done"] == 1, 5, "one task done")
        (worker,) = reader.snapshot().workers()
    assert worker["restarts"] == 1 and worker["last_exit"] == "signal SIGKILL"
