"""Issue 13 (containment): worker bodies and task bodies that start descendants, and the
bookkeeping the containment tests use to know exactly which processes must end.

Three parts, one module (test modules do not import each other):

- worker bodies, imported IN THE WORKER by target string (``containment_targets:child``)
  with tests/ as the pool's cwd. Each starts its descendants BEFORE its first heartbeat
  (so a pool that is ready has them all), records each one, then beats like a steady
  worker. The ``*_on_cue`` bodies misbehave on SIGUSR1, like tests/targets.py's.
- task bodies for ``pool.Pool`` (picklable by reference), given the record directory
  as an argument.
- records: every descendant is written down as ``<dir>/<pid>.json`` with its pid and
  psutil create_time (so a reused pid is never taken for it), the worker (pid + create
  time) that started it, and the worker's slot and generation. The directory is
  ``$POOLCTL_CONTAINMENT_DIR`` for workers (set it in the test's environment before the
  pool starts; workers inherit it) or the task's argument. Tests read the records back
  with ``descendants()`` and count the ones still running with ``survivors()``.

A descendant counts as gone when no process has its pid and create time, or that process
is a zombie (PID 1 here does not reap orphans).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_DIR = "POOLCTL_CONTAINMENT_DIR"
SLEEP = ["sleep", "1000"]
BIG_MIB = 150  # what big_child_on_cue's child holds, touched (resident)
_cue: list[int] = []

# A python descendant that takes SIGTERM as a note, not an order: it writes "TERM" to
# <dir>/<pid>.term and keeps running, so only SIGKILL ends it. It says "ready" once the
# handler is installed, so a stop can never arrive before it.
TERM_IGNORER = """
import os, sys, time, signal
path = os.path.join(sys.argv[1], f"{os.getpid()}.term")
def noted(signum, frame):
    with open(path, "a") as f:
        f.write("TERM\\n")
signal.signal(signal.SIGTERM, noted)
print("ready", flush=True)
while True:
    time.sleep(1000)
