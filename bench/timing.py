"""How things are timed: per-call costs, rates, and whole-process wall times.

Per-call costs use ``timeit`` with the statement as source text, so the call is
compiled inline into timeit's loop exactly as a caller would write it (no extra
lambda layer), with the garbage collector off during a sample. The cost of the
empty loop itself (~10 ns) is measured in the same process and subtracted, so a
heartbeat's "180 ns" is the heartbeat, not the ``for``.

Each sample runs the statement ``number`` times, with ``number`` chosen so that one
sample lasts at least ``min_time`` seconds; a figure is the median of ``repeats``
samples with their min and max.

Interleaving: on this kind of machine (a VM on a shared host) the same loop runs
at one speed for a few seconds and at half that speed for the next few. Figures
that are compared with each other (ours and its floor; idle and busy; our
status and ``python -c pass``) are therefore sampled round-robin, one sample of
each per round, so every ratio is taken under the same conditions.
"""

from __future__ import annotations

import functools
import subprocess
import time
import timeit
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.figures import Stats


@dataclass(frozen=True)
class Budget:
    """How hard to measure: seconds per sample and samples (rounds) per figure."""

    min_time: float
    repeats: int
    wall_repeats: int  # whole-process timings (tens of ms each)
    rpc_min_time: float  # per-call figures of slow calls (ms each)

    @classmethod
    def for_run(cls, quick: bool) -> Budget:
        if quick:
            return cls(min_time=0.005, repeats=7, wall_repeats=7, rpc_min_time=0.02)
        return cls(min_time=0.02, repeats=21, wall_repeats=21, rpc_min_time=0.06)


@functools.cache
def loop_overhead() -> float:
    """Seconds per iteration of timeit's empty loop in this process (min of several)."""
    timer = timeit.Timer("pass")
    return min(timer.repeat(repeat=7, number=200_000)) / 200_000


class Sampler:
    """One statement, calibrated once; each ``sample()`` is seconds per execution."""

    def __init__(
        self, stmt: str, namespace: Mapping[str, Any], *, min_time: float, subtract_loop: bool = True
    ) -> None:
        self.stmt = stmt
        self._timer = timeit.Timer(stmt, globals=dict(namespace))
        self.number = _calibrate(self._timer, min_time)
        self._overhead = loop_overhead() if subtract_loop else 0.0

    def sample(self) -> float:
        return max(self._timer.timeit(self.number) / self.number - self._overhead, 0.0)

    def rate(self, window: float) -> float:
        """Executions per second, counted over at least ``window`` seconds."""
        chunk = max(self.number // 10, 1)
        done = 0
        start = time.perf_counter()
        while True:
            self._timer.timeit(chunk)
            done += chunk
            elapsed = time.perf_counter() - start
            if elapsed >= window:
                return done / elapsed


def interleaved(
    statements: Mapping[str, str],
    namespace: Mapping[str, Any],
    *,
    min_time: float,
    repeats: int,
) -> dict[str, Stats]:
    """Seconds per execution of each statement, sampled round-robin (see the module docstring)."""
    samplers = {name: Sampler(stmt, namespace, min_time=min_time) for name, stmt in statements.items()}
    samples: dict[str, list[float]] = {name: [] for name in statements}
    for _ in range(repeats):
        for name, sampler in samplers.items():
            samples[name].append(sampler.sample())
    return {name: Stats.of(values, number=samplers[name].number) for name, values in samples.items()}


def per_call(stmt: str, namespace: Mapping[str, Any], *, min_time: float, repeats: int) -> Stats:
    """Seconds per execution of one statement."""
    return interleaved({"it": stmt}, namespace, min_time=min_time, repeats=repeats)["it"]


def run_once(argv: Sequence[str], *, ok_codes: tuple[int, ...] = (0,), timeout: float = 60.0) -> float:
    """Wall seconds of one run of ``argv`` to completion, output discarded.

    Raises RuntimeError when it exits with a code not in ``ok_codes``: a failing
    command would time its error path, not the work.
    """
    start = time.perf_counter()
    done = subprocess.run(
        list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout, check=False
    )
    elapsed = time.perf_counter() - start
    if done.returncode not in ok_codes:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {' | '.join(tail)}")
    return elapsed


def walls(
    commands: Mapping[str, Sequence[str]],
    *,
    repeats: int,
    warmup: int = 1,
    on_round: Callable[[int], None] | None = None,
) -> dict[str, Stats]:
    """Wall seconds of each command, run round-robin ``repeats`` times after ``warmup`` rounds."""
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for i in range(warmup + repeats):
        if on_round is not None:
            on_round(i)
        for name, argv in commands.items():
            elapsed = run_once(argv)
            if i >= warmup:
                samples[name].append(elapsed)
    return {name: Stats.of(values) for name, values in samples.items()}


def _calibrate(timer: timeit.Timer, min_time: float) -> int:
    """Smallest 1-2-5 step ``number`` whose run takes at least ``min_time`` seconds."""
    number = 1
    while True:
        for factor in (1, 2, 5):
            candidate = number * factor
            if timer.timeit(candidate) >= min_time:
                return candidate
        number *= 10
