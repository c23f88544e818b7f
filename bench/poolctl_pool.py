"""A real poolctl pool, started and stopped with the real CLI, every pid verified gone.

``poolctl --name NAME --runtime-dir DIR start TARGET -w N`` runs from the
repository root (so ``bench.sup_workers`` is importable by the supervisor) and
returns once every worker has beaten; the detached supervisor (``python -m
pool.ops.daemon``, its own session) then outlives the CLI. ``stop()`` runs
``poolctl stop`` and then checks, by pid, that the supervisor and every worker
it ever reported are gone, and that its board segment was removed.

The pool's name carries this harness's pid (``bench-<pid>-...``), so a board
segment left in /dev/shm is also caught by the harness's own leak check. Run
inside ``proc_watch.adopting_orphans()``: the daemon then becomes our child when
the CLI exits, and is reaped here instead of lingering as PID 1's zombie.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import statusboard
from bench import proc_watch, scratch
from bench.peers.daemon import venv_script
from statusboard import runtime_file
from statusboard.reader import BoardReader, Snapshot
from statusboard.states import WorkerState

ROOT = str(Path(__file__).resolve().parent.parent)
_count = itertools.count()


def poolctl() -> Path:
    return venv_script("poolctl")


class PoolctlPool:
    """Start on ``__enter__``, stop (verified) on ``__exit__``; ``start()``/``stop()`` are timed."""

    name = "poolctl"

    def __init__(self, workers: int, target: str = "bench.sup_workers:idle", *options: str) -> None:
        self.workers = workers
        self.target = target
        self.options = list(options)
        self.directory = scratch.make_dir("poolctl")
        self.runtime_dir = self.directory / "run"
        self.pool = f"bench-{os.getpid()}-{next(_count)}"
        self.supervisor_pid: int | None = None
        self.segment: str | None = None
        self.start_seconds = 0.0
        self.stop_seconds = 0.0
        self.account = ""
        self._reader: BoardReader | None = None
        self._seen: set[int] = set()  # every worker pid the board ever showed us

    def argv(self, *args: str) -> list[str]:
        return [str(poolctl()), "--name", self.pool, "--runtime-dir", str(self.runtime_dir), *args]

    def _run(self, *args: str, timeout: float = 60.0) -> float:
        started = time.perf_counter()
        done = subprocess.run(
            self.argv(*args),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            tail = " | ".join(done.stderr.decode(errors="replace").strip().splitlines()[-3:])
            raise RuntimeError(f"poolctl {args[0]} exited {done.returncode}: {tail}")
        return elapsed

    # -- life cycle ----------------------------------------------------------

    def start(self) -> None:
        try:
            self.start_seconds = self._run("start", self.target, "-w", str(self.workers), *self.options)
        finally:
            self._learn_supervisor()

    def _learn_supervisor(self) -> None:
        try:
            document = runtime_file.read(self.runtime_dir)
        except Exception:
            return
        self.supervisor_pid = int(document["supervisor"]["pid"])
        self.segment = document.get("board") or self.segment

    @property
    def reader(self) -> BoardReader:
        if self._reader is None:
            self._reader = statusboard.attach(self.runtime_dir)
        return self._reader

    def snapshot(self) -> Snapshot:
        snap = self.reader.snapshot()
        self._seen.update(int(pid) for pid in snap.rows["pid"].tolist() if pid > 0)
        return snap

    def row(self, slot: int) -> dict[str, int]:
        """pid, state, heartbeat_ns, started_ns of one slot, from one consistent snapshot."""
        rows = self.snapshot().rows
        return {field: int(rows[field][slot]) for field in ("pid", "state", "heartbeat_ns", "started_ns")}

    def all_running(self) -> bool:
        """Every worker RUNNING on the board, and the pool healthy."""
        snap = self.snapshot()
        running = int((snap.rows["state"] == int(WorkerState.RUNNING)).sum())
        return running == self.workers and self.reader.healthy()

    def stop(self) -> str:
        """``poolctl stop`` (timed), then verify by pid; returns a one-line account."""
        if self._reader is not None:
            try:
                self.snapshot()
            except Exception:
                pass
            self._reader.close()
            self._reader = None
        try:
            if self.supervisor_pid is None:
                self._learn_supervisor()
            if self.supervisor_pid is None:
                return f"{self.pool}: never started"
            family = self._family()
            error = ""
            try:
                self.stop_seconds = self._run("stop")
            except Exception as exc:
                error = str(exc)
            survivors = self._kill_survivors(family)
            leaked = bool(self.segment) and Path(str(self.segment)).exists()
            if leaked and self.segment:
                Path(self.segment).unlink(missing_ok=True)
            if error or survivors or leaked:
                raise RuntimeError(
                    f"poolctl pool {self.pool}: "
                    + "; ".join(
                        filter(
                            None,
                            [
                                error,
                                f"survivors after poolctl stop: {survivors}" if survivors else "",
                                f"board segment {self.segment} left behind (removed)" if leaked else "",
                            ],
                        )
                    )
                )
            self.account = (
                f"poolctl supervisor pid {self.supervisor_pid} + {len(family) - 1} workers stopped by "
                "`poolctl stop`, each confirmed gone by pid, board segment removed"
            )
            return self.account
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _family(self) -> list[int]:
        assert self.supervisor_pid is not None
        children = proc_watch.ChildScanner(self.supervisor_pid).children()
        return [self.supervisor_pid, *sorted(children | {p for p in self._seen if proc_watch.alive(p)})]

    def _kill_survivors(self, family: list[int]) -> list[int]:
        """Reap the (adopted) supervisor; SIGKILL and name anything of the pool still alive."""
        assert self.supervisor_pid is not None
        proc_watch.reap(self.supervisor_pid, 5.0)
        alive = [pid for pid in family if proc_watch.alive(pid)]
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in alive:
            proc_watch.reap(pid, 2.0)
        return alive

    def running_status(self) -> dict[str, Any]:
        """One `poolctl status --json`: exit 0, running, from the live board, every worker listed."""
        done = subprocess.run(
            self.argv("status", "--json"), cwd=ROOT, capture_output=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"poolctl status exited {done.returncode} on a running {self.workers}-worker pool: "
                f"{done.stderr.decode(errors='replace').strip()}"
            )
        document: dict[str, Any] = json.loads(done.stdout)
        workers = document.get("workers")
        if (
            document.get("state") != "running"
            or document.get("source") != "shm"
            or not isinstance(workers, list)
            or len(workers) != self.workers
        ):
            listed = len(workers) if isinstance(workers, list) else workers
            raise RuntimeError(
                f"poolctl status --json does not show a live, running {self.workers}-worker pool: state "
                f"{document.get('state')!r}, source {document.get('source')!r}, {listed} workers listed"
            )
        return document

    def __enter__(self) -> PoolctlPool:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
