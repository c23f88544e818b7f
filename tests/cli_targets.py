"""Worker bodies for the CLI tests, and the small driver those tests share.

Two parts, one module (test modules do not import each other):

- worker bodies, imported IN THE WORKER by target string (``cli_targets:steady``)
  with tests/ as the pool's cwd. They use the stdlib only, so a worker's boot
  stays cheap; nothing below the bodies runs at import time.
- ``Cli``: runs the real ``poolctl`` console script as a subprocess against one
  runtime directory, as a user would, and at teardown kills by pid (process
  group first: the daemon is a session leader) every supervisor and worker it
  ever saw, then verifies they are gone, whether the test passed or not.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pool.integrations.titles import supervisor_title

BOOT_S = 1.0  # slow_boot: seconds before the first heartbeat
_cue: list[int] = []


# -- worker bodies ----------------------------------------------------------------


def steady(ctx):
    """Beats every 50 ms until asked to stop."""
    while not ctx.wait(0.05):
        ctx.beat()


def reports_notify_env(ctx):
    """Progress 1.0 if NOTIFY_SOCKET is in its environment (it must not be: only the
    supervisor talks to systemd), else 0.0; then beats like steady."""
    ctx.beat(progress=1.0 if "NOTIFY_SOCKET" in os.environ else 0.0)
    steady(ctx)


def slow_boot(ctx):
    """Sends its first heartbeat only after BOOT_S seconds (a slow import, say)."""
    time.sleep(BOOT_S)
    steady(ctx)


def lifecycle_on_cue(ctx):
    """Generation 1 raises on its cue, generation 2 hangs (TERM ignored) on its cue, later ones behave.

    The SIGUSR1 handler is installed before the first beat, so a test that waits
    for a beat can never kill the worker with an early cue (SIGUSR1's default).
    """
    signal.signal(signal.SIGUSR1, lambda signum, frame: _cue.append(signum))
    if ctx.generation > 2:
        steady(ctx)
        return
    while not _cue:
        if ctx.wait(0.02):
            return
    if ctx.generation == 1:
        raise RuntimeError("cued crash")
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(3600)


def crash_loop_slot_1(ctx):
    """Slot 1's first generation beats for 0.5 s and raises; later ones raise at once. Others behave."""
    if ctx.slot != 1:
        steady(ctx)
        return
    if ctx.generation == 1:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            if ctx.wait(0.02):
                return
    raise RuntimeError("slot 1 crash loop")


def leaves_a_stubborn_escaper(ctx):
    """Starts a child in its own session that ignores SIGTERM (a daemonized helper), then
    beats like steady: when the supervisor is SIGKILLed, the child outlives the pool."""
    import subprocess

    subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)",
        ],
        start_new_session=True,
    )
    steady(ctx)


# -- the driver ---------------------------------------------------------------------

# CONTRACT "status --json": keys may be added, none of these removed or renamed.
STATUS_KEYS = {
    "pool",
    "state",
    "source",
    "reason",
    "supervisor",
    "target",
    "workers_desired",
    "workers",
    "checked_at",
    "flushed_at",
}
STATUS_SUPERVISOR_KEYS = {"pid", "alive", "started_at", "uptime_s"}
STATUS_WORKER_KEYS = {
    "slot",
    "pid",
    "state",
    "healthy",
    "heartbeat_age_s",
    "beats",
    "progress",
    "tasks_done",
    "tasks_failed",
    "restarts",
    "recycled",
    "last_exit_code",
    "started_at",
    "task",
    "task_age_s",
}

TESTS_DIR = Path(__file__).resolve().parent
POOLCTL = str(Path(sys.executable).with_name("poolctl"))
FAST = ("--heartbeat-timeout", "5", "--grace", "0.5")  # quick stops, no false hangs on a busy box


@dataclass
class Result:
    code: int
    out: str
    err: str
    argv: list[str]

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()

    def __str__(self) -> str:
        return f"$ {' '.join(self.argv)}\n-> exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"


