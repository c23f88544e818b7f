"""Task functions for the ``taskpool`` group: importable by every library's workers.

They live in a module (not ``__main__``) so that every pool pickles them by
reference, the way real programs' tasks are pickled.
"""

from __future__ import annotations

import os
import time

TICK_S = 0.001


def noop(x: int) -> int:
    """The trivial task: what a pool's per-task overhead is measured with."""
    return x


def tick(x: int) -> int:
    """A 1 ms task that says which worker ran it (for the crash-loss run)."""
    time.sleep(TICK_S)
    return os.getpid()
