"""The harness's temp dirs: named by this run's pid, so the leak check finds only its own."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def prefix() -> str:
    return f"poolctl-bench-{os.getpid()}-"


def make_dir(kind: str) -> Path:
    """A new mode-0700 directory in the system temp dir, for ``kind`` (e.g. "run", "supervisord")."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix()}{kind}-"))


def existing() -> set[Path]:
    """This run's temp dirs that exist now."""
    return set(Path(tempfile.gettempdir()).glob(prefix() + "*"))
