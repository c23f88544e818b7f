"""Orphans: a supervisor killed by SIGKILL takes its workers with it, and the next start
cleans up what it left (its board, and workers that outlived it)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from scripts import supkit
from scripts.supkit import ScriptSupervisor, wait_until

from pool.supervision.supervisor import Supervisor
from statusboard import liveness
from statusboard.probe import probe

pytestmark = pytest.mark.usefixtures("supervised")


@pytest.mark.parametrize("mode", ["pdeathsig", "fallback"])
def test_workers_exit_when_their_supervisor_is_sigkilled(runtime, mode):
    """pdeathsig: workers that never call ctx.wait(), so only the kernel's PR_SET_PDEATHSIG
    can end them. fallback: prctl disabled in the workers, so only ctx.wait()'s own orphan
    check (the parent changed) can end them."""
    fallback = mode == "fallback"
    target = "well_behaved" if fallback else "beat_only"
    with ScriptSupervisor(runtime, target, workers=3, no_pdeathsig=fallback) as sup:
        rows = sup.wait_running(3)
        pids = [w["pid"] for w in rows]
        assert "start method fork" in supkit.read_log(runtime)
        segment = Path(supkit.runtime_doc(runtime)["board"])
        assert segment.exists()

        sup.signal(signal.SIGKILL)
        t0 = time.monotonic()
        assert sup.wait_exit() == -signal.SIGKILL
        wait_until(  # on their own; how soon is the FIGURE below, not a pass mark
            lambda: supkit.all_gone(pids),
            30.0,
            lambda: f"orphaned workers gone: {[p for p in pids if not supkit.is_gone(p)]}",
            interval=0.01,
        )
        gone_ms = (time.monotonic() - t0) * 1000
        print(f"\nFIGURE orphans ({mode}): all workers gone {gone_ms:.0f} ms after SIGKILL")

        report = probe(runtime, sup.name)
        assert (report.code, report.document["state"]) == (1, "stale")
        assert f"supervisor pid {sup.pid} is gone" in report.document["reason"]
        assert segment.exists()  # nobody has cleaned up yet

    # The next supervisor on the same directory starts fine and removes the dead one's board.
    spec = supkit.make_spec("well_behaved", workers=1, name=sup.name)
    with Supervisor(spec, runtime_dir=runtime):
        assert not segment.exists()
        assert f"removed board {segment} of dead supervisor pid {sup.pid}" in supkit.read_log(runtime)
        assert probe(runtime, sup.name).code == 0
    assert supkit.runtime_doc(runtime)["state"] == "stopped"


def test_the_next_start_kills_workers_that_outlived_a_dead_supervisor(runtime):
    # These workers ignore SIGTERM, which is also their parent-death signal: they survive.
    with ScriptSupervisor(runtime, "ignore_sigterm", workers=2) as sup:
        pids = [w["pid"] for w in sup.wait_running(2)]
        sup.signal(signal.SIGKILL)
        assert sup.wait_exit() == -signal.SIGKILL
        assert not any(supkit.is_gone(pid) for pid in pids)
        # They do not hold supervisor.lock (the supervisor's fd is closed in every worker),
        # so the dead supervisor's lock is free for the next one.
        assert not liveness.lock_holder_present(runtime / liveness.LOCK_NAME)
        assert probe(runtime, sup.name).code == 1

        spec = supkit.make_spec("well_behaved", workers=1, name=sup.name, grace=0.5)
        with Supervisor(spec, runtime_dir=runtime):
            assert supkit.all_gone(pids)
            log = supkit.read_log(runtime)
            assert f"killed 2 process(es) left by dead supervisor pid {sup.pid}: pid" in log
            new = supkit.workers(runtime)
            assert [w["pid"] for w in new] != pids and len(new) == 1
