"""Commands that talk to a live supervisor: scale, rolling restart, watch."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cli.errors import CliError
from statusboard.health import StatusCode
from statusboard.probe import StatusReport, probe

POLL_S = 0.05


def _live_report(directory: Path, name: str) -> StatusReport:
    report = probe(directory, name)
    if report.document["source"] != "shm":
        reason = report.document.get("reason") or report.document["state"]
        if report.document["state"] == "unknown":  # unusable runtime state: not "not running"
            raise CliError(f"pool {name}: {reason}")
        raise CliError(f"pool {name} is not running ({reason})")
    return report


def _control(directory: Path, name: str, payload: dict[str, Any]) -> None:
    from pool.integrations.control import request
    from statusboard import runtime_file
    from statusboard.liveness import LOCK_NAME, lock_holder

    _live_report(directory, name)
    document = runtime_file.read(directory)
    # The pool is its lock holder: the command goes to that process or nowhere.
    try:
        _, holder = lock_holder(directory / LOCK_NAME)
    except OSError as exc:
        raise CliError(f"pool {name}: {directory / LOCK_NAME}: {exc.strerror or exc}") from None
    if holder is None or holder[0] != document["supervisor"]["pid"]:
        who = f"pid {holder[0]}" if holder else "no verified process"
        raise CliError(
            f"pool {name}: runtime.json names supervisor pid {document['supervisor']['pid']}, "
            f"but supervisor.lock is held by {who}; nothing sent"
        )
    control = document.get("control")
    if not isinstance(control, str) or not control.startswith("@"):
        raise CliError(f"pool {name}: runtime.json names no control socket")
    try:
        answer = request("\0" + control[1:], payload, peer_pid=holder[0])
    except OSError as exc:
        raise CliError(f"pool {name}: cannot reach the supervisor ({exc.strerror or exc})") from None
    if not answer.get("ok"):
        raise CliError(f"pool {name}: supervisor refused: {answer.get('error')}")


def _wait_for(directory: Path, name: str, done: Any, wait: float, what: str) -> None:
    deadline = time.monotonic() + wait
    while True:
        report = probe(directory, name)
        if done(report):
            return
        if report.document["source"] != "shm":
            raise CliError(f"pool {name} stopped while waiting for {what}: {report.document.get('reason')}")
        if time.monotonic() > deadline:
            raise CliError(
                f"pool {name}: {what} not reached within {wait:g}s ({report.document.get('reason')})"
            )
        time.sleep(POLL_S)


def scale_pool(directory: Path, name: str, workers: int, wait: float) -> None:
    """Ask for ``workers`` and wait until they run. Fails (CliError) as soon as the goal is
    unreachable, i.e. every wanted slot has settled and some are failed (a worker that cannot
    start: out of fds or processes, or a crash loop), saying how far it got; or at ``wait``."""
    _control(directory, name, {"op": "scale", "workers": workers})
    deadline = time.monotonic() + wait
    while True:
        report = probe(directory, name)
        doc = report.document
        if doc["source"] != "shm":
            raise CliError(
                f"pool {name} stopped while waiting for {workers} running workers: {doc.get('reason')}"
            )
        wanted = [w for w in doc["workers"] if w["slot"] < workers]
        running = sum(w["state"] == "running" for w in wanted)
        failed = sum(w["state"] == "failed" for w in wanted)
        if (
            report.code == StatusCode.RUNNING
            and doc["workers_desired"] == workers
            and len(doc["workers"]) == workers
        ):
            return
        settled = len(wanted) == workers and running + failed == workers
        if doc["workers_desired"] == workers and settled and failed:
            raise CliError(
                f"pool {name}: {running} of {workers} workers running; {failed} failed and will not be "
                f"restarted ({doc.get('reason')}); see poolctl logs"
            )
        if time.monotonic() > deadline:
            raise CliError(
                f"pool {name}: {running} of {workers} workers running after {wait:g}s ({doc.get('reason')})"
            )
        time.sleep(POLL_S)


def rolling_restart(directory: Path, name: str, document: dict[str, Any], wait: float) -> None:
    before = {w["slot"]: w["generation"] for w in _live_report(directory, name).document["workers"]}
    _control(directory, name, {"op": "rolling"})

    def replaced(report: StatusReport) -> bool:
        workers = report.document["workers"]
        return report.code == StatusCode.RUNNING and all(
            w["generation"] > before.get(w["slot"], 0) for w in workers
        )

    _wait_for(directory, name, replaced, wait, "a rolling restart of every worker")


def watch_pool(directory: Path, name: str, interval: float) -> None:
    """Refresh a rich table from the probe until Ctrl-C."""
    from rich.console import Console
    from rich.live import Live

    from cli.rich_view import status_table

    console = Console()
    try:
        with Live(status_table(probe(directory, name).document), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(status_table(probe(directory, name).document), refresh=True)
    except KeyboardInterrupt:
        pass
