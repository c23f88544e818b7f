"""Why a slot's process is leaving, and what follows its exit: one value, one table.

A slot's ``leaving`` is None while its process serves as planned: an exit then is a
crash (or a clean end), and the restart policy decides. Otherwise it names the one
planned change under way in the slot. For a replacement it stays set until the
successor's first heartbeat, so "one replacement at a time" and "never fewer than N-1
serving" can see a replacement that is still booting.

The supervisor's own stop is the pool's, not a slot's (``stopping``); a hang is a
crash with a cause (``hung``).
"""

from __future__ import annotations

from enum import Enum

from pool.spec import RestartPolicy


class Leaving(Enum):
    RECYCLE_DUE = "recycle_due"  # past a limit, queued for its turn; still serving
    DRAIN = "drain"  # recycle: the embedder finishes its work first (WorkerHooks.recycle)
    RECYCLE = "recycle"  # recycle under way: stop flag, grace, escalation
    ROLL = "roll"  # rolling restart
    KILL = "kill"  # killed and replaced (a task timeout)
    RETIRE = "retire"  # scale-down: the slot is emptied when it exits
    RESPAWN = "respawn"  # a retire taken back before the exit: replace it, not a crash

    @property
    def replacing(self) -> bool:
        """Taken out of service to be replaced: counts against one-at-a-time and N-1."""
        return self in _REPLACING

    @property
    def after_exit_if_booted(self) -> AfterExit | None:
        """What this change makes of an exit of a process that had beaten; None: it
        does not decide (the restart policy does)."""
        return _PLANNED_OUTCOME.get(self)


class AfterExit(Enum):
    """What follows a worker's exit, before the restart budget has its say."""

    BOOT_ERROR = "boot_error"  # its code cannot start: stop the pool, restarting would loop
    RETIRED = "retired"  # scale-down: empty the slot
    STOPPED = "stopped"  # the pool is stopping
    REPLACE = "replace"  # planned (rolling restart, recycle, task timeout): respawn, uncounted
    DONE = "done"  # the restart policy says no
    RESTART = "restart"  # a crash: the budget decides the delay, or gives up


_REPLACING = frozenset({Leaving.DRAIN, Leaving.RECYCLE, Leaving.ROLL, Leaving.KILL, Leaving.RESPAWN})

# A planned change's verdict on an exit. Not listed: RECYCLE_DUE (it still served:
# its exit is a crash) and DRAIN (it died while its work was drained: a crash too).
_PLANNED_OUTCOME = {
    Leaving.RECYCLE: AfterExit.REPLACE,
    Leaving.ROLL: AfterExit.REPLACE,
    Leaving.KILL: AfterExit.REPLACE,
    Leaving.RESPAWN: AfterExit.REPLACE,
}


def after_exit(
    policy: RestartPolicy,
    leaving: Leaving | None,
    *,
    stopping: bool,
    code: int,
    hung: bool,
    booted: bool,
    boot_error: bool,
) -> AfterExit:
    """Decide what follows an exit, in this order: a boot error stops the pool; a retire
    empties the slot; a stopping pool stops it; a planned replacement of a process that
    had beaten respawns it uncounted (one that dies before its first beat is a crash:
    respawning it uncounted would loop for ever on broken code); else the policy."""
    if boot_error:
        return AfterExit.BOOT_ERROR
    if leaving is Leaving.RETIRE:
        return AfterExit.RETIRED
    if stopping:
        return AfterExit.STOPPED
    planned = leaving.after_exit_if_booted if leaving is not None and booted else None
    if planned is not None:
        return planned
    if not should_restart(policy, abnormal=code != 0 or hung):
        return AfterExit.DONE
    return AfterExit.RESTART


def should_restart(policy: RestartPolicy, *, abnormal: bool) -> bool:
    """OTP: permanent always, transient only after an abnormal exit, temporary never."""
    if policy is RestartPolicy.PERMANENT:
        return True
    if policy is RestartPolicy.TRANSIENT:
        return abnormal
    return False