"""

# The middle process of a double fork: starts the grandchild (in a new session with
# ``setsid``, as a daemon does), prints its pid and exits, so the grandchild is re-parented.
DOUBLE_FORK_MIDDLE = """
import subprocess, sys
child = subprocess.Popen(["sleep", "1000"], start_new_session=sys.argv[1] == "setsid",
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid, flush=True)
"""

# A descendant that keeps forking while it is being killed: it ignores SIGTERM and starts a
# new ``sleep 1000`` in a session of its own every 5 ms (at most 400), recording each, so a
# stop races fresh escapees right up to its SIGKILL.
FORKER = """
import os, signal, subprocess, sys, time
sys.path.insert(0, sys.argv[2])
from containment_targets import record
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
for _ in range(400):
    child = subprocess.Popen(["sleep", "1000"], start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record(child.pid, "forker's escapee", sys.argv[1])
    time.sleep(0.005)
while True:
    time.sleep(1000)
"""

# A helper whose memory is resident (bytes * n writes every page; bytearray(n) would not).
BIG = f"""
import sys, time
ballast = b"\\x01" * ({BIG_MIB} << 20)
print("ready", flush=True)
while True:
    time.sleep(1000)
"""


# -- records --------------------------------------------------------------------------


@dataclass(frozen=True)
class Descendant:
    pid: int
    create_time: float
    kind: str
    worker: int  # the worker (or task-pool worker) that started it
    worker_create_time: float
    slot: int | None
    generation: int | None
    via: int | None = None  # a double fork's middle process, which exited

    def running(self) -> bool:
        return process_running(self.pid, self.create_time)

    def worker_running(self) -> bool:
        return process_running(self.worker, self.worker_create_time)

    def describe(self) -> str:
        import psutil

        try:
            proc = psutil.Process(self.pid)
            what = f"{' '.join(proc.cmdline())[:60]!r}, ppid {proc.ppid()}, pgid {os.getpgid(self.pid)}, {proc.status()}"
        except (psutil.Error, OSError):
            what = "gone"
        if not self.worker:  # found by its mark, never recorded
            return f"pid {self.pid} ({self.kind}: {what})"
        return f"pid {self.pid} ({self.kind} of worker {self.worker}, slot {self.slot} gen {self.generation}: {what})"


def process_running(pid: int, create_time: float) -> bool:
    """That very process (pid + create time) exists and is not a zombie."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - create_time) < 0.005 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def create_time(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).create_time())


def record(
    pid: int,
    kind: str,
    directory: str | os.PathLike[str] | None = None,
    ctx: Any = None,
    via: int | None = None,
) -> None:
    """Write down descendant ``pid`` (atomically: a reader never sees half a record)."""
    where = Path(directory if directory is not None else os.environ[ENV_DIR])
    me = os.getpid()
    document = {
        "pid": pid,
        "create_time": create_time(pid),
        "kind": kind,
        "worker": me,
        "worker_create_time": create_time(me),
        "slot": getattr(ctx, "slot", None),
        "generation": getattr(ctx, "generation", None),
        "via": via,
    }
    temp = where / f".{pid}.tmp"
    temp.write_text(json.dumps(document))
    os.rename(temp, where / f"{pid}.json")


def descendants(directory: Path) -> list[Descendant]:
    """Every descendant recorded in ``directory``, oldest first."""
    found = []
    for path in directory.glob("*.json"):
        found.append(Descendant(**json.loads(path.read_text())))
    return sorted(found, key=lambda d: d.create_time)


def survivors(records: list[Descendant]) -> list[Descendant]:
    return [d for d in records if d.running()]


def wait_gone(records: list[Descendant], timeout: float) -> list[Descendant]:
    """Poll until none of ``records`` runs; the ones still running at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = survivors(records)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)


def describe(records: list[Descendant]) -> str:
    return "; ".join(d.describe() for d in records) or "none"


def kill_all(records: list[Descendant]) -> None:
    """Teardown: SIGKILL every recorded descendant still running, by pid + create time."""
    for d in records:
        if d.running():
            try:
                os.kill(d.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(d.pid, os.WNOHANG)  # ours (a test's own decoy): no zombie
            except ChildProcessError:
                pass


class Records:
    """The test's view of one record directory, plus decoys: processes the test started
    that are NOT the pool's and must survive whatever the pool does. Everything in it is
    SIGKILLed (by pid + create time) at teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.decoys: list[Descendant] = []

    def all(self) -> list[Descendant]:
        return descendants(self.directory)

    def of_worker(self, pid: int) -> list[Descendant]:
        return [d for d in self.all() if d.worker == pid]

    def of_dead_workers(self) -> list[Descendant]:
        return [d for d in self.all() if not d.worker_running()]

    def wait_for(self, count: int, timeout: float = 15.0, worker: int | None = None) -> list[Descendant]:
        """At least ``count`` records (of ``worker``, if given); fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.all() if worker is None else self.of_worker(worker)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {count} descendant record(s)"
                    + (f" of worker {worker}" if worker is not None else "")
                    + f": {describe(found)}"
                )
            time.sleep(0.02)

    def marked(self) -> list[Descendant]:
        """Live processes whose environment names this record directory (every process of a
        pool the test started through the CLI inherits it), recorded or not, decoys excepted.
        A process forked an instant before its parent was killed may never have been
        recorded; it still carries the mark."""
        import psutil

        decoys = {d.pid for d in self.decoys}
        me = os.getpid()
        found = []
        for proc in psutil.process_iter(["pid", "status"]):
            if proc.pid in decoys or proc.pid == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            try:
                if proc.environ().get(ENV_DIR) == str(self.directory):
                    found.append(Descendant(proc.pid, proc.create_time(), "unrecorded", 0, 0.0, None, None))
            except psutil.Error:
                continue
        return found

    def decoy(self) -> Descendant:
        """An orphaned ``sleep 1000`` with the same command line and environment as a pool's
        child, started by the test and re-parented like a leftover grandchild: not the pool's."""
        out = subprocess.run(
            [sys.executable, "-c", DOUBLE_FORK_MIDDLE, "same-session"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
        pid = int(out)
        me = os.getpid()
        decoy = Descendant(pid, create_time(pid), "decoy", me, create_time(me), None, None)
        self.decoys.append(decoy)
        return decoy

    def cleanup(self) -> None:
        kill_all(self.all() + self.decoys)
        kill_all(self.marked())


# -- starting descendants (in the worker) ----------------------------------------------------


def _quiet(**kwargs: Any) -> dict[str, Any]:
    return {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **kwargs}


def start_sleep(kind: str, ctx: Any = None, directory: Any = None, **popen: Any) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(SLEEP, **_quiet(**popen))
    record(child.pid, kind, directory, ctx)
    return child


def start_python(code: str, kind: str, ctx: Any = None, directory: Any = None) -> subprocess.Popen[bytes]:
    """A python descendant running ``code`` (argv[1] = the record directory); returns once it
    printed its ready line."""
    where = str(directory if directory is not None else os.environ[ENV_DIR])
    child = subprocess.Popen(
        [sys.executable, "-c", code, where, os.path.dirname(os.path.abspath(__file__))],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if line != b"ready\n":
        raise RuntimeError(f"descendant pid {child.pid} did not get ready: {line!r}")
    record(child.pid, kind, directory, ctx)
    return child


def start_double_fork(kind: str, setsid: bool, ctx: Any = None, directory: Any = None) -> int:
    """A grandchild whose parent exits at once (re-parented away from the worker); its pid."""
    middle = subprocess.Popen(
        [sys.executable, "-c", DOUBLE_FORK_MIDDLE, "setsid" if setsid else "same-session"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    out, _ = middle.communicate(timeout=30)
    grandchild = int(out)
    record(grandchild, kind, directory, ctx, via=middle.pid)
    return grandchild


# -- worker bodies ----------------------------------------------------------------------------


def steady(ctx: Any) -> None:
    while not ctx.wait(0.05):
        ctx.beat()


def child(ctx: Any) -> None:
    """One plain ``sleep 1000`` child, then steady."""
    start_sleep("child", ctx)
    steady(ctx)


def setsid_child(ctx: Any) -> None:
    """A child that calls setsid() (Popen(start_new_session=True)): its own session and group."""
    start_sleep("setsid child", ctx, start_new_session=True)
    steady(ctx)


def setpgid_child(ctx: Any) -> None:
    """A child that calls setpgid(0, 0) (Popen(process_group=0)): its own process group."""
    start_sleep("setpgid child", ctx, process_group=0)
    steady(ctx)


def double_fork(ctx: Any) -> None:
    """A grandchild re-parented when its parent exits, staying in the worker's session."""
    start_double_fork("double-forked grandchild", False, ctx)
    steady(ctx)


def daemonized(ctx: Any) -> None:
    """A grandchild re-parented when its parent exits, in a session of its own (a daemon)."""
    start_double_fork("daemonized grandchild", True, ctx)
    steady(ctx)


def term_ignoring_child(ctx: Any) -> None:
    """A child that notes SIGTERM in <dir>/<pid>.term and keeps running."""
    start_python(TERM_IGNORER, "TERM-ignoring child", ctx)
    steady(ctx)


def forker(ctx: Any) -> None:
    """A child that ignores SIGTERM and keeps starting escapees (setsid) until it is killed."""
    start_python(FORKER, "forker", ctx)
    steady(ctx)


def escapes(ctx: Any) -> None:
    """Every kind at once: plain, setsid, setpgid, double-forked, daemonized, TERM-ignoring."""
    start_sleep("child", ctx)
    start_sleep("setsid child", ctx, start_new_session=True)
    start_sleep("setpgid child", ctx, process_group=0)
    start_double_fork("double-forked grandchild", False, ctx)
    start_double_fork("daemonized grandchild", True, ctx)
    start_python(TERM_IGNORER, "TERM-ignoring child", ctx)
    steady(ctx)


def crash_loop_with_child(ctx: Any) -> None:
    """Generation 1 starts a child and behaves until SIGUSR1, then raises. Every later
    generation starts a child, beats once and ends itself 0.2 s later: os._exit(1) in
    even generations, an exception (exit 1) in odd ones. A crash loop, each life leaving
    a child behind unless the supervisor ends it."""
    start_sleep("child", ctx)
    if ctx.generation == 1:
        signal.signal(signal.SIGUSR1, lambda signum, frame: _cue.append(signum))
        while not _cue:
            if ctx.wait(0.02):
                return
        raise RuntimeError("cued crash")
    ctx.beat()
    time.sleep(0.2)
    if ctx.generation % 2 == 0:
        os._exit(1)
    raise RuntimeError(f"generation {ctx.generation} crashes")


def child_then_hang_on_cue(ctx: Any) -> None:
    """Starts a child, behaves until SIGUSR1, then stops beating for good (a hang: it reads
    no stop flag either)."""
    start_sleep("child", ctx)
    signal.signal(signal.SIGUSR1, lambda signum, frame: _cue.append(signum))
    while not _cue:
        if ctx.wait(0.02):
            return
    while True:
        time.sleep(1000)


def big_child_on_cue(ctx: Any) -> None:
    """Behaves with a small RSS until SIGUSR1, then starts a child holding BIG_MIB MiB of
    resident memory (a leaking helper) and keeps beating: the worker itself stays small."""
    signal.signal(signal.SIGUSR1, lambda signum, frame: _cue.append(signum))
    started = False
    while not ctx.wait(0.05):
        ctx.beat()
        if _cue and not started:
            started = True
            start_python(BIG, "big child", ctx)


# -- task bodies (pool.Pool) ---------------------------------------------------------------------


def task_child_then_sleep(directory: str, seconds: float, setsid: bool = False) -> int:
    """Starts a ``sleep 1000`` child (in a session of its own with ``setsid``), records it, then
    runs ``seconds`` itself; returns its own pid."""
    start_sleep("task child", None, directory, start_new_session=setsid)
    time.sleep(seconds)
    return os.getpid()
