"""Process titles, so `ps` and `top` say what each process is.

``ps -o args`` shows ``poolctl: supervisor [NAME]`` and ``poolctl: worker 3 [NAME]
gen 2``. setproctitle rewrites the argv area (what ps reads from
/proc/PID/cmdline) and sets the kernel's comm name; prctl(PR_SET_NAME) alone
changes only the 15-byte comm, which ``ps -o args`` does not show, and a
hand-made argv rewrite is the ctypes and environ-relocation work setproctitle
already does well. Only processes we own get a title: an embedding program's
process (the task pool's caller) keeps its own.
"""

from __future__ import annotations


def supervisor_title(pool: str) -> str:
    return f"poolctl: supervisor [{pool}]"


def worker_title(slot: int, pool: str, generation: int) -> str:
    return f"poolctl: worker {slot} [{pool}] gen {generation}"


def set_title(title: str) -> None:
    try:
        from setproctitle import setproctitle
    except ImportError:  # a broken install must not stop a worker from working
        return
    setproctitle(title)
