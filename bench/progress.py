"""The progress line on stderr: a rich status line on a terminal, plain lines otherwise.

rich arrives with typer; without it (or when stderr is not a terminal) each step
is one plain line on stderr, so logs of a CI run still show where time went.
"""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """``step(text)`` replaces the current line; ``note(text)`` prints one that stays."""

    def __init__(self, *, enabled: bool = True) -> None:
        self._start = time.monotonic()
        self._enabled = enabled
        self._status: Any = None
        self._console: Any = None
        if not enabled:
            return
        try:
            from rich.console import Console
        except ImportError:
            return
        console = Console(stderr=True)
        if console.is_terminal:
            self._console = console
            self._status = console.status("starting", spinner="dots")
            self._status.start()

    def _stamp(self, text: str) -> str:
        return f"[{time.monotonic() - self._start:6.1f}s] {text}"

    def step(self, text: str) -> None:
        if not self._enabled:
            return
        if self._status is not None:
            self._status.update(self._stamp(text))
        else:
            print(self._stamp(text), file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if not self._enabled:
            return
        if self._console is not None:
            self._console.print(self._stamp(text), highlight=False, markup=False)
        else:
            print(self._stamp(text), file=sys.stderr, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
