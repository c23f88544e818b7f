"""The board segment: create, open, close, unlink, and the writers' stores.

The board is a plain file on tmpfs (``/dev/shm`` by default) mapped with ``mmap``.
We deliberately do not use ``multiprocessing.shared_memory``: on Python 3.11 it
registers even an attached segment with the resource tracker, which may unlink it
when the reader exits (CPython issue 82300). ``os.open`` + ``mmap`` involves no
tracker, so attaching to read can never disturb the segment, and costs ~25 us
instead of ~46 us.

Segments are named per supervisor instance (pid + process start ticks), so the
board left by a crashed supervisor can never block the next one; the name is
recorded in runtime.json, which is how any process finds it.

Writers use ``memoryview`` int64 stores (~35 ns each) rather than numpy (~160 ns),
so a worker heartbeat costs a clock read and two stores. Seqlock writers make the
counter odd, store, then make it even again; on x86-64 stores are not reordered
with other stores, and each store here is a separate C call the compiler cannot
merge, so a reader that sees the same even counter before and after its copy has
a consistent region.

Ownership: the supervisor writes the header and each row's lifecycle region; a
worker writes its own row's task region and heartbeat words. Before a new worker
process is started in a slot the supervisor resets that slot's worker region:
the previous owner is dead by then, so ownership passes, it is never shared.
"""

from __future__ import annotations

import errno
import math
import mmap
import os
import time

from statusboard import layout
from statusboard.errors import BoardClosed, BoardError, BoardLayoutError, BoardMissing
from statusboard.layout import H, R

_monotonic_ns = time.monotonic_ns

TYPE_CHECKING = False  # pathlib stays off the status path; see statusboard.probe
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    StrPath = str | os.PathLike[str]

_SHM_DIR_ENV = "POOLCTL_SHM_DIR"
SEGMENT_PREFIX = "poolctl-"


def shm_dir() -> Path:
    """Directory that holds board segments: $POOLCTL_SHM_DIR, else /dev/shm."""
    configured = os.environ.get(_SHM_DIR_ENV)
    if configured:
        from pathlib import Path

        return Path(configured)
    from pathlib import Path

    return Path("/dev/shm")


def segment_path(pool: str, pid: int, start_ticks: int) -> Path:
    """The segment of one supervisor instance: unique per (pid, process start)."""
    return shm_dir() / f"{SEGMENT_PREFIX}{os.getuid()}-{pool}-{pid}-{start_ticks}"


def segment_owner(name: str) -> tuple[int, int] | None:
    """(pid, start ticks) of the supervisor that made the segment called ``name``, if it is
    one of this uid's boards, else None.

    Parsed from the right: a pool name may itself contain '-' and digits (``chx-1``,
    ``pool-812-0``), but pid and ticks never do, so the last two fields are always they.
    """
    prefix = f"{SEGMENT_PREFIX}{os.getuid()}-"
    if not name.startswith(prefix):
        return None
    rest, _, ticks = name[len(prefix) :].rpartition("-")
    pool, _, pid = rest.rpartition("-")
    if not pool or not pid.isdigit() or not ticks.isdigit():
        return None
    return int(pid), int(ticks)


