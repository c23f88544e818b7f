"""pool.Pool as a drop-in concurrent.futures Executor.

The first group replays what CPython's test_concurrent_futures checks for
ProcessPoolExecutor (submit/result, map order and timeout, exceptions with the
remote traceback, shutdown semantics, cancel_futures); then what travels badly
(unpicklable arguments, results and exceptions) and per-task timeouts.
"""

from __future__ import annotations

import os
import re
import threading
import time
import traceback
from concurrent.futures import Executor, Future
from pathlib import Path

import pool_tasks
import pytest
from scripts.supkit import is_gone as gone

import statusboard
from pool import Pool, WorkerCrashed
from pool.taskpool.taskwire import RemoteTraceback

pytestmark = [pytest.mark.usefixtures("forkserver_stopped", "private_runtime_root"), pytest.mark.timeout(60)]
# map(timeout=): the quick results must come within it, the blocked one must not: seconds,
# so that a loaded machine still delivers the quick ones in time.
MAP_TIMEOUT_S = 3.0


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture(params=["fork", "forkserver"])
def start_method(request):
    return request.param


def worker_pids(p: Pool) -> list[int]:
    with statusboard.attach(p.runtime_dir) as reader:
        return [w["pid"] for w in reader.snapshot().workers() if w["pid"]]


def board_path(p: Pool) -> Path:
    assert p._supervisor.board is not None
    return Path(p._supervisor.board.path)


# -- drop-in: what CPython checks for ProcessPoolExecutor --------------------------------


def test_pool_is_an_executor_and_submit_returns_a_future_with_the_result(make_pool, start_method):
    p = make_pool(start_method=start_method)
    assert isinstance(p, Executor)
    future = p.submit(pool_tasks.mul, 6, 7)
    assert isinstance(future, Future)
    assert future.result(timeout=10) == 42
    assert p.submit(pow, 2, 10).result(timeout=10) == 1024  # a builtin, by reference


@pytest.mark.parametrize("chunksize", [1, 7, 64])
def test_map_keeps_order(make_pool, chunksize):
    p = make_pool()
    items = list(range(150))  # not a multiple of 7 nor of 64: the last chunk is short
    assert list(p.map(pool_tasks.square, items, chunksize=chunksize)) == [i * i for i in items]
    # several iterables, zipped to the shortest (CPython: map(pow, range(10), range(10)))
    assert list(p.map(pow, range(40), range(39), chunksize=chunksize)) == [pow(i, i) for i in range(39)]
    assert list(p.map(pool_tasks.square, [], chunksize=chunksize)) == []


def test_map_raises_the_first_exception_when_its_result_is_reached(make_pool):
    p = make_pool()
    results = p.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
    assert next(results) == (0, 1)
    assert next(results) == (0, 1)
    with pytest.raises(ZeroDivisionError):
        next(results)


def test_map_with_timeout_raises_timeout_error(make_pool, tmp_path):
    p = make_pool()
    ready, release = tmp_path / "ready", tmp_path / "release"
    ready.touch()
    t0 = time.monotonic()
    results = []
    try:
        with pytest.raises(TimeoutError) as raised:
            for value in p.map(
                pool_tasks.wait_for_file, [ready, ready, release], [30] * 3, timeout=MAP_TIMEOUT_S
            ):
                results.append(value)
        elapsed = time.monotonic() - t0
    finally:
        release.touch()  # the third call ends, so the pool shuts down at once
    assert results == [None, None]
    # map's own timeout while the third call still waited, not that call's own TimeoutError.
    assert "did not appear" not in str(raised.value), raised.value
    assert elapsed >= MAP_TIMEOUT_S  # and not before it


def test_an_exception_comes_back_with_the_remote_traceback_as_cause(make_pool):
    p = make_pool()
    future = p.submit(pool_tasks.raise_value_error, "boom 123")
    exc = future.exception(timeout=10)
    assert type(exc) is ValueError and str(exc) == "boom 123"
    cause = exc.__cause__
    assert isinstance(cause, RemoteTraceback)
    # The worker-side frame: its function, its file and the very line that raised.
    assert "in raise_value_error" in cause.text
    assert "pool_tasks.py" in cause.text
    assert "raise ValueError(message)  # the worker-side frame" in cause.text
    assert "ValueError: boom 123" in cause.text
    # ... and it shows where a user looks: the formatted traceback of the exception.
    formatted = "".join(traceback.format_exception(exc))
    assert "raise ValueError(message)  # the worker-side frame" in formatted
    with pytest.raises(ValueError, match="boom 123"):
        future.result()
    assert p.submit(pool_tasks.square, 3).result(timeout=10) == 9  # the worker lived


