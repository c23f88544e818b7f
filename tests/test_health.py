"""Health verdicts as tables: pure functions of (rows, now, thresholds), time injected."""

from __future__ import annotations

import math
from typing import Any

import pytest

from statusboard import layout
from statusboard.health import (
    StatusCode,
    describe_exit,
    pool_verdict,
    progress_value,
    supervisor_verdict,
    worker_verdict,
)
from statusboard.states import WorkerState as W

S = 1_000_000_000
NOW = 1_000 * S  # an arbitrary monotonic instant
TIMEOUT = 10 * S
NONE = layout.NO_EXIT_CODE


def row(slot: int = 0, state: int = W.RUNNING, age_s: float = 0.5, exit_code: int = NONE) -> dict[str, Any]:
    return {
        "slot": slot,
        "state": int(state),
        "heartbeat_ns": NOW - int(age_s * S),
        "last_exit_code": exit_code,
    }


def test_status_codes_are_the_contracts() -> None:
    assert {c.name: int(c) for c in StatusCode} == {
        "RUNNING": 0,
        "STALE": 1,
        "DEGRADED": 2,
        "NOT_RUNNING": 3,
        "UNKNOWN": 4,
    }


# -- worker_verdict ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "age_s", "exit_code", "healthy", "reason"),
    [
        (W.RUNNING, 0.5, NONE, True, ""),
        (W.RUNNING, 0.0, NONE, True, ""),
        (W.EMPTY, 0.5, NONE, False, "empty"),
        (W.STARTING, 0.5, NONE, False, "starting, no heartbeat yet"),
        (W.STOPPING, 0.5, NONE, False, "stopping"),
        (W.EXITED, 0.5, NONE, False, "exited"),
        (W.EXITED, 0.5, 1, False, "exited (last exit code 1)"),
        (W.EXITED, 0.5, 0, False, "exited (last exit code 0)"),
        (W.BACKOFF, 0.5, -9, False, "backoff (last exit signal SIGKILL)"),
        (W.HUNG, 0.5, NONE, False, "hung"),
        (W.HUNG, 0.5, -15, False, "hung"),  # an old exit code says nothing about a hang
        (W.FAILED, 0.5, 3, False, "failed (last exit code 3)"),
        (W.FAILED, 0.5, NONE, False, "failed"),
        (W.STOPPED, 0.5, 0, False, "stopped"),
        (42, 0.5, NONE, False, "unknown(42)"),
    ],
    ids=lambda v: str(v) if not isinstance(v, W) else v.name,
)
def test_worker_verdict_by_state(
    state: int, age_s: float, exit_code: int, healthy: bool, reason: str
) -> None:
    verdict = worker_verdict(row(state=state, age_s=age_s, exit_code=exit_code), NOW, TIMEOUT)
    assert verdict.healthy is healthy
    assert verdict.reason == reason


def test_every_worker_state_has_a_verdict() -> None:
    # Only RUNNING is healthy; every other state says what it is.
    for state in W:
        verdict = worker_verdict(row(state=state), NOW, TIMEOUT)
        assert verdict.healthy is (state == W.RUNNING)
        assert state == W.RUNNING or state.label in verdict.reason


@pytest.mark.parametrize(
    ("age_ns", "healthy"),
    [
        (TIMEOUT - 1, True),
        (TIMEOUT, True),  # exactly at the timeout: still healthy
        (TIMEOUT + 1, False),  # one nanosecond over: hung
        (3 * TIMEOUT, False),
    ],
    ids=["under", "at", "over-by-1ns", "way-over"],
)
def test_heartbeat_age_against_the_timeout(age_ns: int, healthy: bool) -> None:
    r = {"slot": 0, "state": int(W.RUNNING), "heartbeat_ns": NOW - age_ns, "last_exit_code": NONE}
    verdict = worker_verdict(r, NOW, TIMEOUT)
    assert verdict.healthy is healthy
    if not healthy:
        assert verdict.reason == f"no heartbeat for {age_ns / S:.1f}s (timeout 10s)"


def test_a_worker_that_never_beat_is_not_healthy() -> None:
    r = {"slot": 0, "state": int(W.RUNNING), "heartbeat_ns": 0, "last_exit_code": NONE}
    assert worker_verdict(r, NOW, TIMEOUT).healthy is False


