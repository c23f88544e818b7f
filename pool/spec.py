"""What a pool is asked to be: target, size, and OTP-style policy, checked on the way in."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from enum import StrEnum

from pool.errors import SpecError

MAX_WORKERS = 1024
START_METHODS = ("auto", "fork", "forkserver", "spawn")
_TARGET_RE = re.compile(r"^(?P<module>[^:\s]+):(?P<attr>[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)$")


class RestartPolicy(StrEnum):
    """OTP restart types: permanent always, transient after an abnormal exit, temporary never."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


@dataclass(frozen=True)
class PoolSpec:
    """A validated pool configuration. Times are seconds.

    ``start_method`` "auto" means fork when the supervisor loop runs in a
    single-threaded process (1.5 ms per worker here; forking with other threads
    alive can copy a held lock into the child) and forkserver otherwise.
    """

    target: str
    workers: int = 1
    name: str = "default"
    heartbeat_timeout: float = 30.0
    grace: float = 5.0
    restart: RestartPolicy = RestartPolicy.PERMANENT
    max_restarts: int = 5
    restart_window: float = 60.0
    backoff_base: float = 0.1
    backoff_cap: float = 10.0
    backoff_reset: float = 10.0
    flush_interval: float = 10.0
    start_method: str = "auto"
    cwd: str = field(default_factory=os.getcwd)

    def __post_init__(self) -> None:
        if isinstance(self.restart, str) and not isinstance(self.restart, RestartPolicy):
            try:
                object.__setattr__(self, "restart", RestartPolicy(self.restart))
            except ValueError:
                raise SpecError(
                    f"restart: unknown policy {self.restart!r} (use permanent, transient or temporary)"
                ) from None
        check_target(self.target)
        _check_int("workers", self.workers, 1, MAX_WORKERS)
        _check_int("max_restarts", self.max_restarts, 0, 1_000_000)
        for name in (
            "heartbeat_timeout",
            "grace",
            "restart_window",
            "backoff_base",
            "backoff_cap",
            "backoff_reset",
            "flush_interval",
        ):
            _check_positive(name, getattr(self, name))
        if self.start_method not in START_METHODS:
            raise SpecError(f"start_method: unknown {self.start_method!r} (use {', '.join(START_METHODS)})")


def check_target(target: str) -> tuple[str, str]:
    """Split ``module:function`` (or ``path/file.py:function``); raise SpecError if malformed."""
    if not isinstance(target, str):
        raise SpecError(f"target: expected 'module:function', got {target!r}")
    match = _TARGET_RE.match(target)
    if not match:
        raise SpecError(f"target: expected 'module:function' or 'path/to/file.py:function', got {target!r}")
    return match["module"], match["attr"]


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SpecError(f"{name}: must be an integer in {low}..{high}, got {value!r}")


def _check_positive(name: str, value: object) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise SpecError(f"{name}: must be a number of seconds > 0, got {value!r}")
