"""STRESS (the slowest test of the CLI suite, ~1.5-2 min): 50 cycles of
start / status / restart / status / stop through the real `poolctl`.

Every cycle must give: `status --json` that parses, the right verdict (exit 0
after start and after restart, 3 after stop), and afterwards no process of the
pool (supervisors and workers, checked by pid + start time) and no board segment.
Cycles alternate 1 and 2 workers and keep timeouts short, so each takes ~2 s.
"""

from __future__ import annotations

from collections import Counter
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
    """Every check is counted, held or not, and a failed one does not end the run (a stress
    run says how often, not just that): the tally at the end must show each check made in
    every cycle and none failed. Five failures end it early."""
    tally: Counter[str] = Counter()
    problems: list[str] = []

    def check(held: bool, what: str, detail: str) -> None:
        tally[what if held else f"FAILED {what}"] += 1
        if not held:
            problems.append(detail)
            if len(problems) >= 5:
                raise AssertionError(f"{dict(tally)}\n" + "\n".join(problems))

    def verdict(expected: int, state: str, cycle: int, step: str) -> dict[str, Any]:
        code, document = cli.status()  # fails the test at once if it is not one JSON object
        held = code == expected and document["state"] == state
        check(held, f"verdict {step}", f"cycle {cycle} {step}: exit {code}, wanted {expected}: {document}")
        return document

    for cycle in range(CYCLES):
        workers = 1 + cycle % 2
        cli.start("cli_targets:steady", workers=workers)
        first = verdict(0, "running", cycle, "after start")
        check(
            first["source"] == "shm"
            and first["supervisor"]["alive"] is True
            and len(first["workers"]) == workers
            and all(w["state"] == "running" for w in first["workers"]),
            "live board after start",
            f"cycle {cycle} after start: {first}",
        )
        seen = _processes(first)

        cli.ok("restart")
        second = verdict(0, "running", cycle, "after restart")
        left = [pid for pid, ticks in seen if alive(pid, ticks)]
        check(
            second["supervisor"]["pid"] != first["supervisor"]["pid"]
            and len(second["workers"]) == workers
            and not left,
            "restart replaced every process",
            f"cycle {cycle} after restart: old processes left {left}: {second}",
        )
        seen += _processes(second)

        cli.ok("stop")
        final = verdict(3, "stopped", cycle, "after stop")
        check(final["source"] == "file", "runtime file after stop", f"cycle {cycle} after stop: {final}")
        leftovers = [pid for pid, ticks in seen if alive(pid, ticks)]
        segments = cli.segments()
        check(
            not leftovers and not segments,
            "nothing left after stop",
            f"cycle {cycle}: left processes {leftovers} and segments {segments}",
        )

    expected = [
        "verdict after start",
        "live board after start",
        "verdict after restart",
        "restart replaced every process",
        "verdict after stop",
        "runtime file after stop",
        "nothing left after stop",
    ]
    assert tally == dict.fromkeys(expected, CYCLES), f"{dict(tally)}\n" + "\n".join(problems)
