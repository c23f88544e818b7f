"""The statusboard error hierarchy. Every message says what is wrong and where."""

from __future__ import annotations


class StatusboardError(Exception):
    """Base of every error this package raises on purpose."""


class RuntimeDirError(StatusboardError):
    """The runtime directory is unusable or unsafe (symlink, foreign owner, writable by others)."""


class InvalidNameError(StatusboardError):
    """A pool name that cannot be a directory name (slash, '..', empty, odd characters)."""


class RuntimeFileError(StatusboardError):
    """runtime.json cannot be used; subclasses say why."""


class RuntimeFileMissing(RuntimeFileError):
    """No runtime.json: the pool was never started here."""


class RuntimeFileCorrupt(RuntimeFileError):
    """runtime.json is empty, truncated, or not JSON."""


class RuntimeFileSchemaError(RuntimeFileError):
    """runtime.json parses but is of an unknown schema or misses required keys."""


class RuntimeFileUnsafe(RuntimeFileError):
    """runtime.json is a symlink: it could name another pool, so nothing may act on it."""


class BoardError(StatusboardError):
    """The shared-memory board cannot be used; subclasses say why."""


class BoardMissing(BoardError):
    """The board segment does not exist (the supervisor is gone or never made one)."""


class BoardLayoutError(BoardError):
    """Wrong magic, layout version or size: not a board this version can read."""


class BoardClosed(BoardError):
    """The board was closed by this process."""
