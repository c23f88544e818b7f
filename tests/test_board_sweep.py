"""Issue 14 item 1: a new supervisor removes only its own dead predecessor's board.

A board segment is named ``poolctl-UID-POOL-PID-TICKS`` and a pool name may itself
end in ``-<digits>`` (``chx-1``, an anonymous ``pool.Pool``'s ``pool-PID-N``), so a
sweep that globs on ``poolctl-UID-NAME-`` and parses from the left takes another
pool's live board for a dead supervisor's. These tests start the neighbour first,
then the pool whose name is its prefix, and check that the neighbour is untouched
and still supervised.

Every board here lives in a private shm directory ($POOLCTL_SHM_DIR), so a sweep
that misbehaves can only ever hit this test's own pools, never another session's.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_targets import Cli, cli_session, wait_for

from statusboard import liveness

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def private_shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Boards of this test go to their own directory (inherited by every pool started here)."""
    directory = tmp_path / "shm"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv("POOLCTL_SHM_DIR", str(directory))
    yield directory
    # The cli sessions have killed every process by now; a board left here is a leak.
    left = sorted(p.name for p in directory.iterdir())
    for entry in directory.iterdir():
        entry.unlink()
    assert not left, f"boards left behind: {left}"


def _dir(tmp_path: Path, tag: str) -> Path:
    path = tmp_path / tag
    path.mkdir(mode=0o700)
    return path


def _running_status(cli: Cli) -> dict[str, Any]:
    code, document = cli.status()
    assert code == 0, document
    assert document["source"] == "shm", document
    return document


def _worker_is_replaced(cli: Cli) -> None:
    """SIGKILL slot 0's worker: the supervisor starts a new one and status is running again."""
    document = _running_status(cli)
    victim = next(w for w in document["workers"] if w["slot"] == 0)
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced() -> bool:
        code, doc = cli.status()
        row = next((w for w in doc["workers"] if w["slot"] == 0), None)
        return code == 0 and row is not None and row["pid"] != victim["pid"] and row["state"] == "running"

    wait_for(replaced, 30, "slot 0 of the neighbour pool to be replaced and running")


def test_starting_x_never_touches_the_board_of_a_live_x_1(tmp_path: Path, private_shm: Path) -> None:
    base = f"x{uuid.uuid4().hex[:8]}"
    with (
        cli_session(_dir(tmp_path, "neighbour"), f"{base}-1") as neighbour,
        cli_session(_dir(tmp_path, "prefix"), base) as prefix,
    ):
        neighbour.start(workers=2)
        board = Path(neighbour.runtime()["board"])
        assert board.parent == private_shm and board.exists()

        prefix.start(workers=1)

        assert board.exists(), f"starting {base} removed {board}"
        assert not any("removed board" in line for line in prefix.log_lines()), prefix.log_lines()
        _running_status(neighbour)
        _worker_is_replaced(neighbour)
        _running_status(prefix)

        prefix.ok("stop")
        neighbour.ok("stop")
    assert not list(private_shm.iterdir())


def test_a_pool_named_pool_never_touches_an_anonymous_pools_board(
    tmp_path: Path, private_shm: Path, private_runtime_root: Path
) -> None:
    """``--name pool`` against a ``pool.Pool()`` (named ``pool-PID-N``) run by another process."""
    with cli_session(_dir(tmp_path, "named-pool"), "pool") as named:
        host = _AnonymousPoolHost(private_runtime_root)
        try:
            board = host.board
            assert board.parent == private_shm and board.name.split("-")[2] == "pool", board
            named.start(workers=1)
            assert board.exists(), f"starting a pool named 'pool' removed {board}"
            assert host.still_serves()
            named.ok("stop")
        finally:
            host.close()
    assert not list(private_shm.iterdir())


class _AnonymousPoolHost:
    """A python process running ``pool.Pool(workers=1)`` (no name: ``pool-PID-N``) until stdin closes."""

    CODE = """
import sys
from pool import Pool
with Pool(workers=1, start_method="fork") as p:
    print(p.runtime_dir, flush=True)
    for line in sys.stdin:
        print(p.submit(pow, 2, int(line)).result(timeout=30), flush=True)
"""

    def __init__(self, root: Path) -> None:
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.proc.stdout is not None
        self.runtime_dir = Path(self.proc.stdout.readline().strip())
        assert self.runtime_dir.parent == root, self.runtime_dir
        self.board = Path(__import__("json").loads((self.runtime_dir / "runtime.json").read_text())["board"])

    def still_serves(self) -> bool:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("10\n")
        return self.proc.stdout.readline().strip() == "1024"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)


def test_a_dead_predecessors_board_is_removed_and_nothing_else(
    tmp_path: Path, private_shm: Path, spawn: Any
) -> None:
    """The positive case, by the lock file's record: a supervisor SIGKILLed before its first
    flush (no runtime.json) leaves a board; the next start removes exactly that one, and
    leaves a dead stranger's board of the same pool name in another directory alone."""
    name = f"x{uuid.uuid4().hex[:8]}"
    directory = _dir(tmp_path, "run")
    # Two dead processes: one "held" this directory's lock (it says so in supervisor.lock),
    # the other is a stranger from another runtime directory with the same pool name.
    ghosts = []
    for _ in range(2):
        proc = spawn(["sleep", "60"])
        ghosts.append((proc.pid, liveness.start_ticks(proc.pid)))
        proc.kill()
        proc.wait()
    (pid, ticks), (other_pid, other_ticks) = ghosts
    (directory / "supervisor.lock").write_text(f"{pid} {ticks}\n")
    os.chmod(directory / "supervisor.lock", 0o600)
    ours = private_shm / f"poolctl-{os.getuid()}-{name}-{pid}-{ticks}"
    stranger = private_shm / f"poolctl-{os.getuid()}-{name}-{other_pid}-{other_ticks}"
    for path in (ours, stranger):
        path.write_bytes(b"\0" * 64)
    with cli_session(directory, name) as cli:
        cli.start(workers=1)
        assert not ours.exists()
        assert stranger.exists()
        assert any(f"removed board {ours} of dead supervisor pid {pid}" in line for line in cli.log_lines())
        cli.ok("stop")
    stranger.unlink()


@pytest.mark.parametrize(
    ("name", "owner"),
    [
        ("x-5-6", (5, 6)),
        ("x-1-5-6", (5, 6)),  # pool "x-1": the pool name never shifts pid and ticks
        ("pool-812-0-5-6", (5, 6)),  # an anonymous pool.Pool
        ("5-6", None),  # no pool name
        ("x-5-z", None),
        ("x-5-", None),
    ],
)
def test_segment_owner_is_parsed_from_the_right(name: str, owner: tuple[int, int] | None) -> None:
    from statusboard.board import segment_owner

    assert segment_owner(f"poolctl-{os.getuid()}-{name}") == owner
    assert segment_owner(f"poolctl-{os.getuid() + 1}-{name}") is None  # another user's
