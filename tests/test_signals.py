"""Real signals to a foreground supervisor in a subprocess (start method auto -> fork):
SIGTERM/SIGINT stop, SIGHUP rolls, SIGTTIN/SIGTTOU scale by one. Also: runtime.json is
written by the supervisor process and nobody else."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from scripts import supkit
from scripts.supkit import ScriptSupervisor, wait_until

from statusboard.probe import probe

pytestmark = pytest.mark.usefixtures("supervised")


@pytest.mark.parametrize(
    ("signum", "to_group"),
    [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGINT, True)],
    ids=["SIGTERM", "SIGINT", "ctrl-c-to-group"],
)
def test_sigterm_and_sigint_stop_cleanly(runtime, signum, to_group):
    with ScriptSupervisor(runtime, "well_behaved", workers=2) as sup:
        pids = [w["pid"] for w in sup.wait_running(2)]
        segment = Path(supkit.runtime_doc(runtime)["board"])
        assert segment.exists()
        if to_group:  # a terminal's Ctrl-C: SIGINT to the supervisor's process group
            # Each worker leads its own group (pool.supervision.containment), so only the supervisor gets
            # it, and it stops the workers gracefully (they ignore SIGINT anyway).
            assert all(os.getpgid(pid) == pid for pid in pids)
            os.killpg(sup.pid, signum)
        else:
            sup.signal(signum)
        assert sup.wait_exit() == 0, sup.output()
    assert supkit.all_gone(pids)
    for pid in pids:  # each left on the stop request, not killed by a signal
        assert supkit.log_lines(runtime, f"(pid {pid}) exited: code 0")
    assert not segment.exists()
    doc = supkit.runtime_doc(runtime)
    assert doc["state"] == "stopped"
    assert doc["supervisor"]["pid"] == sup.pid
    assert doc["reason"] == f"{signum.name} received"
    assert not supkit.temp_files(runtime)
    log = supkit.read_log(runtime)
    assert f"received {signum.name}: graceful stop" in log
    assert "start method fork" in log
    assert probe(runtime, sup.name).code == 3


def _signal_mask(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _has(mask: int, signum: int) -> bool:
    return bool(mask >> (signum - 1) & 1)


def test_workers_reset_the_signal_handlers_they_inherit(runtime):
    with ScriptSupervisor(runtime, "well_behaved", workers=1) as sup:
        (worker,) = sup.wait_running(1)
        caught = _signal_mask(sup.pid, "SigCgt")
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)
        assert all(_has(caught, s) for s in handled)  # the supervisor handles these ...
        caught = _signal_mask(worker["pid"], "SigCgt")
        ignored = _signal_mask(worker["pid"], "SigIgn")
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            assert not _has(caught, s) and not _has(ignored, s), s.name  # ... a worker has the defaults
        assert _has(ignored, signal.SIGINT)  # Ctrl-C is the supervisor's to handle
        sup.signal(signal.SIGTERM)
        assert sup.wait_exit() == 0


def test_sigttin_adds_a_worker_and_sigttou_removes_one(runtime):
    with ScriptSupervisor(runtime, "well_behaved", workers=2) as sup:
        first = sup.wait_running(2)
        sup.signal(signal.SIGTTIN)
        rows = sup.wait_running(3)
        assert [w["pid"] for w in rows[:2]] == [w["pid"] for w in first]
        sup.signal(signal.SIGTTOU)
        sup.wait_running(2)
        sup.signal(signal.SIGTTOU)
        (last,) = sup.wait_running(1)
        assert last["pid"] == first[0]["pid"]
        # Never below one worker.
        sup.signal(signal.SIGTTOU)
        wait_until(lambda: len(supkit.log_lines(runtime, "received SIGTTOU")) == 3, 5, "the third SIGTTOU")
        sup.signal(signal.SIGTTIN)
        sup.wait_running(2)
        sup.signal(signal.SIGTERM)
        assert sup.wait_exit() == 0
    log = supkit.read_log(runtime)
    assert "received SIGTTIN: one worker more" in log and "received SIGTTOU: one worker fewer" in log
    assert "scaling from 2 to 3 workers" in log and "scaling from 1 to 2 workers" in log
    assert "scaling from 1 to 0" not in log
    assert supkit.all_gone(list(sup.seen_pids))


def test_sighup_is_a_rolling_restart_by_the_same_supervisor(runtime):
    with ScriptSupervisor(runtime, "well_behaved", workers=2) as sup:
        old = {w["slot"]: w["pid"] for w in sup.wait_running(2)}
        sup.signal(signal.SIGHUP)

        def rolled():
            rows = sup.wait_running(2)
            return all(w["pid"] != old[w["slot"]] and w["generation"] == 2 for w in rows) and rows

        rows = wait_until(rolled, 10, "both workers replaced")
        assert all(w["restarts"] == 0 for w in rows)
        assert supkit.all_gone(list(old.values()))
        assert probe(runtime, sup.name).document["supervisor"]["pid"] == sup.pid
        sup.signal(signal.SIGTERM)
        assert sup.wait_exit() == 0
    log = supkit.read_log(runtime)
    assert "received SIGHUP: rolling restart" in log
    assert "rolling restart of 2 workers, one at a time" in log


def test_runtime_json_is_written_only_by_the_supervisor_process(runtime, tmp_path):
    """An audit hook installed in the supervisor before it forks (so every worker has it too)
    records each write-open, rename and removal under the runtime directory, with the pid."""
    audit = tmp_path / "audit.log"
    with ScriptSupervisor(runtime, "well_behaved", workers=2, audit=audit) as sup:
        sup.wait_running(2)
        sup.signal(signal.SIGTTIN)  # lifecycle changes: each one flushes runtime.json
        sup.wait_running(3)
        sup.signal(signal.SIGHUP)
        wait_until(lambda: supkit.log_lines(runtime, "worker 2 started pid"), 10, "the roll to reach slot 2")
        sup.wait_running(3)
        sup.signal(signal.SIGTERM)
        assert sup.wait_exit() == 0, sup.output()
    records = [line.split(" ", 2) for line in audit.read_text().splitlines()]
    canary = [pid for pid, _, path in records if path.endswith(".canary")]
    assert canary and int(canary[0]) != sup.pid, "the audit hook does not see forked children"
    inside = [(int(pid), event, path) for pid, event, path in records if not path.endswith(".canary")]
    writers = {pid for pid, _, _ in inside}
    assert writers == {sup.pid}, f"written by other processes: {[r for r in inside if r[0] != sup.pid]}"
    runtime_json = str(Path(os.path.realpath(runtime)) / "runtime.json")
    replaces = [r for r in inside if r[1] == "os.rename" and r[2] == runtime_json]
    assert len(replaces) >= 5, inside  # atomic replace, every time
    assert not any(r[1] == "open" and r[2] == runtime_json for r in inside)  # never written in place
    assert sup.seen_pids and not (sup.seen_pids & writers)
    doc = supkit.runtime_doc(runtime)
    assert doc["state"] == "stopped" and doc["supervisor"]["pid"] == sup.pid
    assert not supkit.temp_files(runtime)
