"""Health verdicts: pure functions of (rows, now, thresholds). No processes, no I/O.

A row here is the plain dict of board fields (see statusboard.rows); ``now_ns``
is the monotonic clock, which on Linux is one clock for every process, so ages
computed in a reader are ages the supervisor would compute.
"""

from __future__ import annotations

import math
from enum import IntEnum

from statusboard import layout
from statusboard.states import WorkerState, worker_state_label

TYPE_CHECKING = False  # typing's import costs more than this whole module on the status path
if TYPE_CHECKING:
    from typing import Any

NS = 1_000_000_000


class StatusCode(IntEnum):
    """`poolctl status` exit codes (LSB style)."""

    RUNNING = 0
    STALE = 1
    # The same code as stale, on purpose (an alias: StatusCode.FAILED is StatusCode.STALE):
    # a live supervisor with every slot given up on is, to a liveness probe, as good as a
    # dead one. Restarting the container is the only repair left, as systemd puts such a
    # unit in "failed".
    FAILED = 1
    DEGRADED = 2
    NOT_RUNNING = 3
    UNKNOWN = 4


class Record:
    """A small value type: equality and repr from __slots__.

    Not a dataclass: ``dataclasses`` imports ``inspect`` (~10 ms), a third of the
    `poolctl status` budget.
    """

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and type(other) is type(self) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class WorkerVerdict(Record):
    __slots__ = ("healthy", "reason")

    def __init__(self, healthy: bool, reason: str) -> None:
        self.healthy = healthy
        self.reason = reason  # empty when healthy


class SupervisorVerdict(Record):
    __slots__ = ("alive", "reason")

    def __init__(self, alive: bool, reason: str) -> None:
        self.alive = alive
        self.reason = reason  # why not alive; empty when alive


class PoolVerdict(Record):
    __slots__ = ("code", "reason", "state")

    def __init__(self, state: str, code: StatusCode, reason: str) -> None:
        self.state = state  # running | degraded | failed | stale | stopped | stop_failed | unknown
        self.code = code
        self.reason = reason


def worker_verdict(row: dict[str, Any], now_ns: int, heartbeat_timeout_ns: int) -> WorkerVerdict:
    """Is this worker healthy: running, with a heartbeat no older than the timeout."""
    state = row["state"]
    if state == WorkerState.RUNNING:
        age_ns = now_ns - row["heartbeat_ns"]
        if age_ns <= heartbeat_timeout_ns:
            return WorkerVerdict(True, "")
        return WorkerVerdict(
            False,
            f"no heartbeat for {age_ns / NS:.1f}s (timeout {heartbeat_timeout_ns / NS:g}s)",
        )
    if state == WorkerState.STARTING:
        return WorkerVerdict(False, "starting, no heartbeat yet")
    label = worker_state_label(state)
    code = row.get("last_exit_code", layout.NO_EXIT_CODE)
    if code != layout.NO_EXIT_CODE and state in (
        WorkerState.EXITED,
        WorkerState.BACKOFF,
        WorkerState.FAILED,
    ):
        return WorkerVerdict(False, f"{label} (last exit {describe_exit(code)})")
    return WorkerVerdict(False, label)


def supervisor_verdict(
    *,
    lock_held: bool,
    pid: int,
    identity_ok: bool,
    heartbeat_age_ns: int | None,
    timeout_ns: int,
) -> SupervisorVerdict:
    """Alive only if the lock is held, the recorded pid is that very process, and it beats."""
    if not identity_ok:
        return SupervisorVerdict(False, f"supervisor pid {pid} is gone (or is now a different process)")
    if not lock_held:
        return SupervisorVerdict(False, f"supervisor pid {pid} does not hold supervisor.lock")
    if heartbeat_age_ns is None:
        return SupervisorVerdict(False, f"supervisor pid {pid} has no readable board")
    if heartbeat_age_ns > timeout_ns:
        return SupervisorVerdict(
            False,
            f"supervisor pid {pid} is frozen: board heartbeat {heartbeat_age_ns / NS:.1f}s old "
            f"(limit {timeout_ns / NS:g}s)",
        )
    return SupervisorVerdict(True, "")


def pool_verdict(
    rows: list[dict[str, Any]],
    *,
    workers_desired: int,
    pool_state: str,
    now_ns: int,
    heartbeat_timeout_ns: int,
) -> PoolVerdict:
    """Verdict for a pool whose supervisor is verified alive: running, degraded or failed."""
    if pool_state in ("stopping", "stop_failed"):
        return PoolVerdict("degraded", StatusCode.DEGRADED, f"pool is {pool_state}")
    given_up = failed_reason(rows, workers_desired)
    if given_up is not None:
        return PoolVerdict("failed", StatusCode.FAILED, given_up)
    live = [r for r in rows if r["state"] != WorkerState.EMPTY]
    problems = []
    healthy = 0
    for row in live:
        verdict = worker_verdict(row, now_ns, heartbeat_timeout_ns)
        if verdict.healthy:
            healthy += 1
        else:
            problems.append(f"worker {row['slot']}: {verdict.reason}")
    if healthy >= workers_desired and not problems:
        return PoolVerdict("running", StatusCode.RUNNING, "")
    if not problems:
        problems.append(f"{healthy} of {workers_desired} workers healthy")
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    return PoolVerdict("degraded", StatusCode.DEGRADED, shown)


def failed_reason(rows: list[dict[str, Any]], workers_desired: int) -> str | None:
    """Why the pool is ``failed``, or None: every desired slot is FAILED, so nothing serves and
    the supervisor will restart nothing (FAILED is final: only a new pool clears it).

    Decided from the rows alone, so a reader knows it between flushes and without the
    supervisor saying so. Any desired slot that is alive, starting, backing off, exited
    but not yet decided, or not yet started (a scale-up) keeps the pool ``degraded``: it
    still serves or is being repaired. A slot STOPPED by its restart policy (a finished
    ``transient`` worker) is not a failure, so it too keeps the pool out of ``failed``.
    Slots at or past ``workers_desired`` (being retired) do not count.
    """
    if workers_desired <= 0:
        return None
    desired = [r for r in rows if r["slot"] < workers_desired and r["state"] != WorkerState.EMPTY]
    if len(desired) < workers_desired or any(r["state"] != WorkerState.FAILED for r in desired):
        return None
    details = [f"worker {r['slot']}: {worker_verdict(r, 0, 0).reason}" for r in sorted(desired, key=_slot)]
    shown = "; ".join(details[:3]) + (f"; and {len(details) - 3} more" if len(details) > 3 else "")
    return f"every worker failed ({len(desired)} of {workers_desired}) and none will be restarted: {shown}"


def _slot(row: dict[str, Any]) -> int:
    return int(row["slot"])


def describe_exit(code: int) -> str:
    """'code 1', 'signal SIGKILL' ... from a stored exit code (negative = signal)."""
    if code == layout.NO_EXIT_CODE:
        return "none"
    if code < 0:
        import signal

        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def progress_value(raw: float) -> float | None:
    return None if math.isnan(raw) else raw
