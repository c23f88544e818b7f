"""A peer supervisor daemon run for comparison: own config, own temp dir, stopped by pid.

Each peer (supervisord, circus) subclasses ``PeerDaemon`` with its config, its
readiness check, its status RPC (timed by a client in a fresh process) and its
status command line. Every peer supervises the same trivial children,
``/bin/sleep 3600``, and listens on a unix socket in its temp dir only.

Stopping: SIGTERM to the daemon (each stops its own children on it), grace,
SIGKILL, then every descendant recorded before the stop is confirmed gone by
pid (``bench.reaper``). Survivors make ``stop()`` raise.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import reaper, scratch
from bench.timing import Budget

if TYPE_CHECKING:
    from bench.registry import Context

SLEEP_ARGV = ("/bin/sleep", "3600")
_READY_TIMEOUT_S = 60.0


def venv_script(name: str) -> Path:
    """A console script installed next to this interpreter (the venv's bin/)."""
    return Path(sys.executable).parent / name


class PeerDaemon:
    """Start on ``__enter__`` (blocks until every program runs), stop and verify on ``__exit__``."""

    name = "peer"
    distribution = "peer"  # the PyPI distribution that provides it

    def __init__(self, programs: int) -> None:
        self.programs = programs
        self.directory = scratch.make_dir(self.name)
        self.popen: subprocess.Popen[bytes] | None = None
        self.children_seen = 0
        self.start_seconds = 0.0
        self.account = ""

    # -- what each peer defines --------------------------------------------

    @classmethod
    def missing(cls) -> str | None:
        """Why this peer cannot run here (not installed ...), or None."""
        raise NotImplementedError

    def write_config(self) -> None:
        raise NotImplementedError

    def argv(self) -> list[str]:
        raise NotImplementedError

    def running_pids(self) -> list[int] | None:
        """Pids of the programs the daemon reports running, or None while it is not answering."""
        raise NotImplementedError

    def rpc(self, budget: Budget) -> tuple[str, tuple[Any, ...]]:
        """(fresh_process target, args) that time the status RPC; the result is Stats in seconds."""
        raise NotImplementedError

    def status_argv(self) -> list[str]:
        """The peer's own status command, as a user types it."""
        raise NotImplementedError

    # -- life cycle ------------------------------------------------------

    def start(self) -> None:
        self.write_config()
        log = open(self.directory / "daemon.out", "wb")  # noqa: SIM115 - the child keeps it open
        started = time.monotonic()
        try:
            self.popen = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        finally:
            log.close()
        deadline = started + _READY_TIMEOUT_S
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}: {self.log_tail()}")
            pids = self.running_pids()
            if pids is not None and len(pids) == self.programs:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: {self.programs} programs not running after {_READY_TIMEOUT_S} s"
                )
            time.sleep(0.05)
        self.start_seconds = time.monotonic() - started

    def stop(self) -> str:
        """Stop the daemon and its children, confirm each pid gone; returns a one-line account."""
        if self.popen is None:
            shutil.rmtree(self.directory, ignore_errors=True)
            return f"{self.name}: never started"
        self.children_seen = len(reaper.descendants(self.popen.pid))
        survivors = reaper.stop_popen(self.popen, grace=10.0)
        pid = self.popen.pid
        self.popen = None
        shutil.rmtree(self.directory, ignore_errors=True)
        if survivors:
            raise RuntimeError(
                f"{self.name} (pid {pid}) left survivors after SIGKILL: {', '.join(survivors)}"
            )
        self.account = (
            f"{self.name} pid {pid} + {self.children_seen} children stopped, each confirmed gone by pid"
        )
        return self.account

    def log_tail(self) -> str:
        try:
            lines = (self.directory / "daemon.out").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-5:])

    def __enter__(self) -> PeerDaemon:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_installed(
    ctx: Context,
    stack: contextlib.ExitStack,
    peers: Iterable[type[PeerDaemon]],
    children: int,
    group: str,
) -> tuple[list[PeerDaemon], dict[str, str]]:
    """Start every installed peer with ``children`` children on ``stack``:
    (started, {name: why skipped}) — a peer not installed or failing to start is skipped."""
    started: list[PeerDaemon] = []
    missing: dict[str, str] = {}
    for peer in peers:
        reason = peer.missing()
        if reason:
            missing[peer.name] = reason
            continue
        ctx.progress.step(f"{group}: starting {peer.name} with {children} children")
        daemon = peer(children)
        try:
            stack.enter_context(daemon)
        except Exception as exc:
            missing[peer.name] = f"did not start: {exc}"
            ctx.progress.note(f"{peer.name} skipped: did not start: {exc}")
            continue
        started.append(daemon)
    return started, missing
