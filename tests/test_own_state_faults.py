"""Faults in the pool's own state (issue 14, items 3 and 5): runtime.json, its directory,
the log and the board file are observations of the pool, never a reason to kill it.

Each test takes one of them away from a live detached pool the way the issue reproduced it
(a full tmpfs, ``rm -rf``, runtime.json replaced by a directory, the board file deleted or
truncated, /dev/shm too small) and then checks what a user relies on: the supervisor still
supervises (a SIGKILLed worker is replaced), ``status`` tells the truth, and ``stop`` exits 0
only with nothing left running (every pid verified).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from cli_targets import FAST, Cli, alive, lock_holders, wait_for

from pool.supervision.own_state import RateLimitedLog
from statusboard.liveness import start_ticks

pytestmark = pytest.mark.timeout(120)
FLUSH = ("--flush-interval", "0.3")


# -- helpers ------------------------------------------------------------------------------------


def pool_pids(supervisor: int) -> list[tuple[int, int | None]]:
    """The supervisor and every live descendant of it, by (pid, start ticks)."""
    found = [(supervisor, start_ticks(supervisor))]
    try:
        found += [(p.pid, start_ticks(p.pid)) for p in psutil.Process(supervisor).children(recursive=True)]
    except psutil.Error:
        pass
    return [(pid, ticks) for pid, ticks in found if ticks is not None]


def running(cli: Cli, workers: int) -> dict[str, Any] | None:
    code, document = cli.status()
    if code == 0 and len(document["workers"]) == workers:
        return document
    return None


def kill_one_worker_and_see_it_replaced(cli: Cli, workers: int) -> None:
    """SIGKILL worker 0; `status` must come back to running with a new pid in slot 0."""
    document = wait_for(lambda: running(cli, workers), 30, "the pool running before the kill")
    victim = next(w for w in document["workers"] if w["slot"] == 0)
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced() -> bool:
        now = running(cli, workers)
        if now is None:
            return False
        row = next(w for w in now["workers"] if w["slot"] == 0)
        return row["pid"] != victim["pid"] and row["state"] == "running" and row["healthy"]

    wait_for(replaced, 30, f"worker 0 (pid {victim['pid']}) replaced by a running worker")


def stop_and_verify(cli: Cli) -> None:
    supervisor, _ = cli.supervisor()
    everything = pool_pids(supervisor)
    result = cli("stop")
    assert result.code == 0, str(result)
    assert "internal error" not in result.err, str(result)
    assert len(result.err_lines) <= 1, str(result)
    assert result.out.startswith(f"pool {cli.name}: stopped"), str(result)
    still = [pid for pid, ticks in everything if alive(pid, ticks)]
    assert not still, f"stop exited 0 but these still run: {still}\n{result}"


def log_text(directory: Path) -> str:
    try:
        return (directory / "supervisor.log").read_text(errors="replace")
    except OSError:
        return ""


# -- a tiny tmpfs --------------------------------------------------------------------------------


def _mount_tmpfs(path: Path, size: str, mode: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")


def _unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def tiny_runtime_dir(runtime_dir: Path) -> Iterator[Path]:
    """The pool's runtime directory on a 256 KiB tmpfs (mounted over the fixture's directory).
    Requested before ``cli``, so it is unmounted after the pool is killed."""
    _mount_tmpfs(runtime_dir, "256k", "0700")
    try:
        yield runtime_dir
    finally:
        _unmount(runtime_dir)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; returns it."""
    filler = directory / "filler"
    chunk = b"\0" * 4096
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    finally:
        os.close(fd)
    return filler


# -- item 3: runtime.json and its directory ------------------------------------------------------


def test_full_disk_is_logged_and_retried_and_stop_still_works(tiny_runtime_dir: Path, cli: Cli) -> None:
    cli.start("cli_targets:steady", *FLUSH, workers=2)
    filler = fill(tiny_runtime_dir)
    # A kill dirties the state: the supervisor must flush, fail (ENOSPC), and go on supervising.
    kill_one_worker_and_see_it_replaced(cli, 2)
    kill_one_worker_and_see_it_replaced(cli, 2)
    supervisor, ticks = cli.supervisor()
    assert alive(supervisor, ticks)

    filler.unlink()  # room again: the next flush succeeds and says it recovered
    wait_for(
        lambda: "written again" in log_text(tiny_runtime_dir),
        30,
        "the log saying runtime.json is written again",
    )
    assert "No space left on device" in log_text(tiny_runtime_dir)
    wait_for(lambda: running(cli, 2) is not None, 30, "status running after the disk had room again")

    fill(tiny_runtime_dir)  # and `stop` on a full disk
    stop_and_verify(cli)


def test_runtime_dir_removed_is_recreated_with_lock_log_and_file(cli: Cli) -> None:
    cli.start("cli_targets:steady", *FLUSH, workers=2)
    supervisor, _ = cli.supervisor()
    shutil.rmtree(cli.directory)

    def back() -> bool:
        return (
            (cli.directory / "runtime.json").exists()
            and lock_holders(cli.directory / "supervisor.lock") == {supervisor}
            and running(cli, 2) is not None
        )

    wait_for(back, 30, "the runtime directory re-created with the supervisor holding its lock")
    assert "re-created" in log_text(cli.directory), log_text(cli.directory)
    assert oct(os.stat(cli.directory).st_mode & 0o777) == oct(0o700)
    kill_one_worker_and_see_it_replaced(cli, 2)
    stop_and_verify(cli)


