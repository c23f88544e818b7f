"""pool.Pool: a concurrent.futures.Executor on supervised workers that survives worker death.

Data flow::

    submit() --> pending deque --wake--> dispatcher thread
    dispatcher --request on worker k's own pipe--> worker k (pool.taskpool.taskworker)
    worker k --reply on the same pipe--> dispatcher --> Future
    supervisor thread --hooks: started / exited--> dispatcher

Every worker has a private pipe and at most PREFETCH requests in flight, and
the dispatcher remembers which requests each worker holds. When a worker dies,
its board row says which request it was running: that future fails with
WorkerCrashed (or runs again, ``retries=``), requests it had not started go
back to the queue untouched, and the supervisor starts a replacement. Nothing
is shared between workers, so nothing is left wedged (ProcessPoolExecutor's
shared call queue is why one death breaks every future there).

Start method: the supervisor loop runs in a thread of the caller, so workers
start with forkserver by default (fork with other threads alive can copy a held
lock into the child). ``start_method="fork"`` is faster to a first result and
is safe when the calling program holds no locks in other threads at that time.
"""

from __future__ import annotations

import atexit
import itertools
import os
import select
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any

from pool.errors import WorkerCrashed
from pool.spec import PoolSpec
from pool.supervision.supervisor import Supervisor
from pool.taskpool import taskwire
from pool.taskpool.worker_news import PoolHooks, Recycling, Started, WorkerNews

PREFETCH = 2  # requests in flight per worker: one running, one waiting in its pipe
_ids = itertools.count()


class _Task:
    __slots__ = ("deadline", "future", "id", "payload", "retries_left", "started", "timeout")

    def __init__(
        self, task_id: int, future: Future[Any], payload: bytes, timeout: float | None, retries: int
    ) -> None:
        self.id = task_id
        self.future = future
        self.payload = payload
        self.timeout = timeout
        self.deadline: float | None = None
        self.retries_left = retries
        self.started = False  # its future is RUNNING (a requeued task stays so)


class _Worker:
    __slots__ = ("conn", "draining", "eof", "fd", "generation", "inflight", "pid", "released", "sent", "slot")

    def __init__(self, slot: int, generation: int, pid: int, conn: Any) -> None:
        self.slot = slot
        self.generation = generation
        self.pid = pid
        self.conn = conn
        self.fd: int = conn.fileno()
        self.eof = False  # its pipe closed: it died; the supervisor's "exited" settles it
        self.inflight: deque[_Task] = deque()
        self.sent = 0  # requests sent to this process (max_tasks)
        self.draining = False  # being recycled: no new requests; released once its inflight is done
        self.released = False

    def accepts(self, max_tasks: int | None) -> bool:
        return not (self.eof or self.draining or (max_tasks is not None and self.sent >= max_tasks))


