"""Issue 14 item 7: a detached pool's worker output (output.log) is rotated by size.

A worker printing 100 MB leaves output.log plus its backups within max_bytes x (backups + 1),
the pool serves on, and `poolctl logs --output` shows the latest lines. The output logger
(pool/ops/output_log.py) is also driven alone, through a pipe, for the rotation's edges and
its faults: its copier or keeper SIGKILLed (the writers never see a broken pipe), the
file made unwritable (the writers are never blocked; the loss is said in the file),
supervisor death (it ends on its own), and `stop` (nothing of it outlives the pool).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from cli_targets import POOLCTL, TESTS_DIR, Cli, wait_for

from pool.ops.output_log import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, OUTPUT_NAME, TITLE_PREFIX
from statusboard.liveness import start_ticks

MB = 1 << 20

# Slot 0 prints TOTAL_MB of 100-byte numbered lines in 1 MiB chunks as fast as it can, then a
# marker line, then keeps serving (beats) and prints one line per cue file it finds.
CHATTY = """
import os, sys

TOTAL_MB = 100

def work(ctx):
    if ctx.slot == 0 or ctx.generation > 1:
        out = sys.stdout.buffer
        line = 0
        for _ in range(TOTAL_MB):
            chunk = bytearray()
            while len(chunk) < (1 << 20):
                chunk += b"line %09d " % line + b"x" * 84 + b"\\n"
                line += 1
            out.write(chunk)
            out.flush()
            ctx.beat()
        out.write(b"done printing %d lines (generation %d)\\n" % (line, ctx.generation))
        out.flush()
    while not ctx.wait(0.05):
        ctx.beat()
"""


def output_files(directory: Path) -> dict[str, int]:
    """output.log and its backups: name -> size."""
    return {p.name: p.stat().st_size for p in directory.glob(OUTPUT_NAME + "*")}


def logger_processes(pool: str) -> list[psutil.Process]:
    """Live processes titled as this pool's output logger."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if " ".join(proc.info["cmdline"] or []).startswith(f"{TITLE_PREFIX}[{pool}]"):
            found.append(proc)
    return found


