"""output.log: a detached pool's stdout/stderr (its workers' output), rotated by size.

Rotated like supervisor.log: at most ``max_bytes`` per file, ``output.log.1`` (newest)
to ``output.log.N`` kept, renamed into place, so the whole stays within
max_bytes x (backups + 1) however fast the workers print.

Why a pipe and a process of its own (a design note; issue 14 item 7). Workers write to
the fds they inherit, never through our code, so a rotating handler in the supervisor
never sees their writes. The options weighed:

- copytruncate by the supervisor at flush time: cheap, but the bound only holds per
  flush interval (a worker printing hundreds of MB a second outgrows any limit in one),
  every rotation copies the file, and what is written between the copy and the truncate
  is lost;
- the pipe read in the supervisor's own poll loop: a wake per chunk of output in the loop
  whose idle CPU we measure, and a slow disk would stall supervision; a reader *thread*
  would make the daemon multi-threaded, and it forks its workers;
- the pipe read by a small process of its own (chosen; s6-log's design): it sees every
  byte, so each file holds at most max_bytes and lines are kept whole where they fit, and
  the supervisor loop is untouched. It costs two small processes per detached pool
  (forked from the daemon: ~5 MB PSS each here).

The daemon (pool.ops.daemon, via ``start``), first thing, makes the pipe, forks the logger
with the read end as its stdin, and puts the write end on its own fds 1 and 2, which its
workers inherit. The logger is two processes, in the daemon's process group (so a kill of
the pool's group, `stop`'s last resort, takes them too):

- the keeper holds the read end and only waits: when the copier dies (SIGKILL, a bug) it
  starts another. The pipe never loses its last reader meanwhile, which matters: with no
  reader every worker's print would fail with EPIPE, a crash loop down to ``failed``;
- the copier reads the pipe and appends to output.log, rotating. If the keeper dies, the
  copier hears it (parent-death signal) and becomes the keeper, starting a new copier.

It ends at EOF, once the pipe's last writer is gone (the pool stopped), having written
everything; or, once the supervisor is dead, after draining what the pipe holds (a stray
descendant holding the pipe does not keep it alive). SIGTERM, SIGINT and SIGHUP are
ignored: they are commands for the supervisor, and the logger must outlive the
supervisor's stop to write its last words. SIGUSR1 asks it to drain and end now. The
daemon waits for it before exiting (``OutputLogger.finish``), so a stop that verified the
supervisor gone has the logger gone too (it knows by a pipe only the logger's processes
hold: EOF once the last has exited); SIGKILL by pid is the last resort. Idle, neither
process wakes: the keeper waits on a pidfd of the supervisor too. The logger is forked
twice, so it is not the daemon's child (see ``start``).

A write that fails (disk full, the runtime directory removed, output.log replaced by a
directory) never blocks or kills a writer: the copier keeps draining the pipe, drops what
it cannot write, retries, and says how much was lost in the file when it can write again.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from pathlib import Path

from pool.supervision import proctree
from statusboard.liveness import is_alive, start_ticks

OUTPUT_NAME = "output.log"
DEFAULT_MAX_BYTES = 10 << 20
DEFAULT_BACKUPS = 3
TITLE_PREFIX = "poolctl: output "  # + "[POOL]": what `ps` shows for the keeper and the copier
PIPE_BYTES = 1 << 20  # pipe capacity asked for: a burst waits there, not in a blocked print
READ_BYTES = 256 << 10
CARRY_S = 0.2  # copier: a partial line (no newline yet) is held back at most this long
CARRY_MAX = 64 << 10  # ... and only while shorter than this
DRAIN_S = 0.5  # asked to end, or the supervisor died: drain at most this long
CHECK_S = 1.0  # keeper: how often it checks that the supervisor lives
POLL_S = 0.1  # keeper, without pidfds: how often it looks for its copier's exit
REOPEN_S = 1.0  # copier: retry a failed open, and check output.log is still its file, this often
RESPAWN_S = 0.5  # a copier that died younger than this is replaced only after this pause
FINISH_S = 0.05  # daemon: wait this long for the logger to end by itself (EOF) before asking
CONFIRM_S = 2.0  # daemon: after SIGKILL to what is left of the logger, wait this long to see it gone
_PROMOTE = -1  # copier -> keeper: its keeper died
_FINISHED = 3  # copier exit code: ended on request (0 is EOF: everything written)


# -- the daemon's side ------------------------------------------------------------------------


class OutputLogger:
    """The daemon's handle on its logger."""

    def __init__(self, life: int, keeper: tuple[int, int], path: Path, pool: str) -> None:
        self.life = life  # read end of a pipe only the logger's processes hold open: EOF = all gone
        self.keeper = keeper  # (pid, start ticks) of the first keeper
        self.path = path
        self.pool = pool

    def finish(self) -> list[int]:
        """The pool has stopped: let the logger write what is left and end, then verify that
        nothing of it lives (SIGKILL by pid for what has not ended in time). Returns the pids
        still alive after that, which should be none. Call once, at the daemon's end."""
        _stdio_to(self.path)  # our own fds were writers too: the copier gets EOF once they go
        try:
            if self._ended(FINISH_S):
                return []
            # Something else holds the pipe: multiprocess's forkserver or resource tracker
            # (children of ours that inherited fds 1 and 2), or a stray. Every worker is gone,
            # so all they wrote is in the pipe: drain it and end now.
            if is_alive(*self.keeper):
                _signal(self.keeper[0], signal.SIGUSR1)
            else:  # the keeper was killed; its copier took over
                for pid in self._remains():
                    _signal(pid, signal.SIGUSR1)
            if self._ended(DRAIN_S + CHECK_S):
                return []
            for pid in self._remains():
                _signal(pid, signal.SIGKILL)
            self._ended(CONFIRM_S)
            return self._remains()
        finally:
            os.close(self.life)

    def _ended(self, timeout: float) -> bool:
        """Whether every logger process has exited (the life pipe's EOF), waiting ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.life], [], [], max(0.0, left))
            if ready and not os.read(self.life, 64):
                return True
            if left <= 0:
                return False

    def _remains(self) -> list[int]:
        """Live processes of our process group titled as this pool's logger."""
        title = f"{TITLE_PREFIX}[{self.pool}]".encode()
        found = []
        group = os.getpgrp()
        for pid, _ in proctree.group_members({group}).get(group, []):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if cmdline.startswith(title):
                found.append(pid)
        return found


