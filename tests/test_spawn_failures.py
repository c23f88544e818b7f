"""Spawn failures (issue 14, item 4): a worker that cannot be started is a slot failure.

``ulimit -n`` low (soft AND hard: the supervisor raises its soft limit toward the hard one),
``start -w 20``, ``scale 100``: the supervisor must not crash; the slots that cannot start
back off and end FAILED with a log line naming the cause; ``scale`` says how far it got
instead of waiting out its timeout; a killed worker is still replaced; ``stop`` exits 0
with every pid verified gone.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from cli_targets import FAST, POOLCTL, Cli, alive, run, wait_for
from scripts import supkit

from pool.supervision.supervisor import Supervisor
from statusboard.liveness import start_ticks

pytestmark = pytest.mark.timeout(180)
FD_LIMIT = 256

# Runs poolctl with RLIMIT_NOFILE (soft and hard) lowered; the daemon it launches inherits it.
_LIMITED = (
    "import os, resource, sys; lim = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (lim, lim)); os.execv(sys.argv[2], sys.argv[2:])"
)


def limited(cli: Cli, *args: str, limit: int = FD_LIMIT) -> Any:
    argv = [sys.executable, "-c", _LIMITED, str(limit), POOLCTL, "--name", cli.name]
    return run([*argv, "--runtime-dir", str(cli.directory), *args], cwd=cli.cwd, timeout=120)


def descendants(pid: int) -> list[tuple[int, int | None]]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    return [(p.pid, start_ticks(p.pid)) for p in children if start_ticks(p.pid) is not None]


def test_scale_past_the_fd_limit_keeps_supervising(cli: Cli) -> None:
    started = limited(cli, "start", "cli_targets:steady", "-w", "20", *FAST)
    assert started.code == 0, str(started)
    cli.remember()
    supervisor, ticks = cli.supervisor()
    assert psutil.Process(supervisor).rlimit(psutil.RLIMIT_NOFILE) == (FD_LIMIT, FD_LIMIT)

    scaled = cli("scale", "100", "--wait", "150", timeout=170)
    assert scaled.code == 1, str(scaled)
    assert len(scaled.err_lines) == 1, str(scaled)
    message = scaled.err_lines[0]
    # It says how far it got and why it stopped, rather than waiting out --wait.
    assert "not reached within" not in message, message
    reached = re.search(r"(\d+) of 100 workers running", message)
    assert reached, message
    assert 20 <= int(reached.group(1)) < 100, message
    assert "failed" in message, message

    assert alive(supervisor, ticks), "the supervisor died"
    log = (cli.directory / "supervisor.log").read_text()
    assert re.search(r"worker \d+ could not start: \[Errno 24\] Too many open files", log), log[-3000:]
    assert "supervisor error" not in log, log[-3000:]
    code, document = cli.status()
    assert code == 2, document  # degraded: some serve, some failed
    running_rows = [w for w in document["workers"] if w["state"] == "running"]
    assert len(running_rows) == int(reached.group(1))
    assert all(w["state"] in ("running", "failed") for w in document["workers"]), document

    victim = running_rows[0]
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced() -> bool:
        rows = {w["slot"]: w for w in cli.status()[1]["workers"]}
        row = rows[victim["slot"]]
        return row["pid"] != victim["pid"] and row["state"] == "running"

    wait_for(replaced, 60, f"worker {victim['slot']} replaced after SIGKILL")
    assert alive(supervisor, ticks)

    everything = [(supervisor, ticks), *descendants(supervisor)]
    stopped = cli("stop")
    assert stopped.code == 0, str(stopped)
    still = [pid for pid, t in everything if alive(pid, t)]
    assert not still, f"stop exited 0 with these alive: {still}"


def _settled_fds() -> list[str]:
    """This process's open fds, once two looks 20 ms apart agree."""
    last = sorted(os.listdir("/proc/self/fd"))
    while True:
        time.sleep(0.02)
        now = sorted(os.listdir("/proc/self/fd"))
        if now == last:
            return now
        last = now