@pytest.fixture
def chatty(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    (app / "chatty.py").write_text(CHATTY)
    return app / "chatty.py"


def test_a_worker_printing_100mb_leaves_bounded_rotated_output(cli: Cli, chatty: Path) -> None:
    cli.start(f"{chatty}:work", workers=1)
    pid = cli.status()[1]["workers"][0]["pid"]

    def printed() -> bool:
        result = cli("logs", "--output", "-n", "3")
        return result.code == 0 and "done printing" in result.out

    wait_for(printed, 120, "the worker's last line in `poolctl logs --output`")
    files = output_files(cli.directory)
    assert sum(files.values()) <= DEFAULT_MAX_BYTES * (DEFAULT_BACKUPS + 1), files
    assert set(files) == {OUTPUT_NAME, *(f"{OUTPUT_NAME}.{i}" for i in range(1, DEFAULT_BACKUPS + 1))}, files
    assert all(size <= DEFAULT_MAX_BYTES for size in files.values()), files

    # The latest lines, whole and in order, end with the marker.
    last = cli.ok("logs", "--output", "-n", "3").out.splitlines()
    assert last[-1].startswith("done printing") and last[-1].endswith("(generation 1)"), last
    numbers = [int(line.split()[1]) for line in last[:-1]]
    assert numbers == sorted(numbers) and numbers[1] == numbers[0] + 1, last

    # The pool still serves: the same worker, running, never restarted.
    code, document = cli.status()
    assert code == 0, document
    worker = document["workers"][0]
    assert (worker["pid"], worker["restarts"], worker["state"]) == (pid, 0, "running")

    # The logger is this pool's, and a stop leaves nothing of it (verified).
    assert logger_processes(cli.name), "no output logger runs for the detached pool"
    stopped = cli("stop")
    assert stopped.code == 0, str(stopped)
    assert not logger_processes(cli.name)


def test_the_logger_is_not_taken_for_an_orphan_of_a_dead_worker(cli: Cli, chatty: Path) -> None:
    """The daemon is a child subreaper that kills children of its which are not workers
    (pool.containment: orphans of dead workers). Its logger is such a child, and must live:
    past the periodic sweep and a worker's death, the same logger copies on."""
    chatty.write_text(CHATTY.replace("TOTAL_MB = 100", "TOTAL_MB = 1"))
    cli.start(f"{chatty}:work", workers=2)
    wait_for(lambda: len(logger_processes(cli.name)) == 2, 10, "the keeper and its copier")
    before = sorted(p.pid for p in logger_processes(cli.name))
    victim = cli.status()[1]["workers"][1]
    os.kill(victim["pid"], signal.SIGKILL)  # a worker exit: the supervisor looks for orphans
    wait_for(
        lambda: (w := cli.status()[1]["workers"][1])["pid"] != victim["pid"] and w["state"] == "running",
        20,
        "worker 1 replaced",
    )
    sweeps = cli.log_lines()  # and the periodic sweep (every 5 s), twice over
    deadline = time.monotonic() + 11
    while time.monotonic() < deadline:
        assert sorted(p.pid for p in logger_processes(cli.name)) == before, cli.log_lines()[len(sweeps) :]
        time.sleep(0.5)
    # Worker 1's replacement printed its own 1 MB through the same logger.
    last = cli("logs", "--output", "-n", "1").out
    assert last.startswith("done printing") and last.endswith("(generation 2)\n"), last

    # The keeper SIGKILLed: its copier, re-parented to the daemon, becomes the keeper; it too
    # is the daemon's helper, not an orphan. The next replacement's output still arrives.
    pair = [p.pid for p in logger_processes(cli.name)]
    (keeper,) = [p.pid for p in logger_processes(cli.name) if p.ppid() not in pair]
    os.kill(keeper, signal.SIGKILL)
    wait_for(lambda: len([p for p in logger_processes(cli.name) if p.pid != keeper]) == 2, 10, "a new copier")
    after = sorted(p.pid for p in logger_processes(cli.name))
    victim = cli.status()[1]["workers"][1]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_for(lambda: cli.status()[1]["workers"][1]["generation"] == 3, 20, "worker 1's third generation")
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        assert sorted(p.pid for p in logger_processes(cli.name)) == after
        time.sleep(0.5)
    wait_for(
        lambda: cli("logs", "--output", "-n", "1").out.endswith("(generation 3)\n"), 20, "generation 3's line"
    )
    assert cli("stop").code == 0
    assert not logger_processes(cli.name)


def test_the_supervisor_killed_takes_the_logger_with_it(cli: Cli) -> None:
    cli.start(workers=2)
    wait_for(lambda: len(logger_processes(cli.name)) == 2, 10, "the keeper and its copier")
    pid, _ = cli.supervisor()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not logger_processes(cli.name), 15, "the output logger to end on its own")


# -- the logger alone, through a pipe ---------------------------------------------------------


NO_PIDFDS = "import os, sys; del os.pidfd_open; from pool.ops.output_log import main; main(sys.argv[1:])"


