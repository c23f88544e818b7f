"""Failure injectors: tiny worker bodies, each misbehaving in exactly one way.

Imported in the worker by target string (``targets:<name>``), with tests/ on
sys.path. The ``*_on_cue`` bodies behave until the test sends them SIGUSR1, so a
pool becomes ready first and the failure happens when the test says so; a
replacement (a new process) waits for its own cue, i.e. behaves.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import time

NOT_CALLABLE = 42
_cue: list[int] = []


def well_behaved(ctx):
    while not ctx.wait(0.05):
        ctx.beat()


def beat_only(ctx):
    """Beats but never calls ctx.wait(): when orphaned, only a parent-death signal ends it."""
    while True:
        ctx.beat()
        time.sleep(0.05)


def context_echo(ctx):
    """Shows its WorkerContext on the board: progress = slot + generation/10, one task done and
    one failed per character of the pool name (done) and per slot (failed)."""
    for _ in ctx.pool:
        ctx.task_done()
    for _ in range(ctx.slot):
        ctx.task_done(ok=False)
    ctx.beat(progress=ctx.slot + ctx.generation / 10)
    while not ctx.wait(0.05):
        pass
    assert ctx.stopping


def stop_flag_at_birth(ctx):
    """Reads its stop flag before anything else, then beats with progress 1.0 if a stop was
    already requested, 0.0 if not; then behaves. The beat comes after the read, so whoever sees
    it knows the read happened (and a stop seen at birth ends it at once, as it would any worker)."""
    ctx.beat(progress=1.0 if ctx.stopping else 0.0)
    while not ctx.wait(0.05):
        pass


def exit_ok(ctx):
    return None


def raise_now(ctx):
    raise RuntimeError("raise_now: injected failure")


def hang(ctx):
    """Beats once, then sleeps forever: reads no stop flag, sends no heartbeat."""
    ctx.beat()
    _sleep_forever()


def stop_beating(ctx):
    """Beats for a while, then stays alive and polite (honours the stop flag) but silent."""
    for _ in range(5):
        ctx.wait(0.02)
    while not ctx.stopping:
        time.sleep(0.01)


def ignore_sigterm(ctx):
    """Ignores SIGTERM and the stop flag; keeps beating. Only SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        ctx.wait(0.05)
        ctx.beat()


def hang_ignoring_sigterm(ctx):
    """Beats once, then hangs with SIGTERM ignored: a hang that only SIGKILL ends."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ctx.beat()
    _sleep_forever()


def slow_shutdown(ctx):
    """Takes SIGTERM as a polite request, and its clean-up on stop outlasts any grace."""
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    while not ctx.wait(0.05):
        ctx.beat()
    time.sleep(60)


def segfault(ctx):
    ctx.beat()
    _segfault()


def broken_after_first_generation(ctx):
    """Generation 1 behaves; every later one (a restart, a rolling replacement) raises at once,
    like a deploy of broken code."""
    if ctx.generation > 1:
        raise RuntimeError(f"generation {ctx.generation} is broken")
    well_behaved(ctx)


def raise_in_slot_1(ctx):
    """Slot 1 crash-loops (raises at once); every other slot behaves."""
    if ctx.slot == 1:
        raise RuntimeError("slot 1 always fails")
    well_behaved(ctx)


def exit_on_cue(ctx):
    if _wait_for_cue(ctx):
        return


def raise_on_cue(ctx):
    if _wait_for_cue(ctx):
        raise RuntimeError("cued failure")


def hang_on_cue(ctx):
    if _wait_for_cue(ctx):
        _sleep_forever()


def segfault_on_cue(ctx):
    if _wait_for_cue(ctx):
        _segfault()


def _wait_for_cue(ctx) -> bool:
    """Behave until SIGUSR1 arrives (True) or a stop is requested (False)."""
    signal.signal(signal.SIGUSR1, lambda signum, frame: _cue.append(signum))
    while not _cue:
        if ctx.wait(0.02):
            return False
    return True


def _sleep_forever():
    while True:
        time.sleep(3600)


def _segfault():
    faulthandler.disable()  # inherited from pytest: keep its dump out of the test output
    ctypes.string_at(0)
    os.kill(os.getpid(), signal.SIGSEGV)  # not reached: the line above faults


def grow_on_cue(ctx):
    """Behaves until SIGUSR1, then holds 96 MiB of touched memory (a leak) and keeps beating."""
    signal.signal(signal.SIGUSR1, lambda signum, frame: _cue.append(signum))
    ballast = None
    while not ctx.wait(0.05):
        ctx.beat()
        if ballast is None and _cue:
            ballast = bytearray(96 << 20)
            for i in range(0, len(ballast), 4096):
                ballast[i] = 1


TURNOVER_S = 0.15  # slow_turnover: seconds to its first beat, and again from the stop flag to its exit


def slow_turnover(ctx):
    """Takes TURNOVER_S to boot and TURNOVER_S to stop (gracefully, exit 0): a replacement keeps
    the slot out of service long enough that two overlapping ones would be seen on the board."""
    booted = time.monotonic() + TURNOVER_S
    while time.monotonic() < booted:  # not ctx.wait(): that beats
        if ctx.stopping:
            return
        time.sleep(0.01)
    while not ctx.wait(0.05):
        ctx.beat()
    time.sleep(TURNOVER_S)


def slot_1_down_until_generation_4(ctx):
    """Slot 1's first three generations raise at once (a crash loop in backoff); later ones, and
    every other slot, behave."""
    if ctx.slot == 1 and ctx.generation < 4:
        raise RuntimeError(f"slot 1 generation {ctx.generation} fails")
    well_behaved(ctx)


def ballast_at_boot(ctx):
    """Holds 96 MiB of touched memory before its first beat (a worker whose imports alone are
    big), then behaves: over a 64M max_rss from its very start."""
    ballast = bytearray(96 << 20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    well_behaved(ctx)
