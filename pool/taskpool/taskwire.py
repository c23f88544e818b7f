"""What travels between the task pool and its workers, and how it is pickled.

Request:  (task_id, fn, args_list, kwargs, is_chunk)  -> one call, or one per args in a chunk
Reply:    (task_id, OK, result)                         -> result (a list for a chunk)
          (task_id, RAISED, (exception | None, text, traceback_text))

Pickling uses the C pickler and falls back to dill (multiprocess's pickler) for
what it cannot do: lambdas, closures, functions defined in ``__main__``. dill is
several times slower per call, so plain functions and data keep the fast path.
"""

from __future__ import annotations

import pickle
import weakref
from typing import Any

OK = 0
RAISED = 1
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_PICKLE, _DILL = b"P", b"D"


def dumps(obj: Any) -> bytes:
    """Pickle with the C pickler, falling back to dill for lambdas and closures.

    The first byte says which: dill's pickles must be loaded by dill.
    """
    try:
        return _PICKLE + pickle.dumps(obj, _PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        return _dill_dumps(obj)


def dumps_call(
    task_id: int, fn: Any, args: list[tuple[Any, ...]], kwargs: dict[str, Any], chunk: bool
) -> bytes:
    """A request. A function the C pickler cannot name (a lambda, a closure, anything
    from ``__main__``, whose worker-side copy may lack it) travels by value: dill
    pickles it once per function, and the request carries those bytes."""
    if getattr(fn, "__module__", None) == "__main__" or not _by_reference(fn):
        fn = ByValue(_dill_blob(fn))
    return dumps((task_id, fn, args, kwargs, chunk))


class ByValue:
    """A function pickled by dill; workers cache the loaded function by its bytes."""

    __slots__ = ("blob",)

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (_load_by_value, (self.blob,))


_loaded: dict[bytes, Any] = {}
_blobs: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()


def _load_by_value(blob: bytes) -> Any:
    fn = _loaded.get(blob)
    if fn is None:
        import dill

        if len(_loaded) > 256:
            _loaded.clear()
        fn = _loaded[blob] = dill.loads(blob)
    return fn


def _dill_blob(fn: Any) -> bytes:
    try:
        blob = _blobs.get(fn)
    except TypeError:  # not weak-referenceable (a functools.partial, a builtin method ...)
        blob = None
    if blob is None:
        import dill

        # recurse: take the globals a __main__ function uses, which a worker's __main__ lacks.
        blob = dill.dumps(fn, _PROTOCOL, recurse=True)
        try:
            _blobs[fn] = blob
        except TypeError:
            pass
    return blob


def _by_reference(fn: Any) -> bool:
    try:
        pickle.dumps(fn, _PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        return False
    return True


def loads(data: bytes) -> Any:
    if data[:1] == _PICKLE:
        return pickle.loads(memoryview(data)[1:])
    import dill

    return dill.loads(memoryview(data)[1:])


def _dill_dumps(obj: Any) -> bytes:
    import dill

    # recurse: take the globals a __main__ function uses, which a worker's __main__ lacks.
    return _DILL + dill.dumps(obj, _PROTOCOL, recurse=True)  # type: ignore[no-any-return]


class RemoteTraceback(Exception):
    """The worker-side traceback, chained as ``__cause__`` of a task's exception."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def raised_reply(task_id: int, exc: BaseException, traceback_text: str) -> bytes:
    """The reply for a task that raised; the exception itself if it pickles, else its text."""
    text = f"{type(exc).__name__}: {exc}"
    try:
        return dumps((task_id, RAISED, (exc, text, traceback_text)))
    except Exception:
        return dumps((task_id, RAISED, (None, text, traceback_text)))
