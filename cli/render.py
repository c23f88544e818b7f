"""Pure formatting of status documents: no I/O, no typer, no numpy (status fast path)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing stays off the status path
if TYPE_CHECKING:
    from typing import Any

_COLUMNS = (
    "SLOT",
    "PID",
    "STATE",
    "HEALTH",
    "HEARTBEAT",
    "BEATS",
    "RESTARTS",
    "RECYCLED",
    "RSS",
    "LAST EXIT",
    "TASK",
    "TASK AGE",
)


def status_text(document: dict[str, Any]) -> str:
    """The human `poolctl status` view: a summary line, the supervisor, a worker table."""
    lines = [_summary(document)]
    sup = document.get("supervisor")
    if sup:
        alive = "alive" if sup.get("alive") else "NOT alive"
        uptime = f", up {_duration(sup['uptime_s'])}" if sup.get("uptime_s") is not None else ""
        lines.append(f"supervisor: pid {sup.get('pid')} {alive}{uptime}; source: {document.get('source')}")
    else:
        lines.append(f"source: {document.get('source')}")
    if document.get("target"):
        lines.append(f"target: {document['target']}; workers desired: {document.get('workers_desired')}")
    workers = document.get("workers") or []
    if workers:
        live = document.get("source") == "shm"
        lines.append("")
        lines.extend(table([_worker_cells(w, live=live) for w in workers], _COLUMNS))
    if document.get("source") == "file" and document.get("flushed_at"):
        lines.append(f"(as last flushed at {document['flushed_at']})")
    return "\n".join(lines)


def _summary(document: dict[str, Any]) -> str:
    text = f"pool {document.get('pool')}: {document.get('state')}"
    if document.get("reason") and document["reason"] != document.get("state"):
        text += f" - {document['reason']}"
    return text


def _worker_cells(worker: dict[str, Any], *, live: bool = True) -> list[str]:
    """One table row. ``live=False`` (rows from the runtime file, not the board): health and
    heartbeat age were true at the last flush, not now, so they are not shown as if current."""
    healthy = worker.get("healthy") if live else None
    return [
        str(worker.get("slot")),
        str(worker.get("pid") or "-"),
        str(worker.get("state")),
        "ok" if healthy else "-" if healthy is None else "UNHEALTHY",
        _age(worker.get("heartbeat_age_s") if live else None),
        str(worker.get("beats", 0)),
        str(worker.get("restarts", 0)),
        str(worker.get("recycled") or 0),
        size(worker.get("rss_bytes")),
        str(worker.get("last_exit") or "-"),
        str(worker["task"]) if worker.get("task") is not None else "-",
        _age(worker.get("task_age_s")),
    ]


def table(rows: list[list[str]], headers: tuple[str, ...]) -> list[str]:
    """Left-aligned columns separated by two spaces, no trailing blanks."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    out = []
    for cells in (list(headers), *rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    return out


def size(count: int | None) -> str:
    """Bytes as ps-style binary units: 512M, 1.5G; "-" when not sampled."""
    if not count:
        return "-"
    value, unit = float(count), "B"
    for bigger in ("K", "M", "G", "T"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.0f}{unit}" if value >= 100 or unit == "B" else f"{value:.1f}{unit}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    return _duration(seconds)


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
