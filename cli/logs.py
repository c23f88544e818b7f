"""`poolctl logs`: the last lines of supervisor.log (or, with --output, of the workers' output.log),
and following it across rotation.

Both files rotate by renaming (``NAME`` -> ``NAME.1`` -> ...), so: the last lines are
read backwards from the end (a 10 MB output.log is not read whole), from the backups too
when the current file was just rotated; and a follower keeps the file it has open, reads
it to its end when the name moves to a new file (``tail -F``), then goes on with the new
one, so no line written around a rotation is skipped. Bytes are copied as they are:
worker output need not be text.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import BinaryIO

from cli.errors import CliError

LOG_NAME = "supervisor.log"
OUTPUT_NAME = "output.log"  # pool.ops.output_log.OUTPUT_NAME (not imported: logs stays a light command)
FOLLOW_POLL_S = 0.2
BLOCK = 64 << 10
_LINE = re.compile(rb"[^\n]*\n|[^\n]+$")


def print_log(directory: Path, lines: int, follow: bool, *, output: bool = False) -> None:
    """Print the last ``lines`` lines of the log (the workers' output with ``output``), then
    with ``follow`` every new line until Ctrl-C."""
    path = directory / (OUTPUT_NAME if output else LOG_NAME)
    if not path.exists() and not follow:
        what = "no worker output at" if output else "no log at"
        hint = " (never started here, or a --foreground pool: its workers write to its own stdout)"
        raise CliError(f"{what} {path}{hint if output else ' (never started here)'}")
    out = sys.stdout.buffer
    current: BinaryIO | None = None
    try:
        current = path.open("rb")
    except FileNotFoundError:
        pass
    if current is not None:
        # Where the tail ends and the follow starts: one position, taken once (lines written
        # while the tail prints are then followed, not skipped).
        end = current.seek(0, os.SEEK_END)
        for chunk in last_lines(path, current, lines, end):
            out.write(chunk)
        out.flush()
        current.seek(end)
    if not follow:
        if current is not None:
            current.close()
        return
    try:
        _follow(path, current, out)
    except KeyboardInterrupt:
        pass


def last_lines(path: Path, current: BinaryIO, count: int, end: int) -> list[bytes]:
    """The last ``count`` lines of the open file ``current`` up to ``end``, continued into
    ``path``.1, .2 ... while it has fewer (just after a rotation). Oldest first."""
    if count <= 0:
        return []
    found: list[bytes] = []
    sources: list[BinaryIO] = [current]
    index = 1
    try:
        while len(found) < count:
            lines = _tail(sources[-1], count - len(found), end if len(sources) == 1 else None)
            found[:0] = lines
            if len(found) >= count:
                break
            try:
                sources.append(open(f"{path}.{index}", "rb"))  # noqa: SIM115 (closed below)
            except OSError:
                break
            index += 1
    finally:
        for source in sources[1:]:
            source.close()
    return found


def _tail(f: BinaryIO, count: int, end: int | None = None) -> list[bytes]:
    """The last ``count`` lines of ``f`` (up to ``end``, else its end), reading backwards by blocks."""
    if end is None:
        end = f.seek(0, os.SEEK_END)
    data = b""
    position = end
    while position > 0 and data.count(b"\n") <= count:
        step = min(BLOCK, position)
        position -= step
        f.seek(position)
        data = f.read(step) + data
    lines = _LINE.findall(data)  # on b"\n" only: a progress bar's "\r" does not end a line
    if position > 0:
        lines = lines[1:]  # the first one may be the tail of a longer line
    return lines[-count:]


def _rotated_past(path: Path, old: int, new: int | None) -> list[bytes]:
    """Contents of whole files rotated past a follower between two of its polls, oldest first:
    the backups (``path``.1 newest, .2 ...) newer than the file it read (inode ``old``) and
    older than the one it has just opened (``new``; if that one was rotated too, the newer
    ones are for the next poll). Nothing when ``old`` is no longer among the backups."""
    between: list[Path] = []
    for index in range(1, 100):
        backup = Path(f"{path}.{index}")
        try:
            inode = backup.stat().st_ino
        except FileNotFoundError:
            return []
        if inode == old:
            break
        if inode == new:
            between = []  # the newer ones come after the file we now follow
        else:
            between.append(backup)
    else:
        return []
    contents = []
    for backup in reversed(between):
        try:
            contents.append(backup.read_bytes())
        except OSError:
            pass
    return contents


def _follow(path: Path, current: BinaryIO | None, out: BinaryIO) -> None:
    while True:
        if current is not None:
            chunk = current.read()
            if chunk:
                out.write(chunk)
                out.flush()
        try:
            st = path.stat()
        except FileNotFoundError:
            time.sleep(FOLLOW_POLL_S)
            continue
        if current is None or st.st_ino != os.fstat(current.fileno()).st_ino:
            # Rotated (or created): the old file to its end, any whole file rotated past us
            # meanwhile, then the new one from its start.
            try:
                new: BinaryIO | None = path.open("rb")
            except FileNotFoundError:
                new = None
            if current is not None:
                out.write(current.read())
                new_inode = os.fstat(new.fileno()).st_ino if new is not None else None
                for missed in _rotated_past(path, os.fstat(current.fileno()).st_ino, new_inode):
                    out.write(missed)
                out.flush()
                current.close()
            current = new
            continue
        if st.st_size < current.tell():
            current.seek(0)  # truncated in place
            continue
        if st.st_size == current.tell():
            time.sleep(FOLLOW_POLL_S)
