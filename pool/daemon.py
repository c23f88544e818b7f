"""The detached supervisor: launch, readiness, and the daemon's own entry point.

`poolctl start` runs ``python -m pool.daemon`` in a new session (its own process
group, no controlling terminal) with ``subprocess`` rather than forking the CLI:
the daemon is a clean, single-threaded interpreter without typer or rich loaded,
so its workers can fork safely and cheaply. The CLI blocks on a readiness pipe
(s6's notification-fd idea): the daemon writes ``ready`` once every worker has
beaten, or ``failed: <reason>`` (lock held, boot error, ...), and the pipe's EOF
without either means the daemon died, in which case its output file says why.
A launch that fails or times out leaves nothing running: the CLI stops the
daemon's whole process group and verifies every pid is gone.

The daemon's stdout/stderr, which its workers inherit, go to output.log in the
runtime directory through a logger process that rotates it by size
(pool.output_log); the daemon waits for that logger to finish before it exits.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pool import output_log
from pool.errors import AlreadyRunning, PoolError
from pool.runtime_doc import spec_document
from pool.shutdown import kill_and_confirm
from pool.spec import PoolSpec
from pool.titles import set_title, supervisor_title
from statusboard.liveness import LOCK_NAME, lock_holder_present, start_ticks

OUTPUT_NAME = output_log.OUTPUT_NAME  # the daemon's and its workers' stdout/stderr


@dataclass
class LaunchResult:
    ok: bool
    message: str
    pid: int


def launch(spec: PoolSpec, runtime_dir: Path, *, wait: float) -> LaunchResult:
    """Start a detached supervisor and wait until it is ready (or has failed)."""
    ready_r, ready_w = os.pipe()
    output = os.open(runtime_dir / OUTPUT_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pool.daemon",
                json.dumps(spec_document(spec)),
                str(runtime_dir),
                str(ready_w),
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
            pass_fds=(ready_w,),
            cwd=spec.cwd,
        )
    finally:
        os.close(ready_w)
        os.close(output)
    try:
        message = _read_readiness(ready_r, wait)
    finally:
        os.close(ready_r)
    if message == "ready":
        return LaunchResult(True, "ready", process.pid)
    if message is None:
        reason = f"not ready within {wait:g}s"
    elif message.startswith("failed: "):
        reason = message[len("failed: ") :]
    else:
        code = process.poll()
        tail = _output_tail(runtime_dir)
        reason = f"supervisor exited (code {code}) before it was ready" + (f": {tail}" if tail else "")
    _abort(process, spec.grace)
    return LaunchResult(False, reason, process.pid)


def _read_readiness(fd: int, wait: float) -> str | None:
    """The daemon's one readiness line, '' on EOF without one, None on timeout."""
    deadline = time.monotonic() + wait
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").split("\n", 1)[0].strip()


def _abort(process: subprocess.Popen[bytes], grace: float) -> None:
    """Stop a daemon that failed to become ready, then verify its whole group is gone."""
    ticks = start_ticks(process.pid)
    if ticks is not None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace + 3)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        kill_and_confirm([(process.pid, ticks)], grace=0.1)


def _output_tail(runtime_dir: Path, lines: int = 3) -> str:
    try:
        with open(runtime_dir / OUTPUT_NAME, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))  # the end of a file of up to 10 MB
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def _daemon_supervisor(spec: PoolSpec, runtime_dir: str, ready_fd: int) -> Any:
    """A Supervisor that knows its output logger (pool.output_log) is its child like the
    workers: as a child subreaper it kills children that are not workers, taking them for
    orphans of dead workers (pool.containment), and the logger must live.

    A stopgap until Supervisor takes its helper pids as a parameter (its _not_orphans is
    private to it): a subclass here keeps this inside the daemon's own file.
    """
    from pool.supervisor import Supervisor

    class DaemonSupervisor(Supervisor):
        output: output_log.OutputLogger | None = None

        def _not_orphans(self) -> set[int]:
            pids = super()._not_orphans()
            if self.output is not None:
                pids |= self.output.children()
            return pids

    return DaemonSupervisor(spec, runtime_dir=runtime_dir, notify_fd=ready_fd)


def main(argv: list[str]) -> int:
    """Daemon entry: ``python -m pool.daemon SPEC_JSON RUNTIME_DIR READY_FD``."""
    spec_json, runtime_dir, ready = argv
    ready_fd = int(ready)
    try:
        spec = PoolSpec(**json.loads(spec_json))
    except (PoolError, ValueError, TypeError) as exc:
        os.write(ready_fd, f"failed: {exc}\n".encode())
        return 1
    set_title(supervisor_title(spec.name))
    # First, before any worker exists, so they all inherit the logger's pipe; and before the
    # supervisor's imports, so the forked logger is small. Not while another supervisor holds
    # the lock (run() refuses then): two loggers would rotate one file.
    logger = None
    if not lock_holder_present(Path(runtime_dir) / LOCK_NAME):
        logger = output_log.start(Path(runtime_dir), spec.name)
    try:
        return _supervise(spec, runtime_dir, ready_fd, logger)
    finally:
        if logger is not None:
            left = logger.finish()
            if left:  # should never be: finish() kills what is left; say so where a user looks
                sys.stderr.write(f"poolctl: output logger pid(s) {left} survived SIGKILL\n")


def _supervise(
    spec: PoolSpec, runtime_dir: str, ready_fd: int, logger: output_log.OutputLogger | None
) -> int:
    try:
        supervisor = _daemon_supervisor(spec, runtime_dir, ready_fd)
    except (PoolError, ValueError, TypeError) as exc:
        os.write(ready_fd, f"failed: {exc}\n".encode())
        return 1
    supervisor.output = logger
    try:
        result = supervisor.run(install_signals=True)
    except AlreadyRunning as exc:
        supervisor.report_failure(str(exc))
        return 1
    except BaseException as exc:
        supervisor.report_failure(f"supervisor error: {type(exc).__name__}: {exc}")
        # Printed here, not by the interpreter at exit: the logger must still be there to write it.
        import traceback

        traceback.print_exc()
        return 1
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
