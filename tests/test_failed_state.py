"""Issue 14 item 6: a pool whose every slot has FAILED is `failed` (status exit 1), not `degraded`.

The supervisor of such a pool is live, but nothing it supervises serves and nothing will be
restarted: the README's liveness probe must fail so the container is restarted. A pool with
one slot failed and one serving stays `degraded` (exit 2), which liveness passes. Checked
on the pure verdict, on the numpy reader, on the metrics and the watch table, and on real
pools through `poolctl status`, runtime.json and the documented probe command.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_targets import POOLCTL, TESTS_DIR, Cli, cli_session, new_name, wait_for

import statusboard
from statusboard import layout
from statusboard.board import Board, WorkerRow
from statusboard.health import StatusCode, failed_reason, pool_verdict
from statusboard.metrics import POOL_STATES, exposition
from statusboard.states import PoolState, WorkerState

S = 1_000_000_000
NOW = 1_000 * S
TIMEOUT = 10 * S
README = Path(__file__).resolve().parent.parent / "README.md"

# A worker that serves until a cue file for its slot appears next to this file, then exits 1
# (after one beat, so every replacement counts as a crash after booting, not a boot error).
CRASH_ON_CUE = """
import os

def work(ctx):
    cue = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"crash-{ctx.slot}")
    while not ctx.wait(0.02):
        ctx.beat()
        if os.path.exists(cue):
            os._exit(1)
"""


def row(slot: int, state: WorkerState, exit_code: int = layout.NO_EXIT_CODE) -> dict[str, Any]:
    return {"slot": slot, "state": int(state), "heartbeat_ns": NOW, "last_exit_code": exit_code}


def verdict(rows: list[dict[str, Any]], desired: int, pool_state: str = "running") -> tuple[str, int, str]:
    v = pool_verdict(
        rows, workers_desired=desired, pool_state=pool_state, now_ns=NOW, heartbeat_timeout_ns=TIMEOUT
    )
    return v.state, int(v.code), v.reason


# -- the pure verdict ---------------------------------------------------------------------------


def test_every_desired_slot_failed_is_failed_with_exit_1() -> None:
    state, code, reason = verdict([row(0, WorkerState.FAILED, 1), row(1, WorkerState.FAILED, -9)], 2)
    assert (state, code) == ("failed", 1)
    assert StatusCode.FAILED == 1
    assert "every worker failed (2 of 2)" in reason
    assert "worker 0: failed (last exit code 1)" in reason
    assert "worker 1: failed (last exit signal SIGKILL)" in reason


@pytest.mark.parametrize(
    ("rows", "desired", "why"),
    [
        ([row(0, WorkerState.FAILED, 1), row(1, WorkerState.RUNNING)], 2, "one still serves"),
        ([row(0, WorkerState.FAILED, 1), row(1, WorkerState.BACKOFF, 1)], 2, "one is being repaired"),
        ([row(0, WorkerState.FAILED, 1), row(1, WorkerState.STARTING)], 2, "one is starting"),
        ([row(0, WorkerState.FAILED, 1), row(1, WorkerState.EXITED, 1)], 2, "one's fate is undecided"),
        ([row(0, WorkerState.FAILED, 1), row(1, WorkerState.HUNG)], 2, "one is being killed"),
        ([row(0, WorkerState.FAILED, 1)], 2, "a slot is still to be started (scale-up)"),
        ([row(0, WorkerState.FAILED, 1), row(1, WorkerState.EMPTY)], 2, "a slot is still to be started"),
    ],
)
def test_a_pool_that_still_serves_or_is_being_repaired_stays_degraded(
    rows: list[dict[str, Any]], desired: int, why: str
) -> None:
    state, code, _ = verdict(rows, desired)
    assert (state, code) == ("degraded", 2), why


def test_only_desired_slots_count() -> None:
    # Scaled down from 3 to 2: slot 2 is being retired (stopping); 0 and 1 failed.
    rows = [row(0, WorkerState.FAILED, 1), row(1, WorkerState.FAILED, 1), row(2, WorkerState.STOPPING)]
    assert verdict(rows, 2)[:2] == ("failed", 1)


@pytest.mark.parametrize("pool_state", ["stopping", "stop_failed"])
def test_a_stopping_pool_is_not_called_failed(pool_state: str) -> None:
    rows = [row(0, WorkerState.FAILED, 1), row(1, WorkerState.FAILED, 1)]
    assert verdict(rows, 2, pool_state)[:2] == ("degraded", 2)


def test_failed_reason_is_none_unless_every_desired_slot_failed() -> None:
    assert failed_reason([row(0, WorkerState.FAILED, 1)], 1) is not None
    assert failed_reason([row(0, WorkerState.FAILED, 1), row(1, WorkerState.STOPPED)], 2) is None
    assert failed_reason([], 0) is None


def test_the_numpy_reader_agrees(shm_segment: Callable[..., Board], runtime_dir: Path) -> None:
    """Snapshot.verdict() (the vectorised path for pollers) gives the same verdict."""
    board = shm_segment(workers_desired=2)
    board.set_header(pool_state=int(PoolState.RUNNING), slots_used=2, workers_desired=2)
    for slot in range(2):
        board.set_lifecycle(slot, pid=0, state=int(WorkerState.FAILED), last_exit_code=1)
        WorkerRow(board, slot).beat(0)
    board.supervisor_beat(__import__("time").monotonic_ns())
    reader = statusboard.BoardReader(Board.open(board.path), None)
    try:
        got = reader.snapshot().verdict()
        assert not reader.healthy()
    finally:
        reader.close()
    assert (got.state, got.code) == ("failed", StatusCode.FAILED)


# -- metrics and watch --------------------------------------------------------------------------


def test_metrics_name_the_failed_state() -> None:
    assert "failed" in POOL_STATES
    document = {
        "pool": "web",
        "state": "failed",
        "source": "shm",
        "supervisor": {"pid": 1, "alive": True},
        "workers": [],
    }
    text = exposition(document).decode()
    assert 'poolctl_pool_state{pool="web",state="failed"} 1.0' in text
    assert 'poolctl_pool_state{pool="web",state="degraded"} 0.0' in text


def test_the_watch_table_shows_failed_in_red() -> None:
    from rich.console import Console

    from cli.rich_view import status_table

    table = status_table({"pool": "web", "state": "failed", "reason": "every worker failed", "workers": []})
    assert "bold red" in str(table.title)
    console = Console(width=100, record=True, color_system=None)
    console.print(table)
    assert "failed" in console.export_text()


# -- real pools ---------------------------------------------------------------------------------


def liveness_probe() -> str:
    """The README's liveness command, exactly as documented (block after ``<!-- probe: liveness -->``)."""
    match = re.search(r"<!-- probe: liveness -->\n```[a-z]*\n(.*?)\n```", README.read_text(), re.DOTALL)
    assert match, "README marks no liveness probe block"
    return match.group(1).strip()