# -- supervisor_verdict ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity_ok", "lock_held", "age_ns", "alive", "reason"),
    [
        (True, True, 1 * S, True, ""),
        (True, True, 5 * S, True, ""),  # exactly at the limit
        (False, True, 1 * S, False, "supervisor pid 4242 is gone (or is now a different process)"),
        (False, False, None, False, "supervisor pid 4242 is gone (or is now a different process)"),
        (True, False, 1 * S, False, "supervisor pid 4242 does not hold supervisor.lock"),
        (True, True, None, False, "supervisor pid 4242 has no readable board"),
        (True, True, 5 * S + 1, False, "supervisor pid 4242 is frozen: board heartbeat 5.0s old (limit 5s)"),
        (True, True, 60 * S, False, "supervisor pid 4242 is frozen: board heartbeat 60.0s old (limit 5s)"),
    ],
    ids=[
        "alive",
        "at-limit",
        "identity-wrong",
        "identity-wrong-no-lock",
        "lock-not-held",
        "no-board",
        "frozen",
        "frozen-long",
    ],
)
def test_supervisor_verdict(
    identity_ok: bool, lock_held: bool, age_ns: int | None, alive: bool, reason: str
) -> None:
    verdict = supervisor_verdict(
        lock_held=lock_held, pid=4242, identity_ok=identity_ok, heartbeat_age_ns=age_ns, timeout_ns=5 * S
    )
    assert verdict.alive is alive
    assert verdict.reason == reason


# -- pool_verdict ---------------------------------------------------------------------------------


def verdict(rows: list[dict[str, Any]], desired: int, pool_state: str = "running"):
    return pool_verdict(
        rows, workers_desired=desired, pool_state=pool_state, now_ns=NOW, heartbeat_timeout_ns=TIMEOUT
    )


@pytest.mark.parametrize(
    ("rows", "desired", "pool_state", "state", "code", "reason"),
    [
        ([row(0), row(1), row(2)], 3, "running", "running", 0, ""),
        ([row(0), row(1, W.EMPTY), row(2)], 2, "running", "running", 0, ""),  # a retired slot is ignored
        ([row(0), row(1, W.HUNG), row(2)], 3, "running", "degraded", 2, "worker 1: hung"),
        (
            [row(0), row(1, age_s=11)],
            2,
            "running",
            "degraded",
            2,
            "worker 1: no heartbeat for 11.0s (timeout 10s)",
        ),
        ([row(0), row(1)], 3, "running", "degraded", 2, "2 of 3 workers healthy"),
        ([], 2, "running", "degraded", 2, "0 of 2 workers healthy"),
        (
            [row(0, W.BACKOFF, exit_code=-9), row(1, W.STARTING)],
            2,
            "running",
            "degraded",
            2,
            "worker 0: backoff (last exit signal SIGKILL); worker 1: starting, no heartbeat yet",
        ),
        ([row(0), row(1)], 2, "stopping", "degraded", 2, "pool is stopping"),
        ([row(0), row(1)], 2, "stop_failed", "degraded", 2, "pool is stop_failed"),
        (
            # One still serves: degraded. (Every desired slot failed is `failed`: test_failed_state.)
            [row(i, W.FAILED, exit_code=1) for i in range(5)] + [row(5)],
            6,
            "running",
            "degraded",
            2,
            "worker 0: failed (last exit code 1); worker 1: failed (last exit code 1); "
            "worker 2: failed (last exit code 1); and 2 more",
        ),
    ],
    ids=[
        "all-healthy",
        "empty-slot",
        "one-hung",
        "old-heartbeat",
        "fewer-than-desired",
        "none",
        "backoff-and-starting",
        "stopping",
        "stop-failed",
        "many-problems",
    ],
)
def test_pool_verdict(
    rows: list[dict[str, Any]], desired: int, pool_state: str, state: str, code: int, reason: str
) -> None:
    result = verdict(rows, desired, pool_state)
    assert (result.state, int(result.code), result.reason) == (state, code, reason)


def test_more_healthy_than_desired_is_running() -> None:
    # Mid scale-down: three healthy workers for two desired is not a problem.
    assert verdict([row(0), row(1), row(2)], 2).code == StatusCode.RUNNING


# -- describe_exit / progress ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0, "code 0"),
        (1, "code 1"),
        (3, "code 3"),
        (255, "code 255"),
        (-9, "signal SIGKILL"),
        (-15, "signal SIGTERM"),
        (-11, "signal SIGSEGV"),
        (-6, "signal SIGABRT"),
        (-200, "signal 200"),
        (NONE, "none"),
    ],
)
def test_describe_exit(code: int, text: str) -> None:
    assert describe_exit(code) == text


def test_progress_value() -> None:
    assert progress_value(math.nan) is None
    assert progress_value(0.0) == 0.0
    assert progress_value(0.75) == 0.75
