"""Task bodies the task-pool tests submit: tiny, module-level, one behaviour each.

They live in a module (not in the test files) so that they pickle by reference
and a worker imports them, as a user's functions would be. The failure injectors
follow CPython's test_concurrent_futures/test_deadlock: each kills its own
worker a different way.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import threading
import time
from pathlib import Path


def mul(x, y):
    return x * y


def square(x):
    return x * x


def identity(x):
    return x


def getpid():
    return os.getpid()


def returns_none():
    return None


def echo_args(*args, **kwargs):
    return args, kwargs


def nbytes(data):
    return len(data)


def make_bytes(n):
    return b"\x5a" * n


def sleep_and_return(seconds, value=None):
    time.sleep(seconds)
    return value


def raise_value_error(message):
    raise ValueError(message)  # the worker-side frame the remote traceback must show


class Unloadable:
    """Pickles fine in the caller; unpickling it in the worker raises."""

    def __reduce__(self):
        return (_refuse_to_load, ())


def _refuse_to_load():
    raise RuntimeError("this object refuses to be unpickled")


def return_generator():
    return (i for i in range(3))  # neither pickle nor dill can send a generator


class CarriesGenerator(Exception):
    pass


def raise_unpicklable():
    raise CarriesGenerator("with a generator inside", (i for i in range(3)))


def return_lock():
    return threading.Lock()


def crash(kind, value=None, directory=None):
    """Kill this worker: 'kill' (SIGKILL), 'exit' (os._exit(3)), 'segv' (a NULL read); None: return value.

    With ``directory``, first record the attempt (``attempts-<value>``) so a test can count runs.
    """
    if directory is not None:
        _attempt(directory, value)
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # the signal is delivered before this ends
    elif kind == "exit":
        os._exit(3)
    elif kind == "segv":
        faulthandler.disable()  # a forked worker inherits pytest's; its dump is only noise here
        ctypes.string_at(0)
    return value


def _attempt(directory, key):
    """Record one attempt of task ``key``; return how many there were, this one included."""
    path = Path(directory) / f"attempts-{key}"
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return len(path.read_text().splitlines())


def crash_once(directory, key, value):
    """SIGKILL this worker on the first attempt of ``key``; return ``value`` on the next."""
    if _attempt(directory, key) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)
    return value


def crash_always(directory, key):
    _attempt(directory, key)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)


def count_and_sleep(directory, key, seconds):
    _attempt(directory, key)
    time.sleep(seconds)
    return key


def wait_for_file(path, limit=20.0, value=None):
    """Run until ``path`` exists (a long task the test ends when it wants)."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {limit}s")
        time.sleep(0.01)
    return value


def hold_gil(seconds):
    """Block in a C call that keeps the GIL (libc sleep through PyDLL): no Python thread runs."""
    ctypes.PyDLL(None).sleep(int(seconds))
    return "woke"


def record_pid(directory, key):
    """Record one attempt of task ``key`` (``attempts-<key>``); return (key, this worker's pid)."""
    _attempt(directory, key)
    return key, os.getpid()


def hold_until(directory, key, release, limit=20.0):
    """Record the attempt of ``key``, run until the file ``release`` exists, return (key, pid)."""
    _attempt(directory, key)
    wait_for_file(release, limit)
    return key, os.getpid()


class CustomError(Exception):
    """An exception class of the caller's own: it must come back as itself, not as a stand-in."""


def raise_custom_error(message):
    raise CustomError(message)
