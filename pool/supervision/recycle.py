"""Worker recycling: memory sampling, age limits, and the one-at-a-time gate.

A recycle is a planned replacement (gunicorn's max_requests, uWSGI's
reload-on-rss and max-worker-lifetime, Celery's max_tasks_per_child): it never
counts toward max_restarts, and at most one runs at a time, so a pool of N keeps
at least N-1 workers serving while its workers are renewed.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from typing import Protocol

from pool.spec import PoolSpec, format_size
from statusboard.states import WorkerState as S

_PAGE = os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """Resident set size of worker processes, from /proc/PID/statm.

    One fd per worker, kept open and re-read with pread (3 us a sample, against
    10 us for open/read/close; no scan of /proc, no psutil). A kept fd names the
    process, not the pid: once the process is gone the read fails, so a reused
    pid can never be sampled in its place.
    """

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}

    def track(self, pid: int) -> None:
        try:
            self._fds[pid] = os.open(f"/proc/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            pass  # already gone: its exit is on the way

    def sample(self, pid: int) -> int | None:
        fd = self._fds.get(pid)
        if fd is None:
            return None
        try:
            return int(os.pread(fd, 128, 0).split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            return None

    def forget(self, pid: int) -> None:
        fd = self._fds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for pid in list(self._fds):
            self.forget(pid)


def age_limit(spec: PoolSpec, rng: random.Random) -> float | None:
    """Seconds a new worker may live: max_age plus its own random share of the jitter."""
    if spec.max_age is None:
        return None
    return spec.max_age + rng.uniform(0.0, spec.age_jitter)


def over_rss(spec: PoolSpec, rss: int) -> str | None:
    """The recycle reason when ``rss`` is past max_rss, else None."""
    if spec.max_rss is None or rss <= spec.max_rss:
        return None
    return f"rss {format_size(rss)} over max_rss {format_size(spec.max_rss)}"


class _Serving(Protocol):
    index: int
    state: S

    @property
    def replacing(self) -> bool: ...


def may_start(candidate: _Serving, slots: Iterable[_Serving], desired: int) -> bool:
    """May ``candidate`` be taken out of service now without leaving fewer than N-1 serving?

    Serving: a worker of the pool's desired size that is running and not already
    being replaced. The candidate must be serving too (a worker still booting, or
    one already on its way out, is not recycled).
    """
    if candidate.index >= desired or candidate.state is not S.RUNNING or candidate.replacing:
        return False
    others = sum(
        1
        for s in slots
        if s is not candidate and s.index < desired and s.state is S.RUNNING and not s.replacing
    )
    return others >= desired - 1
