"""Spawn failures (issue 14, item 4): a worker that cannot be started is a slot failure.

``ulimit -n`` low (soft AND hard: the supervisor raises its soft limit toward the hard one),
``start -w 20``, ``scale 100``: the supervisor must not crash; the slots that cannot start
back off and end FAILED with a log line naming the cause; ``scale`` says how far it got
instead of waiting out its timeout; a killed worker is still replaced; ``stop`` exits 0
with every pid verified gone.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import Any

import psutil
import pytest
from cli_targets import FAST, POOLCTL, Cli, alive, run, wait_for

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