def new_name() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


class Cli:
    """``poolctl --name NAME --runtime-dir DIR ...`` as a subprocess, with bounded waits."""

    def __init__(self, directory: Path, name: str | None = None, cwd: Path = TESTS_DIR) -> None:
        self.directory = Path(directory)
        self.name = name or new_name()
        self.cwd = cwd
        self.seen: dict[int, int | None] = {}  # pid -> start ticks of every pool process seen

    # running commands
    def argv(self, *args: object) -> list[str]:
        """``poolctl --name NAME --runtime-dir DIR args...`` as a command line."""
        return [POOLCTL, "--name", self.name, "--runtime-dir", str(self.directory), *map(str, args)]

    def __call__(self, *args: str, timeout: float = 60.0, env: dict[str, str] | None = None) -> Result:
        return run(self.argv(*args), cwd=self.cwd, timeout=timeout, env=env)

    def ok(self, *args: str, timeout: float = 60.0) -> Result:
        result = self(*args, timeout=timeout)
        assert result.code == 0, str(result)
        self.remember()
        return result

    def start(self, target: str = "cli_targets:steady", *options: str, workers: int = 2) -> Result:
        return self.ok("start", target, "-w", str(workers), *FAST, *options)

    def status(self, *options: str, timeout: float = 30.0) -> tuple[int, dict[str, Any]]:
        """``status --json``: (exit code, parsed object). Fails the test if stdout is not one object."""
        result = self("status", "--json", *options, timeout=timeout)
        try:
            document = json.loads(result.out)
        except ValueError as exc:
            raise AssertionError(f"status --json did not parse ({exc}):\n{result}") from None
        assert isinstance(document, dict), str(result)
        self._remember_document(document)
        return result.code, document

    # reading the runtime directory
    def runtime(self) -> dict[str, Any]:
        return json.loads((self.directory / "runtime.json").read_text())

    def supervisor(self) -> tuple[int, int]:
        sup = self.runtime()["supervisor"]
        return int(sup["pid"]), int(sup["start_ticks"])

    def log_lines(self) -> list[str]:
        try:
            return (self.directory / "supervisor.log").read_text().splitlines()
        except FileNotFoundError:
            return []

    def segments(self) -> list[Path]:
        return sorted(Path("/dev/shm").glob(f"poolctl-{os.getuid()}-{self.name}-*"))

    # bookkeeping for teardown
    def remember(self) -> None:
        try:
            document = self.runtime()
        except (OSError, ValueError):
            return
        self._remember_document(document)

    def _remember_document(self, document: dict[str, Any]) -> None:
        sup = document.get("supervisor") or {}
        if isinstance(sup.get("pid"), int):
            self.seen.setdefault(sup["pid"], sup.get("start_ticks") or _ticks(sup["pid"]))
        for worker in document.get("workers") or []:
            if isinstance(worker, dict) and isinstance(worker.get("pid"), int):
                self.seen.setdefault(worker["pid"], worker.get("start_ticks") or _ticks(worker["pid"]))

    def pool_processes(self) -> list[tuple[int, int | None]]:
        """Every process of this pool seen so far (or recorded in runtime.json) that still lives."""
        self.remember()
        return [(pid, ticks) for pid, ticks in self.seen.items() if alive(pid, ticks)]

    def _found_without_runtime_json(self) -> dict[int, int | None]:
        """Processes of this pool found even if runtime.json is unreadable: the lock holder, the
        owners named in board segment names, and daemons (and their forked workers, which share
        the command line) started for this directory."""
        import psutil

        found: dict[int, int | None] = {}
        lock = self.directory / "supervisor.lock"
        try:
            for pid in lock_holders(lock):
                found[pid] = _ticks(pid)
        except OSError:
            pass
        for segment in self.segments():
            parts = segment.name.rsplit("-", 2)
            try:
                found[int(parts[1])] = int(parts[2])
            except (IndexError, ValueError):
                pass
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if ("pool.ops.daemon" in cmdline and str(self.directory) in cmdline) or " ".join(
                cmdline
            ).strip() == supervisor_title(self.name):
                found.setdefault(proc.pid, _ticks(proc.pid))
        return found

    def kill_everything(self) -> list[int]:
        """Teardown: SIGKILL every live process of the pool by pid (group first); return the stubborn."""
        for pid, ticks in self._found_without_runtime_json().items():
            self.seen.setdefault(pid, ticks)
        victims = [(pid, ticks) for pid, ticks in self.pool_processes() if _ours(pid)]
        for pid, _ in victims:
            try:
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        survivors = wait_gone(victims, 10.0)
        for segment in self.segments():
            if not _segment_owner_alive(segment):
                segment.unlink(missing_ok=True)
        return survivors


