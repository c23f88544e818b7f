"""Worker states: a closed enum of the board's integers and one table of legal moves."""

from __future__ import annotations

import itertools

from pool.supervision.transitions import Event, IllegalTransition, next_state
from statusboard.states import WorkerState as S

# Written out by hand from the contract, not derived from pool.supervision.transitions: a change to
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

ALIVE = {S.STARTING, S.RUNNING, S.STOPPING, S.HUNG}  # a process is in the slot


def _outcome(state: S, event: Event) -> S | str:
    """What next_state does with the pair: the new state, or "illegal" when it raises as it must."""
    try:
        return next_state(state, event)
    except IllegalTransition as err:
        assert state.label in str(err) and event.value in str(err), str(err)
        return "illegal"


def _reachable(start: S) -> set[S]:
    """Every state some sequence of legal events leads to from ``start`` (itself included)."""
    seen, frontier = {start}, [start]
    while frontier:
        state = frontier.pop()
        for event in Event:
            after = _outcome(state, event)
            if isinstance(after, S) and after not in seen:
                seen.add(after)
                frontier.append(after)
    return seen


def test_every_pair_does_what_the_contract_says():
    """All 81 (state, event) pairs through next_state: a legal one reaches the written-out
    state, any other raises IllegalTransition naming both."""
    wrong = [
        (state.name, event.name, got, want)
        for state, event in itertools.product(S, Event)
        if (got := _outcome(state, event)) != (want := EXPECTED.get((state, event), "illegal"))
    ]
    assert wrong == [], wrong


def test_only_stop_and_retire_lead_out_of_failed():
    """A failed slot stays down: nothing restarts it by accident; stop leaves it failed, and
    only a retire (scale-down) empties it."""
    legal = {event: after for event in Event if isinstance(after := _outcome(S.FAILED, event), S)}
    assert legal == {Event.STOP: S.FAILED, Event.RETIRE: S.EMPTY}


def test_nothing_spawns_over_a_live_process_or_a_failed_slot():
    spawnable = {state for state in S if isinstance(_outcome(state, Event.SPAWN), S)}
    assert spawnable == {S.EMPTY, S.EXITED, S.BACKOFF, S.STOPPED}
    assert not spawnable & (ALIVE | {S.FAILED})


def test_every_state_is_reachable_from_empty():
    assert _reachable(S.EMPTY) == set(S)


def test_every_process_can_be_stopped_and_every_slot_emptied():
    """From a state with a process, STOP is legal and EXIT leads to EXITED; from every state
    some path leads back to EMPTY (a slot can always be retired)."""
    for state in ALIVE:
        assert _outcome(state, Event.STOP) is S.STOPPING, state
        assert _outcome(state, Event.EXIT) is S.EXITED, state
    assert [state for state in S if S.EMPTY not in _reachable(state)] == []


def test_only_a_starting_worker_sends_a_first_beat():
    assert [state for state in S if isinstance(_outcome(state, Event.FIRST_BEAT), S)] == [S.STARTING]
