"""A foreground supervisor for the signal and orphan tests.

    python run_supervisor.py RUNTIME_DIR NAME TARGET WORKERS [options]

Runs ``Supervisor(spec).run()`` in the main thread (start method auto -> fork),
so real signals reach the real handlers. Exit status 0 when the stop was clean.

``--audit FILE`` installs an audit hook, inherited by every forked worker, that
appends ``pid event path`` to FILE for each write-open, rename or removal under
the runtime directory (and of ``FILE.canary``, the hook's own self-test).
``--no-pdeathsig`` disables PR_SET_PDEATHSIG in the workers, leaving only the
fallback orphan check.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def install_audit(audit_file: str, runtime_dir: str) -> None:
    watched = os.path.realpath(runtime_dir) + os.sep
    canary = os.path.realpath(audit_file) + ".canary"
    fd = os.open(audit_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def path_of(value: object) -> str | None:
        if isinstance(value, str | bytes | os.PathLike):
            return os.path.realpath(os.fsdecode(value))
        return None

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event == "open":
            path, mode, flags = [*args, None, None, None][:3]
            writes = (isinstance(flags, int) and flags & _WRITE_FLAGS) or (
                isinstance(mode, str) and any(c in mode for c in "wax+")
            )
            paths = [path_of(path)] if writes else []
        elif event in ("os.rename", "os.link", "os.symlink"):
            paths = [path_of(args[0]), path_of(args[1])]
        elif event in ("os.remove", "os.rmdir", "os.truncate", "os.chmod", "os.utime"):
            paths = [path_of(args[0])]
        else:
            return
        for path in paths:
            if path and (path.startswith(watched) or path == canary):
                os.write(fd, f"{os.getpid()} {event} {path}\n".encode())

    sys.addaudithook(hook)
    # Self-test: a forked child's write must be seen, or the test proves nothing.
    child = os.fork()
    if child == 0:
        with open(canary, "w") as f:
            f.write("canary\n")
        os._exit(0)
    os.waitpid(child, 0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("runtime_dir")
    parser.add_argument("name")
    parser.add_argument("target")
    parser.add_argument("workers", type=int)
    parser.add_argument("--heartbeat-timeout", type=float, default=2.0)
    parser.add_argument("--grace", type=float, default=0.5)
    parser.add_argument("--flush-interval", type=float, default=0.5)
    parser.add_argument("--restart", default="permanent")
    parser.add_argument("--start-method", default="auto")
    parser.add_argument("--audit")
    parser.add_argument("--no-pdeathsig", action="store_true")
    opts = parser.parse_args()

    from pool.spec import PoolSpec
    from pool.supervision.supervisor import Supervisor

    if opts.no_pdeathsig:
        import pool.supervision.worker

        pool.supervision.worker._die_with_parent = lambda: None
    if opts.audit:
        install_audit(opts.audit, opts.runtime_dir)
    spec = PoolSpec(
        target=opts.target if ":" in opts.target else f"targets:{opts.target}",
        workers=opts.workers,
        name=opts.name,
        cwd=str(TESTS_DIR),
        heartbeat_timeout=opts.heartbeat_timeout,
        grace=opts.grace,
        flush_interval=opts.flush_interval,
        restart=opts.restart,
        start_method=opts.start_method,
    )
    result = Supervisor(spec, runtime_dir=opts.runtime_dir).run()
    print(f"stopped: {result.reason}; survivors {result.survivors}; boot error {result.boot_error}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
