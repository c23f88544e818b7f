"""Was a SIGKILLed worker killed by the kernel's OOM killer? Ask the kernel, do not guess.

``/proc/vmstat``'s ``oom_kill`` counts OOM kills on the whole machine (Linux 4.13+),
and a cgroup v2 ``memory.events`` counts its own. A worker that died of SIGKILL while
neither moved was killed by someone (``kill -9``, a container runtime), not for memory;
when one moved, the OOM killer ran while the worker lived, which is the likely cause.
Read at a worker's start and at its SIGKILL death only: ~16 us a read.
"""

from __future__ import annotations

import re

_VMSTAT_OOM = re.compile(rb"^oom_kill (\d+)$", re.MULTILINE)


def oom_kills() -> int | None:
    """The machine's OOM-kill count so far, or None where the kernel does not say."""
    try:
        with open("/proc/vmstat", "rb") as f:
            found = _VMSTAT_OOM.search(f.read())
    except OSError:
        return None
    return int(found.group(1)) if found else None


def sigkill_cause(kills_at_start: int | None) -> str:
    """Why a worker died of a SIGKILL poolctl did not send, given ``oom_kills()`` at its
    start: words for "signal SIGKILL; <this>"."""
    now = oom_kills()
    if kills_at_start is None or now is None:
        return "not sent by poolctl (this kernel keeps no OOM-kill count to tell an OOM kill)"
    if now > kills_at_start:
        return (
            f"the kernel's OOM killer ran {now - kills_at_start} time(s) while it lived: likely out of memory"
        )
    return "killed from outside (not by poolctl, not by the OOM killer)"
