"""Worker targets for the poolctl pools the ``supervisor`` and ``cli`` groups start.

``poolctl start bench.sup_workers:idle`` runs from the repository root, so the
supervisor imports this module from there (the harness package is not installed).
Kept free of heavy imports: a worker should cost what a user's idle worker costs.
"""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Any

IDLE_WAIT_S = 5.0  # ctx.wait() beats about once a second while it waits
HANG_BEAT_S = 0.05  # the hang pool's heartbeat timeout is 1 s: beat well inside it


def idle(ctx: Any) -> None:
    """An idle worker: wait for a stop request, beating as it waits."""
    while not ctx.wait(IDLE_WAIT_S):
        pass


def hang_on_usr1(ctx: Any) -> None:
    """Beat every 50 ms until SIGUSR1, then block forever without beating (a hang).

    SIGTERM keeps its default action (the worker entry resets it), so the
    supervisor's hang verdict, SIGTERM, ends the process at once.
    """
    signal.signal(signal.SIGUSR1, _block_forever)
    while not ctx.wait(HANG_BEAT_S):
        pass


def _block_forever(signum: int, frame: FrameType | None) -> None:
    while True:
        time.sleep(3600)


def idle_with_child(ctx: Any) -> None:
    """An idle worker that first starts one helper process (``sleep 1000``), as a worker
    driving a browser or an inference helper does: the containment group's tree of two."""
    import subprocess

    subprocess.Popen(
        ["sleep", "1000"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    idle(ctx)
