"""What runs in each library's fresh process for the ``taskpool`` group.

Each library runs in its own new interpreter (``bench.fresh_process``), so no
library's state (a forkserver, loky's reusable executor, a resource tracker)
can help or hurt another. Every library gets the same 2 workers and the same
task functions from ``bench.tasks``; each adapter below is the library's own
documented API, nothing tuned.

- ``measure``: time to a first result (executor creation + one ``submit`` +
  ``result()``, the executor's workers started from nothing; the library was
  imported before the clock started), then, after a
  warm-up, no-op throughput with ``map`` at chunksize 1 and 64.
- ``lose``: 2,000 ``submit``-ed 1 ms tasks; when half have finished, a thread
  SIGKILLs one worker (a pid a finished task reported); then every future is
  waited on until a deadline. Lost = futures that raised (WorkerCrashed,
  BrokenProcessPool, ...) or never finished (a hang).

The environment's PYTHONPATH gets the repository root, so workers started by
spawn or forkserver import ``bench.tasks`` as forked ones do.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.fresh_process import Control
from bench.tasks import noop, tick

_ROOT = str(Path(__file__).resolve().parent.parent)
WORKERS = 2
# label -> (library, options); the order is the table's order, ours first.
LIBRARIES: dict[str, tuple[str, dict[str, Any]]] = {
    "pool.Pool": ("pool", {}),
    'pool.Pool(start_method="fork")': ("pool", {"start_method": "fork"}),
    "ProcessPoolExecutor": ("ppe", {}),
    "loky": ("loky", {}),
    "pebble.ProcessPool": ("pebble", {}),
    "multiprocess.Pool": ("multiprocess", {}),
}
LOSS_LIBRARIES: dict[str, tuple[str, dict[str, Any]]] = {
    **LIBRARIES,
    "pool.Pool(retries=1)": ("pool", {"retries": 1}),
}


class Handle:
    """One submitted task, whatever the library: ``result(timeout)`` raises TimeoutError on timeout."""

    def __init__(self, get: Callable[[float], Any]) -> None:
        self._get = get

    def result(self, timeout: float) -> Any:
        return self._get(timeout)


class Adapter:
    """One library's executor behind the same five calls."""

    def __init__(self, library: str, options: dict[str, Any], runtime_dir: str, name: str) -> None:
        self.library = library
        self.options = options
        self.runtime_dir = runtime_dir
        self.name = name
        self.ex: Any = None

    def load(self) -> None:
        """Import the library (not timed: a program imports it once, long before its first task)."""
        modules = {
            "pool": "pool.taskpool.executor",
            "ppe": "concurrent.futures.process",
            "loky": "loky",
            "pebble": "pebble",
            "multiprocess": "multiprocess.pool",
        }
        if self.library not in modules:
            raise ValueError(f"unknown library {self.library!r}")
        importlib.import_module(modules[self.library])

    def open(self) -> None:
        """Create the executor, as the library documents it."""
        lib = self.library
        if lib == "pool":
            from pool import Pool

            self.ex = Pool(workers=WORKERS, name=self.name, runtime_dir=self.runtime_dir, **self.options)
        elif lib == "ppe":
            from concurrent.futures import ProcessPoolExecutor

            self.ex = ProcessPoolExecutor(WORKERS)
        elif lib == "loky":
            import loky  # type: ignore[import-untyped]

            self.ex = loky.get_reusable_executor(max_workers=WORKERS)
        elif lib == "pebble":
            import pebble

            self.ex = pebble.ProcessPool(max_workers=WORKERS)
        else:
            import multiprocess

            self.ex = multiprocess.Pool(WORKERS)

    def submit(
        self, fn: Callable[[int], Any], x: int, on_done: Callable[[Any], None] | None = None
    ) -> Handle:
        if self.library == "multiprocess":
            import multiprocess

            def failed(exc: BaseException) -> None:
                if on_done is not None:
                    on_done(None)

            async_result = self.ex.apply_async(
                fn, (x,), callback=on_done or None, error_callback=failed if on_done else None
            )

            def get(timeout: float) -> Any:
                try:
                    return async_result.get(timeout)
                except multiprocess.TimeoutError:
                    raise TimeoutError from None

            return Handle(get)
        future = self.ex.schedule(fn, args=[x]) if self.library == "pebble" else self.ex.submit(fn, x)
        if on_done is not None:
            done = on_done

            def callback(f: Any) -> None:
                done(None if f.cancelled() or f.exception() is not None else f.result())

            future.add_done_callback(callback)
        return Handle(future.result)

    def map(self, fn: Callable[[int], Any], items: Iterable[int], chunksize: int) -> list[Any]:
        if self.library == "pebble":
            return list(self.ex.map(fn, items, chunksize=chunksize).result())
        return list(self.ex.map(fn, items, chunksize=chunksize))

    def close(self) -> None:
        if self.library in ("pebble", "multiprocess"):
            self.ex.close()
            self.ex.join()
        else:
            self.ex.shutdown(wait=True)

    def abandon(self) -> str:
        """End an executor that hangs with the library's own hard stop; '' or what else went wrong.

        multiprocess.Pool's ``terminate()`` can itself hang: it takes the task queue's
        read lock, which a worker SIGKILLed inside ``get()`` never released. It gets
        5 s in a daemon thread; then its workers are SIGKILLed by pid.
        """
        if self.library == "multiprocess":
            import multiprocess

            stopper = threading.Thread(target=self.ex.terminate, daemon=True)
            stopper.start()
            stopper.join(5.0)
            if not stopper.is_alive():
                return ""
            children = multiprocess.active_children()
            for child in children:
                child.kill()
            for child in children:
                child.join(5.0)
            return f"terminate() hung too; its {len(children)} workers were SIGKILLed by pid"
        if self.library == "pebble":
            self.ex.stop()
            self.ex.join()
        elif self.library == "loky":
            self.ex.shutdown(wait=True, kill_workers=True)
        else:
            self.ex.shutdown(wait=True, cancel_futures=True)
        return ""


