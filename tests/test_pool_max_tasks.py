"""pool.Pool(max_tasks=N) (issue 9): a worker that has been sent N tasks gets no more,
finishes what it holds, and is recycled through the supervisor, one at a time.
No future fails, no task is lost or runs twice, and a recycle is not a crash.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pool_tasks
import pytest
from scripts import supkit
from scripts.supkit import is_gone as gone
from scripts.supkit import wait_until

import statusboard
from pool import Pool

pytestmark = [pytest.mark.usefixtures("supervised"), pytest.mark.timeout(90)]
RECYCLED_RE = re.compile(r"worker (\d+) \(pid (\d+)\) recycled: (.*) \(recycle (\d+); not a crash\)$")


@pytest.fixture
def make_pool(make_pool, tmp_path):
    """conftest's make_pool, each Pool with a kept runtime directory (its log is read after
    the run) and a test pool name."""
    made = iter(range(1_000_000))

    def make(workers: int = 2, **kwargs: Any) -> Pool:
        kwargs.setdefault("name", supkit.pool_name("mt"))
        kwargs.setdefault("runtime_dir", tmp_path / f"rt{next(made)}")
        return make_pool(workers, **kwargs)

    return make


def attempts(directory: Path, key: object) -> int:
    path = directory / f"attempts-{key}"
    return path.read_text().count("\n") if path.exists() else 0


def log_lines(p: Pool) -> list[str]:
    return (Path(p.runtime_dir) / "supervisor.log").read_text().splitlines()


class BoardWatch:
    """Samples a pool's board in a thread while the test drives the pool: the most
    workers seen out of service (not ``running``) at once, and every state seen."""

    def __init__(self, runtime_dir: str) -> None:
        self._reader = statusboard.attach(runtime_dir)
        self._stop = threading.Event()
        self.samples = 0
        self.worst: list[dict[str, Any]] = []
        self.states: set[str] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rows = self._reader.snapshot().workers()
            out = [w for w in rows if w["state"] != "running"]
            self.samples += 1
            self.states.update(w["state"] for w in rows)
            if len(out) > len(self.worst):
                self.worst = out
            time.sleep(0.0005)

    def __enter__(self) -> BoardWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._reader.close()


def assert_one_recycle_at_a_time(lines: list[str]) -> list[re.Match[str]]:
    """Between two recycles in the log, the first one's process exited (code 0) and its
    replacement started: recycles never overlapped."""
    found = [(i, m) for i, line in enumerate(lines) if (m := RECYCLED_RE.search(line))]
    for (i, m), (j, _) in itertools.pairwise(found):
        between = lines[i + 1 : j]
        assert any(f"worker {m[1]} (pid {m[2]}) exited: code 0" in line for line in between), (m[0], between)
        assert any(f"worker {m[1]} started pid" in line for line in between), (m[0], between)
    return [m for _, m in found]


def test_max_tasks_5_runs_50_tasks_on_about_10_workers_and_fails_none(make_pool, tmp_path):
    p = make_pool(2, max_tasks=5)
    with BoardWatch(p.runtime_dir) as watch:
        futures = {i: p.submit(pool_tasks.record_pid, tmp_path, i) for i in range(50)}
        results = {i: f.result(timeout=60) for i, f in futures.items()}
        assert all(f.exception() is None for f in futures.values())

        per_pid = Counter(pid for _, pid in results.values())
        # Every process took at most 5 tasks, so 50 needed at least 10 processes.
        assert max(per_pid.values()) <= 5, per_pid
        assert 10 <= len(per_pid) <= 12, per_pid
        # Every process that reached max_tasks is recycled, each once, and not as a crash.
        full = sum(1 for n in per_pid.values() if n == 5)

        def settled():
            # A recycle counts as it begins (the worker drains, still "running"): wait for
            # every replacement to have started and to run.
            rows = watch._reader.snapshot().workers()
            replaced = sum(w["generation"] for w in rows) - len(rows)
            done = replaced >= full and all(w["state"] == "running" for w in rows)
            return done and rows

        rows = wait_until(
            settled, 20, lambda: f"{full} replacements on the board: {watch._reader.snapshot().workers()}"
        )
    assert {i: key for i, (key, _) in results.items()} == {i: i for i in range(50)}
    assert {i: attempts(tmp_path, i) for i in range(50)} == dict.fromkeys(range(50), 1)  # none ran twice
    assert sum(w["recycled"] for w in rows) == full, rows
    assert all(w["restarts"] == 0 for w in rows), rows
    assert sum(w["generation"] for w in rows) == len(rows) + full, rows
    p.shutdown()  # the last two processes may still serve until the pool stops
    assert all(gone(pid) for pid in per_pid), per_pid
    assert len(watch.worst) <= 1, f"both workers out of service at once: {watch.worst}"
    assert watch.states <= {"running", "stopping", "exited", "starting"}, watch.states

    lines = log_lines(p)
    recycles = assert_one_recycle_at_a_time(lines)
    assert len(recycles) == full, recycles
    assert all(m[3] == "max_tasks 5 reached" for m in recycles), [m[0] for m in recycles]
    assert {int(m[2]) for m in recycles} <= set(per_pid)
    text = "\n".join(lines)
    assert "restarting" not in text and "escalated" not in text and "killed" not in text, text
    print(f"\nFIGURE max_tasks=5: 50 tasks on {len(per_pid)} worker processes, {full} recycles")


def test_max_tasks_1_gives_every_task_a_fresh_process(make_pool, tmp_path):
    p = make_pool(2, max_tasks=1)
    futures = [p.submit(pool_tasks.record_pid, tmp_path, i) for i in range(6)]
    results = [f.result(timeout=60) for f in futures]
    assert [key for key, _ in results] == list(range(6))
    pids = [pid for _, pid in results]
    assert len(set(pids)) == 6, pids
    assert [attempts(tmp_path, i) for i in range(6)] == [1] * 6
    # map goes through the same path: every call in its own process too.
    mapped = list(p.map(pool_tasks.record_pid, [tmp_path] * 4, range(10, 14)))
    assert [key for key, _ in mapped] == [10, 11, 12, 13]
    assert len({pid for _, pid in mapped} | set(pids)) == 10
    with statusboard.attach(p.runtime_dir) as reader:
        rows = wait_until(
            lambda: (rows := reader.snapshot().workers()) and sum(w["recycled"] for w in rows) >= 10 and rows,
            20,
            "10 recycles on the board",
        )
    assert all(w["restarts"] == 0 for w in rows), rows
    assert_one_recycle_at_a_time(log_lines(p))


def test_a_drained_worker_finishes_its_tasks_however_long_they_take(make_pool, tmp_path):
    """max_tasks=2, one worker: both tasks are in the worker when the recycle begins; the first
    runs well past the grace. Drained means waited for, not stopped: neither future fails."""
    grace = 0.3
    p = make_pool(1, max_tasks=2, grace=grace)
    release = tmp_path / "release"
    held = p.submit(pool_tasks.hold_until, tmp_path, "held", release)
    queued = p.submit(pool_tasks.record_pid, tmp_path, "queued")
    wait_until(lambda: attempts(tmp_path, "held") == 1, 20, "the long task to start")
    line = wait_until(
        lambda: next((m for line in log_lines(p) if (m := RECYCLED_RE.search(line))), None),
        10,
        "the recycle to begin",
    )
    assert line[3] == "max_tasks 2 reached", line[0]
    pid = int(line[2])
    # Three graces later the worker is still alive and still holds both tasks.
    began = time.monotonic()
    wait_until(lambda: time.monotonic() - began > 3 * grace or gone(pid), 5, "three graces")
    assert not gone(pid), "the draining worker was stopped under its running task"
    assert not held.done() and not queued.done()
    assert attempts(tmp_path, "queued") == 0  # still waiting in its worker's pipe
    release.touch()
    assert held.result(timeout=20) == ("held", pid)
    assert queued.result(timeout=20) == ("queued", pid)
    # The next task goes to the replacement.
    assert p.submit(pool_tasks.getpid).result(timeout=30) != pid
    wait_until(lambda: gone(pid), 10, "the recycled worker gone")
    with statusboard.attach(p.runtime_dir) as reader:
        (row,) = reader.snapshot().workers()
    assert (row["recycled"], row["restarts"], row["generation"]) == (1, 0, 2), row
    assert any(f"(pid {pid}) exited: code 0" in line for line in log_lines(p))


@pytest.mark.parametrize("bad", [0, -1, 1.5, "5"])
def test_max_tasks_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="max_tasks"):
        Pool(1, max_tasks=bad)
