"""The exit decision (pool/supervision/leaving.py), exhaustively: every planned change x every fact.

The expected outcome is written out below as rules in plain words, independently of
the implementation's table, and checked on every combination (7 changes + None, 3
policies, stopping, code 0/1/-9, hung, booted, boot error: 1,152 cases).
"""

from __future__ import annotations

import itertools

import pytest

from pool.spec import RestartPolicy
from pool.supervision.leaving import AfterExit, Leaving, after_exit

REPLACEMENTS = {Leaving.RECYCLE, Leaving.ROLL, Leaving.KILL, Leaving.RESPAWN}


def expected(
    policy: RestartPolicy,
    leaving: Leaving | None,
    stopping: bool,
    code: int,
    hung: bool,
    booted: bool,
    boot_error: bool,
) -> AfterExit:
    if boot_error:
        return AfterExit.BOOT_ERROR  # broken code stops the pool, whatever else is going on
    if leaving is Leaving.RETIRE:
        return AfterExit.RETIRED  # scale-down empties the slot, even while stopping
    if stopping:
        return AfterExit.STOPPED
    if leaving in REPLACEMENTS and booted:
        return AfterExit.REPLACE  # planned and it had served: respawn, uncounted
    # A crash: no plan, a queued or draining recycle that died, or a replacement that
    # never beat (respawning that uncounted would loop on broken code).
    abnormal = code != 0 or hung
    if policy is RestartPolicy.TEMPORARY or (policy is RestartPolicy.TRANSIENT and not abnormal):
        return AfterExit.DONE
    return AfterExit.RESTART


CASES = list(
    itertools.product(
        list(RestartPolicy),
        [None, *Leaving],
        [False, True],
        [0, 1, -9],
        [False, True],
        [False, True],
        [False, True],
    )
)


def test_every_combination_gets_the_outcome_the_rules_say() -> None:
    wrong = []
    for policy, leaving, stopping, code, hung, booted, boot_error in CASES:
        got = after_exit(
            policy, leaving, stopping=stopping, code=code, hung=hung, booted=booted, boot_error=boot_error
        )
        want = expected(policy, leaving, stopping, code, hung, booted, boot_error)
        if got is not want:
            wrong.append((policy.value, leaving, stopping, code, hung, booted, boot_error, got, want))
    assert len(CASES) == 3 * 8 * 2 * 3 * 2 * 2 * 2
    assert not wrong, wrong[:5]


def test_every_outcome_is_reachable() -> None:
    seen = {
        after_exit(p, lv, stopping=s, code=c, hung=h, booted=b, boot_error=e)
        for p, lv, s, c, h, b, e in CASES
    }
    assert seen == set(AfterExit)


@pytest.mark.parametrize("leaving", list(Leaving))
def test_replacing_is_exactly_the_changes_that_take_a_worker_out_of_service(leaving: Leaving) -> None:
    # RECYCLE_DUE still serves (it waits for its turn); RETIRE is not replaced at all.
    assert leaving.replacing == (leaving in REPLACEMENTS or leaving is Leaving.DRAIN)
