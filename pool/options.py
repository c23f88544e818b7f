"""The pool options, in one table.

A pool option is a PoolSpec field (pool/spec.py holds its default and the check every
way in must pass). This table says, once, how each is offered at the edges: the
`start` command's options (cli/app.py builds them from it), hence `systemd-unit`'s,
which copies start's, and their help. Adding a PoolSpec field that users set means
adding a row here; tests/test_options.py fails until both agree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pool.spec import LOG_FORMATS, MAX_WORKERS, START_METHODS, PoolSpec, RestartPolicy

# How an option's value is read and checked at the command line.
KINDS = ("workers", "seconds", "seconds_or_zero", "count", "size", "port", "choice", "text")


@dataclass(frozen=True)
class PoolOption:
    field: str  # the PoolSpec field; the option is --field-with-dashes
    kind: str  # one of KINDS
    help: str
    short: str | None = None
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def default(self) -> Any:
        """PoolSpec's default (the one place defaults live)."""
        return _DEFAULTS[self.field]


POOL_OPTIONS: tuple[PoolOption, ...] = (
    PoolOption("workers", "workers", f"Number of workers (1..{MAX_WORKERS}).", short="-w"),
    PoolOption(
        "heartbeat_timeout", "seconds", "Seconds without a heartbeat before a worker is hung and replaced."
    ),
    PoolOption(
        "grace", "seconds", "Seconds a stopping worker (and whatever it started) gets before SIGKILL."
    ),
    PoolOption(
        "restart",
        "choice",
        "permanent: always restart; transient: only after an abnormal exit; temporary: never.",
        choices=tuple(p.value for p in RestartPolicy),
    ),
    PoolOption(
        "max_restarts", "count", "A slot restarted more than this often within --restart-window fails."
    ),
    PoolOption("restart_window", "seconds", "Seconds in which --max-restarts counts a slot's restarts."),
    PoolOption("flush_interval", "seconds", "Seconds between runtime.json flushes (also on every change)."),
    PoolOption(
        "start_method",
        "choice",
        "How workers start; auto = fork from the single-threaded supervisor.",
        choices=START_METHODS,
    ),
    PoolOption(
        "max_rss",
        "size",
        "Recycle a worker whose memory (its whole process tree's resident set) passes this "
        "(512M, 2G): a graceful replacement, not a crash.",
    ),
    PoolOption("max_age", "seconds", "Recycle a worker after this many seconds (plus jitter)."),
    PoolOption(
        "max_age_jitter",
        "seconds_or_zero",
        "Up to this many seconds added at random to each worker's --max-age "
        "(default: a tenth of it), so workers do not all recycle at once.",
    ),
    PoolOption(
        "rss_interval",
        "seconds_or_zero",
        "Seconds between samples of each worker's memory (RSS, from /proc); 0 = off.",
    ),
    PoolOption(
        "metrics_port", "port", "Serve Prometheus metrics at http://HOST:PORT/metrics from the supervisor."
    ),
    PoolOption(
        "metrics_host",
        "text",
        "Address for --metrics-port: 127.0.0.1 (this host only) or 0.0.0.0 (e.g. a pod's IP).",
    ),
    PoolOption(
        "log_format",
        "choice",
        "supervisor.log lines: text, or json (one object per line, for log shippers).",
        choices=LOG_FORMATS,
    ),
)

# Fields a user does not set as an option: the target is start's argument, the name a
# global option, cwd where start runs; backoff timing is tuned in code.
NOT_OPTIONS = ("target", "name", "cwd", "backoff_base", "backoff_cap", "backoff_reset")

_DEFAULTS: dict[str, Any] = {
    f.name: (f.default.value if isinstance(f.default, RestartPolicy) else f.default)
    for f in dataclasses.fields(PoolSpec)
    if f.default is not dataclasses.MISSING
}
