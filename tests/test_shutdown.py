"""Stopping with verified death: the escalation steps, SIGKILL after grace, and a stop that
cannot complete reported as a failure naming the survivor, never as success."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from scripts import supkit
from scripts.supkit import wait_until

from pool.errors import StopFailed
from pool.supervision import shutdown
from pool.supervision.shutdown import Stage
from pool.supervision.supervisor import Supervisor
from statusboard.liveness import start_ticks
from statusboard.probe import probe

pytestmark = pytest.mark.usefixtures("supervised")

NO_SUCH_PID = 2**22 + 17  # above Linux's largest pid_max
AFTER_GRACE = r"(0\.[5-9]|1\.\d)"  # SIGKILL comes at grace (0.5 s), not before; later under load


# -- the escalation plan, time injected ---------------------------------------------


def test_a_stop_goes_flag_then_sigterm_at_half_grace_then_sigkill_at_grace_then_gives_up():
    esc = shutdown.begin("stop", 10.0, 4.0)
    assert (esc.stage, esc.next_at) == (Stage.FLAG, 11.0)  # the flag alone for min(1 s, grace/2)
    assert shutdown.advance(esc, 10.99) is None
    assert shutdown.advance(esc, 11.0) is Stage.TERM
    assert esc.next_at == 14.0  # SIGKILL at started + grace
    assert shutdown.advance(esc, 13.99) is None
    assert shutdown.advance(esc, 14.0) is Stage.KILL
    assert esc.next_at == 14.0 + shutdown.CONFIRM_S
    assert shutdown.advance(esc, 14.0 + shutdown.CONFIRM_S - 0.01) is None
    assert shutdown.advance(esc, 14.0 + shutdown.CONFIRM_S) is Stage.GAVE_UP
    assert shutdown.advance(esc, 1e9) is None
    assert shutdown.SIGNAL_FOR == {Stage.TERM: signal.SIGTERM, Stage.KILL: signal.SIGKILL}


def test_a_short_grace_halves_the_flag_period():
    esc = shutdown.begin("retire", 0.0, 0.5)
    assert (esc.stage, esc.next_at, esc.why) == (Stage.FLAG, 0.25, "retire")
    assert shutdown.advance(esc, 0.25) is Stage.TERM
    assert shutdown.advance(esc, 0.49) is None
    assert shutdown.advance(esc, 0.5) is Stage.KILL


def test_a_hang_skips_the_flag_and_uses_a_short_grace():
    esc = shutdown.begin("hang", 5.0, 30.0)
    assert esc.stage is Stage.TERM  # the caller sends SIGTERM at once
    assert esc.next_at == 5.0 + shutdown.HANG_GRACE_S
    assert shutdown.advance(esc, 5.0 + shutdown.HANG_GRACE_S) is Stage.KILL


def test_wait_gone_with_injected_time():
    now = [0.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    me = os.getpid()
    assert shutdown.wait_gone([(NO_SUCH_PID, None)], 5.0, clock=lambda: now[0], sleep=sleep) == []
    assert sleeps == []
    # A live process is reported at the deadline, after bounded, growing polls.
    assert shutdown.wait_gone([(me, None)], 2.0, clock=lambda: now[0], sleep=sleep) == [me]
    assert now[0] == pytest.approx(2.0)
    assert sleeps[0] == 0.001 and max(sleeps) <= 0.05
    # Same pid, other start time: a reused pid is not ours, so ours is gone.
    assert shutdown.wait_gone([(me, start_ticks(me) + 1)], 2.0, clock=lambda: now[0], sleep=sleep) == []


STUBBORN = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_kill_and_confirm_escalates_to_sigkill_and_reports_a_survivor(monkeypatch):
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        ident = (proc.pid, start_ticks(proc.pid))
        sent = []

        def swallow(pid, signum):
            sent.append(signum)

        # A kill that does nothing: the process survives, and is named.
        monkeypatch.setattr(shutdown, "CONFIRM_S", 0.2)
        assert shutdown.kill_and_confirm([ident], grace=0.2, kill=swallow) == [proc.pid]
        assert sent == [signal.SIGTERM, signal.SIGKILL]
        # The real thing: SIGTERM is ignored, SIGKILL after grace, death confirmed.
        t0 = time.monotonic()
        assert shutdown.kill_and_confirm([ident], grace=0.2) == []
        assert time.monotonic() - t0 >= 0.2  # the grace was given before the SIGKILL
        assert proc.wait(5) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


# -- real pools ----------------------------------------------------------------------


@pytest.mark.parametrize("target", ["ignore_sigterm", "slow_shutdown"])
def test_workers_that_outlast_grace_are_sigkilled_and_the_stop_still_succeeds(runtime, target):
    grace = 0.5
    spec = supkit.make_spec(target, workers=2, grace=grace)
    sup = Supervisor(spec, runtime_dir=runtime).start()
    rows = supkit.running(runtime, 2)
    assert rows
    pids = {w["slot"]: w["pid"] for w in rows}
    t0 = time.monotonic()
    result = sup.stop()  # the leak check kills whatever this might leave
    elapsed = time.monotonic() - t0
    assert result.ok and result.survivors == [] and result.boot_error is None
    assert elapsed >= grace, elapsed  # they had their grace before the SIGKILL
    for pid in pids.values():
        assert supkit.is_gone(pid), f"pid {pid} still runs"
    log = supkit.read_log(runtime)
    for slot, pid in pids.items():
        assert re.search(
            rf"WARNING +worker {slot} \(pid {pid}\) still running [\d.]+s after the stop flag; "
            r"escalated to SIGTERM",
            log,
        ), log
        assert re.search(
            rf"WARNING +worker {slot} \(pid {pid}\) still running {AFTER_GRACE}s after SIGTERM; "
            "escalated to SIGKILL",
            log,
        ), log
        assert f"worker {slot} (pid {pid}) exited: signal SIGKILL\n" in log  # no "out of memory?" guess
    assert "supervisor stopped\n" in log and "stop FAILED" not in log
    doc = supkit.runtime_doc(runtime)
    assert doc["state"] == "stopped" and doc["survivors"] == []
    assert probe(runtime, spec.name).code == 3


def test_a_hung_worker_that_ignores_sigterm_is_sigkilled(runtime):
    spec = supkit.make_spec("hang_ignoring_sigterm", workers=1, heartbeat_timeout=0.5, grace=0.5)
    with Supervisor(spec, runtime_dir=runtime):
        old = supkit.workers(runtime)[0]
        new = wait_until(
            lambda: (
                (w := supkit.by_slot(runtime).get(0))
                and w["pid"] != old["pid"]
                and w["state"] == "running"
                and w
            ),
            5,
            lambda: f"the hung worker replaced: {supkit.workers(runtime)}",
        )
        assert new["last_exit_code"] == -signal.SIGKILL
        assert supkit.is_gone(old["pid"])
    log = supkit.read_log(runtime)
    pid = old["pid"]
    assert f"worker 0 (pid {pid}) hung: no heartbeat" in log
    assert re.search(
        rf"worker 0 \(pid {pid}\) still running {AFTER_GRACE}s after SIGTERM; escalated to SIGKILL", log
    )


def test_a_stop_that_cannot_complete_is_a_failure_naming_the_survivor(runtime, monkeypatch):
    monkeypatch.setattr(shutdown, "CONFIRM_S", 0.5)
    protected: set[int] = set()
    swallowed: list[tuple[int, int]] = []

    def kill(pid, signum):
        if abs(pid) in protected:  # its process group too (-pid): a process that will not die
            swallowed.append((pid, signum))  # a process that will not die
            return
        os.kill(pid, signum)

    spec = supkit.make_spec("ignore_sigterm", workers=2, grace=0.5)
    sup = Supervisor(spec, runtime_dir=runtime, kill=kill).start()
    rows = supkit.running(runtime, 2)
    assert rows
    victim, other = rows[0]["pid"], rows[1]["pid"]
    protected.add(victim)
    segment = sup.board.path
    try:
        with pytest.raises(StopFailed) as err:
            sup.stop()
        assert err.value.survivors == [victim]
        assert str(victim) in str(err.value)
        # Each step reaches the worker and its process group (its tree: pool.supervision.containment).
        assert sorted(swallowed) == sorted(
            [
                (-victim, signal.SIGTERM),
                (victim, signal.SIGTERM),
                (-victim, signal.SIGKILL),
                (victim, signal.SIGKILL),
            ]
        )
        assert not supkit.is_gone(victim)
        assert supkit.is_gone(other)
        assert not segment.exists()

        log = supkit.read_log(runtime)
        assert f"worker 0 (pid {victim}) survived SIGKILL for 0.5s: NOT confirmed gone" in log
        assert f"stop FAILED: still alive after SIGKILL: pid {victim}" in log
        assert "supervisor stopped (with survivors)" in log
        assert "supervisor stopped\n" not in log

        doc = supkit.runtime_doc(runtime)
        assert doc["state"] == "stop_failed"
        assert [s["pid"] for s in doc["survivors"]] == [victim]
        report = probe(runtime, spec.name)
        assert (report.code, report.document["state"]) == (1, "stop_failed")
        assert str(victim) in report.document["reason"]
    finally:
        supkit.kill_quietly(victim)
    wait_until(lambda: supkit.is_gone(victim), 5, f"pid {victim} gone after the test's SIGKILL")
    supkit.reap_quietly(victim)
    report = probe(runtime, spec.name)
    assert (report.code, report.document["state"]) == (3, "stopped")
