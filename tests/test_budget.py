"""Restart policy arithmetic with time injected: backoff, its reset, intensity, the window."""

from __future__ import annotations

import itertools

import pytest

from pool.spec import RestartPolicy
from pool.supervision.budget import RestartBudget, backoff_delay
from pool.supervision.leaving import should_restart


def budget(**overrides):
    settings = {"max_restarts": 100, "window": 60.0, "base": 0.1, "cap": 10.0, "reset_after": 10.0}
    settings.update(overrides)
    return RestartBudget(**settings)


@pytest.mark.parametrize(
    ("policy", "abnormal", "expected"),
    [
        (RestartPolicy.PERMANENT, False, True),
        (RestartPolicy.PERMANENT, True, True),
        (RestartPolicy.TRANSIENT, False, False),
        (RestartPolicy.TRANSIENT, True, True),
        (RestartPolicy.TEMPORARY, False, False),
        (RestartPolicy.TEMPORARY, True, False),
    ],
)
def test_should_restart_follows_otp(policy, abnormal, expected):
    assert should_restart(policy, abnormal=abnormal) is expected


def test_backoff_delay_sequence_and_cap():
    delays = [backoff_delay(n, base=0.1, cap=1.0) for n in range(1, 12)]
    assert delays[:5] == pytest.approx([0.0, 0.1, 0.15, 0.225, 0.3375])
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert max(delays) == 1.0
    assert delays[-1] == 1.0
    assert backoff_delay(0, base=0.1, cap=1.0) == 0.0


def test_crash_loop_delays_with_injected_time():
    b = budget(cap=0.5)
    now, delays = 100.0, []
    for _ in range(7):
        delay = b.record_exit(now, ran_for=0.01)
        delays.append(delay)
        now += delay + 0.01  # the replacement crashes 10 ms after its start
    assert delays == pytest.approx([0.0, 0.1, 0.15, 0.225, 0.3375, 0.5, 0.5])
    assert b.consecutive == 7


def test_backoff_resets_after_a_stable_run():
    b = budget(reset_after=5.0)
    assert [b.record_exit(t, 0.1) for t in (0.0, 0.2, 0.5)] == pytest.approx([0.0, 0.1, 0.15])
    # A run just short of reset_after does not reset ...
    assert b.record_exit(5.0, 4.9) == pytest.approx(0.225)
    # ... one of reset_after seconds does: the next restart is immediate again.
    assert b.record_exit(11.0, 5.0) == 0.0
    assert b.record_exit(11.1, 0.05) == pytest.approx(0.1)


def test_intensity_gives_up_after_max_restarts_within_the_window():
    b = budget(max_restarts=3, window=10.0)
    results = [b.record_exit(t, 0.1) for t in (0.0, 1.0, 2.0)]
    assert None not in results
    assert b.recent == 3
    assert b.record_exit(3.0, 0.1) is None  # the 4th failure in 10 s: more than 3


def test_max_restarts_zero_gives_up_at_the_first_failure():
    assert budget(max_restarts=0).record_exit(0.0, 1.0) is None


def test_old_failures_drop_out_of_the_window():
    b = budget(max_restarts=3, window=10.0)
    for t in (0.0, 1.0, 2.0):
        assert b.record_exit(t, 0.1) is not None
    # 20 s later the three old failures are outside the window: this one is the only one.
    assert b.record_exit(22.0, 0.1) is not None
    assert b.recent == 1
    for t in (23.0, 24.0):
        assert b.record_exit(t, 0.1) is not None
    assert b.recent == 3
    assert b.record_exit(25.0, 0.1) is None


def test_sliding_window_keeps_failures_inside_it():
    b = budget(max_restarts=2, window=10.0)
    assert b.record_exit(0.0, 0.1) is not None
    assert b.record_exit(9.0, 0.1) is not None
    # At t=12 the t=0 failure left the window, the t=9 one did not: 2 recent, allowed.
    assert b.record_exit(12.0, 0.1) is not None
    assert b.recent == 2
    # At t=15 three failures (9, 12, 15) are inside 10 s: give up.
    assert b.record_exit(15.0, 0.1) is None