class Logger:
    """``python -m pool.ops.output_log`` on a pipe, as the daemon starts it (own process group)."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        backups: int,
        supervisor: int | None = None,
        pidfds: bool = True,
    ):
        self.directory = directory
        sup = os.getpid() if supervisor is None else supervisor
        read_end, self.fd = os.pipe()
        self.pool = f"t{os.getpid()}-{time.monotonic_ns()}"
        # Without pidfds (Linux < 5.3): os.pidfd_open removed before the logger runs.
        program = ["-m", "pool.ops.output_log"] if pidfds else ["-c", NO_PIDFDS]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *program,
                str(directory),
                self.pool,
                str(max_bytes),
                str(backups),
                str(sup),
                str(start_ticks(sup) or 0),
            ],
            stdin=read_end,
            process_group=0,
            cwd=TESTS_DIR,
        )
        os.close(read_end)
        wait_for(lambda: self.copier() is not None, 10, "the logger's copier")

    def copier(self) -> int | None:
        """The copier: the keeper's child (there is exactly one while it runs)."""
        try:
            children = psutil.Process(self.keeper).children()
        except psutil.Error:
            return None
        live = [c.pid for c in children if c.status() != psutil.STATUS_ZOMBIE]
        return live[0] if len(live) == 1 else None

    @property
    def keeper(self) -> int:
        return self.proc.pid

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def group(self) -> list[int]:
        members = []
        for proc in psutil.process_iter(["status"]):
            try:
                if os.getpgid(proc.pid) == self.keeper and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    members.append(proc.pid)
            except (ProcessLookupError, psutil.Error):
                pass
        return members

    def kill(self) -> None:
        self.close()
        try:
            os.killpg(self.keeper, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


@pytest.fixture
def logger(runtime_dir: Path) -> Iterator[Callable[..., Logger]]:
    made: list[Logger] = []

    def make(**kwargs: Any) -> Logger:
        made.append(Logger(runtime_dir, **kwargs))
        return made[-1]

    try:
        yield make
    finally:
        for one in made:
            one.kill()


def numbered(start: int, stop: int) -> bytes:
    """Lines of varying length (10 to 90 bytes), each naming its number."""
    return b"".join(b"%d %s\n" % (i, b"-" * (i * 7 % 80)) for i in range(start, stop))


def retained(directory: Path, backups: int) -> list[bytes]:
    """Every line kept, oldest file first."""
    names = [f"{OUTPUT_NAME}.{i}" for i in range(backups, 0, -1)] + [OUTPUT_NAME]
    data = b"".join((directory / n).read_bytes() for n in names if (directory / n).exists())
    return data.splitlines(keepends=True)


def test_rotation_keeps_each_file_within_the_limit_and_lines_whole(
    logger: Callable[..., Logger], runtime_dir: Path
) -> None:
    one = logger(max_bytes=1000, backups=2)
    one.write(numbered(0, 5000))
    one.close()
    assert one.proc.wait(timeout=30) == 0  # EOF: everything written, then it ends
    assert not one.group()
    files = output_files(runtime_dir)
    assert set(files) == {OUTPUT_NAME, f"{OUTPUT_NAME}.1", f"{OUTPUT_NAME}.2"}, files
    assert all(size <= 1000 for size in files.values()), files
    for name in files:
        assert (runtime_dir / name).read_bytes().endswith(b"\n"), f"{name} ends mid-line"
    lines = retained(runtime_dir, 2)
    numbers = [int(line.split()[0]) for line in lines]
    assert numbers == list(range(numbers[0], 5000)), "the kept lines are not the last ones, in order"
    assert lines == numbered(numbers[0], 5000).splitlines(keepends=True)  # whole lines, unchanged
    assert sum(files.values()) > 2 * 900  # and it keeps about as much as it may


def test_a_line_longer_than_the_limit_is_cut_not_kept_whole(
    logger: Callable[..., Logger], runtime_dir: Path
) -> None:
    one = logger(max_bytes=100, backups=1)
    one.write(b"a" * 250 + b"\n")
    one.close()
    assert one.proc.wait(timeout=30) == 0
    files = output_files(runtime_dir)
    assert all(size <= 100 for size in files.values()), files


@pytest.mark.parametrize("pidfds", [True, False], ids=["pidfds", "no-pidfds"])
def test_a_killed_copier_is_replaced_and_writers_never_see_a_broken_pipe(
    logger: Callable[..., Logger], runtime_dir: Path, pidfds: bool
) -> None:
    one = logger(max_bytes=10 * MB, backups=1, pidfds=pidfds)
    one.write(b"before\n")
    first = one.copier()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: one.copier() not in (None, first), 10, "a new copier")
    one.write(b"after the copier died\n")  # would raise BrokenPipeError with no reader left
    wait_for(lambda: b"after the copier died" in _read(runtime_dir / OUTPUT_NAME), 10, "the line")

    # The keeper killed: its copier becomes the keeper and starts a copier of its own.
    survivor = one.copier()
    os.kill(one.keeper, signal.SIGKILL)
    one.proc.wait(timeout=10)
    wait_for(
        lambda: [p.pid for p in psutil.Process(survivor).children() if p.status() != "zombie"],
        10,
        "the promoted keeper's copier",
    )
    one.write(b"after the keeper died\n")
    wait_for(lambda: b"after the keeper died" in _read(runtime_dir / OUTPUT_NAME), 10, "the line")
    one.close()
    wait_for(lambda: not one.group(), 10, "the logger to end at EOF")


def test_an_unwritable_output_log_never_blocks_the_writers(
    logger: Callable[..., Logger], runtime_dir: Path
) -> None:
    (runtime_dir / OUTPUT_NAME).mkdir()  # open() fails with EISDIR
    one = logger(max_bytes=10 * MB, backups=1)
    writer = threading.Thread(target=one.write, args=(b"y" * (8 * MB),))
    writer.start()
    writer.join(timeout=60)
    assert not writer.is_alive(), "a write into the pipe blocked while output.log was unwritable"
    (runtime_dir / OUTPUT_NAME).rmdir()
    deadline = time.monotonic() + 30
    while b"back again" not in _read(runtime_dir / OUTPUT_NAME):
        assert time.monotonic() < deadline, _read(runtime_dir / OUTPUT_NAME)[:300]
        one.write(b"back again\n")  # retried at most every second: write until one lands
        time.sleep(0.2)
    text = _read(runtime_dir / OUTPUT_NAME)
    assert text.startswith(b"[poolctl: "), text[:200]
    assert b"bytes of output lost: Is a directory]" in text.splitlines()[0], text[:200]
    lost = int(text.split()[1])
    assert lost >= 8 * MB


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return b""


