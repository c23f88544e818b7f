"""The demo's built-in worker: steady work, one injected crash, one injected hang.

Slot 1 raises after ~2 s in its first generation (a crash: the supervisor logs
the traceback and restarts it at once); slot 2 stops beating after ~4 s in its
first generation (a hang: with a 2 s heartbeat timeout it is killed and
replaced). Every later generation, and every other slot, just works.
"""

from __future__ import annotations

import time
from typing import Any

CRASH_AFTER_S = 2.0
HANG_AFTER_S = 4.0


def work(ctx: Any) -> None:
    started = time.monotonic()
    units = 0
    while not ctx.wait(0.1):
        units += 1
        ctx.beat(progress=units)
        ctx.task_done()
        age = time.monotonic() - started
        if ctx.generation == 1 and ctx.slot == 1 and age > CRASH_AFTER_S:
            raise RuntimeError("injected crash (demo)")
        if ctx.generation == 1 and ctx.slot == 2 and age > HANG_AFTER_S:
            time.sleep(3600)  # injected hang: no more heartbeats