class Pool(Executor):
    """A process pool whose workers are supervised like any poolctl pool.

    ``Pool(workers=4, name="crunch", retries=0)``; while it runs,
    ``poolctl --name crunch status`` shows each worker with its current task.

    Recycling (Celery's max_tasks_per_child / max_memory_per_child): ``max_tasks``
    requests per worker process, ``max_rss`` bytes, ``max_age`` seconds. A worker
    past a limit gets no new work, finishes what it holds, and is replaced, one
    at a time; no task fails or is lost to a recycle.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        name: str | None = None,
        retries: int = 0,
        heartbeat_timeout: float = 30.0,
        start_method: str = "auto",
        runtime_dir: str | os.PathLike[str] | None = None,
        grace: float = 2.0,
        max_tasks: int | None = None,
        max_rss: int | None = None,
        max_age: float | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries: must be >= 0, got {retries!r}")
        if max_tasks is not None and (not isinstance(max_tasks, int) or max_tasks < 1):
            raise ValueError(f"max_tasks: must be an integer >= 1, got {max_tasks!r}")
        count = workers if workers is not None else (os.cpu_count() or 1)
        self._own_dir = name is None and runtime_dir is None
        pool_name = name or f"pool-{os.getpid()}-{next(_ids)}"
        self._spec = PoolSpec(
            target="pool.taskpool.taskworker:serve",
            workers=count,
            name=pool_name,
            heartbeat_timeout=heartbeat_timeout,
            grace=grace,
            # Crashes here are usually a task's doing, not the worker's: keep replacing,
            # with a short backoff so a poisoned stream of tasks cannot spin the CPU.
            max_restarts=1_000_000,
            restart_window=1.0,
            backoff_base=0.01,
            backoff_cap=0.5,
            backoff_reset=1.0,
            start_method=start_method,
            max_rss=max_rss,
            max_age=max_age,
        )
        self.retries = retries
        self.max_tasks = max_tasks
        self._hooks = PoolHooks(self)
        self._supervisor = Supervisor(self._spec, runtime_dir=runtime_dir, hooks=self._hooks)
        self._pending: deque[_Task] = deque()
        self._events: deque[WorkerNews] = deque()
        self._workers: dict[int, _Worker] = {}
        self._task_ids = itertools.count(1)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._shutdown = False
        self._wake_pending = False
        # One poll object for the pool's life (a selector per wait costs ~20 us).
        self._poller = select.poll()
        self._poller.register(self._wake_r, select.POLLIN)
        self._lock = threading.Lock()
        self._supervisor.start()
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name="poolctl-dispatcher", daemon=True
        )
        self._dispatcher.start()
        self._closed = threading.Event()
        atexit.register(self._at_exit)

    # -- Executor API ------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def runtime_dir(self) -> str:
        return str(self._supervisor.runtime_dir)

    # The contract adds a keyword-only ``timeout`` (not passed to fn): a deliberate override.
    def submit(  # type: ignore[override]
        self, fn: Callable[..., Any], /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` in a worker; ``timeout`` kills the worker and fails the future."""
        return self._submit(fn, [args], kwargs, chunk=False, timeout=timeout)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """Like Executor.map; ``chunksize`` > 1 sends that many calls per request."""
        if chunksize < 1:
            raise ValueError(f"chunksize: must be >= 1, got {chunksize!r}")
        end = None if timeout is None else time.monotonic() + timeout
        calls = zip(*iterables, strict=False)
        futures = []
        while True:
            batch = list(itertools.islice(calls, chunksize))
            if not batch:
                break
            futures.append(self._submit(fn, batch, {}, chunk=True, timeout=None))
        return self._results(futures, end)

    def _results(self, futures: list[Future[Any]], end: float | None) -> Iterator[Any]:
        try:
            futures.reverse()
            while futures:
                future = futures.pop()
                remaining = None if end is None else end - time.monotonic()
                yield from future.result(remaining)
        finally:
            for future in futures:
                future.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; with ``cancel_futures`` cancel what has not started; with
        ``wait`` return once everything ran and every process is verified gone."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._pending:
                    self._pending.popleft().future.cancel()
        self._wake()
        if wait:
            self._dispatcher.join()
            self._closed.wait()

    def __enter__(self) -> Pool:
        return self

    # -- internals -----------------------------------------------------------------

    def _submit(
        self,
        fn: Callable[..., Any],
        args: list[tuple[Any, ...]],
        kwargs: dict[str, Any],
        *,
        chunk: bool,
        timeout: float | None,
    ) -> Future[Any]:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout: must be > 0, got {timeout!r}")
        future: Future[Any] = Future()
        task_id = next(self._task_ids)
        try:
            payload = taskwire.dumps_call(task_id, fn, args, kwargs, chunk)
        except Exception as exc:
            future.set_exception(
                TypeError(f"task {task_id}: cannot pickle the call: {type(exc).__name__}: {exc}")
            )
            return future
        task = _Task(task_id, future, payload, timeout, self.retries)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._pending.append(task)
        self._wake()
        return future

    def _wake(self) -> None:
        # One byte per sleep, not per submit: each write releases the GIL, and a
        # submitting thread then queues behind the dispatcher for it (a convoy).
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass

    def _dispatch_loop(self) -> None:
        try:
            while True:
                timeout = self._next_timeout()
                events = self._poller.poll(None if timeout is None else timeout * 1000)
                ready = {fd for fd, _ in events}
                if self._wake_r in ready:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    # Cleared after the drain, not before: a _wake() between the two would
                    # have its byte drained and leave the flag set with the pipe empty, and
                    # every later _wake() would then return without waking us (a hang).
                    self._wake_pending = False
                for worker in list(self._workers.values()):
                    if worker.fd in ready:
                        self._receive(worker)
                self._handle_events()
                self._expire(time.monotonic())
                self._send_pending()
                self._release_drained()
                with self._lock:
                    idle = not self._pending and not any(w.inflight for w in self._workers.values())
                    if self._shutdown and idle:
                        break
        finally:
            self._close()

    def _next_timeout(self) -> float | None:
        deadlines = [t.deadline for w in self._workers.values() for t in w.inflight if t.deadline is not None]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _handle_events(self) -> None:
        while self._events:
            news = self._events.popleft()
            known = self._workers.get(news.slot)
            if isinstance(news, Started):
                conn = self._hooks.take_channel(news.slot, news.generation)
                if conn is not None:
                    worker = self._workers[news.slot] = _Worker(news.slot, news.generation, news.pid, conn)
                    self._poller.register(worker.fd, select.POLLIN)
            elif known is None or known.generation != news.generation:
                continue  # about a process this dispatcher no longer tracks
            elif isinstance(news, Recycling):
                known.draining = True
            else:
                self._on_death(known, news.running, news.how)

    def _release_drained(self) -> None:
        """Hand a drained worker back to the supervisor for its recycle."""
        for worker in self._workers.values():
            if worker.draining and not worker.inflight and not worker.released and not worker.eof:
                worker.released = True
                self._supervisor.release_worker(worker.slot, worker.generation)

    def _receive(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll(0):
                reply = taskwire.loads(worker.conn.recv_bytes())
                task = worker.inflight.popleft()
                self._complete(task, reply)
        except (EOFError, OSError):
            self._forget(worker)  # the worker is gone; its "exited" event settles its tasks

    def _forget(self, worker: _Worker) -> None:
        if not worker.eof:
            worker.eof = True
            self._poller.unregister(worker.fd)

    def _complete(self, task: _Task, reply: tuple[int, int, Any]) -> None:
        _, status, value = reply
        future = task.future
        if future.done():
            return  # timed out already
        if status == taskwire.OK:
            future.set_result(value)
            return
        exc, text, remote_tb = value
        if not isinstance(exc, BaseException):
            exc = RuntimeError(text)
        exc.__cause__ = taskwire.RemoteTraceback(remote_tb)
        future.set_exception(exc)

    def _on_death(self, worker: _Worker, running_id: int, how: str) -> None:
        self._receive(worker)  # replies it sent before dying still count
        del self._workers[worker.slot]
        self._forget(worker)
        worker.conn.close()
        requeue = []
        for task in worker.inflight:
            if task.future.done():
                continue
            if task.id != running_id:
                requeue.append(task)  # never started: not this task's fault
            elif task.retries_left > 0:
                task.retries_left -= 1
                task.deadline = None
                requeue.append(task)
            else:
                task.future.set_exception(
                    WorkerCrashed(
                        f"worker {worker.slot} (pid {worker.pid}) died running task {task.id}: {how}"
                    )
                )
        with self._lock:
            self._pending.extendleft(reversed(requeue))

    def _expire(self, now: float) -> None:
        for worker in self._workers.values():
            for task in worker.inflight:
                if task.deadline is not None and now >= task.deadline and not task.future.done():
                    task.future.set_exception(
                        FuturesTimeout(
                            f"task {task.id} timed out after {task.timeout:g}s; its worker was replaced"
                        )
                    )
                    task.retries_left = 0
                    self._supervisor.replace_worker(
                        worker.slot, worker.generation, f"task {task.id} timed out after {task.timeout:g}s"
                    )

    def _send_pending(self) -> None:
        # Breadth first: every worker gets a request before any gets a second, so a burst
        # of submits does not queue behind one worker (its prefetch) while another idles.
        max_tasks = self.max_tasks
        workers = sorted(self._workers.values(), key=lambda w: len(w.inflight))
        for depth in range(1, PREFETCH + 1):
            for worker in workers:
                while worker.accepts(max_tasks) and len(worker.inflight) < depth:
                    with self._lock:
                        if not self._pending:
                            return
                        task = self._pending[0]
                        # A task with a timeout goes only to an idle worker, and nothing queues
                        # behind one: its clock must time the task itself, and the kill that
                        # ends it must not take another task with it.
                        if worker.inflight and (
                            task.timeout is not None or worker.inflight[-1].timeout is not None
                        ):
                            break
                        self._pending.popleft()
                    if not task.started:
                        if not task.future.set_running_or_notify_cancel():
                            continue  # cancelled while it waited
                        task.started = True
                    if task.timeout is not None:
                        task.deadline = time.monotonic() + task.timeout
                    try:
                        worker.conn.send_bytes(task.payload)
                    except OSError:
                        with self._lock:
                            self._pending.appendleft(task)
                        break
                    worker.inflight.append(task)
                    worker.sent += 1
                    if max_tasks is not None and worker.sent == max_tasks:
                        self._supervisor.recycle_worker(
                            worker.slot, worker.generation, f"max_tasks {max_tasks} reached"
                        )

    def _close(self) -> None:
        """Stop the supervisor (verified), fail whatever could not run, release everything."""
        try:
            self._supervisor.stop()
        finally:
            for worker in self._workers.values():
                for task in worker.inflight:
                    if not task.future.done():
                        task.future.set_exception(
                            WorkerCrashed(f"pool {self.name} stopped before task {task.id} ran")
                        )
                worker.conn.close()
            with self._lock:
                while self._pending:
                    task = self._pending.popleft()
                    if not task.future.done():
                        task.future.set_exception(
                            RuntimeError(f"pool {self.name} stopped before task {task.id} ran")
                        )
            wake_fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
            for fd in wake_fds:
                os.close(fd)
            if self._own_dir:
                shutil.rmtree(self._supervisor.runtime_dir, ignore_errors=True)
            atexit.unregister(self._at_exit)
            self._closed.set()

    def _at_exit(self) -> None:
        self.shutdown(wait=True, cancel_futures=True)
