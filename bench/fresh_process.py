"""Run one function in a new interpreter: a true second process, nothing inherited.

Figures "from another process" must not come from the process that created the
board (it has the mapping, warm caches, the lock). ``multiprocessing`` with spawn
would do, but on 3.11 it also starts a resource-tracker process and its Events
leave ``sem.*`` files in /dev/shm while they live; a plain ``subprocess`` with two
pipes and ``multiprocessing.connection.Connection`` framing needs neither.

Protocol, one pickled message per frame::

    parent -> child   (target "module:function", args, kwargs), later any frame = stop
    child  -> parent  ("ready", payload)  optional, once
                      ("result", value) | ("error", traceback text)

The target is called as ``function(control, *args, **kwargs)``; ``control.ready()``
tells the parent it is up, ``control.should_stop()`` is true once the parent asked
to stop or died (the pipe's EOF), so a busy loop can never outlive the harness.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench import reaper

_ROOT = str(Path(__file__).resolve().parent.parent)
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[3]); "
    "from bench.fresh_process import child_main; child_main(int(sys.argv[1]), int(sys.argv[2]))"
)


class RemoteError(RuntimeError):
    """The function raised in the child; the message carries its traceback."""


class Control:
    """The child's side of the control pipe."""

    def __init__(self, inbox: Connection, outbox: Connection) -> None:
        self._inbox = inbox
        self._outbox = outbox

    def ready(self, payload: Any = None) -> None:
        self._outbox.send(("ready", payload))

    def should_stop(self) -> bool:
        return self._inbox.poll(0)


class FreshProcess:
    """A child interpreter running ``target`` ("module:function") with ``args``.

    Use as a context manager: leaving it always confirms the child is gone (asking
    it to stop, then SIGTERM, then SIGKILL, by pid).
    """

    def __init__(self, target: str, *args: Any, **kwargs: Any) -> None:
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(to_child_r), str(to_parent_w), _ROOT],
                pass_fds=(to_child_r, to_parent_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except BaseException:
            for fd in (to_child_r, to_child_w, to_parent_r, to_parent_w):
                os.close(fd)
            raise
        os.close(to_child_r)
        os.close(to_parent_w)
        self._outbox = Connection(to_child_w, readable=False)
        self._inbox = Connection(to_parent_r, writable=False)
        self.target = target
        self._outbox.send((target, args, kwargs))
        self._result: tuple[str, Any] | None = None
        self._finished = False  # it sent its result: it is exiting on its own

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_ready(self, timeout: float) -> Any:
        """Block until the child calls ``control.ready()``; returns its payload."""
        kind, payload = self._receive(timeout)
        if kind == "ready":
            return payload
        self._result = (kind, payload)
        if kind == "error":
            raise RemoteError(f"{self.target} failed before it was ready:\n{payload}")
        raise RemoteError(f"{self.target} returned before it was ready")

    def request_stop(self) -> None:
        try:
            self._outbox.send(("stop",))
        except (BrokenPipeError, OSError):
            pass  # already gone; result() will say how

    def result(self, timeout: float) -> Any:
        """The function's return value; raises RemoteError if it raised or died."""
        kind, payload = self._result if self._result is not None else self._receive(timeout)
        while kind == "ready":
            kind, payload = self._receive(timeout)
        self._finished = True
        if kind == "error":
            raise RemoteError(f"{self.target} raised in pid {self.pid}:\n{payload}")
        return payload

    def close(self) -> None:
        """Stop the child and confirm by pid that it is gone. Safe to call twice.

        A child that sent its result gets 10 s to exit by itself; one abandoned
        mid-run (the harness is unwinding an error or SIGTERM) gets half a second
        to notice the stop request, then SIGTERM and SIGKILL.
        """
        self.request_stop()
        for conn in (self._outbox, self._inbox):
            if not conn.closed:
                conn.close()
        wait = 10.0 if self._finished else 0.5
        survivors = reaper.stop_popen(self.popen, grace=5.0, wait_first=wait)
        if survivors:
            raise RuntimeError(f"could not stop {self.target}: {', '.join(survivors)}")

    def __enter__(self) -> FreshProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _receive(self, timeout: float) -> tuple[str, Any]:
        if not self._inbox.poll(timeout):
            raise TimeoutError(f"{self.target} (pid {self.pid}) sent nothing for {timeout:g} s")
        try:
            message: tuple[str, Any] = self._inbox.recv()
        except EOFError:
            code = self.popen.wait(timeout=5)
            raise RemoteError(f"{self.target} (pid {self.pid}) died with exit code {code}") from None
        return message


def run(target: str, *args: Any, timeout: float = 300.0, **kwargs: Any) -> Any:
    """Run ``target`` in a fresh interpreter and return its result."""
    with FreshProcess(target, *args, **kwargs) as child:
        return child.result(timeout)


def child_main(inbox_fd: int, outbox_fd: int) -> None:
    """Entry point inside the child (see the module docstring).

    A parent that went away (its pipe is broken) ends the child quietly: the
    parent is unwinding and has its own account of why.
    """
    inbox = Connection(inbox_fd, writable=False)
    outbox = Connection(outbox_fd, readable=False)
    try:
        target, args, kwargs = inbox.recv()
        try:
            module_name, _, function_name = target.partition(":")
            function = getattr(importlib.import_module(module_name), function_name)
            value = function(Control(inbox, outbox), *args, **kwargs)
        except (BrokenPipeError, EOFError):
            raise
        except BaseException:
            outbox.send(("error", traceback.format_exc()))
            raise SystemExit(1) from None
        outbox.send(("result", value))
    except (BrokenPipeError, EOFError):
        raise SystemExit(1) from None
