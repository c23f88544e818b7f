"""The detached supervisor: launch, readiness, and the daemon's own entry point.

`poolctl start` runs ``python -m pool.ops.daemon`` in a new session (its own process
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
(pool.ops.output_log); the daemon waits for that logger to finish before it exits.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pool.errors import AlreadyRunning, PoolError
from pool.integrations.titles import set_title, supervisor_title
from pool.ops import output_log
from pool.spec import PoolSpec
from pool.supervision.runtime_report import spec_document
from pool.supervision.shutdown import kill_and_confirm
from statusboard.liveness import LOCK_NAME, lock_holder_present, start_ticks

OUTPUT_NAME = output_log.OUTPUT_NAME  # the daemon's and its workers' stdout/stderr


@dataclass
class LaunchResult:
    ok: bool
    message: str
    pid: int
    notes: list[str] = field(default_factory=list)  # what the supervisor said before its verdict


def launch(spec: PoolSpec, runtime_dir: Path, *, wait: float) -> LaunchResult:
    """Start a detached supervisor and wait until it is ready (or has failed)."""
    ready_r, ready_w = os.pipe()
    output = os.open(runtime_dir / OUTPUT_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pool.ops.daemon",
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
    notes: list[str] = []
    try:
        message = _read_readiness(ready_r, wait, notes)
    finally:
        os.close(ready_r)
    if message == "ready":
        return LaunchResult(True, "ready", process.pid, notes)
    if message is None:
        reason = f"not ready within {wait:g}s"
    elif message.startswith("failed: "):
        reason = message[len("failed: ") :]
    else:
        code = process.poll()
        tail = _output_tail(runtime_dir)
        reason = f"supervisor exited (code {code}) before it was ready" + (f": {tail}" if tail else "")
    _abort(process, spec.grace)
    return LaunchResult(False, reason, process.pid, notes)


def _read_readiness(fd: int, wait: float, notes: list[str]) -> str | None:
    """The daemon's readiness verdict ("ready" or "failed: ..."), '' on EOF without one,
    None on timeout. "note: ..." lines before it go to ``notes``."""
    deadline = time.monotonic() + wait
    data = b""
    while True:
        while b"\n" in data:
            line, data = data.split(b"\n", 1)
            text = line.decode(errors="replace").strip()
            if not text.startswith("note: "):
                return text
            notes.append(text[len("note: ") :])
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:  # EOF: a last line without its newline, if any
            text = data.decode(errors="replace").strip()
            return "" if text.startswith("note: ") else text
        data += chunk


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


def main(argv: list[str]) -> int:
    """Daemon entry: ``python -m pool.ops.daemon SPEC_JSON RUNTIME_DIR READY_FD``."""
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
        return _supervise(spec, runtime_dir, ready_fd)
    finally:
        if logger is not None:
            left = logger.finish()
            if left:  # should never be: finish() kills what is left; say so where a user looks
                sys.stderr.write(f"poolctl: output logger pid(s) {left} survived SIGKILL\n")


def _supervise(spec: PoolSpec, runtime_dir: str, ready_fd: int) -> int:
    from pool.supervision.supervisor import Supervisor

    try:
        supervisor = Supervisor(spec, runtime_dir=runtime_dir, notify_fd=ready_fd)
    except (PoolError, ValueError, TypeError) as exc:
        os.write(ready_fd, f"failed: {exc}\n".encode())
        return 1
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