def test_submit_after_shutdown_raises_runtime_error(make_pool):
    p = make_pool()
    p.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        p.submit(pool_tasks.square, 2)
    with pytest.raises(RuntimeError, match="after shutdown"):
        list(p.map(pool_tasks.square, [1, 2]))
    p.shutdown(wait=True)  # twice is fine


def test_shutdown_wait_waits_for_running_tasks_and_every_process(make_pool, private_runtime_root):
    p = make_pool()
    pids = worker_pids(p)
    segment = board_path(p)
    runtime = Path(p.runtime_dir)
    assert runtime.parent == private_runtime_root and runtime.is_dir()
    futures = [p.submit(pool_tasks.sleep_and_return, 0.5, i) for i in range(3)]
    p.shutdown(wait=True)
    assert all(f.done() for f in futures)  # it waited for every running and queued task
    assert [f.result(timeout=0) for f in futures] == [0, 1, 2]
    assert len(pids) == 2 and all(gone(pid) for pid in pids)
    assert not segment.exists()
    assert not runtime.exists()  # Pool(name=None): its private runtime directory went with it


def test_shutdown_without_wait_returns_at_once_and_still_cleans_up(make_pool, wait_until, tmp_path):
    p = make_pool()
    pids = worker_pids(p)
    segment = board_path(p)
    release = tmp_path / "release"
    future = p.submit(pool_tasks.wait_for_file, release, 30, "late")
    p.shutdown(wait=False)
    assert not future.done()  # it returned while the task still waited for its file
    release.touch()
    assert future.result(timeout=30) == "late"  # the running task still finishes
    wait_until(lambda: all(gone(pid) for pid in pids), 10, "the workers to exit")
    wait_until(lambda: not segment.exists(), 10, "the board to be removed")


@pytest.mark.parametrize("wait", [True, False])
def test_shutdown_cancel_futures_cancels_what_has_not_started(make_pool, wait):
    p = make_pool()
    futures = [p.submit(pool_tasks.sleep_and_return, 0.05, i) for i in range(60)]
    futures[0].result(timeout=10)
    p.shutdown(wait=wait, cancel_futures=True)
    cancelled = [f for f in futures if f.cancelled()]
    assert cancelled, "nothing was cancelled"
    others = [f for f in futures if not f.cancelled()]
    assert others, "even the started ones were cancelled"
    for i, f in enumerate(futures):  # none lost: each is cancelled or gets its own result
        if not f.cancelled():
            assert f.result(timeout=10) == i
    assert all(f.done() for f in futures)
    assert futures[-1].cancelled()


def test_context_manager_shuts_down_and_waits(start_method):
    with Pool(2, start_method=start_method) as p:
        pids = worker_pids(p)
        segment = board_path(p)
        futures = [p.submit(pool_tasks.sleep_and_return, 0.2, i) for i in range(4)]
    assert [f.result(timeout=0) for f in futures] == [0, 1, 2, 3]
    assert all(gone(pid) for pid in pids)
    assert not segment.exists()
    with pytest.raises(RuntimeError):
        p.submit(pool_tasks.square, 1)


def test_lambdas_and_closures_work(make_pool, start_method):
    p = make_pool(start_method=start_method)
    assert p.submit(lambda x: x * 3, 5).result(timeout=10) == 15
    offset = 10
    seen = [1, 2]

    def add(x):
        return x + offset + len(seen)

    assert list(p.map(add, range(5), chunksize=2)) == [12, 13, 14, 15, 16]
    assert p.submit(add, 0).result(timeout=10) == 12


def test_kwargs_and_none_and_many_arguments(make_pool):
    p = make_pool()
    assert p.submit(pool_tasks.echo_args, 1, "two", c=3, d=[4]).result(timeout=10) == (
        (1, "two"),
        {"c": 3, "d": [4]},
    )
    # "timeout" is the pool's own keyword; every other name reaches the task.
    assert p.submit(pool_tasks.echo_args, fn=1, args=2).result(timeout=10) == ((), {"fn": 1, "args": 2})
    future = p.submit(pool_tasks.returns_none)
    assert future.result(timeout=10) is None and future.exception() is None


def test_large_argument_and_result(make_pool):
    p = make_pool()
    size = 4 << 20
    data = os.urandom(size)
    assert p.submit(pool_tasks.nbytes, data).result(timeout=30) == size
    assert p.submit(pool_tasks.identity, data).result(timeout=30) == data
    assert p.submit(pool_tasks.make_bytes, size).result(timeout=30) == b"\x5a" * size


