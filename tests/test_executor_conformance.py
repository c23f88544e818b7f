"""Executor conformance: the same tests for ThreadPoolExecutor, ProcessPoolExecutor and pool.Pool.

Modelled on CPython's Lib/test/test_concurrent_futures (test_executor, test_shutdown,
test_as_completed, test_wait): what any concurrent.futures.Executor promises, so a
program can swap one for another. Where the standard executors pass and Pool fails,
Pool breaks the contract.

Every test gets a fresh executor of two workers: the conftest leak check runs after
each test, so an executor kept for the module would be taken for a leak (Pool starts
in ~0.1-0.2 s; the module runs in a few seconds).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
)
from pathlib import Path

import pool_tasks
import pytest

from pool import Pool

pytestmark = [pytest.mark.usefixtures("forkserver_stopped", "private_runtime_root"), pytest.mark.timeout(60)]
KINDS = ("thread", "process", "pool")
WAIT_S = 30.0  # bound on any result the tests wait for (all of them come in milliseconds)
# map(timeout=): the two quick results must come within it (from the map call, as the
# interface says), the blocked third must not: seconds, so a loaded machine still makes it.
MAP_TIMEOUT_S = 3.0


def _pool(workers: int) -> Pool:
    return Pool(workers)


FACTORIES: dict[str, Callable[[int], Executor]] = {
    "thread": ThreadPoolExecutor,
    "process": ProcessPoolExecutor,
    "pool": _pool,
}


@pytest.fixture(params=KINDS)
def make(request) -> Iterator[Callable[..., Executor]]:
    """``make(workers=2)``: a fresh executor of this test's kind, shut down at teardown."""
    made: list[Executor] = []

    def build(workers: int = 2) -> Executor:
        executor = FACTORIES[request.param](workers)
        made.append(executor)
        return executor

    yield build
    for executor in made:
        executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def executor(make) -> Executor:
    return make()


@pytest.fixture
def release(tmp_path) -> Iterator[Path]:
    """A file whose creation ends every pool_tasks.wait_for_file task; created at teardown
    too, so a failing test does not leave a task running into the executor's shutdown."""
    path = tmp_path / "release"
    yield path
    path.touch()


# -- submit ----------------------------------------------------------------------------------


def test_submit_returns_a_future_with_the_result(executor):
    future = executor.submit(pool_tasks.mul, 6, 7)
    assert isinstance(future, Future)
    assert future.result(timeout=WAIT_S) == 42
    assert future.done() and not future.cancelled() and future.exception() is None


def test_submit_passes_keyword_arguments(executor):
    assert executor.submit(pool_tasks.mul, 2, y=8).result(timeout=WAIT_S) == 16
    assert executor.submit(pool_tasks.echo_args, 1, "a", key="v", n=None).result(timeout=WAIT_S) == (
        (1, "a"),
        {"key": "v", "n": None},
    )


def test_submit_many_each_future_gets_its_own_result(executor):
    fs = [executor.submit(pool_tasks.square, i) for i in range(50)]
    assert [f.result(timeout=WAIT_S) for f in fs] == [i * i for i in range(50)]


def test_done_callbacks_get_the_future(executor):
    seen: list[tuple[Future, int]] = []
    got = threading.Event()

    def callback(future):
        seen.append((future, future.result()))
        got.set()

    future = executor.submit(pool_tasks.square, 9)
    future.add_done_callback(callback)
    assert got.wait(WAIT_S)
    assert seen == [(future, 81)]
    late: list[Future] = []
    future.add_done_callback(late.append)  # on a done future: called at once, in this thread
    assert late == [future]


# -- map ---------------------------------------------------------------------------------------


def test_map_keeps_the_order_of_its_inputs(executor):
    assert list(executor.map(pool_tasks.square, range(20))) == [i * i for i in range(20)]
    assert list(executor.map(pool_tasks.mul, range(5), range(10, 100))) == [i * (i + 10) for i in range(5)]
    assert list(executor.map(pool_tasks.square, [])) == []


def test_map_raises_the_first_exception_when_its_result_is_reached(executor):
    results = executor.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
    assert next(results) == (0, 1)
    assert next(results) == (0, 1)
    with pytest.raises(ZeroDivisionError):
        next(results)


