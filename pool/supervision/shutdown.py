"""Stop escalation and verified death.

A stop is: the stop flag (board word + a byte on the worker's pipe), then SIGTERM,
then after ``grace`` SIGKILL, then a bounded wait that CONFIRMS the process is
gone. A hang skips the flag (a hung worker reads no flags) and uses a short
grace. A process still there after the confirmation window is a survivor: it is
named, logged, and the stop is reported as failed, never as success.

"Gone" means: no process with that pid and start time, or a zombie (it runs
nothing and holds no lock; PID 1 here does not reap orphans).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum

from statusboard.liveness import is_alive

CONFIRM_S = 2.0  # how long a SIGKILLed process may take to be confirmed gone
HANG_GRACE_S = 1.0  # SIGTERM -> SIGKILL for a hung worker (it may log a traceback)


class Stage(IntEnum):
    FLAG = 1  # stop flag set, waiting for a cooperative exit
    TERM = 2  # SIGTERM sent
    KILL = 3  # SIGKILL sent, waiting for confirmation
    GAVE_UP = 4  # not confirmed gone: a survivor


@dataclass
class Escalation:
    """Where one process's stop stands, and when the next step is due."""

    stage: Stage
    started: float
    next_at: float
    grace: float
    why: str  # "stop", "hang", "retire", "rolling", "recycle"


def begin(why: str, now: float, grace: float) -> Escalation:
    """Plan a stop. Cooperative stops start with the flag, a hang with SIGTERM."""
    if why == "hang":
        g = min(grace, HANG_GRACE_S)
        return Escalation(Stage.TERM, now, now + g, g, why)
    # Give the flag a moment alone before SIGTERM interrupts whatever the worker does.
    return Escalation(Stage.FLAG, now, now + min(1.0, grace / 2), grace, why)


def begin_kill(why: str, now: float) -> Escalation:
    """A stop that starts at SIGKILL (a task timeout): only the confirmation is left."""
    return Escalation(Stage.KILL, now, now + CONFIRM_S, 0.0, why)


def advance(esc: Escalation, now: float) -> Stage | None:
    """Move ``esc`` on if its step is due; returns the new stage (send its signal), else None."""
    if now < esc.next_at:
        return None
    if esc.stage is Stage.FLAG:
        esc.stage = Stage.TERM
        esc.next_at = esc.started + esc.grace
    elif esc.stage is Stage.TERM:
        esc.stage = Stage.KILL
        esc.next_at = now + CONFIRM_S
    elif esc.stage is Stage.KILL:
        esc.stage = Stage.GAVE_UP
        esc.next_at = float("inf")
    else:
        return None
    return esc.stage


SIGNAL_FOR = {Stage.TERM: signal.SIGTERM, Stage.KILL: signal.SIGKILL}


def send(kill: Callable[[int, int], None], pid: int, signum: int) -> bool:
    """Send a signal; False when the process is already gone."""
    try:
        kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def wait_gone(
    processes: Iterable[tuple[int, int | None]],
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[int]:
    """Wait until every (pid, start ticks) is gone; return the pids still alive at ``timeout``.

    For processes that are not our children (we cannot waitpid them). Our own
    children should be reaped by the caller, else they linger as zombies, which
    this counts as gone.
    """
    pending = list(processes)
    deadline = clock() + timeout
    delay = 0.001
    while True:
        pending = [(pid, ticks) for pid, ticks in pending if is_alive(pid, ticks)]
        if not pending or clock() >= deadline:
            return [pid for pid, _ in pending]
        sleep(min(delay, max(0.0, deadline - clock())))
        delay = min(delay * 2, 0.05)


def kill_and_confirm(
    processes: list[tuple[int, int | None]],
    *,
    grace: float,
    kill: Callable[[int, int], None] = os.kill,
) -> list[int]:
    """SIGTERM, wait ``grace``, SIGKILL, confirm. Returns survivors' pids (empty = all gone)."""
    alive = [(pid, ticks) for pid, ticks in processes if is_alive(pid, ticks)]
    for pid, _ in alive:
        send(kill, pid, signal.SIGTERM)
    remaining = wait_gone(alive, grace)
    if not remaining:
        return []
    stubborn = [(pid, ticks) for pid, ticks in alive if pid in remaining]
    for pid, _ in stubborn:
        send(kill, pid, signal.SIGKILL)
    return wait_gone(stubborn, CONFIRM_S)