def _prepare(log: str) -> None:
    """PYTHONPATH for spawned workers; library noise (worker tracebacks) to ``log``."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = _ROOT + (os.pathsep + old if old else "")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - fd 2 lives as long as the process


def measure(
    control: Control, label: str, runtime_dir: str, name: str, n1: int, n64: int, samples: int
) -> dict[str, Any]:
    """First-result seconds, and ``samples`` rates (tasks/s) at chunksize 1 and 64 each."""
    library, options = LIBRARIES[label]
    _prepare(os.path.join(os.path.dirname(runtime_dir), "stderr.log"))
    adapter = Adapter(library, options, runtime_dir, name)
    adapter.load()
    started = time.perf_counter()
    adapter.open()
    try:
        first = adapter.submit(noop, 7).result(60.0)
        first_s = time.perf_counter() - started
        if first != 7:
            raise AssertionError(f"{label}: first result {first!r}, expected 7")
        adapter.map(noop, range(500), 1)  # warm-up: every worker up, every code path run once
        adapter.map(noop, range(5000), 64)
        rates: dict[str, list[float]] = {"c1": [], "c64": []}
        for _ in range(samples):
            for key, n, chunksize in (("c1", n1, 1), ("c64", n64, 64)):
                began = time.perf_counter()
                out = adapter.map(noop, range(n), chunksize)
                elapsed = time.perf_counter() - began
                if len(out) != n or out[-1] != n - 1 or out[n // 2] != n // 2:
                    raise AssertionError(f"{label}: map(chunksize={chunksize}) returned wrong results")
                rates[key].append(n / elapsed)
    finally:
        adapter.close()
    return {"first_s": first_s, **rates}


def lose(
    control: Control, label: str, runtime_dir: str, name: str, tasks: int, wait_s: float
) -> dict[str, Any]:
    """Kill one worker half-way through ``tasks`` 1 ms tasks; count what never came back."""
    library, options = LOSS_LIBRARIES[label]
    _prepare(os.path.join(os.path.dirname(runtime_dir), "stderr.log"))
    adapter = Adapter(library, options, runtime_dir, name)
    adapter.load()
    adapter.open()
    lock = threading.Lock()
    finished = 0
    last_pid = 0
    half = threading.Event()

    def on_done(pid: Any) -> None:
        nonlocal finished, last_pid
        with lock:
            finished += 1
            if isinstance(pid, int):
                last_pid = pid
            if finished >= tasks // 2:
                half.set()

    killed: dict[str, Any] = {}

    def killer() -> None:
        if not half.wait(120.0):
            killed["error"] = "half the tasks never finished"
            return
        with lock:
            pid = last_pid
        killed["pid"] = pid
        killed["at"] = time.monotonic()
        os.kill(pid, signal.SIGKILL)

    adapter.map(noop, range(20), 1)  # workers up before the run
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    handles = [adapter.submit(tick, i, on_done) for i in range(tasks)]
    thread.join(130.0)
    if "at" not in killed:
        adapter.abandon()
        raise RuntimeError(f"{label}: no worker was killed ({killed.get('error', 'killer thread hung')})")
    deadline = killed["at"] + wait_s
    ok = failed = hung = 0
    errors: Counter[str] = Counter()
    for handle in handles:
        try:
            handle.result(max(0.0, deadline - time.monotonic()))
            ok += 1
        except TimeoutError:
            hung += 1
        except Exception as exc:
            failed += 1
            errors[type(exc).__name__] += 1
    stop_problem = adapter.abandon() if hung else ""
    if not hung:
        adapter.close()
    return {
        "ok": ok,
        "failed": failed,
        "hung": hung,
        "errors": dict(errors),
        "killed_pid": killed["pid"],
        "stop_problem": stop_problem,
    }