def test_map_timeout_raises_timeout_error_after_the_results_in_time(executor, tmp_path, release):
    ready = tmp_path / "ready"
    ready.touch()
    results = []
    began = time.monotonic()
    with pytest.raises(futures.TimeoutError) as raised:
        for value in executor.map(
            pool_tasks.wait_for_file, [ready, ready, release], [WAIT_S] * 3, timeout=MAP_TIMEOUT_S
        ):
            results.append(value)
    took = time.monotonic() - began
    assert results == [None, None]
    # map's own timeout, while the third call still waited for its file: not that call's
    # TimeoutError, which it raises only after WAIT_S.
    assert "did not appear" not in str(raised.value), raised.value
    assert took >= MAP_TIMEOUT_S, took  # and not before the timeout


def test_map_submits_every_call_without_being_iterated(make, tmp_path):
    executor = make()
    executor.map(pool_tasks.record_pid, [tmp_path] * 10, range(10))  # the iterator is dropped
    executor.shutdown(wait=True)
    assert sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("attempts-*")) == list(range(10))


# -- exceptions ------------------------------------------------------------------------------------


def test_an_exception_comes_back_as_its_own_type_with_its_message(executor):
    future = executor.submit(pool_tasks.raise_value_error, "bad value 42")
    with pytest.raises(ValueError, match="bad value 42"):
        future.result(timeout=WAIT_S)
    exc = future.exception(timeout=WAIT_S)
    assert type(exc) is ValueError and exc.args == ("bad value 42",)

    custom = executor.submit(pool_tasks.raise_custom_error, "mine").exception(timeout=WAIT_S)
    assert type(custom) is pool_tasks.CustomError and str(custom) == "mine"
    with pytest.raises(ZeroDivisionError):
        executor.submit(divmod, 1, 0).result(timeout=WAIT_S)
    # The executor is not broken by a task's exception.
    assert executor.submit(pool_tasks.square, 3).result(timeout=WAIT_S) == 9


# -- as_completed and wait ---------------------------------------------------------------------------


def test_as_completed_yields_every_future_once(executor):
    fs = [executor.submit(pool_tasks.square, i) for i in range(10)]
    fs.append(fs[0])  # a future given twice comes once
    done = list(futures.as_completed(fs, timeout=WAIT_S))
    assert len(done) == 10 and set(done) == set(fs)
    assert sorted(f.result() for f in done) == [i * i for i in range(10)]


def test_as_completed_times_out_on_a_future_still_running(executor, release):
    blocked = executor.submit(pool_tasks.wait_for_file, release, WAIT_S, "released")
    quick = executor.submit(pool_tasks.square, 4)
    assert quick.result(timeout=WAIT_S) == 16  # done before as_completed starts its 0.5 s
    seen = []
    with pytest.raises(futures.TimeoutError):
        for f in futures.as_completed([blocked, quick], timeout=0.5):
            seen.append(f)
    assert seen == [quick]
    release.touch()
    assert blocked.result(timeout=WAIT_S) == "released"


