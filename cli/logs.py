"""`poolctl logs`: the last lines of supervisor.log, and following it across rotation."""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from pathlib import Path

from cli.errors import CliError

LOG_NAME = "supervisor.log"
FOLLOW_POLL_S = 0.2


def print_log(directory: Path, lines: int, follow: bool) -> None:
    path = directory / LOG_NAME
    if not path.exists() and not follow:
        raise CliError(f"no log at {path} (never started here)")
    position = 0
    inode = None
    if path.exists():
        with path.open("rb") as f:
            tail = deque(f, maxlen=lines) if lines else deque()
            position = f.tell()
            inode = os.fstat(f.fileno()).st_ino
        for line in tail:
            sys.stdout.write(line.decode(errors="replace"))
        sys.stdout.flush()
    if not follow:
        return
    try:
        while True:
            try:
                st = path.stat()
            except FileNotFoundError:
                time.sleep(FOLLOW_POLL_S)
                continue
            if st.st_ino != inode or st.st_size < position:
                inode, position = st.st_ino, 0  # rotated or truncated: start the new file
            if st.st_size > position:
                with path.open("rb") as f:
                    f.seek(position)
                    chunk = f.read()
                    position = f.tell()
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
            time.sleep(FOLLOW_POLL_S)
    except KeyboardInterrupt:
        pass