@pytest.fixture
def pools(tmp_path: Path) -> Iterator[tuple[Cli, Path]]:
    """A Cli whose runtime dir is ``$POOLCTL_RUNTIME_DIR/NAME`` (so `--name NAME` alone finds it,
    as the documented probe runs), and a directory holding the crash-on-cue worker."""
    parent = tmp_path / "pools"
    parent.mkdir(mode=0o700)
    os.chmod(parent, 0o700)
    app = tmp_path / "app"
    app.mkdir()
    (app / "crashy.py").write_text(CRASH_ON_CUE)
    name = new_name()
    with cli_session(parent / name, name) as cli:
        yield cli, app


def run_liveness(cli: Cli) -> int:
    env = {
        **os.environ,
        "PATH": f"{Path(POOLCTL).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "POOLCTL_RUNTIME_DIR": str(cli.directory.parent),
    }
    command = liveness_probe().replace("NAME", cli.name)
    done = subprocess.run(
        ["/bin/sh", "-c", command], env=env, cwd=TESTS_DIR, stdin=subprocess.DEVNULL, capture_output=True
    )
    return done.returncode


def start_crashy(cli: Cli, app: Path) -> None:
    cli.start(str(app / "crashy.py") + ":work", "--max-restarts", "1", "--restart-window", "60", workers=2)
    assert cli.status()[0] == 0
    assert run_liveness(cli) == 0


def slot_states(document: dict[str, Any]) -> list[str]:
    return [w["state"] for w in sorted(document["workers"], key=lambda w: w["slot"])]


def test_every_worker_failed_fails_status_and_the_liveness_probe(pools: tuple[Cli, Path]) -> None:
    cli, app = pools
    start_crashy(cli, app)
    (app / "crash-0").touch()
    (app / "crash-1").touch()
    wait_for(lambda: slot_states(cli.status()[1]) == ["failed", "failed"], 30, "both slots to fail")

    code, document = cli.status()
    assert code == 1, document
    assert document["state"] == "failed"
    assert document["source"] == "shm"
    assert document["supervisor"]["alive"] is True
    assert "every worker failed (2 of 2)" in document["reason"]
    assert run_liveness(cli) != 0

    human = cli("status")
    assert human.code == 1
    assert human.out.splitlines()[0].startswith(f"pool {cli.name}: failed - every worker failed")

    # runtime.json says it too (the supervisor flushes on every lifecycle change).
    wait_for(lambda: cli.runtime()["state"] == "failed", 15, "runtime.json to say failed")

    # So do the metrics and `watch`.
    metrics = cli("metrics")
    assert metrics.code == 0, str(metrics)
    assert f'poolctl_pool_state{{pool="{cli.name}",state="failed"}} 1.0' in metrics.out, metrics.out
    watcher = subprocess.Popen(
        [POOLCTL, "--name", cli.name, "--runtime-dir", str(cli.directory), "watch", "--interval", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)  # not an assertion: a few refreshes
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=20)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, err.decode()
    assert f"pool {cli.name}: failed" in out.decode(), out.decode()[-500:]

    # The pool is still supervised and stops cleanly, verified.
    stopped = cli("stop")
    assert stopped.code == 0, str(stopped)
    assert cli.status()[1]["state"] == "stopped"


def test_one_of_two_failed_is_degraded_and_passes_liveness(pools: tuple[Cli, Path]) -> None:
    cli, app = pools
    start_crashy(cli, app)
    (app / "crash-0").touch()
    wait_for(lambda: slot_states(cli.status()[1]) == ["failed", "running"], 30, "slot 0 to fail")

    code, document = cli.status()
    assert (code, document["state"]) == (2, "degraded"), document
    assert run_liveness(cli) == 0
    assert cli.runtime()["state"] == "running"
    assert cli("stop").code == 0
