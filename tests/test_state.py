"""Worker states: a closed enum of the board's integers and one table of legal moves."""

from __future__ import annotations

import itertools

import pytest

from pool.state import TRANSITIONS, Event, IllegalTransition, next_state
from statusboard.states import WorkerState as S

# Written out by hand from the contract, not derived from pool.state: a change to
# the table has to be made here too, deliberately.
EXPECTED = {
    (S.EMPTY, Event.SPAWN): S.STARTING,
    (S.EXITED, Event.SPAWN): S.STARTING,
    (S.BACKOFF, Event.SPAWN): S.STARTING,
    (S.STOPPED, Event.SPAWN): S.STARTING,
    (S.STARTING, Event.FIRST_BEAT): S.RUNNING,
    (S.STARTING, Event.STOP): S.STOPPING,
    (S.RUNNING, Event.STOP): S.STOPPING,
    (S.STOPPING, Event.STOP): S.STOPPING,
    (S.HUNG, Event.STOP): S.STOPPING,
    (S.EXITED, Event.STOP): S.STOPPED,
    (S.BACKOFF, Event.STOP): S.STOPPED,
    (S.FAILED, Event.STOP): S.FAILED,
    (S.STOPPED, Event.STOP): S.STOPPED,
    (S.STARTING, Event.HANG): S.HUNG,
    (S.RUNNING, Event.HANG): S.HUNG,
    (S.STARTING, Event.EXIT): S.EXITED,
    (S.RUNNING, Event.EXIT): S.EXITED,
    (S.STOPPING, Event.EXIT): S.EXITED,
    (S.HUNG, Event.EXIT): S.EXITED,
    (S.EXITED, Event.BACKOFF): S.BACKOFF,
    (S.EXITED, Event.GIVE_UP): S.FAILED,
    (S.EXITED, Event.DONE): S.EXITED,
    (S.EXITED, Event.RETIRE): S.EMPTY,
    (S.BACKOFF, Event.RETIRE): S.EMPTY,
    (S.FAILED, Event.RETIRE): S.EMPTY,
    (S.STOPPED, Event.RETIRE): S.EMPTY,
    (S.EMPTY, Event.SPAWN_FAILED): S.EXITED,
    (S.EXITED, Event.SPAWN_FAILED): S.EXITED,
    (S.BACKOFF, Event.SPAWN_FAILED): S.EXITED,
    (S.STOPPED, Event.SPAWN_FAILED): S.EXITED,
}

ILLEGAL = [pair for pair in itertools.product(S, Event) if pair not in EXPECTED]


def test_states_are_the_integers_the_board_stores():
    assert {s.name: int(s) for s in S} == {
        "EMPTY": 0,
        "STARTING": 1,
        "RUNNING": 2,
        "STOPPING": 3,
        "EXITED": 4,
        "BACKOFF": 5,
        "HUNG": 6,
        "FAILED": 7,
        "STOPPED": 8,
    }
    assert S.BACKOFF.label == "backoff"


def test_the_table_is_exactly_the_expected_one():
    assert dict(TRANSITIONS) == EXPECTED


@pytest.mark.parametrize(("state", "event"), list(EXPECTED), ids=lambda x: getattr(x, "name", x))
def test_every_legal_pair(state, event):
    assert next_state(state, event) is EXPECTED[(state, event)]


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=lambda x: getattr(x, "name", x))
def test_every_illegal_pair_raises(state, event):
    with pytest.raises(IllegalTransition) as err:
        next_state(state, event)
    assert state.label in str(err.value)
    assert event.value in str(err.value)


def test_illegal_examples_that_matter():
    # A dead worker cannot beat, a failed slot is not restarted by accident,
    # and nothing spawns over a live process.
    for state, event in [
        (S.EXITED, Event.FIRST_BEAT),
        (S.FAILED, Event.SPAWN),
        (S.RUNNING, Event.SPAWN),
        (S.STOPPING, Event.SPAWN),
        (S.RUNNING, Event.RETIRE),
        (S.EMPTY, Event.EXIT),
    ]:
        with pytest.raises(IllegalTransition):
            next_state(state, event)


def test_every_state_is_reachable_and_every_live_state_can_end():
    reachable = {S.EMPTY}
    frontier = [S.EMPTY]
    while frontier:
        state = frontier.pop()
        for (src, _), dst in TRANSITIONS.items():
            if src is state and dst not in reachable:
                reachable.add(dst)
                frontier.append(dst)
    assert reachable == set(S)
    for state in (S.STARTING, S.RUNNING, S.STOPPING, S.HUNG):
        assert next_state(state, Event.EXIT) is S.EXITED