def test_many_threads_submitting_at_once_lose_nothing(make_pool):
    p = make_pool()
    results: dict[int, list[int]] = {}

    def submitter(k: int) -> None:
        futures = [p.submit(pool_tasks.mul, k, i) for i in range(200)]
        results[k] = [f.result(timeout=30) for f in futures]

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {k: [k * i for i in range(200)] for k in range(4)}


# -- what travels badly -----------------------------------------------------------------


def test_an_unpicklable_argument_fails_its_future_and_the_pool_lives(make_pool):
    p = make_pool(1)
    future = p.submit(pool_tasks.identity, (i for i in range(3)))
    exc = future.exception(timeout=10)
    assert isinstance(exc, TypeError)
    assert "cannot pickle the call" in str(exc) and "generator" in str(exc)
    assert p.submit(pool_tasks.square, 4).result(timeout=10) == 16


def test_an_argument_that_does_not_unpickle_in_the_worker_fails_its_future(make_pool):
    p = make_pool(1)
    pid = p.submit(pool_tasks.getpid).result(timeout=10)
    future = p.submit(pool_tasks.identity, pool_tasks.Unloadable())
    with pytest.raises(RuntimeError, match="refuses to be unpickled"):
        future.result(timeout=10)
    assert p.submit(pool_tasks.getpid).result(timeout=10) == pid  # same worker, still serving


def test_an_unpicklable_result_fails_its_future_and_the_pool_lives(make_pool):
    p = make_pool(1)
    pid = p.submit(pool_tasks.getpid).result(timeout=10)
    future = p.submit(pool_tasks.return_generator)
    exc = future.exception(timeout=10)
    assert isinstance(exc, TypeError)
    assert "result cannot be pickled" in str(exc) and "generator" in str(exc)
    assert p.submit(pool_tasks.getpid).result(timeout=10) == pid


def test_an_unpicklable_exception_still_reports_its_text(make_pool):
    p = make_pool(1)
    exc = p.submit(pool_tasks.raise_unpicklable).exception(timeout=10)
    assert "CarriesGenerator: " in str(exc) and "with a generator inside" in str(exc)
    assert isinstance(exc.__cause__, RemoteTraceback)
    assert "in raise_unpicklable" in exc.__cause__.text
    assert p.submit(pool_tasks.square, 5).result(timeout=10) == 25


# -- per-task timeout -------------------------------------------------------------------


def test_a_timed_out_task_raises_timeout_error_and_its_worker_is_replaced(make_pool, start_method):
    p = make_pool(1, start_method=start_method)
    before = p.submit(pool_tasks.getpid).result(timeout=10)
    future = p.submit(pool_tasks.sleep_and_return, 10, timeout=0.5)
    # The task's own timeout (not the 10 s task finishing, nor result()'s wait) ended it.
    with pytest.raises(TimeoutError, match=re.escape("timed out after 0.5s")):
        future.result(timeout=30)
    after = p.submit(pool_tasks.getpid).result(timeout=10)
    assert after != before
    assert gone(before)
    assert p.submit(pool_tasks.square, 6).result(timeout=10) == 36


def test_a_timeout_leaves_concurrent_tasks_alone(make_pool):
    p = make_pool(3)
    slow_ok = [p.submit(pool_tasks.sleep_and_return, 1.0, f"ok{i}") for i in range(2)]
    doomed = p.submit(pool_tasks.sleep_and_return, 10, "never", timeout=0.5)
    quick = [p.submit(pool_tasks.square, i) for i in range(50)]
    with pytest.raises(TimeoutError):
        doomed.result(timeout=10)
    assert [f.result(timeout=10) for f in slow_ok] == ["ok0", "ok1"]
    assert [f.result(timeout=10) for f in quick] == [i * i for i in range(50)]


def test_a_timed_out_task_is_not_retried(make_pool, tmp_path):
    p = make_pool(1, retries=3)
    future = p.submit(pool_tasks.count_and_sleep, tmp_path, "t", 10, timeout=0.5)
    with pytest.raises(TimeoutError):
        future.result(timeout=10)
    assert p.submit(pool_tasks.square, 7).result(timeout=10) == 49  # the replacement serves
    assert (tmp_path / "attempts-t").read_text().count("\n") == 1


def test_timeout_must_be_positive(make_pool):
    p = make_pool(1)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="timeout"):
            p.submit(pool_tasks.square, 1, timeout=bad)


def test_a_task_crash_is_worker_crashed_not_broken_pool(make_pool):
    """The one-line version of the crash suite: here for the drop-in reader's benefit."""
    p = make_pool(2)
    with pytest.raises(WorkerCrashed):
        p.submit(pool_tasks.crash, "kill").result(timeout=10)
    assert p.submit(pool_tasks.square, 8).result(timeout=10) == 64
