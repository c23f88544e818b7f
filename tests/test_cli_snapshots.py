"""Snapshot-style checks of `poolctl status` (table and JSON shape) and of supervisor.log.

Real pools are run; what varies from run to run (pids, times, ages, uptimes,
beat counts, the pool name, paths) is normalised, then the text is compared with
tests/snapshots/*.txt. To (re)write the stored text after a deliberate change:
``POOLCTL_UPDATE_SNAPSHOTS=1 pytest tests/test_cli_snapshots.py`` and read the
diff before committing it.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from cli_targets import (
    STATUS_KEYS,
    STATUS_SUPERVISOR_KEYS,
    STATUS_WORKER_KEYS,
    Cli,
    normalise_common,
    wait_for,
    wait_gone,
)

pytestmark = pytest.mark.timeout(120)
SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("POOLCTL_UPDATE_SNAPSHOTS") == "1"


def check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if UPDATE:
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"no stored snapshot {path}; write it with POOLCTL_UPDATE_SNAPSHOTS=1"
    expected = path.read_text()
    assert text == expected, (
        f"{name} differs from the stored snapshot:\n--- expected\n{expected}\n--- got\n{text}"
    )


# -- normalising -----------------------------------------------------------------------------


def normalise_table(text: str, cli: Cli) -> str:
    """Status text with run-specific values replaced, and the worker table re-aligned."""
    text = normalise_common(text, cli)
    text = re.sub(r"\bup [0-9hms.]+;", "up <UPTIME>;", text)
    lines = text.splitlines()
    out: list[str] = []
    header: list[str] | None = None
    rows: list[list[str]] = []
    for line in [*lines, ""]:
        if line.startswith("SLOT  "):
            header = re.split(r"\s{2,}", line)
            continue
        if header is not None and line and not line.startswith("("):
            cells = dict(zip(header, re.split(r"\s{2,}", line), strict=True))
            if cells["PID"].isdigit():
                cells["PID"] = "<PID>"
            if cells["HEARTBEAT"] != "-":
                cells["HEARTBEAT"] = "<AGE>"
            if cells["BEATS"] != "0":
                cells["BEATS"] = "<N>"
            if cells["RSS"] != "-":
                cells["RSS"] = "<RSS>"
            if cells["TASK AGE"] != "-":
                cells["TASK AGE"] = "<AGE>"
            rows.append([cells[h] for h in header])
            continue
        if header is not None:
            widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
            for cells in (header, *rows):
                out.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
            header, rows = None, []
        out.append(line)
    return "\n".join(out).rstrip("\n") + "\n"


SHOWN_VALUES = {  # keys whose values are part of the snapshot (stable for a given scenario)
    "state",
    "source",
    "supervisor.alive",
    "target",
    "workers_desired",
    "slot",
    "healthy",
    "restarts",
    "recycled",
    "last_exit_code",
    "last_exit",
    "generation",
    "task",
    "task_age_s",
    "progress",
}


def json_shape(document: dict[str, Any], cli: Cli) -> str:
    """One line per key: its path, JSON type, and for stable keys the value."""
    lines: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            if not value:
                lines.append(f"{path}: object (empty)")
            for key in sorted(value):
                walk(value[key], f"{path}.{key}" if path else key)
            return
        if isinstance(value, list):
            lines.append(f"{path}: array of {len(value)}")
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")
            return
        kind = {type(None): "null", bool: "bool", int: "int", float: "float", str: "str"}[type(value)]
        leaf = re.sub(r"^workers\[\d+\]\.", "", path)
        shown = f" = {value!r}" if leaf in SHOWN_VALUES or path in SHOWN_VALUES else ""
        if path == "reason" and isinstance(value, str):
            shown = f" = {normalise_common(value, cli)!r}"
        lines.append(f"{path}: {kind}{shown}")

    walk(document, "")
    return "\n".join(lines) + "\n"


LOG_VARYING = [
    (re.compile(r"no heartbeat for \d+\.\ds"), "no heartbeat for <SECONDS>"),
    (re.compile(r"still running \d+\.\ds"), "still running <SECONDS>"),
]


def normalise_log(lines: list[str], cli: Cli) -> str:
    """Timestamps and pids replaced; a traceback kept as its first and last line."""
    out: list[str] = []
    block: list[str] = []

    def flush_block() -> None:
        if block:
            out.extend([block[0], "  ...", block[-1]] if len(block) > 2 else block)
            block.clear()

    prefix = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} ")
    for line in lines:
        if prefix.match(line):
            flush_block()
            line = prefix.sub("<TS> ", line)
            for pattern, replacement in LOG_VARYING:
                line = pattern.sub(replacement, line)
            out.append(normalise_common(line, cli))
        else:
            block.append(line)
    flush_block()
    return "\n".join(out) + "\n"


def assert_contract_keys(document: dict[str, Any]) -> None:
    assert document.keys() >= STATUS_KEYS, STATUS_KEYS - document.keys()
    assert document["supervisor"].keys() >= STATUS_SUPERVISOR_KEYS
    for worker in document["workers"]:
        assert worker.keys() >= STATUS_WORKER_KEYS, STATUS_WORKER_KEYS - worker.keys()


# -- scenarios -------------------------------------------------------------------------------------


def running_with_beats(cli: Cli, workers: int) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        code, document = cli.status()
        ok = (
            code == 0
            and len(document["workers"]) == workers
            and all(w["beats"] > 1 for w in document["workers"])
        )
        return document if ok else None

    return wait_for(ready, 15.0, "a running pool whose workers have beaten")


def test_status_of_a_running_then_stopped_pool(cli: Cli) -> None:
    cli.start("cli_targets:steady", workers=2)
    running_with_beats(cli, 2)
    table = cli("status")
    assert table.code == 0, str(table)
    check_snapshot("status_running.txt", normalise_table(table.out, cli))
    code, document = cli.status()
    assert code == 0
    assert_contract_keys(document)
    check_snapshot("status_running_json.txt", json_shape(document, cli))

    cli.ok("stop")
    table = cli("status")
    assert table.code == 3, str(table)
    check_snapshot("status_stopped.txt", normalise_table(table.out, cli))
    code, document = cli.status()
    assert code == 3
    assert_contract_keys(document)
    check_snapshot("status_stopped_json.txt", json_shape(document, cli))


def test_status_of_a_degraded_then_stale_pool(cli: Cli) -> None:
    cli.start("cli_targets:crash_loop_slot_1", "--max-restarts", "2", workers=2)

    def slot_1_failed() -> bool:
        code, document = cli.status()
        return code == 2 and document["workers"][1]["state"] == "failed"

    wait_for(slot_1_failed, 15.0, "slot 1 to fail")
    table = cli("status")
    assert table.code == 2, str(table)
    check_snapshot("status_degraded.txt", normalise_table(table.out, cli))

    pid, ticks = cli.supervisor()
    os.kill(pid, signal.SIGKILL)
    assert not wait_gone([(pid, ticks)], 5.0)
    table = cli("status")
    assert table.code == 1, str(table)
    check_snapshot("status_stale.txt", normalise_table(table.out, cli))
    cli.ok("stop")


def test_supervisor_log_of_a_lifecycle(cli: Cli) -> None:
    """start; a crash (restarted at once); a hang that ignores SIGTERM (escalated to SIGKILL,
    restarted after backoff); a clean stop."""
    cli.ok("start", "cli_targets:lifecycle_on_cue", "-w", "1", "--heartbeat-timeout", "1", "--grace", "0.5")

    def generation(n: int) -> dict[str, Any] | None:
        code, document = cli.status()
        worker = document["workers"][0] if document["workers"] else None
        ok = code == 0 and worker and worker["generation"] == n and worker["beats"] > 0
        return worker if ok else None

    worker = wait_for(lambda: generation(1), 15.0, "generation 1 running")
    os.kill(worker["pid"], signal.SIGUSR1)  # crash
    worker = wait_for(lambda: generation(2), 15.0, "generation 2 running")
    os.kill(worker["pid"], signal.SIGUSR1)  # hang, ignoring SIGTERM
    wait_for(lambda: generation(3), 15.0, "generation 3 running")
    cli.ok("stop")
    check_snapshot("supervisor_log_lifecycle.txt", normalise_log(cli.log_lines(), cli))
