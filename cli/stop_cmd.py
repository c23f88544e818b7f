"""`poolctl stop`: stop the pool and verify every process is gone. No typer: a plain
`stop` runs before typer is imported (cli/fast.py), as `status` does."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cli.errors import CliError, ExitCode
from statusboard import runtime_dir as rdir


def stop_main(name: str, runtime_dir: str | None, *, timeout: float | None = None) -> int:
    """Stop pool ``name``; raise CliError naming whatever survived."""
    from pool.ops.stopper import stop_pool

    directory = checked_directory(name, runtime_dir)
    outcome = stop_pool(directory, timeout=timeout if timeout is not None else grace_of(directory) + 5.0)
    if not outcome.ok:
        raise CliError(outcome.message)
    sys.stdout.write(f"pool {name}: {outcome.message}\n")
    return ExitCode.OK


def checked_directory(name: str, runtime_dir: str | None) -> Path:
    """The runtime directory; one that exists must be safe (ours, no symlink, 0700-ish)."""
    path = rdir.resolve(name, runtime_dir)
    if os.path.lexists(path):
        rdir.check(path)
    return path


def grace_of(directory: Path) -> float:
    """The running pool's grace (runtime.json), else the default 5 s."""
    from statusboard import runtime_file
    from statusboard.errors import RuntimeFileError

    try:
        value = runtime_file.read(directory).get("grace_s")
    except RuntimeFileError:
        return 5.0
    return float(value) if isinstance(value, int | float) else 5.0
