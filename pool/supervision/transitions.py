"""Worker state transitions: one readable table; an illegal move raises.

The states are statusboard.states.WorkerState (the integers the board stores).
"""

from __future__ import annotations

from enum import Enum

from statusboard.states import WorkerState as S


class Event(Enum):
    SPAWN = "spawn"  # a process was started in the slot
    FIRST_BEAT = "first_beat"  # it sent its first heartbeat
    STOP = "stop"  # we asked it to stop (pool stop, scale-down, rolling restart)
    HANG = "hang"  # its heartbeat is older than heartbeat_timeout
    EXIT = "exit"  # the process is gone
    BACKOFF = "backoff"  # policy: restart after a delay
    GIVE_UP = "give_up"  # policy: too many restarts, or a boot error
    DONE = "done"  # policy: no restart
    RETIRE = "retire"  # scale-down: the slot is emptied
    SPAWN_FAILED = "spawn_failed"  # no process could be started (EMFILE, EAGAIN, ENOMEM): like an exit


class IllegalTransition(RuntimeError):
    pass


_ALIVE = (S.STARTING, S.RUNNING)
_DOWN = (S.EXITED, S.BACKOFF, S.FAILED, S.STOPPED)

TRANSITIONS: dict[tuple[S, Event], S] = {
    (S.EMPTY, Event.SPAWN): S.STARTING,
    (S.STARTING, Event.FIRST_BEAT): S.RUNNING,
    **{(s, Event.STOP): S.STOPPING for s in (*_ALIVE, S.STOPPING, S.HUNG)},
    **{(s, Event.HANG): S.HUNG for s in _ALIVE},
    **{(s, Event.EXIT): S.EXITED for s in (*_ALIVE, S.STOPPING, S.HUNG)},
    (S.EXITED, Event.BACKOFF): S.BACKOFF,
    (S.EXITED, Event.GIVE_UP): S.FAILED,
    (S.EXITED, Event.DONE): S.EXITED,
    (S.EXITED, Event.STOP): S.STOPPED,
    (S.BACKOFF, Event.STOP): S.STOPPED,
    (S.FAILED, Event.STOP): S.FAILED,
    (S.STOPPED, Event.STOP): S.STOPPED,
    **{(s, Event.SPAWN): S.STARTING for s in (S.EXITED, S.BACKOFF, S.STOPPED)},
    **{(s, Event.SPAWN_FAILED): S.EXITED for s in (S.EMPTY, S.EXITED, S.BACKOFF, S.STOPPED)},
    **{(s, Event.RETIRE): S.EMPTY for s in _DOWN},
}


def next_state(state: S, event: Event) -> S:
    """The state after ``event``; raises IllegalTransition for a pair not in the table."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"no transition from {state.label} on {event.value}") from None
