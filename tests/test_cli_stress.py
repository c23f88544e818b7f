"""STRESS (the slowest test of the CLI suite, ~1.5-2 min): 50 cycles of
start / status / restart / status / stop through the real `poolctl`.

Every cycle must give: `status --json` that parses, the right verdict (exit 0
after start and after restart, 3 after stop), and afterwards no process of the
pool (supervisors and workers, checked by pid + start time) and no board segment.
Cycles alternate 1 and 2 workers and keep timeouts short, so each takes ~2 s.
"""

from __future__ import annotations

from typing import Any

import pytest
from cli_targets import Cli, alive

from statusboard.liveness import start_ticks

CYCLES = 50


def _processes(document: dict[str, Any]) -> list[tuple[int, int | None]]:
    pids = [document["supervisor"]["pid"], *(w["pid"] for w in document["workers"])]
    return [(pid, start_ticks(pid)) for pid in pids]


@pytest.mark.timeout(480)
def test_fifty_start_status_restart_status_stop_cycles(cli: Cli) -> None:
    tally = {"status calls": 0, "parse errors": 0, "wrong verdicts": 0, "leftovers": 0}

    def status(expected: int, state: str, cycle: int, step: str) -> dict[str, Any]:
        tally["status calls"] += 1
        try:
            code, document = cli.status()
        except AssertionError:
            tally["parse errors"] += 1
            raise
        if code != expected or document["state"] != state:
            tally["wrong verdicts"] += 1
            raise AssertionError(f"cycle {cycle} {step}: exit {code}, wanted {expected}: {document} {tally}")
        return document

    for cycle in range(CYCLES):
        workers = 1 + cycle % 2
        cli.start("cli_targets:steady", workers=workers)
        first = status(0, "running", cycle, "after start")
        assert first["source"] == "shm" and first["supervisor"]["alive"] is True
        assert len(first["workers"]) == workers and all(w["state"] == "running" for w in first["workers"])
        seen = _processes(first)

        cli.ok("restart")
        second = status(0, "running", cycle, "after restart")
        assert second["supervisor"]["pid"] != first["supervisor"]["pid"], "restart kept the supervisor"
        assert len(second["workers"]) == workers, "restart did not keep the worker count"
        assert not [pid for pid, ticks in seen if alive(pid, ticks)], f"cycle {cycle}: restart left {seen}"
        seen += _processes(second)

        cli.ok("stop")
        final = status(3, "stopped", cycle, "after stop")
        assert final["source"] == "file"
        leftovers = [pid for pid, ticks in seen if alive(pid, ticks)]
        segments = cli.segments()
        if leftovers or segments:
            tally["leftovers"] += 1
            raise AssertionError(f"cycle {cycle}: left processes {leftovers} and segments {segments} {tally}")

    assert tally == {"status calls": 3 * CYCLES, "parse errors": 0, "wrong verdicts": 0, "leftovers": 0}
