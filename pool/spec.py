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
LOG_FORMATS = ("text", "json")
_SIZE_RE = re.compile(r"^\s*(?P<number>\d+(\.\d+)?)\s*(?P<unit>[KMGT]?)(I?B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_TARGET_RE = re.compile(r"^(?P<module>[^:\s]+):(?P<attr>[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)$")


def workers_error(workers: object) -> str | None:
    """Why ``workers`` is not a pool size (None when it is): the one check of 1..MAX_WORKERS
    behind PoolSpec, Supervisor.scale and the control socket's scale."""
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        return f"workers: must be an integer in 1..{MAX_WORKERS}, got {workers!r}"
    return None


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

    Recycling (a planned replacement, never counted as a crash): ``max_rss`` bytes,
    checked every ``rss_interval`` (0 turns RSS sampling off), and ``max_age``
    seconds plus a random ``max_age_jitter`` (default a tenth of ``max_age``) so a
    pool started at once does not recycle at once. ``metrics_port`` serves
    Prometheus /metrics from the supervisor loop, on ``metrics_host`` (loopback by
    default; 0.0.0.0 for a scrape from outside, e.g. of a Kubernetes pod's IP); ``log_format`` "json" writes the
    supervisor log as one JSON object per line.
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
    max_rss: int | None = None
    max_age: float | None = None
    max_age_jitter: float | None = None
    rss_interval: float = 1.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    log_format: str = "text"

    def __post_init__(self) -> None:
        if isinstance(self.restart, str) and not isinstance(self.restart, RestartPolicy):
            try:
                object.__setattr__(self, "restart", RestartPolicy(self.restart))
            except ValueError:
                raise SpecError(
                    f"restart: unknown policy {self.restart!r} (use permanent, transient or temporary)"
                ) from None
        check_target(self.target)
        if (error := workers_error(self.workers)) is not None:
            raise SpecError(error)
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
        if self.max_rss is not None:
            _check_int("max_rss", self.max_rss, 1 << 20, 1 << 50)
        if self.max_age is not None:
            _check_positive("max_age", self.max_age)
        if self.max_age_jitter is not None and not (
            isinstance(self.max_age_jitter, int | float)
            and math.isfinite(self.max_age_jitter)
            and self.max_age_jitter >= 0
        ):
            raise SpecError(f"max_age_jitter: must be a number of seconds >= 0, got {self.max_age_jitter!r}")
        if not (
            isinstance(self.rss_interval, int | float)
            and not isinstance(self.rss_interval, bool)
            and math.isfinite(self.rss_interval)
            and self.rss_interval >= 0
        ):
            raise SpecError(
                f"rss_interval: must be a number of seconds >= 0 (0: off), got {self.rss_interval!r}"
            )
        if self.max_rss is not None and not self.rss_interval:
            raise SpecError("max_rss: needs RSS sampling (rss_interval > 0)")
        if self.metrics_port is not None:
            _check_int("metrics_port", self.metrics_port, 0, 65535)
        if (
            not isinstance(self.metrics_host, str)
            or not self.metrics_host
            or any(c.isspace() for c in self.metrics_host)
        ):
            raise SpecError(
                f"metrics_host: expected an address such as 127.0.0.1 or 0.0.0.0, got {self.metrics_host!r}"
            )
        if self.log_format not in LOG_FORMATS:
            raise SpecError(f"log_format: unknown {self.log_format!r} (use {', '.join(LOG_FORMATS)})")

    @property
    def age_jitter(self) -> float:
        """The jitter in effect: as given, else a tenth of max_age (0 without max_age)."""
        if self.max_age_jitter is not None:
            return float(self.max_age_jitter)
        return self.max_age / 10 if self.max_age is not None else 0.0


def check_target(target: str) -> tuple[str, str]:
    """Split ``module:function`` (or ``path/file.py:function``); raise SpecError if malformed."""
    if not isinstance(target, str):
        raise SpecError(f"target: expected 'module:function', got {target!r}")
    match = _TARGET_RE.match(target)
    if not match:
        raise SpecError(f"target: expected 'module:function' or 'path/to/file.py:function', got {target!r}")
    return match["module"], match["attr"]


def parse_size(text: str) -> int:
    """``512M``, ``1.5G``, ``800MiB``, ``1048576`` -> bytes (binary units, as ps and top count)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise SpecError(f"size: expected a number with an optional K, M, G or T suffix, got {text!r}")
    return int(float(match["number"]) * _SIZE_UNITS[match["unit"].upper()])


def format_size(size: int) -> str:
    """Bytes as a short human figure: 512M, 1.5G, 800K."""
    for unit in ("T", "G", "M", "K"):
        scale = _SIZE_UNITS[unit]
        if size >= scale:
            value = size / scale
            return f"{value:.0f}{unit}" if value >= 100 or value == int(value) else f"{value:.1f}{unit}"
    return f"{size}B"


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
