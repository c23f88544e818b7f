"""The task pool's worker target: run one request at a time from its own channel.

Each worker has a private pipe to the pool, so a worker that dies mid-task can
only take its own task with it (no shared queue whose lock a dying worker could
hold, CPython's BrokenProcessPool lesson). The worker writes the task id and
start time to its board row before it runs a task, which is how the pool knows
which of the requests it sent was running when the worker died.

A thread beats while the main thread runs a task, so a long task is not taken
for a hang; a task that holds the GIL (or a frozen process) stops the beats and
is replaced as hung, as it should be.
"""

from __future__ import annotations

import select
import signal
import threading
import time
import traceback
from typing import Any

from pool import taskwire

_IDLE_POLL_S = 1.0
_terminating = threading.Event()


def serve(ctx: Any) -> None:
    """The worker loop (target ``pool.taskworker:serve``)."""
    channel = ctx.channel
    if channel is None:
        raise RuntimeError("pool.taskworker:serve runs only under pool.Pool (it needs a task channel)")
    _exit_cleanly_on_sigterm()
    timeout_s = ctx._board.header_word("heartbeat_timeout_ns") / 1e9
    stop_beating = threading.Event()
    beater = threading.Thread(target=_beat, args=(ctx, stop_beating, min(1.0, timeout_s / 4)), daemon=True)
    beater.start()
    row = ctx._row
    control = ctx._conn
    poller = select.poll()  # kept: a selector per wait costs more than a no-op task
    channel_fd = channel.fileno()
    poller.register(channel_fd, select.POLLIN)
    poller.register(control.fileno(), select.POLLIN)
    ctx.beat()  # ready: the pool may send work now
    try:
        while not ctx.stopping:
            ready = [fd for fd, _ in poller.poll(_IDLE_POLL_S * 1000)]
            if not ready:
                if ctx._orphaned():
                    break
                continue
            if channel_fd not in ready:
                break  # the supervisor asked us to stop (or went away)
            try:
                request = channel.recv_bytes()
            except (EOFError, OSError):
                break  # the pool is gone
            reply, ok = _run(request, row)
            try:
                channel.send_bytes(reply)
            except (BrokenPipeError, OSError):
                break
            row.finish_task(ok)
            del reply
    finally:
        stop_beating.set()
        if not ctx.supervisor_alive():
            # The caller (and its supervisor thread) died: nobody else will remove the board.
            ctx._board.unlink()


def _run(request: bytes, row: Any) -> tuple[bytes, bool]:
    task_id = -1  # a request that does not unpickle is answered as -1: the pool matches replies in order
    try:
        task_id, fn, args_list, kwargs, chunk = taskwire.loads(request)
        row.start_task(task_id, time.monotonic_ns())
        if chunk:
            result: Any = [fn(*args) for args in args_list]
        else:
            result = fn(*args_list[0], **kwargs)
    except BaseException as exc:
        if _terminating.is_set():
            raise  # our own SIGTERM, not the task's doing: stop the worker
        return taskwire.raised_reply(task_id, exc, traceback.format_exc()), False
    try:
        return taskwire.dumps((task_id, taskwire.OK, result)), True
    except Exception as exc:
        error = TypeError(f"task {task_id}: result cannot be pickled: {type(exc).__name__}: {exc}")
        return taskwire.raised_reply(task_id, error, traceback.format_exc()), False


def _beat(ctx: Any, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        ctx.beat()


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM (a stop, or the parent's death) ends the worker; a pool that lost its
    supervisor (the caller was SIGKILLed) has nobody else to remove the board."""

    def on_term(signum: int, frame: object) -> None:
        _terminating.set()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