@contextmanager
def cli_session(directory: Path, name: str | None = None, cwd: Path = TESTS_DIR) -> Iterator[Cli]:
    """A Cli whose pool is killed (and verified gone) when the block ends, even on failure."""
    cli = Cli(directory, name, cwd)
    try:
        yield cli
    finally:
        stubborn = cli.kill_everything()
        assert not stubborn, f"pool processes survived SIGKILL at teardown: {stubborn}"


def run(
    argv: list[str], *, cwd: Path = TESTS_DIR, timeout: float = 60.0, env: dict[str, str] | None = None
) -> Result:
    completed = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr, argv)


# -- processes ------------------------------------------------------------------------


def _ticks(pid: int) -> int | None:
    from statusboard.liveness import start_ticks

    return start_ticks(pid)


def alive(pid: int, ticks: int | None = None) -> bool:
    """That very process (pid + start ticks) runs; a zombie counts as gone."""
    from statusboard.liveness import is_alive

    return is_alive(pid, ticks)


def _ours(pid: int) -> bool:
    """Carries this test session's token (conftest sets it; every process we start inherits it),
    so a pid reused by a stranger is never killed."""
    import psutil

    token = os.environ.get("POOLCTL_TEST_SESSION")
    try:
        return token is None or psutil.Process(pid).environ().get("POOLCTL_TEST_SESSION") == token
    except psutil.Error:
        return False


def wait_gone(processes: list[tuple[int, int | None]], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    pending = list(processes)
    while True:
        pending = [(pid, ticks) for pid, ticks in pending if alive(pid, ticks)]
        if not pending or time.monotonic() >= deadline:
            return [pid for pid, _ in pending]
        time.sleep(0.01)


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str | Callable[[], str], interval: float = 0.02
) -> Any:
    """Poll until ``predicate()`` is truthy and return its value; AssertionError naming ``what``
    (or what ``what()`` says then) after ``timeout``. The suite's one bounded wait: conftest's
    ``wait_until`` fixture and scripts.supkit.wait_until are this one."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for {detail}")
        time.sleep(interval)


def _segment_owner_alive(segment: Path) -> bool:
    parts = segment.name.rsplit("-", 2)
    try:
        return alive(int(parts[1]), int(parts[2]))
    except (IndexError, ValueError):
        return False


def lock_holders(path: Path) -> set[int]:
    """Pids holding an flock on ``path``, from /proc/locks (the kernel's word, not a pid file).
    No file: nobody holds it (a start aborted before its daemon got that far)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return set()
    inode_key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = set()
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if "->" in fields:
                continue  # a waiter, not a holder
            if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == inode_key:
                holders.add(int(fields[4]))
    return holders


# -- normalising output for snapshots --------------------------------------------------

ISO_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?")
LOG_PREFIX_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} ")


def normalise_common(text: str, cli: Cli) -> str:
    text = text.replace(str(cli.directory), "<DIR>").replace(cli.name, "<POOL>")
    text = ISO_RE.sub("<TIME>", text)
    text = re.sub(r"\bpid \d+", "pid <PID>", text)
    return text
