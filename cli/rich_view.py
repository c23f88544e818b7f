"""The status document as a rich Table (watch, demo)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from cli.render import _COLUMNS, _worker_cells

_STATE_STYLE = {
    "running": "green",
    "starting": "cyan",
    "stopping": "yellow",
    "backoff": "yellow",
    "hung": "red",
    "failed": "bold red",
    "exited": "magenta",
    "stopped": "dim",
}
_POOL_STYLE = {
    "running": "bold green",
    "degraded": "bold yellow",
    "failed": "bold red",  # live supervisor, every worker given up on: as bad as stale
    "stale": "bold red",
    "stopped": "dim",
    "stop_failed": "bold red",
    "unknown": "bold red",
}


def status_table(document: dict[str, Any]) -> Table:
    state = document.get("state", "unknown")
    title = f"pool [b]{document.get('pool')}[/b]: [{_POOL_STYLE.get(state, '')}]{state}[/]"
    sup = document.get("supervisor") or {}
    caption = f"source: {document.get('source')}; supervisor pid {sup.get('pid', '-')}"
    if document.get("reason"):
        caption += f"; {document['reason']}"
    table = Table(title=title, caption=caption, expand=False)
    for column in _COLUMNS:
        table.add_column(column)
    live = document.get("source") == "shm"
    for worker in document.get("workers") or []:
        cells = _worker_cells(worker, live=live)
        style = _STATE_STYLE.get(str(worker.get("state")), "")
        cells[2] = f"[{style}]{cells[2]}[/]" if style else cells[2]
        table.add_row(*cells)
    return table
