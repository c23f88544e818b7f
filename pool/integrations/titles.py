"""Process titles, so `ps` and `top` say what each process is.

``ps -o args`` shows ``poolctl: supervisor [NAME]`` and ``poolctl: worker 3 [NAME]
gen 2``. setproctitle rewrites the argv area (what ps reads from
/proc/PID/cmdline) and sets the kernel's comm name; prctl(PR_SET_NAME) alone
changes only the 15-byte comm, which ``ps -o args`` does not show, and a
hand-made argv rewrite is the ctypes and environ-relocation work setproctitle
already does well. Only processes we own get a title: an embedding program's
process (the task pool's caller) keeps its own.

SPT_NOENV: to fit a title longer than the original command line, setproctitle
moves the environment and writes over its old place, which blanks /proc/PID/environ
(what `ps e`, debuggers and our own tests read). We let it do so only when the title
would not fit otherwise: the daemon's and the forkserver's command lines are long,
so their processes keep their environment; a worker forked from a short
`python app.py` gets its whole title and loses /proc/PID/environ.
"""

from __future__ import annotations

import os


def supervisor_title(pool: str) -> str:
    return f"poolctl: supervisor [{pool}]"


def worker_title(slot: int, pool: str, generation: int) -> str:
    return f"poolctl: worker {slot} [{pool}] gen {generation}"


def set_title(title: str) -> None:
    try:
        from setproctitle import setproctitle
    except ImportError:  # a broken install must not stop a worker from working
        return
    had = os.environ.get("SPT_NOENV")
    if len(title) < _command_line_room():
        os.environ["SPT_NOENV"] = "1"  # read by setproctitle's first call: keep environ
    try:
        setproctitle(title)
    finally:
        if had is None:
            os.environ.pop("SPT_NOENV", None)


def _command_line_room() -> int:
    """Bytes of the original argv area (what a title can use without moving environ)."""
    try:
        with open("/proc/self/cmdline", "rb") as f:
            return len(f.read())
    except OSError:
        return 0
