"""supervisor.log: one timestamped line per lifecycle event, rotated by size.

stdlib logging's RotatingFileHandler does the rotation (bounded: ``max_bytes``
per file, ``backups`` old files); a foreground supervisor also echoes each line
to stderr. Kill escalations are logged as warnings naming slot and pid.

Two formats: ``text`` (``2026-11-24T10:00:00.123 INFO    message``; a worker's
traceback follows on the next lines) and ``json`` for log shippers: exactly one
JSON object per line, ``{"ts", "level", "msg", "pool", "pid"}`` plus ``"exc"``
(the traceback text) when an exception is logged. Newlines inside a message or
traceback are escaped by JSON, so a record never spans two lines. The stderr echo
uses the same format (under systemd or Docker it is the log a shipper reads).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
from itertools import count
from pathlib import Path

from pool.spec import LOG_FORMATS
from statusboard.rows import iso

LOG_NAME = "supervisor.log"
FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
_ids = count()


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ts (ISO-8601, ms, offset), level, msg, pool, pid."""

    def __init__(self, pool: str) -> None:
        super().__init__()
        self.pool = pool

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": iso(record.created),
            "level": record.levelname,
            "msg": record.getMessage(),
            "pool": self.pool,
            "pid": record.process,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # ASCII-only: a lone surrogate (an undecodable path) cannot break the file's encoding.
        return json.dumps(entry, default=str)


def make_formatter(log_format: str, pool: str) -> logging.Formatter:
    """The formatter for ``log_format`` ("text" or "json"); ValueError for anything else."""
    if log_format == "text":
        return logging.Formatter(FORMAT, DATE_FORMAT)
    if log_format == "json":
        return JsonFormatter(pool)
    raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")


def open_log(
    runtime_dir: Path,
    *,
    echo: bool = False,
    max_bytes: int = 1_048_576,
    backups: int = 3,
    log_format: str = "text",
    pool: str | None = None,
) -> logging.Logger:
    """A logger writing to ``runtime_dir/supervisor.log`` (0600), optionally echoed to stderr.

    ``log_format`` is "text" or "json" (ValueError otherwise); ``pool`` names the pool
    in JSON records (default: the runtime directory's name).
    """
    formatter = make_formatter(log_format, runtime_dir.name if pool is None else pool)
    logger = logging.getLogger(f"poolctl.supervisor.{os.getpid()}.{next(_ids)}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(_file_handler(runtime_dir, formatter, max_bytes, backups))
    if echo:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        logger.addHandler(stream)
    return logger


class _LogFile(logging.handlers.RotatingFileHandler):
    """supervisor.log. A line that cannot be written (disk full, the directory removed) is
    lost quietly: the stock handler prints a traceback per record to stderr, which is
    output.log on the same full disk, or a terminal it would flood."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def _file_handler(runtime_dir: Path, formatter: logging.Formatter, max_bytes: int, backups: int) -> _LogFile:
    path = runtime_dir / LOG_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)
    handler = _LogFile(path, maxBytes=max_bytes, backupCount=backups)
    handler.setFormatter(formatter)
    return handler


def reopen_log(logger: logging.Logger, runtime_dir: Path) -> None:
    """Point the logger's supervisor.log at a new file in ``runtime_dir`` (the directory was
    removed and made again: the open file is unlinked, lines written to it are lost)."""
    for old in [h for h in logger.handlers if isinstance(h, _LogFile)]:
        assert old.formatter is not None
        new = _file_handler(runtime_dir, old.formatter, old.maxBytes, old.backupCount)
        logger.removeHandler(old)
        old.close()
        logger.addHandler(new)


def close_log(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def append_to_log(
    runtime_dir: Path, lines: list[str], *, log_format: str = "text", pool: str | None = None
) -> None:
    """Add warning lines to supervisor.log from outside the supervisor (`poolctl stop`
    cleaning up after a dead one, under its lock). A failure to write is not an error."""
    if not lines:
        return
    try:
        logger = open_log(runtime_dir, log_format=log_format, pool=pool)
    except (OSError, ValueError):
        return
    try:
        for line in lines:
            logger.warning("%s", line)
    finally:
        for handler in list(logger.handlers):
            handler.close()
        close_log(logger)
