"""supervisor.log: one timestamped line per lifecycle event, rotated by size.

stdlib logging's RotatingFileHandler does the rotation (bounded: ``max_bytes``
per file, ``backups`` old files); a foreground supervisor also echoes each line
to stderr. Kill escalations are logged as warnings naming slot and pid.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from itertools import count
from pathlib import Path

LOG_NAME = "supervisor.log"
FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
_ids = count()


def open_log(
    runtime_dir: Path,
    *,
    echo: bool = False,
    max_bytes: int = 1_048_576,
    backups: int = 3,
) -> logging.Logger:
    """A logger writing to ``runtime_dir/supervisor.log`` (0600), optionally echoed to stderr."""
    logger = logging.getLogger(f"poolctl.supervisor.{os.getpid()}.{next(_ids)}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    path = runtime_dir / LOG_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)
    formatter = logging.Formatter(FORMAT, DATE_FORMAT)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups)
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    if echo:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        logger.addHandler(stream)
    return logger


def close_log(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