def start(
    runtime_dir: Path, pool: str, *, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS
) -> OutputLogger | None:
    """In the daemon, before any worker exists: route fds 1 and 2 through a logger process.

    The logger is forked from the daemon, not exec'd: a new interpreter importing this
    module costs ~100 ms of CPU while the pool starts, a fork ~1 ms (its pages are the
    daemon's, shared until written). The daemon is single-threaded here, so forking is
    safe. Forked twice, so that it is not the daemon's child: the supervisor, a child
    subreaper, takes any child of its that is not a worker for an orphan of a dead worker
    and kills it (pool.supervision.containment). It stays in the daemon's process group.

    Returns None, with one line on stderr, when it cannot (no processes or fds left): the
    output then goes on to output.log unrotated, as the daemon's fds already point there.
    A log is never a reason not to run the pool.
    """
    supervisor = (os.getpid(), start_ticks(os.getpid()) or 0)
    try:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
    except OSError as exc:
        sys.stderr.write(f"poolctl: output.log will not be rotated: no pipe for its logger: {exc}\n")
        return None
    try:
        life_r, life_w = os.pipe2(os.O_CLOEXEC)
    except OSError as exc:
        os.close(read_end)
        os.close(write_end)
        sys.stderr.write(f"poolctl: output.log will not be rotated: no pipe for its logger: {exc}\n")
        return None
    try:
        import fcntl

        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (OSError, AttributeError):
        pass  # the default 64 KiB works too, with less slack for a slow disk
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # else the child would write our buffered text again
    try:
        middle = os.fork()
    except OSError as exc:
        for fd in (read_end, write_end, life_r, life_w):
            os.close(fd)
        sys.stderr.write(f"poolctl: output.log will not be rotated: cannot start its logger: {exc}\n")
        return None
    if middle == 0:
        # fds 0 = the pipe, 1 and 2 = output.log itself (its own last words), life_w kept.
        code = 70
        try:
            os.dup2(read_end, 0)
            _close_fds_except({0, 1, 2, life_w})  # the readiness pipe above all: the CLI waits for its EOF
            code = 0  # the middle process: gone at once, its child re-parented away from us
            keeper = os.fork()
            if keeper == 0:
                code = _logger_main(runtime_dir, pool, max_bytes, backups, supervisor)
            else:
                os.write(life_w, b"+%d\n" % keeper)  # the logger exists, and its pid
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    for fd in (read_end, life_w):
        os.close(fd)
    try:
        os.waitpid(middle, 0)
    except ChildProcessError:
        pass
    # "+PID" if the logger was forked; else EOF (its only holders are gone): then no reader
    # would ever drain the pipe, so the workers must not get it.
    said = b""
    while not said.endswith(b"\n") and (chunk := os.read(life_r, 32)):
        said += chunk
    if not said.startswith(b"+"):
        for fd in (write_end, life_r):
            os.close(fd)
        sys.stderr.write("poolctl: output.log will not be rotated: its logger could not be started\n")
        return None
    keeper = int(said[1:])
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    return OutputLogger(life_r, (keeper, start_ticks(keeper) or 0), runtime_dir / OUTPUT_NAME, pool)


