"""Shared fixtures: a leak check on every test, private runtime directories, bounded helpers.

The leak check (STYLE 12, after loky's): at session start every process we will
start is marked with ``POOLCTL_TEST_SESSION=<uuid>`` in its environment, which it
keeps even when it detaches and is reparented to init. After each test:

- any live process carrying the token, or any live child of pytest, is a leak:
  it is SIGKILLed by pid and the test fails naming pids and command lines;
- zombie children of pytest are reaped;
- a ``poolctl-*`` entry in /dev/shm (or $POOLCTL_SHM_DIR) that was not there
  before the test is a leak: it is unlinked and the test fails naming it.

Two deliberate exceptions, both so that concurrent runs and long-lived helpers
do not produce false alarms:

- multiprocessing's own helpers (resource tracker, forkserver) that are direct
  children of pytest live for the whole session by design; killing one would break
  every later test that uses it, so they are not leaks;
- a new segment whose name encodes a live process (pid + start ticks) that is not
  of this session belongs to someone else (another pytest run, a developer's pool)
  and is left alone: unlinking a live stranger's board would break it. One whose
  creator is dead is ours, unless another test session is running on the machine
  (it may have made it): then it is left alone with a warning. A segment of a
  process this check itself killed is always ours.

Helpers are fixtures, so test modules never import this file: ``runtime_dir``,
``spawn`` (subprocesses always killed by pid at teardown), ``read_line``,
``wait_until``, ``lock_holder``, ``shm_segment``, ``write_runtime`` and ``make_running``.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from cli_targets import Cli, cli_session, wait_for
from scripts import supkit

from statusboard import liveness, runtime_file
from statusboard.board import SEGMENT_PREFIX, Board, WorkerRow, segment_path, shm_dir
from statusboard.states import PoolState, WorkerState

SESSION_ENV = "POOLCTL_TEST_SESSION"
DEV_SHM = Path("/dev/shm")
_SETTLE_S = 0.5  # a process SIGKILLed by the test itself may take a moment to die
_KILL_WAIT_S = 2.0
# multiprocessing/multiprocess session helpers: children of pytest, alive by design.
_SESSION_HELPERS = ("resource_tracker import main", "forkserver import main")


def pytest_configure(config: pytest.Config) -> None:
    # Set once per session, before any test (or fixture) can start a process.
    os.environ[SESSION_ENV] = uuid.uuid4().hex


def _token() -> str:
    return os.environ[SESSION_ENV]


# -- the leak check -------------------------------------------------------------


def _describe(proc: psutil.Process) -> str:
    try:
        cmdline = " ".join(proc.cmdline()) or proc.name()
    except psutil.Error:
        cmdline = "?"
    return f"pid {proc.pid} ({cmdline[:200]})"


def _is_session_helper(proc: psutil.Process, me: int) -> bool:
    try:
        if proc.ppid() != me:
            return False
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return any(marker in cmdline for marker in _SESSION_HELPERS)


def _live(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _carries_token(proc: psutil.Process, token: str) -> bool:
    try:
        return proc.environ().get(SESSION_ENV) == token
    except psutil.Error:  # gone, zombie, or a kernel thread
        return False


def _session_processes() -> list[psutil.Process]:
    """Live processes of this session other than pytest: children of pytest, or token carriers."""
    me = os.getpid()
    token = _token()
    found: dict[int, psutil.Process] = {}
    try:
        for child in psutil.Process(me).children(recursive=True):
            found[child.pid] = child
    except psutil.Error:
        pass
    for proc in psutil.process_iter():
        if proc.pid != me and proc.pid not in found and _carries_token(proc, token):
            found[proc.pid] = proc
    return [p for p in found.values() if _live(p)]


def _still_alive(candidates: list[psutil.Process]) -> list[psutil.Process]:
    """The candidates that are still running after a short grace."""
    deadline = time.monotonic() + _SETTLE_S
    while candidates and time.monotonic() < deadline:
        time.sleep(0.01)
        candidates = [p for p in candidates if _live(p)]
    return candidates


def _kill(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # Reaps our children; orphans of init just have to stop running.
    psutil.wait_procs(procs, timeout=_KILL_WAIT_S)


def _reap_zombie_children() -> None:
    try:
        children = psutil.Process().children(recursive=False)
    except psutil.Error:
        return
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        while True:
            try:
                pid, _ = os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0 or pid == child.pid:
                break


def _shm_dirs() -> list[Path]:
    dirs = [DEV_SHM]
    configured = shm_dir()
    if configured != DEV_SHM:
        dirs.append(configured)
    return dirs


def _shm_entries() -> set[Path]:
    entries: set[Path] = set()
    for directory in _shm_dirs():
        try:
            entries.update(p for p in directory.iterdir() if p.name.startswith(SEGMENT_PREFIX))
        except FileNotFoundError:
            pass
    return entries


def _segment_owner(segment: Path) -> tuple[int, int] | None:
    """(pid, start ticks) of the supervisor a board's name encodes (``...-PID-TICKS``)."""
    parts = segment.name.rsplit("-", 2)
    try:
        return int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        return None


