"""Restart policy arithmetic: backoff and intensity, pure functions of time.

Nothing here reads a clock: callers pass ``now`` (seconds, monotonic), so tests
step time instead of sleeping.

- Backoff (PM2-style): the first restart after a stable run is immediate (a crash
  should cost a fork, not a timer), each further consecutive one waits
  ``base * 1.5**(n-2)``, capped; a run of ``reset_after`` seconds resets it.
- Intensity (OTP): more than ``max_restarts`` failures inside ``window`` seconds
  and the slot gives up. Hang kills count like crashes (systemd counts watchdog
  failures the same way); recycling (a planned replacement) does not count.

What follows an exit (restart, replace, retire ...) is decided in pool/supervision/leaving.py.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


def backoff_delay(consecutive: int, *, base: float, cap: float) -> float:
    """Delay before restart number ``consecutive`` (1 = first since a stable run)."""
    if consecutive <= 1:
        return 0.0
    return min(cap, base * 1.5 ** (consecutive - 2))


@dataclass
class RestartBudget:
    """One slot's restart history."""

    max_restarts: int
    window: float
    base: float
    cap: float
    reset_after: float
    failures: deque[float] = field(default_factory=deque)
    consecutive: int = 0

    def record_exit(self, now: float, ran_for: float) -> float | None:
        """Record a failure at ``now`` after a run of ``ran_for`` s.

        Returns the restart delay, or None when the intensity limit is exceeded.
        """
        if ran_for >= self.reset_after:
            self.consecutive = 0
        self.consecutive += 1
        self.failures.append(now)
        while self.failures and self.failures[0] < now - self.window:
            self.failures.popleft()
        if len(self.failures) > self.max_restarts:
            return None
        return backoff_delay(self.consecutive, base=self.base, cap=self.cap)

    @property
    def recent(self) -> int:
        return len(self.failures)
