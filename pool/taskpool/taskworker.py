"""The task pool's worker target: run one request at a time from its own channel.

Each worker has a private pipe to the pool, so a worker that dies mid-task can
only take its own task with it (no shared queue whose lock a dying worker could
hold, CPython's BrokenProcessPool lesson). The worker writes the task id and
start time to its board row before it runs a task, which is how the pool knows
which of the requests it sent was running when the worker died.

A thread beats while the main thread runs a task, so a long task is not taken
for a hang; a task that holds the GIL (or a frozen process) stops the beats and
is replaced as hung, as it should be. The same thread ends the worker when the
supervisor dies mid-task (the forkserver case gets no parent-death signal).
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
import traceback
from typing import Any

from pool.taskpool import taskwire
from statusboard.states import WorkerState

_IDLE_POLL_S = 1.0
_ORPHAN_EXIT_GRACE_S = 1.0  # an orphan's task gets this long to take its SIGTERM
_DEATH_SETTLE_S = 0.5  # after an unrequested SIGTERM, how long a dying supervisor may look alive
_terminating = threading.Event()


def serve(ctx: Any) -> None:
    """The worker loop (target ``pool.taskpool.taskworker:serve``)."""
    channel = ctx.channel
    if channel is None:
        raise RuntimeError(
            "pool.taskpool.taskworker:serve runs only under pool.Pool (it needs a task channel)"
        )
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
    lost = False  # the task channel broke: the pool's process is going (or gone)
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
                lost = True
                break  # the pool is gone
            reply, ok = _run(request, row)
            try:
                channel.send_bytes(reply)
            except (BrokenPipeError, OSError):
                lost = True
                break
            row.finish_task(ok)
            del reply
    finally:
        stop_beating.set()
        if _supervisor_gone(ctx, channel_lost=lost):
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


def _supervisor_gone(ctx: Any, *, channel_lost: bool = False) -> bool:
    """True when the supervisor is dead (so nobody else will remove the board).

    A SIGTERM that came without a stop request or a hang verdict is most likely
    the parent-death signal, and a task channel that broke the same way is most
    likely the caller's death closing its end: either can come while the dying
    process still shows in /proc (the kernel closes its files and signals us before
    it becomes a zombie), so give its death a moment to show before deciding that
    it lives.
    """
    if not ctx.supervisor_alive():
        return True
    suspicious = _terminating.is_set() or channel_lost
    if not suspicious or ctx.stopping or ctx._board.word(ctx.slot, "state") == WorkerState.HUNG:
        return False  # the live supervisor's own SIGTERM or close: a stop, or a hang kill
    deadline = time.monotonic() + _DEATH_SETTLE_S
    while time.monotonic() < deadline:
        time.sleep(0.01)
        if not ctx.supervisor_alive():
            return True
    return False


def _beat(ctx: Any, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        ctx.beat()
        if not ctx.supervisor_alive():
            _end_orphan(ctx, stop)
            return


def _end_orphan(ctx: Any, stop: threading.Event) -> None:
    """The supervisor died while the main thread runs a task: end this worker.

    Under forkserver no parent-death signal comes: our parent is the forkserver,
    which lives as long as any of its children holds its "alive" fd, and we do.
    So: remove the board (nobody else will), SIGTERM the main thread (a signal to
    the process could land in this thread and leave the task's sleep or read
    uninterrupted), and exit outright if the task does not let it act in time.
    """
    ctx._board.unlink()
    signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)  # type: ignore[arg-type]
    if not stop.wait(_ORPHAN_EXIT_GRACE_S):
        os._exit(1)


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM (a stop, or the parent's death) ends the worker; a pool that lost its
    supervisor (the caller was SIGKILLed) has nobody else to remove the board."""

    def on_term(signum: int, frame: object) -> None:
        if _terminating.is_set():
            # Already on the way out. The parent-death signal comes once per reparenting
            # (the supervisor thread, then its process): a second SystemExit would abort
            # the cleanup in serve()'s finally, leaving the board behind.
            return
        _terminating.set()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
