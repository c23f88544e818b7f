"""Pause and resume the busy writer from the reader, so idle and busy reads interleave.

Two int64 words in a small shared file: the command (written by the reader) and
the writer's state (written by the writer). The writer only changes its state
between whole passes over the rows, so "paused" means no row is half written
and every sequence counter is even: an idle sample never pays for a retry.
"""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path

PAUSE, RUN, STOP = 0, 1, 2
_COMMAND, _STATE = 0, 1
_SIZE = 16


class WriterSwitch:
    """Both ends of the switch; ``create`` makes the file, ``open`` maps it."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._mmap = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)
        self._words = memoryview(self._mmap).cast("q")
        self.path = path

    @classmethod
    def create(cls, path: Path) -> WriterSwitch:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, _SIZE)  # zeros: command PAUSE, state PAUSE
        finally:
            os.close(fd)
        return cls(path)

    # -- the writer's side ------------------------------------------------

    @property
    def command(self) -> int:
        return int(self._words[_COMMAND])

    def report(self, state: int) -> None:
        self._words[_STATE] = state

    # -- the reader's side ------------------------------------------------

    def request(self, command: int, *, timeout: float = 10.0) -> None:
        """Ask for ``command`` and wait until the writer reports it (PAUSE and RUN only)."""
        self._words[_COMMAND] = command
        deadline = time.monotonic() + timeout
        while self._words[_STATE] != command:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the busy writer did not switch to {command} within {timeout:g} s")
            time.sleep(0.0002)

    def stop(self) -> None:
        self._words[_COMMAND] = STOP

    def close(self) -> None:
        if not self._mmap.closed:
            self._words.release()
            self._mmap.close()
