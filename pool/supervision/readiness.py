"""The readiness pipe of a detached supervisor (pool.ops.daemon reads the other end).

Lines: any number of "note: ..." (what the waiting `poolctl start` prints, e.g. what
was cleaned up after a dead supervisor), then one verdict, "ready" or
"failed: <reason>", and the pipe is closed. Forked workers close their copy.
"""

from __future__ import annotations

import os


class Readiness:
    """The supervisor's end of the pipe (no pipe: every call does nothing)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def note(self, line: str) -> None:
        """A line for the waiting `poolctl start` to print before the verdict (what the new
        supervisor cleaned up after a dead one)."""
        if self.fd is None:
            return
        try:
            os.write(self.fd, f"note: {line}".replace("\n", " ").encode() + b"\n")
        except OSError:
            pass

    def say(self, line: str) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, line.encode() + b"\n")
            os.close(self.fd)
        except OSError:
            pass
        self.fd = None
