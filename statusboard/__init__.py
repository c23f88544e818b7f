"""statusboard: the shared-memory board, the runtime file, and health verdicts.

Readers for other programs::

    import statusboard
    reader = statusboard.attach(runtime_dir)   # numpy views, made once
    reader.healthy()                            # a few microseconds
    reader.snapshot().workers()                 # status dicts, ages computed

This package knows nothing of ``pool`` or ``cli``. ``attach`` (numpy) is loaded
lazily so that the CLI's status path, which uses ``statusboard.probe``, never
imports numpy.
"""

from __future__ import annotations

from statusboard.errors import (
    BoardClosed,
    BoardError,
    BoardLayoutError,
    BoardMissing,
    InvalidNameError,
    RuntimeDirError,
    RuntimeFileCorrupt,
    RuntimeFileError,
    RuntimeFileMissing,
    RuntimeFileSchemaError,
    StatusboardError,
)

TYPE_CHECKING = False  # typing's import is not free; this package is on the status path
if TYPE_CHECKING:
    from typing import Any

    from statusboard.reader import BoardReader, Snapshot, attach

__all__ = [
    "BoardClosed",
    "BoardError",
    "BoardLayoutError",
    "BoardMissing",
    "BoardReader",
    "InvalidNameError",
    "RuntimeDirError",
    "RuntimeFileCorrupt",
    "RuntimeFileError",
    "RuntimeFileMissing",
    "RuntimeFileSchemaError",
    "Snapshot",
    "StatusboardError",
    "attach",
]


def __getattr__(name: str) -> Any:
    if name in ("attach", "BoardReader", "Snapshot"):
        from statusboard import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'statusboard' has no attribute {name!r}")
