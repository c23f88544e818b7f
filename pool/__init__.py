"""pool: the supervisor, its workers, and the task pool.

``pool.Supervisor`` keeps N ``module:function`` workers alive; ``pool.Pool`` is a
``concurrent.futures.Executor`` on supervised workers. Both are imported lazily,
so ``import pool`` stays cheap for the worker side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pool.errors import (
    AlreadyRunning,
    BootError,
    PoolError,
    SpecError,
    StopFailed,
    TargetError,
    WorkerCrashed,
)

if TYPE_CHECKING:
    from pool.spec import PoolSpec, RestartPolicy
    from pool.supervision.supervisor import Supervisor
    from pool.supervision.worker import WorkerContext
    from pool.taskpool.executor import Pool

__all__ = [
    "AlreadyRunning",
    "BootError",
    "Pool",
    "PoolError",
    "PoolSpec",
    "RestartPolicy",
    "SpecError",
    "StopFailed",
    "Supervisor",
    "TargetError",
    "WorkerContext",
    "WorkerCrashed",
]

_LAZY = {
    "Pool": "pool.taskpool.executor",
    "PoolSpec": "pool.spec",
    "RestartPolicy": "pool.spec",
    "Supervisor": "pool.supervision.supervisor",
    "WorkerContext": "pool.supervision.worker",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pool' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