def test_the_logger_ends_when_its_supervisor_dies_even_if_the_pipe_stays_open(
    logger: Callable[..., Logger], spawn: Any
) -> None:
    fake = spawn.python("import time; time.sleep(600)")
    wait_for(lambda: start_ticks(fake.pid), 10, "the fake supervisor")
    one = logger(max_bytes=MB, backups=1, supervisor=fake.pid)
    one.write(b"last words\n")
    fake.kill()
    fake.wait(timeout=10)
    # The test still holds the pipe's write end (a stray descendant would): no EOF comes.
    assert one.proc.wait(timeout=15) == 0
    assert not one.group()


# -- poolctl logs --output ----------------------------------------------------------------------


def test_logs_output_reads_into_the_backups_after_a_rotation(runtime_dir: Path) -> None:
    (runtime_dir / f"{OUTPUT_NAME}.1").write_bytes(numbered(0, 10))
    (runtime_dir / OUTPUT_NAME).write_bytes(numbered(10, 12))
    result = run_logs(runtime_dir, "-n", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout == numbered(7, 12)


def test_logs_output_of_a_pool_without_output(runtime_dir: Path) -> None:
    result = run_logs(runtime_dir)
    assert result.returncode == 1
    assert result.stderr.decode().count("\n") == 1 and "no worker output at" in result.stderr.decode()


def run_logs(directory: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [POOLCTL, "--runtime-dir", str(directory), "logs", "--output", *args],
        capture_output=True,
        timeout=30,
        cwd=TESTS_DIR,
    )


def rotate(path: Path, backups: int) -> None:
    for i in range(backups - 1, 0, -1):
        if Path(f"{path}.{i}").exists():
            os.replace(f"{path}.{i}", f"{path}.{i + 1}")
    os.replace(path, f"{path}.1")


def test_logs_output_follow_misses_nothing_across_rotations(
    runtime_dir: Path, spawn: Any, read_line: Callable[..., str]
) -> None:
    path = runtime_dir / OUTPUT_NAME
    path.write_bytes(b"old line\n")
    follower = spawn([POOLCTL, "--runtime-dir", str(runtime_dir), "logs", "--output", "-f", "-n", "1"])
    assert read_line(follower) == "old line"
    expected = []
    for rotation in range(3):
        lines = [f"r{rotation} line {i}" for i in range(50)]
        with path.open("ab") as f:
            for line in lines[:25]:
                f.write(line.encode() + b"\n")
        time.sleep(0.1)  # not an assertion: the follower may or may not have read these yet
        with path.open("ab") as f:
            for line in lines[25:]:
                f.write(line.encode() + b"\n")
        rotate(path, backups=3)  # as the logger does, right after the last write
        path.write_bytes(b"")
        expected += lines
    with path.open("ab") as f:
        f.write(b"the end\n")
    expected.append("the end")
    got = [read_line(follower, timeout=15) for _ in expected]
    assert got == expected
    os.kill(follower.pid, signal.SIGINT)
    assert follower.wait(timeout=10) == 0


# -- the daemon's finish: a stray holder of the pipe, a killed keeper ------------------------------

FINISHER = """
import json, os, signal, sys, time
from pathlib import Path
from pool.ops import output_log

directory, pool, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
logger = output_log.start(directory, pool)  # this process plays the daemon
print("hello from the daemon", flush=True)  # through the pipe now
stray = os.fork()
if stray == 0:
    time.sleep(600)  # holds fds 1 and 2, the pipe, as an escaped descendant would
    os._exit(0)


def parent(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])


def wait_for_two(without: int = 0) -> list[int]:
    deadline = time.monotonic() + 20
    while len(found := [p for p in logger._remains() if p != without]) != 2:
        assert time.monotonic() < deadline, logger._remains()
        time.sleep(0.01)
    return found


if mode == "keeper-killed":
    pair = wait_for_two()  # the keeper and its copier
    (keeper,) = [p for p in pair if parent(p) not in pair]
    os.kill(keeper, signal.SIGKILL)
    wait_for_two(without=keeper)  # the copier, promoted to keeper, and its own new copier
left = logger.finish()
os.kill(stray, signal.SIGKILL)
os.waitpid(stray, 0)
(directory / "result.json").write_text(json.dumps({"left": left}))
"""


@pytest.mark.parametrize("mode", ["stray-holder", "keeper-killed"])
def test_finish_leaves_nothing_of_the_logger(runtime_dir: Path, spawn: Any, mode: str) -> None:
    pool = f"fin{os.getpid()}{mode[0]}"
    daemon = spawn.python(FINISHER, runtime_dir, pool, mode, process_group=0, cwd=TESTS_DIR)
    assert daemon.wait(timeout=60) == 0, _read(runtime_dir / OUTPUT_NAME)[-3000:].decode()
    result = json.loads((runtime_dir / "result.json").read_text())
    assert result["left"] == [], result
    assert not logger_processes(pool)
    assert b"hello from the daemon\n" in _read(runtime_dir / OUTPUT_NAME)


TICKER = """
def work(ctx):
    n = 0
    while not ctx.wait(0.05):
        ctx.beat()
        if ctx.slot == 0:
            print("tick", n, flush=True)
            n += 1
"""


def test_output_resumes_in_a_recreated_runtime_directory(cli: Cli, tmp_path: Path) -> None:
    """rm -rf of the runtime directory (logind at logout): the supervisor re-creates it
    (issue 14 item 3), and the logger writes a new output.log there, saying what was lost."""
    app = tmp_path / "ticker.py"
    app.write_text(TICKER)
    cli.start(f"{app}:work", "--flush-interval", "1", workers=1)
    wait_for(lambda: b"tick 3\n" in _read(cli.directory / OUTPUT_NAME), 20, "the first ticks")
    shutil.rmtree(cli.directory)
    wait_for(lambda: b"tick" in _read(cli.directory / OUTPUT_NAME), 30, "ticks in the new output.log")
    text = _read(cli.directory / OUTPUT_NAME)
    # Lost: what went into the removed file since the logger last looked, or what came while
    # there was no directory to write to.
    note = rb"\[poolctl: \d+ bytes of output lost: (output.log was removed|No such file or directory)\]\n"
    assert re.match(note, text), text[:200]
    assert cli.status()[0] == 0
    assert cli("stop").code == 0


NO_FORK_FOR_THE_LOGGER = """
import errno, os, sys
from pathlib import Path
from pool.ops import output_log

real_fork, calls = os.fork, []


def fork():
    calls.append(1)
    if len(calls) == 2:  # the middle process's fork of the logger itself
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
    return real_fork()


os.fork = fork
logger = output_log.start(Path(sys.argv[1]), sys.argv[2])
print("logger", logger, flush=True)
print("still writing", flush=True)
"""


def test_a_logger_that_cannot_start_leaves_the_output_where_it_was(runtime_dir: Path, spawn: Any) -> None:
    """No logger (the process limit, say): the daemon's fds are not handed a pipe nobody
    reads (every print would fail with EPIPE); the output goes on where it went."""
    daemon = spawn.python(NO_FORK_FOR_THE_LOGGER, runtime_dir, "nofork", cwd=TESTS_DIR)
    out, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, err.decode()
    assert out.decode().splitlines() == ["logger None", "still writing"], out
    assert "output.log will not be rotated: its logger could not be started" in err.decode(), err


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_stop_ends_the_logger_though_multiprocess_helpers_hold_the_pipe(
    cli: Cli, tmp_path: Path, method: str
) -> None:
    """multiprocess's forkserver and resource tracker inherit the daemon's fds 1 and 2 and
    outlive the workers, so no EOF comes: the daemon asks the logger to drain and end."""
    app = tmp_path / "ticker.py"
    app.write_text(TICKER)
    cli.start(f"{app}:work", "--start-method", method, workers=1)
    wait_for(lambda: b"tick 3\n" in _read(cli.directory / OUTPUT_NAME), 30, "the first ticks")
    assert len(logger_processes(cli.name)) == 2
    assert cli("stop").code == 0
    assert not logger_processes(cli.name)
    assert b"tick 3\n" in _read(cli.directory / OUTPUT_NAME)