def test_wait_first_completed_all_completed_and_first_exception(executor, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    blocked = executor.submit(pool_tasks.wait_for_file, first, WAIT_S, "one")
    quick = executor.submit(pool_tasks.square, 5)
    done, not_done = futures.wait([blocked, quick], timeout=WAIT_S, return_when=FIRST_COMPLETED)
    assert (done, not_done) == ({quick}, {blocked})
    first.touch()
    done, not_done = futures.wait([blocked, quick], timeout=WAIT_S, return_when=ALL_COMPLETED)
    assert (done, not_done) == ({blocked, quick}, set())
    assert blocked.result() == "one"

    blocked = executor.submit(pool_tasks.wait_for_file, second, WAIT_S, "two")
    failing = executor.submit(pool_tasks.raise_value_error, "first exception")
    done, not_done = futures.wait([blocked, failing], timeout=WAIT_S, return_when=FIRST_EXCEPTION)
    assert (done, not_done) == ({failing}, {blocked})
    assert isinstance(failing.exception(), ValueError)
    done, not_done = futures.wait([blocked], timeout=0.2)
    assert (done, not_done) == (set(), {blocked})  # a timeout returns, it does not raise
    second.touch()
    assert blocked.result(timeout=WAIT_S) == "two"


# -- shutdown ----------------------------------------------------------------------------------------


def test_submit_and_map_after_shutdown_raise_runtime_error(make):
    executor = make()
    assert executor.submit(pool_tasks.square, 2).result(timeout=WAIT_S) == 4
    executor.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        executor.submit(pool_tasks.square, 2)
    with pytest.raises(RuntimeError):
        executor.map(pool_tasks.square, [1, 2])
    executor.shutdown(wait=True)  # a second shutdown is harmless


def test_a_future_keeps_its_result_after_shutdown(make):
    executor = make()
    fs = [executor.submit(pool_tasks.sleep_and_return, 0.05, i) for i in range(4)]
    failing = executor.submit(pool_tasks.raise_value_error, "kept")
    executor.shutdown(wait=True)
    assert all(f.done() for f in [*fs, failing])  # wait=True: everything ran before it returned
    assert [f.result(timeout=0) for f in fs] == [0, 1, 2, 3]
    assert isinstance(failing.exception(timeout=0), ValueError)


def test_shutdown_without_wait_still_runs_what_was_submitted(make, release):
    executor = make()
    fs = [executor.submit(pool_tasks.wait_for_file, release, WAIT_S, i) for i in range(4)]
    executor.shutdown(wait=False)
    # It returned while every task still waited for the file: it did not wait for them.
    assert not any(f.done() for f in fs)
    release.touch()
    assert [f.result(timeout=WAIT_S) for f in fs] == [0, 1, 2, 3]


def test_shutdown_cancel_futures_cancels_what_has_not_started(make, release):
    executor = make()
    fs = [executor.submit(pool_tasks.wait_for_file, release, WAIT_S, i) for i in range(20)]
    deadline = time.monotonic() + WAIT_S
    while not fs[0].running():  # the first is in a worker: it can no longer be cancelled
        assert time.monotonic() < deadline, "the first task never started"
        time.sleep(0.005)
    executor.shutdown(wait=False, cancel_futures=True)
    # Two running, and at most a few more already handed to a worker (ProcessPoolExecutor
    # queues one extra call, Pool prefetches one per worker): the rest are cancelled, at
    # once or (ProcessPoolExecutor: its manager thread does it) very soon.
    while len(cancelled := [f for f in fs if f.cancelled()]) < 14:
        assert time.monotonic() < deadline, [f._state for f in fs]
        time.sleep(0.005)
    assert not fs[0].cancelled()
    with pytest.raises(futures.CancelledError):
        cancelled[0].result(timeout=0)
    release.touch()
    others = [f for f in fs if not f.cancelled()]
    # Waited on directly: after a shutdown(wait=False), ProcessPoolExecutor's second
    # shutdown(wait=True) no longer joins anything (it dropped its manager thread).
    done, _ = futures.wait(others, timeout=WAIT_S)
    assert done == set(others) and all(f.exception() is None for f in others), [f._state for f in others]
    executor.shutdown(wait=True)
    assert {f.result() for f in others} <= set(range(20))


def test_the_context_manager_shuts_down_and_waits(make):
    executor = make()
    with executor as entered:
        assert entered is executor
        future = executor.submit(pool_tasks.sleep_and_return, 0.1, "done")
    assert future.done() and future.result(timeout=0) == "done"
    with pytest.raises(RuntimeError):
        executor.submit(pool_tasks.square, 1)


# -- construction -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("workers", [0, -1])
def test_fewer_than_one_worker_is_a_value_error(kind, workers):
    with pytest.raises(ValueError):
        FACTORIES[kind](workers)


def test_the_kinds_are_all_executors(executor):
    assert isinstance(executor, Executor)


def test_thread_identity_shows_which_kind_ran_the_task(executor, request):
    """Sanity of the parametrization itself: threads run here, the others in other processes."""
    pid = executor.submit(os.getpid).result(timeout=WAIT_S)
    kind = request.node.callspec.params["make"]
    assert (pid == os.getpid()) is (kind == "thread"), (kind, pid)
