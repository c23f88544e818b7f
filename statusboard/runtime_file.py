"""runtime.json: the board's last flush, written atomically, read with validation.

Only the holder of supervisor.lock writes it (the live supervisor, or the
start/stop that took the lock after proving the supervisor dead). Writes go to a
temp file in the same directory, are fsynced, renamed over the old file, and the
directory is fsynced, so a reader sees the old file or the new one, never a mix,
and a crash at any point leaves one of the two on disk.
"""

from __future__ import annotations

import errno
import json
import os

from statusboard.errors import (
    RuntimeFileCorrupt,
    RuntimeFileMissing,
    RuntimeFileSchemaError,
    RuntimeFileUnsafe,
)

TYPE_CHECKING = False  # pathlib and typing stay off the status path
if TYPE_CHECKING:
    from typing import Any

    StrPath = str | os.PathLike[str]

FILE_NAME = "runtime.json"
SCHEMA = 1
_TMP_PREFIX = f".{FILE_NAME}."  # how replace_atomically names the temp files of runtime.json

# Required keys and their JSON types; keys may be added, never removed.
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema": int,
    "pool": str,
    "state": str,
    "supervisor": dict,
    "workers_desired": int,
    "workers": list,
}
_REQUIRED_SUPERVISOR: dict[str, type | tuple[type, ...]] = {
    "pid": int,
    "start_ticks": int,
}
# "failed": a live supervisor whose every desired slot has FAILED (statusboard.health.failed_reason).
STATES = ("starting", "running", "failed", "stopping", "stopped", "stop_failed")


def path_in(runtime_dir: StrPath) -> str:
    return os.path.join(os.fspath(runtime_dir), FILE_NAME)


def write(runtime_dir: StrPath, document: dict[str, Any], *, durable: bool = True) -> None:
    """Atomically replace runtime.json with ``document`` (schema key added).

    ``durable=False`` skips both fsyncs (benchmarks only: atomic, not crash-safe).
    """
    body = json.dumps({**document, "schema": SCHEMA}, separators=(",", ":")).encode()
    replace_atomically(path_in(runtime_dir), body, durable=durable)


def replace_atomically(path: StrPath, data: bytes, *, durable: bool = True, mode: int | None = None) -> None:
    """Write ``data`` to a temp file beside ``path`` (``.NAME.*.tmp``) and rename it over
    ``path``: a reader sees the old file or the new one, never a mix.

    ``durable`` fsyncs the file before the rename and the directory after it (crash-safe);
    ``mode`` sets the file's permissions (else mkstemp's 0600).
    """
    import tempfile  # off the status read path (~3 ms of imports)

    directory, name = os.path.split(os.fspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if mode is not None:
            os.fchmod(fd, mode)
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _discard(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    if durable:
        dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _discard(tmp: str) -> None:
    """Remove a temp file after a failed write; if its directory went with it (rm -rf),
    the write's own error is the one to report, not this one's."""
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def remove_stale_temps(runtime_dir: StrPath) -> int:
    """Delete temp files a killed writer left behind. Only the lock holder calls this."""
    removed = 0
    for entry in os.scandir(runtime_dir):
        if entry.name.startswith(_TMP_PREFIX) and entry.name.endswith(".tmp"):
            try:
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def read(runtime_dir: StrPath) -> dict[str, Any]:
    """Read and validate runtime.json.

    Raises RuntimeFileMissing (no file), RuntimeFileUnsafe (a symlink: refused like a
    symlinked runtime directory, since it may name another pool's supervisor),
    RuntimeFileCorrupt (empty, truncated, not JSON) or RuntimeFileSchemaError (unknown
    schema, missing or mistyped keys), each with a message that says what is wrong.
    """
    path = path_in(runtime_dir)
    try:
        # O_NOFOLLOW: the supervisor only ever renames a regular file into place.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise RuntimeFileMissing(f"{path} does not exist (never started here)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RuntimeFileUnsafe(f"{path} is a symlink; refusing to use it") from None
        raise
    try:
        with open(fd, "rb", closefd=False) as f:
            raw = f.read()
    except IsADirectoryError:
        raise RuntimeFileCorrupt(f"{path} is a directory, not a file") from None
    finally:
        os.close(fd)
    return parse(raw, path)


def parse(raw: bytes, path: StrPath = FILE_NAME) -> dict[str, Any]:
    """Validate the bytes of a runtime file (see read)."""
    if not raw.strip():
        raise RuntimeFileCorrupt(f"{path} is empty")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError: JSONDecodeError, UnicodeDecodeError, and an integer past
        # sys.get_int_max_str_digits(); RecursionError: nesting too deep to parse.
        raise RuntimeFileCorrupt(f"{path} is truncated or not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise RuntimeFileSchemaError(f"{path} holds a JSON {type(document).__name__}, not an object")
    schema = document.get("schema")
    if schema != SCHEMA:
        raise RuntimeFileSchemaError(f"{path} has schema {schema!r}; this poolctl reads schema {SCHEMA}")
    _check_keys(document, _REQUIRED, path, "")
    _check_keys(document["supervisor"], _REQUIRED_SUPERVISOR, path, "supervisor.")
    if document["state"] not in STATES:
        raise RuntimeFileSchemaError(f"{path}: unknown state {document['state']!r}")
    return document


def _check_keys(
    document: dict[str, Any],
    required: dict[str, type | tuple[type, ...]],
    path: StrPath,
    prefix: str,
) -> None:
    for key, kind in required.items():
        if key not in document:
            raise RuntimeFileSchemaError(f"{path}: missing key '{prefix}{key}'")
        value = document[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise RuntimeFileSchemaError(
                f"{path}: key '{prefix}{key}' should be {_kind_name(kind)}, got {type(value).__name__}"
            )


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__
