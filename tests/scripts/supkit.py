"""Shared helpers for the supervisor tests: specs, waits, board reads, leak checks.

Everything a test starts is found again by an environment token (every process
the tests start inherits it) and killed by pid at teardown; a test that leaves a
live process or a board segment behind fails. Pools made here are named
``pt-...``, so the /dev/shm check never looks at segments of other suites.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import psutil
from cli_targets import wait_for

import statusboard
from pool.spec import PoolSpec
from pool.supervision.supervisor import StopResult, Supervisor
from statusboard import runtime_file
from statusboard.board import SEGMENT_PREFIX, shm_dir

TESTS_DIR = Path(__file__).resolve().parent.parent
SCRIPTS_DIR = TESTS_DIR / "scripts"
RUN_SUPERVISOR = SCRIPTS_DIR / "run_supervisor.py"
PYTHON = sys.executable
TOKEN_VAR = "POOLCTL_SUPERVISOR_TESTS"
TOKEN = os.environ.setdefault(TOKEN_VAR, uuid.uuid4().hex)
POOL_PREFIX = "pt-"

T = TypeVar("T")
_names = iter(range(1_000_000))


# -- specs and runtime directories ---------------------------------------------


def pool_name(tag: str = "p") -> str:
    return f"{POOL_PREFIX}{tag}-{os.getpid()}-{next(_names)}"


def make_spec(target: str, **overrides: Any) -> PoolSpec:
    """A PoolSpec for tests/targets.py with short timeouts (fork unless told otherwise)."""
    settings: dict[str, Any] = {
        "workers": 2,
        "name": pool_name(),
        "cwd": str(TESTS_DIR),
        "heartbeat_timeout": 2.0,
        "grace": 0.5,
        "max_restarts": 10,
        "restart_window": 60.0,
        "flush_interval": 0.5,
        "start_method": "fork",
    }
    settings.update(overrides)
    return PoolSpec(target=f"targets:{target}" if ":" not in target else target, **settings)


def make_runtime(tmp_path: Path) -> Path:
    path = tmp_path / "rt"
    path.mkdir(mode=0o700)
    return path


# -- waiting ------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str | Callable[[], str] = "condition",
    interval: float = 0.005,
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    return cast(T, wait_for(predicate, timeout, what, interval))


# -- reading the pool -----------------------------------------------------------


def workers(runtime_dir: Path) -> list[dict[str, Any]]:
    """The board's workers right now (status dicts), or [] when there is no board."""
    try:
        with statusboard.attach(runtime_dir) as reader:
            return reader.snapshot().workers()
    except (statusboard.StatusboardError, FileNotFoundError):
        return []


def header(runtime_dir: Path) -> dict[str, Any]:
    with statusboard.attach(runtime_dir) as reader:
        return reader.snapshot().header


def by_slot(runtime_dir: Path) -> dict[int, dict[str, Any]]:
    return {w["slot"]: w for w in workers(runtime_dir)}


def running(runtime_dir: Path, count: int) -> list[dict[str, Any]] | None:
    """The workers when exactly ``count`` of them run (all used slots running), else None."""
    rows = workers(runtime_dir)
    if len(rows) == count and all(w["state"] == "running" for w in rows):
        return rows
    return None


def read_log(runtime_dir: Path) -> str:
    try:
        return (runtime_dir / "supervisor.log").read_text()
    except FileNotFoundError:
        return ""


def log_lines(runtime_dir: Path, needle: str) -> list[str]:
    return [line for line in read_log(runtime_dir).splitlines() if needle in line]


def runtime_doc(runtime_dir: Path) -> dict[str, Any]:
    return runtime_file.read(runtime_dir)


def temp_files(runtime_dir: Path) -> list[Path]:
    return sorted(runtime_dir.glob(".runtime.json.*"))


# -- processes ------------------------------------------------------------------


def is_gone(pid: int) -> bool:
    """True when no process runs as ``pid`` (a zombie runs nothing: it counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def all_gone(pids: list[int]) -> bool:
    return all(is_gone(pid) for pid in pids)


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def reap_quietly(pid: int) -> None:
    """Collect ``pid`` if it is our child (so it does not linger as a zombie)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def tagged_processes() -> list[psutil.Process]:
    """Live (non-zombie) processes other than this one carrying this session's token, or
    titled as a worker of a pool this process named (a worker forked from this process
    shows our exec-time environment, without the token set since)."""
    me = os.getpid()
    ours = f"-{me}-"
    found = []
    for proc in psutil.process_iter(["pid", "status", "cmdline"]):
        if proc.pid == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        title = " ".join(proc.info["cmdline"] or [])
        try:
            if (title.startswith("poolctl: ") and f"[{POOL_PREFIX}" in title and ours in title) or (
                proc.environ().get(TOKEN_VAR) == TOKEN
            ):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_multiprocess_helpers() -> None:
    """Stop the forkserver and resource tracker a thread-mode test started in this process."""
    from multiprocess import forkserver, resource_tracker

    server = forkserver._forkserver
    if server._forkserver_pid is not None:
        server._stop()
    tracker = resource_tracker._resource_tracker
    if getattr(tracker, "_pid", None) is not None:
        tracker._stop()


