"""The pool error hierarchy. Messages say who, what, and probably why."""

from __future__ import annotations


class PoolError(Exception):
    """Base of every error this package raises on purpose."""


class SpecError(PoolError, ValueError):
    """A pool setting is invalid; the message names the field and the bad value."""


class TargetError(PoolError):
    """A worker target cannot be loaded (bad module, missing function, not callable)."""


class AlreadyRunning(PoolError):
    """Another live supervisor holds this pool's supervisor.lock."""


class BootError(PoolError):
    """A worker could not even start its target; the pool stops instead of looping."""


class StopFailed(PoolError):
    """A stop could not confirm that every process is gone; names the survivors."""

    def __init__(self, message: str, survivors: list[int]) -> None:
        super().__init__(message)
        self.survivors = survivors


class WorkerCrashed(PoolError):
    """A task's worker died under it (signal, os._exit, segfault, OOM kill)."""
