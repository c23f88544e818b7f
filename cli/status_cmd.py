"""`poolctl status`: the probe, rendered. Stdlib only: this runs before typer is imported."""

from __future__ import annotations

import json
import sys

from statusboard.probe import DEFAULT_SUPERVISOR_TIMEOUT_S, probe
from statusboard.runtime_dir import resolve_str


def status_main(
    name: str,
    runtime_dir: str | None,
    *,
    as_json: bool = False,
    supervisor_timeout: float | None = None,
) -> int:
    """Print the pool's status; return the LSB-style exit code (statusboard.health.StatusCode)."""
    directory = resolve_str(name, runtime_dir)
    timeout = DEFAULT_SUPERVISOR_TIMEOUT_S if supervisor_timeout is None else supervisor_timeout
    report = probe(directory, name, supervisor_timeout_s=timeout)
    if as_json:
        sys.stdout.write(json.dumps(report.document) + "\n")
    else:
        from cli.render import status_text

        sys.stdout.write(status_text(report.document) + "\n")
    return int(report.code)