def my_segments() -> set[Path]:
    """Boards of the pools this test process named (pool_name): never another session's,
    which a test run alongside (a second pytest, a benchmark) may be using right now."""
    prefix = f"{SEGMENT_PREFIX}{os.getuid()}-{POOL_PREFIX}"
    return set(shm_dir().glob(f"{prefix}*-{os.getpid()}-*"))


@contextlib.contextmanager
def leak_check(grace: float = 3.0) -> Iterator[None]:
    """Fail (after cleaning up) when the body leaves a tagged process or a new pt- segment."""
    segments_before = my_segments()
    try:
        yield
    finally:
        stop_multiprocess_helpers()
        deadline = time.monotonic() + grace
        left = tagged_processes()
        while left and time.monotonic() < deadline:
            time.sleep(0.02)
            left = tagged_processes()
        described = []
        for proc in left:
            with contextlib.suppress(psutil.Error):
                described.append(f"pid {proc.pid} {' '.join(proc.cmdline())[:120]}")
            kill_quietly(proc.pid)
            reap_quietly(proc.pid)
        new_segments = my_segments() - segments_before
        for segment in new_segments:
            with contextlib.suppress(FileNotFoundError):
                segment.unlink()
        problems = []
        if described:
            problems.append("processes left running: " + "; ".join(described))
        if new_segments:
            problems.append("board segments left: " + ", ".join(map(str, sorted(new_segments))))
        if problems:
            raise AssertionError(" | ".join(problems))


# -- running a supervisor ---------------------------------------------------------


class Background:
    """A Supervisor running in a thread WITHOUT waiting for readiness (Supervisor.start waits).

    For pools that never become ready: crash loops, boot errors, exits.
    """

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.result: StopResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-supervisor", daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.sup.run(install_signals=False)
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Background:
        self.thread.start()
        wait_until(lambda: self.sup.board is not None or not self.thread.is_alive(), 10, "the board to exist")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 20.0) -> StopResult:
        if self.thread.is_alive():
            self.sup.request_stop("test teardown")
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "supervisor thread did not finish"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class ScriptSupervisor:
    """``tests/scripts/run_supervisor.py`` in a subprocess: a foreground supervisor for real signals."""

    def __init__(self, runtime_dir: Path, target: str, *, workers: int = 2, **options: Any) -> None:
        self.runtime_dir = runtime_dir
        self.name = options.pop("name", pool_name("s"))
        args = [PYTHON, str(RUN_SUPERVISOR), str(runtime_dir), self.name, target, str(workers)]
        for key, value in options.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                args.append(flag)
            elif value is not False and value is not None:
                args += [flag, str(value)]
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen_pids: set[int] = set()

    def __enter__(self) -> ScriptSupervisor:
        self.proc = subprocess.Popen(
            self.args,
            cwd=str(TESTS_DIR),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def probe(self) -> Any:
        from statusboard.probe import probe

        report = probe(self.runtime_dir, self.name)
        for worker in report.document["workers"]:
            if worker.get("pid"):
                self.seen_pids.add(worker["pid"])
        return report

    def wait_running(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        def ready() -> list[dict[str, Any]] | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                _, err = self.proc.communicate()
                raise AssertionError(f"supervisor exited {self.proc.returncode}: {err.decode()[-2000:]}")
            report = self.probe()
            doc = report.document
            rows = doc["workers"]
            if (
                report.code == 0
                and doc["workers_desired"] == count
                and len(rows) == count
                and all(w["state"] == "running" for w in rows)
            ):
                return rows
            return None

        return wait_until(ready, timeout, lambda: f"{count} workers running: {self.probe().document}")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def output(self) -> str:
        assert self.proc is not None
        if self.proc.poll() is None:
            return ""
        out, err = self.proc.communicate()
        return out.decode() + err.decode()

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.communicate(timeout=10)
        for pid in self.seen_pids:
            kill_quietly(pid)
