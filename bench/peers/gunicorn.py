"""gunicorn: an arbiter with N sync workers serving a trivial WSGI app on a unix socket.

Everything lives in the peer's temp dir: the listening socket, the control
socket (``gunicornc``), and the workers' heartbeat files (``--worker-tmp-dir``).
A worker's heartbeat is ``os.utime`` on an unlinked temp file with
``time.monotonic()`` as mtime; the arbiter kills a worker whose mtime is older
than ``--timeout``. A worker counts as running here once it has beaten at
least once (its file's mtime is a monotonic time, no longer the creation wall
time): that is after it forked, loaded the app and entered its loop.

gunicorn has no status RPC; its status command is ``gunicornc -c "show workers"``.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import time
from pathlib import Path
from typing import Any

from bench.peers.daemon import PeerDaemon, venv_script
from bench.proc_watch import ChildScanner
from bench.timing import Budget

APP = "bench.gunicorn_app:app"
_ROOT = str(Path(__file__).resolve().parent.parent.parent)
_TMP_PREFIX = "wgunicorn-"


class Gunicorn(PeerDaemon):
    name = "gunicorn"
    distribution = "gunicorn"

    def __init__(self, programs: int, *, timeout: float = 30.0) -> None:
        super().__init__(programs)
        self.timeout = timeout
        self._scanner: ChildScanner | None = None

    @classmethod
    def missing(cls) -> str | None:
        if importlib.util.find_spec("gunicorn") is None:
            return "gunicorn is not installed (pip install gunicorn)"
        for script in ("gunicorn", "gunicornc"):
            if not venv_script(script).exists():
                return f"{venv_script(script)} not found"
        return None

    @property
    def socket_path(self) -> str:
        return str(self.directory / "gunicorn.sock")

    @property
    def control(self) -> str:
        return str(self.directory / "gunicorn.ctl")

    def write_config(self) -> None:
        pass  # all on the command line

    def argv(self) -> list[str]:
        return [
            str(venv_script("gunicorn")),
            "--workers",
            str(self.programs),
            "--worker-class",
            "sync",
            "--timeout",
            f"{self.timeout:g}",
            "--bind",
            f"unix:{self.socket_path}",
            "--worker-tmp-dir",
            str(self.directory),
            "--control-socket",
            self.control,
            "--pythonpath",
            _ROOT,
            "--log-level",
            "warning",
            "--error-logfile",
            str(self.directory / "gunicorn.log"),
            APP,
        ]

    def children(self, *, live_only: bool = True) -> set[int]:
        """The arbiter's worker processes (booted or not)."""
        if self.popen is None:
            return set()
        if self._scanner is None or self._scanner.parent != self.popen.pid:
            self._scanner = ChildScanner(self.popen.pid)
        return self._scanner.children(live_only=live_only)

    def running_pids(self) -> list[int] | None:
        if self.popen is None or not os.path.exists(self.socket_path):
            return None
        return sorted(pid for pid in self.children() if self.last_beat(pid) is not None)

    def last_beat(self, pid: int) -> float | None:
        """The worker's last heartbeat (``time.monotonic()`` seconds), None before its first."""
        prefix = str(self.directory / _TMP_PREFIX)
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return None
        wall_now = time.time()
        for fd in fds:
            link = f"/proc/{pid}/fd/{fd}"
            try:
                if not os.readlink(link).startswith(prefix):
                    continue
                mtime = os.stat(link).st_mtime
            except OSError:
                continue
            # Created with the wall clock; every beat stores a monotonic time, far smaller.
            return mtime if mtime < wall_now / 2 else None
        return None

    def send_hang(self) -> socket.socket:
        """Send ``GET /hang``; the worker that takes it blocks. Keep the socket open until it dies."""
        (self.directory / "hung.pid").unlink(missing_ok=True)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(self.socket_path)
            client.sendall(b"GET /hang HTTP/1.0\r\nHost: bench\r\n\r\n")
        except BaseException:
            client.close()
            raise
        return client

    def hung_pid(self, timeout: float = 5.0) -> int:
        """The pid the app wrote on ``/hang`` (it is blocked from then on)."""
        path = self.directory / "hung.pid"
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no gunicorn worker took /hang within {timeout:g} s: {self.log_tail()}")
            time.sleep(0.001)
        return int(path.read_text())

    def rpc(self, budget: Budget) -> tuple[str, tuple[Any, ...]]:
        raise NotImplementedError("gunicorn has no status RPC; see status_argv (gunicornc)")

    def status_argv(self) -> list[str]:
        return [str(venv_script("gunicornc")), "-s", self.control, "-c", "show workers"]

    def log_count(self, text: str) -> int:
        """Lines of gunicorn's error log that contain ``text``."""
        try:
            lines = (self.directory / "gunicorn.log").read_text(errors="replace").splitlines()
        except OSError:
            return 0
        return sum(text in line for line in lines)

    def log_tail(self) -> str:
        tails = []
        for name in ("daemon.out", "gunicorn.log"):
            try:
                lines = (self.directory / name).read_text(errors="replace").strip().splitlines()
            except OSError:
                continue
            tails.extend(lines[-3:])
        return " | ".join(tails) or "(no log)"