def _another_session_runs() -> bool:
    """True when some other pytest run (or a process of another session) is alive on this machine.

    A pytest process's own token is set after it started, so /proc does not show it;
    its command line does.
    """
    me = os.getpid()
    token = _token()
    try:
        ours = {p.pid for p in psutil.Process(me).children(recursive=True)}
    except psutil.Error:
        ours = set()
    for proc in psutil.process_iter():
        if proc.pid == me or proc.pid in ours or not _live(proc):
            continue
        try:
            other = proc.environ().get(SESSION_ENV)
            if (other and other != token) or any("pytest" in part for part in proc.cmdline()):
                return True
        except psutil.Error:
            continue
    return False


def _classify_segments(segments: list[Path], session_pids: set[int]) -> tuple[list[Path], list[Path]]:
    """Split new segments into (ours, unsure); a live stranger's segment is in neither.

    Ours: created by pytest itself or a process of this session (its name says so),
    or by a dead process while no other session runs. Unsure: a dead creator while
    another session runs, which may well have made it (it is left alone, with a warning).
    """
    me = os.getpid()
    ours, unsure = [], []
    concurrent: bool | None = None
    for segment in segments:
        owner = _segment_owner(segment)
        if owner is None or owner[0] == me or owner[0] in session_pids:
            ours.append(segment)
        elif liveness.is_alive(*owner):
            continue  # a live process outside this session: someone else's board
        else:
            if concurrent is None:
                concurrent = _another_session_runs()
            (unsure if concurrent else ours).append(segment)
    return ours, unsure


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    """Fail a test that leaves a process or a poolctl shared-memory segment behind."""
    segments_before = _shm_entries()
    yield
    problems = []
    me = os.getpid()
    session = _session_processes()
    session_pids = {p.pid for p in session}
    leaked = _still_alive([p for p in session if not _is_session_helper(p, me)])
    if leaked:
        described = [_describe(p) for p in leaked]
        _kill(leaked)
        problems.append("leaked processes (now SIGKILLed): " + "; ".join(described))
    _reap_zombie_children()
    session_pids.update(p.pid for p in leaked)
    ours, unsure = _classify_segments(sorted(_shm_entries() - segments_before), session_pids)
    if ours:
        for segment in ours:
            _remove(segment)
        problems.append("leaked shared-memory segments (now unlinked): " + ", ".join(map(str, ours)))
    if unsure:
        warnings.warn(
            "new shared-memory segments of dead supervisors while another test session runs; "
            "left alone, not counted as leaks: " + ", ".join(map(str, unsure)),
            stacklevel=1,
        )
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# -- directories -----------------------------------------------------------------


@pytest.fixture
def cli(runtime_dir: Path) -> Iterator[Cli]:
    """A `poolctl` runner for one pool in ``runtime_dir``; every process of it is killed by pid
    at teardown (tests/cli_targets.py)."""
    with cli_session(runtime_dir) as session:
        yield session


@pytest.fixture
def supervised() -> Iterator[None]:
    """For supervisors embedded in this process: fail a test that leaves one of their
    workers or boards behind (tests/scripts/supkit.py). Use with
    ``pytestmark = pytest.mark.usefixtures("supervised")``."""
    with supkit.leak_check():
        yield