def _close_fds_except(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        if int(name) not in keep:
            try:
                os.close(int(name))
            except OSError:
                pass  # the listing's own fd, gone already


def _stdio_to(path: Path) -> None:
    """Point fds 1 and 2 at ``path`` (appending), else at /dev/null: off the pipe."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except OSError:
        fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


# -- the logger process -----------------------------------------------------------------------


class _Flags:
    """Set by signal handlers (which only set these and wake the poll); read by the loops."""

    finish = False  # SIGUSR1: drain and end
    promote = False  # SIGUSR2, the copier's parent-death signal: its keeper died


class Sink:
    """output.log and its backups, written by size: each file holds at most ``max_bytes``.

    A chunk that does not fit is cut after its last newline that does and the rest goes to
    the next file, so lines stay whole across files (only a line longer than a whole file
    is cut, where the file is full). Failures are counted, never raised.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        if max_bytes < 1 or backups < 0:
            raise ValueError(f"max_bytes must be >= 1 and backups >= 0, got {max_bytes}, {backups}")
        self.path = str(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.fd = -1
        self.inode = -1
        self.size = 0
        self.dropped = 0  # bytes lost since the last successful write
        self.error = ""
        self._retry_at = 0.0
        self._checked_at = 0.0
        self._left = 0
        self._since_check = 0  # bytes written since output.log was last seen to be our file

    def write(self, data: bytes, now: float) -> None:
        """Append ``data``, rotating as needed; on failure count it as dropped."""
        if self.fd >= 0 and now >= self._checked_at + REOPEN_S:
            self._check_path(now)
        if self.fd < 0 and not self._open(now):
            self.dropped += len(data)
            return
        if self.dropped:
            lost, self.dropped = self.dropped, 0
            if not self._try(f"[poolctl: {lost} bytes of output lost: {self.error}]\n".encode()):
                self.dropped = lost + len(data)  # the note itself is not output
                return
        self._try(data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _try(self, data: bytes) -> bool:
        self._left = len(data)
        try:
            self._write_rotating(memoryview(data))
            return True
        except OSError as exc:
            self.dropped += self._left
            self.error = exc.strerror or str(exc)
            self.close()  # reopened on a later write, at most every REOPEN_S
            self._retry_at = time.monotonic() + REOPEN_S
            return False

    def _write_rotating(self, view: memoryview) -> None:
        while view:
            room = self.max_bytes - self.size
            if len(view) <= room:
                self._write_all(view)
                return
            cut = bytes(view[:room]).rfind(b"\n") + 1
            if not cut and self.size == 0:
                cut = room  # a line longer than a whole file: cut where the room ends
            if cut:
                self._write_all(view[:cut])
                view = view[cut:]
            self._rotate()

    def _write_all(self, view: memoryview) -> None:
        while view:
            n = os.write(self.fd, view)
            self.size += n
            self._since_check += n
            self._left -= n
            view = view[n:]

    def _rotate(self) -> None:
        """output.log -> .1 -> .2 ... (the oldest dropped), as RotatingFileHandler does; only
        if output.log is still the file we wrote (else someone else rotated or removed it)."""
        ours = self._is_ours()
        self.close()
        if ours and self.backups:
            for i in range(self.backups - 1, 0, -1):
                try:
                    os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
                except FileNotFoundError:
                    pass
            os.replace(self.path, f"{self.path}.1")
        self._open_now(truncate=ours and not self.backups)

    def _is_ours(self) -> bool:
        try:
            return os.stat(self.path).st_ino == self.inode
        except FileNotFoundError:
            return False

    def _check_path(self, now: float) -> None:
        """output.log removed, replaced, or the runtime directory re-created: write to the new
        one. What went into a removed file since the last look is counted as lost."""
        self._checked_at = now
        if not self._is_ours():
            try:
                removed = os.fstat(self.fd).st_nlink == 0
            except OSError:
                removed = True
            if removed and self._since_check:
                self.dropped += self._since_check
                self.error = "output.log was removed"
            self.close()
            self._retry_at = 0.0
        self._since_check = 0

    def _open(self, now: float) -> bool:
        if now < self._retry_at:
            return False
        try:
            self._open_now(truncate=False)
            return True
        except OSError as exc:
            self.error = exc.strerror or str(exc)
            self._retry_at = now + REOPEN_S
            return False

    def _open_now(self, *, truncate: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | (os.O_TRUNC if truncate else 0)
        fd = os.open(self.path, flags, 0o600)
        st = os.fstat(fd)
        self.fd, self.inode, self.size = fd, st.st_ino, st.st_size
        self._checked_at = time.monotonic()
        self._since_check = 0


def _install_signals() -> int:
    """Handlers that only set a flag, and a fresh wake pipe (one per process: a forked copier
    must not drain its keeper's wakes). Returns the wake pipe's read end."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(signum, signal.SIG_IGN)  # the supervisor's commands, not ours

    def finish(signum: int, frame: object) -> None:
        _Flags.finish = True

    def promote(signum: int, frame: object) -> None:
        _Flags.promote = True

    signal.signal(signal.SIGUSR1, finish)
    signal.signal(signal.SIGUSR2, promote)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    if old >= 0:
        os.close(old)
    return wake_r


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


class _Config:
    def __init__(self, sink: Sink, supervisor: tuple[int, int], supervisor_fd: int) -> None:
        self.sink = sink
        self.supervisor = supervisor  # (pid, start ticks)
        # A pidfd of the supervisor: readable once it has exited, so a keeper needs no
        # periodic look (-1 without pidfds: it looks every CHECK_S).
        self.supervisor_fd = supervisor_fd


def run(config: _Config, wake: int) -> int:
    """The keeper's loop: start a copier, wait for it, replace it when it dies. Returns the
    process's exit code. A promoted copier continues in this loop as the keeper."""
    while True:
        born = time.monotonic()
        keeper = os.getpid()
        copier = os.fork()
        if copier == 0:
            os.close(wake)
            _Flags.promote = False
            wake = _install_signals()
            try:
                code = _copier(config, keeper, wake)
            except BaseException:  # a bug, or an fd error: the keeper starts another copier
                import traceback

                traceback.print_exc()
                code = 70
            if code != _PROMOTE:
                os._exit(code)
            _Flags.promote = False  # a keeper now, in the loop below
            continue
        outcome = _keeper(config, copier, born, wake)
        if outcome is not None:
            return outcome


def _keeper(config: _Config, copier: int, born: float, wake: int) -> int | None:
    """Wait for the copier. Returns an exit code to end with, or None to start a new copier."""
    try:
        pidfd = os.pidfd_open(copier)
    except (OSError, AttributeError):
        pidfd = -1  # no pidfds here (Linux < 5.3): look every POLL_S
    asked = False
    kill_at: float | None = None
    try:
        while True:
            if not asked and (_Flags.finish or not is_alive(*config.supervisor)):
                _signal(copier, signal.SIGUSR1)  # drain what the pipe holds, then end
                asked = True
                kill_at = time.monotonic() + DRAIN_S + CHECK_S
            elif kill_at is not None and time.monotonic() >= kill_at:
                _signal(copier, signal.SIGKILL)
                kill_at = None
            watched = [pidfd, wake, -1 if asked else config.supervisor_fd]
            if kill_at is not None:
                timeout: float | None = max(0.0, kill_at - time.monotonic())
            else:
                timeout = None if asked or config.supervisor_fd >= 0 else CHECK_S
            if pidfd < 0:
                timeout = POLL_S if timeout is None else min(timeout, POLL_S)
            ready, _, _ = select.select([fd for fd in watched if fd >= 0], [], [], timeout)
            _drain(wake)
            found, status = os.waitpid(copier, os.WNOHANG) if pidfd < 0 or pidfd in ready else (0, 0)
            if found:
                code = os.waitstatus_to_exitcode(status)
                if code == 0 or asked or _Flags.finish:
                    return 0  # EOF, everything written; or it ended because we asked
                if time.monotonic() - born < RESPAWN_S:
                    time.sleep(RESPAWN_S)  # a copier that dies at once must not become a fork loop
                return None
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _copier(config: _Config, keeper: int, wake: int) -> int:
    """Copy the pipe (fd 0) to the sink until EOF (0), a request to end (_FINISHED), or the
    keeper's death (_PROMOTE: this process becomes the keeper)."""
    proctree.set_parent_death_signal(signal.SIGUSR2)
    sink = config.sink
    lines = _Lines(sink)
    poller = select.poll()
    poller.register(0, select.POLLIN)
    poller.register(wake, select.POLLIN)
    drain_until: float | None = None
    try:
        while True:
            if _Flags.promote or os.getppid() != keeper:
                return _PROMOTE
            if _Flags.finish and drain_until is None:
                drain_until = time.monotonic() + DRAIN_S
            if drain_until is None:
                # Blocks until output, EOF or a signal; a held-back partial line waits CARRY_S at most.
                events = poller.poll(int(CARRY_S * 1000) if lines.carry else None)
                if not events:
                    lines.flush()
            else:
                events = poller.poll(0)
                if time.monotonic() >= drain_until or not any(fd == 0 for fd, _ in events):
                    return _FINISHED  # drained what was there, or out of time
            if any(fd == wake for fd, _ in events):
                _drain(wake)
            if any(fd == 0 for fd, _ in events):
                data = os.read(0, READ_BYTES)
                if not data:
                    return 0
                lines.write(data)
    finally:
        lines.flush()
        sink.close()


class _Lines:
    """Hands the sink whole lines where it can, so a rotation never splits one: the partial
    line at the end of a read (pipes split writes anywhere, and Python's stdout to a pipe is
    block-buffered) is held back until its newline comes, CARRY_S passes without more output
    (a prompt or a progress bar still shows), or it outgrows CARRY_MAX."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.carry = b""

    def write(self, data: bytes) -> None:
        if self.carry:
            data, self.carry = self.carry + data, b""
        end = data.rfind(b"\n") + 1
        if len(data) - end > CARRY_MAX:
            end = len(data)
        if end:
            self.sink.write(data[:end] if end < len(data) else data, time.monotonic())
        self.carry = data[end:]

    def flush(self) -> None:
        if self.carry:
            data, self.carry = self.carry, b""
            self.sink.write(data, time.monotonic())


def _logger_main(
    runtime_dir: Path, pool: str, max_bytes: int, backups: int, supervisor: tuple[int, int]
) -> int:
    """The logger process (the first keeper), forked from the daemon or run by ``main``."""
    from pool.integrations.titles import set_title

    set_title(f"{TITLE_PREFIX}[{pool}]")
    wake = _install_signals()
    try:
        supervisor_fd = os.pidfd_open(supervisor[0])
    except (OSError, AttributeError):
        supervisor_fd = -1
    if not is_alive(*supervisor):
        _Flags.finish = True  # gone already (or the pidfd names a newer process): drain and end
    sink = Sink(Path(runtime_dir) / OUTPUT_NAME, max_bytes, backups)
    return run(_Config(sink, supervisor, supervisor_fd), wake)


def main(argv: list[str]) -> int:
    """``python -m pool.ops.output_log RUNTIME_DIR POOL MAX_BYTES BACKUPS SUPERVISOR_PID TICKS``,
    the pipe on stdin: the logger as a program of its own (tests drive it so)."""
    directory, pool, max_bytes, backups, pid, ticks = argv
    code = _logger_main(Path(directory), pool, int(max_bytes), int(backups), (int(pid), int(ticks)))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # a forked copier or promoted keeper must not run this interpreter's exit


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