class Board:
    """A mapped board. ``create`` makes a new segment, ``open`` maps an existing one.

    ``close()`` unmaps (this process only); ``unlink()`` removes the name. Both are
    idempotent, and neither affects another process's mapping.
    """

    def __init__(
        self, path: StrPath, mapping: mmap.mmap, capacity: int, *, writable: bool, fd: int | None = None
    ) -> None:
        self.path = path
        self.capacity = capacity
        self.writable = writable
        self._mmap: mmap.mmap | None = mapping
        self.words = memoryview(mapping).cast("q")
        self.floats = memoryview(mapping).cast("d")
        # The creator keeps its fd: the board outlives its name (see publish) and its size
        # can be checked and restored (see size_ok). Readers and workers keep only the map.
        self.fd = fd
        self._identity: dict[str, int] = {}  # the header words create() wrote once

    # -- life cycle -------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: StrPath,
        capacity: int,
        *,
        supervisor_pid: int,
        supervisor_start_ticks: int,
        heartbeat_timeout_ns: int,
        workers_desired: int,
    ) -> Board:
        """Create a new segment at ``path`` (must not exist) and write its header.

        Its pages are allocated up front (posix_fallocate): on a tmpfs without room the
        first store into a sparse map would kill this process with SIGBUS, so a board that
        does not fit is a BoardError naming the space instead, and leaves nothing behind.
        """
        if not 1 <= capacity <= layout.MAX_CAPACITY:
            raise ValueError(f"capacity must be 1..{layout.MAX_CAPACITY}, got {capacity}")
        size = layout.board_bytes(capacity)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
            _allocate(fd, size, path)
            mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        board = cls(path, mapping, capacity, writable=True, fd=fd)
        now = time.monotonic_ns()
        board._identity = {
            "version": layout.VERSION,
            "capacity": capacity,
            "row_bytes": layout.ROW_BYTES,
            "supervisor_pid": supervisor_pid,
            "supervisor_start_ticks": supervisor_start_ticks,
            "heartbeat_timeout_ns": heartbeat_timeout_ns,
            "created_ns": now,
        }
        board.words[H["workers_desired"]] = workers_desired
        board._initialise(now)
        return board

    def _initialise(self, now_ns: int) -> None:
        """Write the identity header and empty rows; the magic last, so a reader that races
        this sees "not a board yet", never half a header."""
        w = self.words
        for name, value in self._identity.items():
            w[H[name]] = value
        w[H["supervisor_heartbeat_ns"]] = now_ns
        for slot in range(self.capacity):
            self.reset_worker_region(slot)
            base = layout.HEADER_WORDS + slot * layout.ROW_WORDS
            w[base + R["last_exit_code"]] = layout.NO_EXIT_CODE
        w[H["magic"]] = layout.MAGIC

    @classmethod
    def open(cls, path: StrPath, *, writable: bool = False) -> Board:
        """Map an existing segment, validating magic, version and size.

        Raises BoardMissing when the segment is gone, BoardLayoutError when it is
        not a board of this layout version.
        """
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise BoardMissing(f"board segment {path} does not exist") from None
        try:
            size = os.fstat(fd).st_size
            if size < layout.HEADER_BYTES:
                raise BoardLayoutError(
                    f"board segment {path} is {size} bytes, smaller than a header "
                    f"({layout.HEADER_BYTES} bytes)"
                )
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
        finally:
            os.close(fd)
        words = memoryview(mapping).cast("q")
        try:
            magic, version, capacity, row_bytes = words[0], words[1], words[2], words[3]
        finally:
            words.release()
        problem = _layout_problem(magic, version, capacity, row_bytes, size)
        if problem:
            mapping.close()
            raise BoardLayoutError(f"board segment {path}: {problem}")
        return cls(path, mapping, capacity, writable=writable)

    def close(self) -> None:
        """Unmap this process's view. Safe to call twice."""
        if self._mmap is None:
            return
        self.words.release()
        self.floats.release()
        try:
            self._mmap.close()
        except BufferError:
            # A numpy view made by a reader still points into the mapping; the
            # mapping is freed when that view is, so leaving it open is correct.
            pass
        self._mmap = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def unlink(self) -> None:
        """Remove the segment's name. Safe to call twice; mappings stay valid."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    # -- the creator's guards: the name and the size ---------------------------------

    @property
    def handle_path(self) -> str:
        """A path to this very board that does not depend on its name: the creator's kept fd
        under /proc (what new workers open, so a removed name never stops a replacement)."""
        if self.fd is None:
            return os.fspath(self.path)
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def published(self) -> bool:
        """Does the name still lead to this board? (A stat and an fstat.)"""
        if self.fd is None:
            return True
        try:
            there = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        mine = os.fstat(self.fd)
        return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)

    def publish(self) -> str:
        """Put the name back on this board (after logind's RemoveIPC= removed it); returns how.

        A hard link from the fd (linkat of /proc/self/fd/N with AT_SYMLINK_FOLLOW) works
        only while the inode still has a name somewhere: Linux refuses to link an inode
        whose link count fell to 0 (ENOENT), even one made with O_TMPFILE once it has been
        linked. So the usual case, the name removed, publishes a symlink to the kept fd,
        /proc/PID/fd/N, which any process of the same user opens as the board itself (the
        kernel follows it to the open file). Installed by rename, so a reader sees the old
        name or the new one, never none.
        """
        assert self.fd is not None
        path = os.fspath(self.path)
        directory, name = os.path.split(path)
        temp = os.path.join(directory, f".{name}.{os.getpid()}.publish")
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        proc_fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.link(str(self.fd), temp, src_dir_fd=proc_fds, follow_symlinks=True)
            how = "linked again"
        except FileNotFoundError:
            os.symlink(self.handle_path, temp)
            how = f"as a symlink to {self.handle_path}"
        finally:
            os.close(proc_fds)
        try:
            os.replace(temp, path)
        except BaseException:
            os.unlink(temp)
            raise
        return how

    def size_ok(self) -> bool:
        """Is the file still as big as the map? (One fstat.) A store past its end is SIGBUS."""
        return self.fd is None or os.fstat(self.fd).st_size >= layout.board_bytes(self.capacity)

    def restore_size(self) -> int:
        """Give a truncated board its size back and its identity header and empty rows;
        returns the size it had. The caller rewrites its lifecycle rows and header."""
        assert self.fd is not None
        was = os.fstat(self.fd).st_size
        size = layout.board_bytes(self.capacity)
        os.ftruncate(self.fd, size)
        try:
            _allocate(self.fd, size, self.path)
        except BoardError:
            pass  # the pages come back as they are touched; tmpfs had room a moment ago
        self._initialise(time.monotonic_ns())
        return was

    def seed_heartbeat(self, slot: int, now_ns: int) -> None:
        """A heartbeat on behalf of a live worker whose row was wiped (see restore_size)."""
        base = layout.HEADER_WORDS + slot * layout.ROW_WORDS
        self.words[base + R["heartbeat_ns"]] = now_ns
        self.words[base + R["beats"]] = 1

    @property
    def closed(self) -> bool:
        return self._mmap is None

    @property
    def buffer(self) -> mmap.mmap:
        if self._mmap is None:
            raise BoardClosed(f"board {self.path} is closed")
        return self._mmap

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- supervisor writes -----------------------------------------------

    def supervisor_beat(self, now_ns: int) -> None:
        self.words[H["supervisor_heartbeat_ns"]] = now_ns

    def set_header(self, **fields: int) -> None:
        """Update header fields under the header seqlock (pool_state, workers_desired ...)."""
        w = self.words
        seq = H["header_seq"]
        w[seq] += 1
        for name, value in fields.items():
            w[H[name]] = value
        w[seq] += 1

    def set_lifecycle(self, slot: int, **fields: int) -> None:
        """Update a row's lifecycle fields (pid, state, generation ...) under its seqlock."""
        w = self.words
        base = layout.HEADER_WORDS + slot * layout.ROW_WORDS
        seq = base + R["sup_seq"]
        w[seq] += 1
        for name, value in fields.items():
            w[base + R[name]] = value
        w[seq] += 1

    def reset_worker_region(self, slot: int) -> None:
        """Clear a slot's worker-owned words before a new worker process takes it."""
        w = self.words
        base = layout.HEADER_WORDS + slot * layout.ROW_WORDS
        seq = base + R["wk_seq"]
        # Odd, not +1: a worker killed between its two increments left the counter
        # odd, and +1/+1 would keep it odd (the row torn) for every later owner.
        w[seq] |= 1
        w[base + R["task_id"]] = layout.NO_TASK
        w[base + R["task_started_ns"]] = 0
        w[seq] += 1
        w[base + R["heartbeat_ns"]] = 0
        w[base + R["beats"]] = 0
        self.floats[base + R["progress"]] = math.nan

    def word(self, slot: int, name: str) -> int:
        """One int64 field of one row (a single atomic load)."""
        return int(self.words[layout.HEADER_WORDS + slot * layout.ROW_WORDS + R[name]])

    @property
    def owner(self) -> tuple[int, int]:
        """(supervisor pid, its start ticks): the instance this board belongs to."""
        return self.header_word("supervisor_pid"), self.header_word("supervisor_start_ticks")

    def header_word(self, name: str) -> int:
        return int(self.words[H[name]])


class WorkerRow:
    """The stores a worker makes into its own row. Kept indices, no lookups per call."""

    __slots__ = (
        "_beats",
        "_done",
        "_failed",
        "_floats",
        "_hb",
        "_progress",
        "_seq",
        "_stop",
        "_task",
        "_tstart",
        "_words",
        "heartbeat",
    )

    def __init__(self, board: Board, slot: int) -> None:
        base = layout.HEADER_WORDS + slot * layout.ROW_WORDS
        self._words = board.words
        self._floats = board.floats
        self._hb = base + R["heartbeat_ns"]
        self._beats = base + R["beats"]
        self._progress = base + R["progress"]
        self._seq = base + R["wk_seq"]
        self._task = base + R["task_id"]
        self._tstart = base + R["task_started_ns"]
        self._done = base + R["tasks_done"]
        self._failed = base + R["tasks_failed"]
        self._stop = base + R["stop_requested"]
        self.heartbeat = _heartbeat(self._words, self._floats, self._hb, self._beats, self._progress)

    def beat(self, now_ns: int, progress: float | None = None) -> None:
        """A heartbeat at an explicit time (tests and benchmarks step time)."""
        w = self._words
        w[self._hb] = now_ns
        w[self._beats] += 1
        if progress is not None:
            self._floats[self._progress] = progress

    def start_task(self, task_id: int, now_ns: int) -> None:
        w = self._words
        w[self._seq] += 1
        w[self._task] = task_id
        w[self._tstart] = now_ns
        w[self._seq] += 1

    def finish_task(self, ok: bool) -> None:
        w = self._words
        w[self._seq] += 1
        w[self._task] = layout.NO_TASK
        w[self._tstart] = 0
        if ok:
            w[self._done] += 1
        else:
            w[self._failed] += 1
        w[self._seq] += 1

    @property
    def stop_requested(self) -> bool:
        return bool(self._words[self._stop])


def _heartbeat(words: memoryview, floats: Any, hb: int, beats: int, progress_at: int) -> Callable[..., None]:
    """A heartbeat now: what WorkerContext.beat is bound to (a clock read, two stores).

    A closure, not a method: one attribute lookup fewer per beat. The count lives
    in the closure and is stored, not read-modified-written through the mapping
    (+= costs ~120 ns there, a store ~50 ns); the row has this one writer.
    """
    count = int(words[beats])

    def heartbeat(progress: float | None = None) -> None:
        nonlocal count
        count += 1
        words[hb] = _monotonic_ns()
        words[beats] = count
        if progress is not None:
            floats[progress_at] = progress

    return heartbeat


def _allocate(fd: int, size: int, path: StrPath) -> None:
    """Allocate the board's pages now; BoardError naming the room missing."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            return  # a filesystem without fallocate: the old, sparse behaviour
        directory = os.path.dirname(os.fspath(path)) or "."
        raise BoardError(
            f"no room for the board in {directory}: {size} bytes needed ({exc.strerror}); "
            f"free some space there, or set {_SHM_DIR_ENV} to a directory on a bigger tmpfs"
        ) from None


def _layout_problem(magic: int, version: int, capacity: int, row_bytes: int, size: int) -> str:
    if magic == 0:
        return "no board header yet (magic is zero: being created, or not a board)"
    if magic != layout.MAGIC:
        return f"wrong magic {magic:#x} (expected {layout.MAGIC:#x}): not a poolctl board"
    if version != layout.VERSION:
        return f"layout version {version}, this poolctl reads version {layout.VERSION}"
    if row_bytes != layout.ROW_BYTES:
        return f"row size {row_bytes} bytes, expected {layout.ROW_BYTES}"
    if not 1 <= capacity <= layout.MAX_CAPACITY:
        return f"capacity {capacity} out of range 1..{layout.MAX_CAPACITY}"
    if size != layout.board_bytes(capacity):
        return f"size {size} bytes does not match capacity {capacity} ({layout.board_bytes(capacity)} bytes)"
    return ""