@pytest.fixture(scope="module")
def forkserver_stopped() -> Iterator[None]:
    """multiprocess's forkserver (pool.Pool's default start) outlives every pool, a child of
    pytest: stop it after the module. Use with pytest.mark.usefixtures."""
    yield
    import multiprocess.forkserver

    multiprocess.forkserver._forkserver._stop()


@pytest.fixture
def private_runtime_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Pool() makes its private runtime directory under here, not in $HOME."""
    root = tmp_path / "runtime-root"
    root.mkdir(mode=0o700)
    monkeypatch.setenv("POOLCTL_RUNTIME_DIR", str(root))
    return root


@pytest.fixture
def make_pool() -> Iterator[Callable[..., Any]]:
    """``make_pool(workers=2, **kwargs)``: a pool.Pool (fork unless told), always shut down at
    teardown, cancelling what has not started. A module may override it to add defaults."""
    from pool import Pool

    pools: list[Pool] = []

    def make(workers: int = 2, **kwargs: Any) -> Pool:
        kwargs.setdefault("start_method", "fork")
        made = Pool(workers, **kwargs)
        pools.append(made)
        return made

    yield make
    for made in pools:
        made.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def runtime(tmp_path: Path) -> Path:
    """A fresh runtime directory for an embedded supervisor."""
    return supkit.make_runtime(tmp_path)


@pytest.fixture
def runtime_dir(tmp_path: Path) -> Path:
    """A fresh, private (0700) runtime directory."""
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    os.chmod(directory, 0o700)  # whatever the umask
    return directory


# -- subprocesses ----------------------------------------------------------------


class Spawner:
    """Starts subprocesses and kills every one of them by pid at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def __call__(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdin", subprocess.PIPE)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("bufsize", 0)  # raw pipes: select() then readline() never blocks on a buffer
        proc = subprocess.Popen([str(a) for a in args], **kwargs)
        self.procs.append(proc)
        return proc

    def python(self, code: str, *args: object, **kwargs: Any) -> subprocess.Popen[bytes]:
        """``python -c code args...`` with this interpreter (the venv's)."""
        return self([sys.executable, "-c", code, *(str(a) for a in args)], **kwargs)

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=_KILL_WAIT_S * 5)
            except subprocess.TimeoutExpired:
                pass  # the leak check names it
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    try:
                        pipe.close()
                    except OSError:
                        pass


@pytest.fixture
def spawn() -> Iterator[Spawner]:
    """Start subprocesses (``spawn([...])`` or ``spawn.python(code, *args)``); all are killed at teardown."""
    spawner = Spawner()
    try:
        yield spawner
    finally:
        spawner.cleanup()


def _stderr_of(proc: subprocess.Popen[bytes]) -> str:
    if proc.stderr is None or proc.poll() is None:
        return ""
    try:
        return proc.stderr.read().decode(errors="replace")[-2000:]
    except (OSError, ValueError):
        return ""


