"""The restart rules as a matrix (OTP's suite): restart type x exit reason, real processes.

Slot 0 runs a ``*_on_cue`` body: it behaves until the test sends SIGUSR1, then
returns, raises, hangs or segfaults; for "signal" the test SIGKILLs it. Slot 1
just runs, and must be untouched by whatever happens to slot 0.
"""

from __future__ import annotations

import os
import signal

import pytest
from scripts import supkit
from scripts.supkit import wait_until

from pool.supervision.supervisor import Supervisor

pytestmark = pytest.mark.usefixtures("supervised")

REASONS = {
    # reason: (target, what the test sends slot 0, exit code the board must show)
    "ok": ("exit_on_cue", signal.SIGUSR1, 0),
    "error": ("raise_on_cue", signal.SIGUSR1, 1),
    "signal": ("exit_on_cue", signal.SIGKILL, -signal.SIGKILL),
    "hang": ("hang_on_cue", signal.SIGUSR1, -signal.SIGTERM),
    "segfault": ("segfault_on_cue", signal.SIGUSR1, -signal.SIGSEGV),
}
RESTARTED = {
    "permanent": {"ok", "error", "signal", "hang", "segfault"},
    "transient": {"error", "signal", "hang", "segfault"},
    "temporary": set(),
}
EXIT_TEXT = {0: "code 0", 1: "code 1", -9: "signal SIGKILL", -15: "signal SIGTERM", -11: "signal SIGSEGV"}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("reason", list(REASONS))
@pytest.mark.parametrize("policy", list(RESTARTED))
def test_restart_matrix(tmp_path, policy, reason):
    target, cue, exit_code = REASONS[reason]
    runtime = supkit.make_runtime(tmp_path)
    spec = supkit.make_spec(target, workers=2, restart=policy, heartbeat_timeout=0.5)
    with Supervisor(spec, runtime_dir=runtime):
        before = supkit.by_slot(runtime)
        old, other = before[0], before[1]
        assert old["generation"] == 1 and old["state"] == "running"

        os.kill(old["pid"], cue)

        if reason in RESTARTED[policy]:

            def replaced():
                row = supkit.by_slot(runtime).get(0)
                return row if row and row["state"] == "running" and row["pid"] != old["pid"] else None

            new = wait_until(replaced, 5, lambda: f"slot 0 replaced: {supkit.workers(runtime)}")
            assert new["generation"] == 2
            assert new["restarts"] == 1
        else:
            wait_until(
                lambda: supkit.log_lines(runtime, f"worker 0 not restarted (policy {policy})"),
                5,
                lambda: f"the no-restart decision in the log:\n{supkit.read_log(runtime)}",
            )
            new = supkit.by_slot(runtime)[0]
            assert new["state"] == "exited"
            assert new["pid"] == old["pid"]
            assert new["generation"] == 1
            assert new["restarts"] == 0
        assert new["last_exit_code"] == exit_code
        assert supkit.is_gone(old["pid"])
        untouched = supkit.by_slot(runtime)[1]
        assert (untouched["pid"], untouched["generation"], untouched["state"]) == (
            other["pid"],
            1,
            "running",
        )

    log = supkit.read_log(runtime)
    assert f"worker 0 (pid {old['pid']}) exited: {EXIT_TEXT[exit_code]}" in log
    if reason == "hang":
        assert f"worker 0 (pid {old['pid']}) hung: no heartbeat" in log
    if reason == "error":
        assert "RuntimeError: cued failure" in log and "Traceback" in log
    started = supkit.log_lines(runtime, "started pid")
    assert len(started) == (3 if reason in RESTARTED[policy] else 2)
    assert supkit.runtime_doc(runtime)["state"] == "stopped"