def test_runtime_json_replaced_by_a_directory(cli: Cli) -> None:
    cli.start("cli_targets:steady", *FLUSH, workers=2)
    path = cli.directory / "runtime.json"
    path.unlink()
    path.mkdir()

    wait_for(lambda: path.is_file() and running(cli, 2) is not None, 30, "runtime.json a readable file again")
    assert "was a directory" in log_text(cli.directory), log_text(cli.directory)
    kill_one_worker_and_see_it_replaced(cli, 2)
    stop_and_verify(cli)


def test_runtime_dir_taken_by_another_lock_holder_meanwhile(
    cli: Cli, tmp_path: Path, lock_holder: Callable[[Path], Any]
) -> None:
    """The directory vanishes and someone else (another supervisor) makes it and holds its lock
    first: the pool must not write there, must say so loudly, and must keep supervising."""
    cli.start("cli_targets:steady", *FLUSH, workers=2)
    supervisor, ticks = cli.supervisor()
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    holder = lock_holder(other)
    old = tmp_path / "run.old"
    os.rename(cli.directory, old)  # the old directory keeps the supervisor's open log
    os.rename(other, cli.directory)

    wait_for(lambda: "held by another process" in log_text(old), 30, "the loud log line")
    assert not (cli.directory / "runtime.json").exists()
    assert not (cli.directory / "supervisor.log").exists()
    before = {p.pid for p in psutil.Process(supervisor).children()}
    victim = min(before)
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        now = {p.pid for p in psutil.Process(supervisor).children() if p.status() != psutil.STATUS_ZOMBIE}
        return len(now - before) == 1 and victim not in now

    wait_for(replaced, 30, "the killed worker replaced")
    everything = pool_pids(supervisor)
    os.kill(supervisor, signal.SIGTERM)  # the CLI cannot reach it any more: a signal can
    wait_for(lambda: not [p for p, t in everything if alive(p, t)], 30, "every process of the pool gone")
    assert not alive(supervisor, ticks)
    holder.release()


# -- item 5: the board file ----------------------------------------------------------------------


def test_board_file_deleted_is_published_again(cli: Cli) -> None:
    cli.start("cli_targets:steady", *FLUSH, workers=2)
    [segment] = cli.segments()
    segment.unlink()  # what logind's RemoveIPC= does at logout

    wait_for(lambda: running(cli, 2) is not None, 30, "status running again after the board was deleted")
    assert cli.segments() == [segment]
    kill_one_worker_and_see_it_replaced(cli, 2)
    kill_one_worker_and_see_it_replaced(cli, 2)
    stop_and_verify(cli)
    assert not cli.segments()


def test_board_file_truncated_does_not_kill_the_supervisor(cli: Cli) -> None:
    cli.start("cli_targets:steady", *FLUSH, workers=2)
    supervisor, ticks = cli.supervisor()
    [segment] = cli.segments()
    os.truncate(segment, 0)

    wait_for(lambda: "truncated" in log_text(cli.directory), 30, "the log line about the truncated board")
    assert alive(supervisor, ticks)
    wait_for(lambda: running(cli, 2) is not None, 30, "status running again after the truncation")
    kill_one_worker_and_see_it_replaced(cli, 2)
    stop_and_verify(cli)


def test_shm_too_small_for_the_board_is_one_clear_line(cli: Cli, tmp_path: Path) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    _mount_tmpfs(shm, "64k", "1777")
    try:
        env = {**os.environ, "POOLCTL_SHM_DIR": str(shm)}
        result = cli("start", "cli_targets:steady", "-w", "2", *FAST, env=env)
        assert result.code == 1, str(result)
        assert len(result.err_lines) == 1, str(result)
        assert "no room" in result.err and "board" in result.err, str(result)
        assert not [p for p in shm.iterdir()], list(shm.iterdir())
        cli.remember()
        assert not cli.pool_processes()
        assert not lock_holders(cli.directory / "supervisor.lock")
        assert cli.status()[0] == 3
    finally:
        _unmount(shm)


# -- the rate limit, with a stepped clock -------------------------------------------------------


def test_a_repeated_failure_is_logged_once_per_interval_a_new_one_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.own_state.rate")
    notes = RateLimitedLog(log, interval=30.0)
    with caplog.at_level(logging.ERROR, logger=log.name):
        for second in range(0, 61):  # a flush a second for a minute, the disk full all along
            notes.note("flush", "runtime.json not written: [Errno 28] No space left on device", float(second))
        notes.note("flush", "runtime.json not written: [Errno 2] No such file or directory", 61.0)
        assert notes.clear("flush") and not notes.clear("flush")
    assert [r.getMessage() for r in caplog.records] == [
        "runtime.json not written: [Errno 28] No space left on device",
        "runtime.json not written: [Errno 28] No space left on device (and 29 more times since)",
        "runtime.json not written: [Errno 28] No space left on device (and 29 more times since)",
        "runtime.json not written: [Errno 2] No such file or directory",
    ]