def read_line_from(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> str:
    """The next line the process prints on stdout, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"pid {proc.pid} printed no line within {timeout}s (got {line!r})")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 1)
        if not chunk:
            proc.wait(timeout=timeout)
            pytest.fail(
                f"pid {proc.pid} exited (code {proc.returncode}) before printing a line "
                f"(got {line!r}); stderr:\n{_stderr_of(proc)}"
            )
        line += chunk
    return line.decode().rstrip("\n")


@pytest.fixture
def read_line() -> Callable[..., str]:
    """``read_line(proc, timeout=10)``: the next stdout line of a spawned process, bounded."""
    return read_line_from


def wait_until_true(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.005) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    return wait_for(predicate, timeout, what, interval)


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    """``wait_until(predicate, timeout, what)``: poll with a deadline instead of sleeping."""
    return wait_until_true


_LOCK_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()  # hold the lock until the test closes our stdin (or kills us)
"""


class LockHolder:
    """A helper process holding ``supervisor.lock`` with flock(LOCK_EX), as a live supervisor does."""

    def __init__(self, spawner: Spawner, directory: Path) -> None:
        self.path = directory / liveness.LOCK_NAME
        self.proc = spawner.python(_LOCK_HOLDER, self.path)
        line = read_line_from(self.proc)
        assert line == "locked", line

    def release(self) -> None:
        """Let the holder exit (closing stdin) and wait for it: the lock is free afterwards."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=10) == 0


@pytest.fixture
def lock_holder(spawn: Spawner) -> Callable[[Path], LockHolder]:
    """``lock_holder(runtime_dir)``: a process that holds the directory's supervisor.lock."""
    return lambda directory: LockHolder(spawn, directory)


# -- boards and runtime files -------------------------------------------------------


@pytest.fixture
def shm_segment() -> Iterator[Callable[..., Board]]:
    """``shm_segment(pool=..., capacity=4, ...)``: a board created at segment_path(), unlinked at teardown.

    The supervisor identity defaults to this process, so the test plays supervisor.
    """
    boards: list[Board] = []

    def create(
        pool: str | None = None,
        capacity: int = 4,
        *,
        supervisor_pid: int | None = None,
        supervisor_start_ticks: int | None = None,
        heartbeat_timeout_ns: int = 10_000_000_000,
        workers_desired: int = 2,
    ) -> Board:
        pid = os.getpid() if supervisor_pid is None else supervisor_pid
        ticks = supervisor_start_ticks
        if ticks is None:
            ticks = liveness.start_ticks(pid) or 0
        board = Board.create(
            segment_path(pool or f"t{uuid.uuid4().hex[:10]}", pid, ticks),
            capacity,
            supervisor_pid=pid,
            supervisor_start_ticks=ticks,
            heartbeat_timeout_ns=heartbeat_timeout_ns,
            workers_desired=workers_desired,
        )
        boards.append(board)
        return board

    try:
        yield create
    finally:
        for board in boards:
            board.unlink()
            board.close()


def runtime_document(
    board: Board | None,
    *,
    pool: str = "test",
    state: str = "running",
    pid: int | None = None,
    start_ticks: int | None = None,
    workers_desired: int = 2,
    workers: list[dict[str, Any]] | None = None,
    supervisor: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A valid runtime.json document naming ``board`` (or none) and a supervisor identity.

    The identity defaults to the board's header (or to this process without a board);
    ``supervisor`` adds keys to the supervisor object (started_at, started_wall ...).
    """
    if pid is None:
        pid = board.header_word("supervisor_pid") if board is not None else os.getpid()
    if start_ticks is None:
        if board is not None:
            start_ticks = board.header_word("supervisor_start_ticks")
        else:
            start_ticks = liveness.start_ticks(pid) or 0
    document: dict[str, Any] = {
        "pool": pool,
        "state": state,
        "supervisor": {"pid": pid, "start_ticks": start_ticks, **(supervisor or {})},
        "workers_desired": workers_desired,
        "workers": workers if workers is not None else [],
    }
    if board is not None:
        document["board"] = str(board.path)
    document.update(extra)
    return document


@pytest.fixture
def write_runtime() -> Callable[..., dict[str, Any]]:
    """``write_runtime(directory, board, **fields)``: write runtime.json and return the document."""

    def write(directory: Path, board: Board | None, **fields: Any) -> dict[str, Any]:
        document = runtime_document(board, **fields)
        runtime_file.write(directory, document)
        return document

    return write


def running_board(board: Board, slots: int, now_ns: int | None = None) -> None:
    """Mark the pool running with ``slots`` running workers, all beating at ``now_ns``."""
    now = time.monotonic_ns() if now_ns is None else now_ns
    board.set_header(pool_state=int(PoolState.RUNNING), slots_used=slots, workers_desired=slots)
    board.supervisor_beat(now)
    for slot in range(slots):
        board.set_lifecycle(slot, pid=10_000 + slot, state=int(WorkerState.RUNNING), started_ns=now)
        WorkerRow(board, slot).beat(now)


@pytest.fixture
def make_running() -> Callable[..., None]:
    """``make_running(board, slots, now_ns=None)``: header running, ``slots`` fresh running workers."""
    return running_board