@pytest.mark.usefixtures("supervised")
def test_a_failing_fork_is_a_slot_failure_that_leaks_no_fd(
    runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fork() failing with EAGAIN (the process limit): each attempt is counted like a crash,
    backs off, ends FAILED, names the cause, and closes the pipes it had made."""
    real_fork = os.fork
    failing = threading.Event()

    def fork() -> int:
        if failing.is_set():
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        return real_fork()

    monkeypatch.setattr(os, "fork", fork)
    spec = supkit.make_spec("well_behaved", workers=1, max_restarts=3, backoff_base=0.05, backoff_cap=0.1)
    with Supervisor(spec, runtime_dir=runtime) as sup:
        supkit.wait_until(lambda: supkit.running(runtime, 1), 10, "1 worker running")
        fds = _settled_fds()  # the supervisor thread may hold a /proc read open for a moment
        failing.set()
        sup.scale(3)

        def failed() -> bool:
            rows = supkit.by_slot(runtime)
            return all(rows.get(i, {}).get("state") == "failed" for i in (1, 2))

        supkit.wait_until(failed, 30, lambda: f"slots 1 and 2 failed: {supkit.workers(runtime)}")
        lines = supkit.log_lines(runtime, "could not start: [Errno 11] Resource temporarily unavailable")
        assert {line.split("worker ")[1].split()[0] for line in lines} == {"1", "2"}, lines
        assert len(lines) == 2 * (spec.max_restarts + 1), lines  # the budget, not a hot loop
        supkit.wait_until(
            lambda: sorted(os.listdir("/proc/self/fd")) == fds, 5, "no fd left open by the failed forks"
        )

        failing.clear()  # the limit lifts: a crash of a running worker is replaced as ever
        victim = supkit.by_slot(runtime)[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        supkit.wait_until(
            lambda: (
                supkit.by_slot(runtime)[0]["pid"] not in (victim, None)
                and supkit.by_slot(runtime)[0]["state"] == "running"
            ),
            10,
            "worker 0 replaced",
        )


_EMERGENCY = """
import os, sys
sys.path[:0] = [sys.argv[2], sys.argv[3]]
from scripts import supkit
from pool.supervision.supervisor import Supervisor
runtime = sys.argv[1]
sup = Supervisor(supkit.make_spec("well_behaved", workers=3), runtime_dir=runtime).start()
print(" ".join(str(w["pid"]) for w in supkit.workers(runtime)), flush=True)
hog = []
try:
    while True:
        hog.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass

def broken():
    raise RuntimeError("injected internal error")

sup.loop._check_ready = broken  # the loop's next wake raises, with no fd left to open
sup._thread.join(60)
for fd in hog:
    os.close(fd)
print(len(hog), repr(sup._setup_error), flush=True)
"""


def test_the_emergency_stop_needs_no_new_fd(tmp_path: Path, spawn: Any, read_line: Any) -> None:
    """An internal error while every fd is taken: the emergency stop still kills and confirms
    every worker (it keeps one fd spare for its /proc reads)."""
    runtime = supkit.make_runtime(tmp_path)
    tests = os.path.dirname(os.path.abspath(__file__))
    proc = spawn.python(_EMERGENCY, runtime, tests, os.path.dirname(tests))
    pids = [int(p) for p in read_line(proc, timeout=30).split()]
    assert len(pids) == 3
    ticks = {pid: start_ticks(pid) for pid in pids}
    hogged, error = read_line(proc, timeout=90).split(" ", 1)
    assert int(hogged) > 0 and "injected internal error" in error, error
    assert proc.wait(timeout=30) == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    still = [pid for pid in pids if alive(pid, ticks[pid])]
    assert not still, f"the emergency stop left workers running: {still}"
    log = supkit.read_log(runtime)
    assert "supervisor error: injected internal error" in log, log[-2000:]
