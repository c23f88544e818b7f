"""Issue 14 item 2: the identity of a running pool is the holder of its supervisor.lock.

Commands that act on a pool (stop, scale, restart) act on the verified lock holder
(pid + start ticks) or refuse; a pid read from runtime.json alone is never
signalled; a symlinked runtime.json is refused; `stop` while a pool boots stops
it. And the finder of what a dead supervisor left (pool.supervision.remnants): it returns only
processes provably that pool's, and `start` and `stop` kill them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from cli_targets import POOLCTL, TESTS_DIR, Cli, alive, cli_session, lock_holders, wait_for
from scripts import supkit

from statusboard import liveness, runtime_file

pytestmark = pytest.mark.timeout(180)

SLOW_FLUSH = ("--flush-interval", "3600")  # runtime.json is flushed on changes only: a forged one stays


def _identity(pid: int) -> tuple[int, int]:
    ticks = liveness.start_ticks(pid)
    assert ticks is not None, pid
    return pid, ticks


def _pool_pids(cli: Cli) -> list[tuple[int, int | None]]:
    document = cli.runtime()
    found = [_identity(document["supervisor"]["pid"])]
    found += [(w["pid"], w.get("start_ticks")) for w in document["workers"]]
    return found


def _forge(directory: Path, **supervisor: Any) -> dict[str, Any]:
    """Rewrite runtime.json with changed supervisor fields (as a bad write or a person might)."""
    document = json.loads((directory / "runtime.json").read_text())
    document["supervisor"].update(supervisor)
    runtime_file.write(directory, {k: v for k, v in document.items() if k != "schema"})
    return document


def _nothing_of(processes: list[tuple[int, int | None]]) -> bool:
    return not any(alive(pid, ticks) for pid, ticks in processes)


# -- a forged runtime.json ----------------------------------------------------------


def test_stop_never_signals_a_forged_supervisor_pid_and_stops_the_lock_holder(cli: Cli, spawn: Any) -> None:
    cli.start("cli_targets:steady", *SLOW_FLUSH, workers=2)
    real = _pool_pids(cli)
    bystander = spawn(["sleep", "300"])
    sleeper = _identity(bystander.pid)
    _forge(cli.directory, pid=sleeper[0], start_ticks=sleeper[1])

    # scale and restart --rolling: the pool is not what runtime.json says; they must not
    # signal the bystander (they may refuse, or act on the real supervisor).
    cli("scale", "3", "--wait", "10")
    cli("restart", "--rolling", "--wait", "10")
    assert alive(*sleeper)

    result = cli("stop")
    assert alive(*sleeper), f"stop signalled pid {sleeper[0]}, named only by a forged runtime.json\n{result}"
    if result.code == 0:
        assert "runtime.json" in result.out, str(result)
        assert _nothing_of(real), f"stop said 'stopped' but the pool runs: {real}\n{result}"
        assert not lock_holders(cli.directory / "supervisor.lock")
    else:
        assert len(result.err_lines) == 1, str(result)
        assert "stopped" not in result.out
    cli.remember()


# -- a symlinked runtime.json ---------------------------------------------------------


def test_a_symlinked_runtime_json_is_refused_and_the_other_pool_untouched(tmp_path: Path) -> None:
    dirs = []
    for tag in ("a", "b"):
        path = tmp_path / tag
        path.mkdir(mode=0o700)
        dirs.append(path)
    with cli_session(dirs[0]) as a, cli_session(dirs[1]) as b:
        a.start("cli_targets:steady", *SLOW_FLUSH, workers=2)
        b.start("cli_targets:steady", *SLOW_FLUSH, workers=2)
        a_pids, b_pids = _pool_pids(a), _pool_pids(b)
        b_before = b.status()[1]
        (a.directory / "runtime.json").unlink()
        (a.directory / "runtime.json").symlink_to(b.directory / "runtime.json")

        status = a("status")
        assert status.code == 4, str(status)
        assert len(status.err_lines + status.out.splitlines()) >= 1 and "symlink" in status.out + status.err
        for args in (
            ("stop",),
            ("scale", "3", "--wait", "5"),
            ("restart", "--rolling", "--wait", "5"),
            ("restart",),
        ):
            result = a(*args)
            assert result.code == 1, str(result)
            assert len(result.err_lines) == 1 and "symlink" in result.err, str(result)
            assert "stopped" not in result.out and "running" not in result.out, str(result)

        code, b_after = b.status()
        assert code == 0, b_after
        assert b_after["supervisor"]["pid"] == b_before["supervisor"]["pid"]
        assert [(w["pid"], w["generation"]) for w in b_after["workers"]] == [
            (w["pid"], w["generation"]) for w in b_before["workers"]
        ]
        assert all(alive(pid, ticks) for pid, ticks in a_pids + b_pids)

        # The symlink gone, `stop` finds pool a by its lock and stops it.
        (a.directory / "runtime.json").unlink()
        result = a("stop")
        assert result.code == 0, str(result)
        assert _nothing_of(a_pids)
        b.ok("stop")
        assert _nothing_of(b_pids)


# -- the boot window ----------------------------------------------------------------------

_NAMED_HOLDER = """
import fcntl, os, sys
sys.path.insert(0, sys.argv[2])
from statusboard.liveness import start_ticks
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, f"{os.getpid()} {start_ticks(os.getpid())}\\n".encode(), 0)
print("locked", flush=True)
sys.stdin.read()
"""


def test_stop_while_the_lock_is_held_and_runtime_json_not_yet_written_stops_the_holder(
    runtime_dir: Path, spawn: Any, read_line: Callable[..., str]
) -> None:
    """The boot window: a supervisor holds the lock (and names itself in it) but has not
    flushed runtime.json yet. `stop` must stop it, not say "never started"."""
    holder = spawn.python(_NAMED_HOLDER, runtime_dir / "supervisor.lock", Path(__file__).parent.parent)
    assert read_line(holder) == "locked"
    result = Cli(runtime_dir)("stop", "--timeout", "5")
    assert result.code == 0, str(result)
    assert "never started" not in result.out, str(result)
    assert holder.wait(timeout=10) == -signal.SIGTERM
    assert not lock_holders(runtime_dir / "supervisor.lock")


def test_a_lock_holder_that_does_not_name_itself_is_not_signalled(
    runtime_dir: Path, lock_holder: Callable[[Path], Any]
) -> None:
    holder = lock_holder(runtime_dir)  # flock only, supervisor.lock left empty
    result = Cli(runtime_dir)("stop", "--timeout", "1")
    assert result.code == 1, str(result)
    assert len(result.err_lines) == 1 and "supervisor.lock" in result.err, str(result)
    assert holder.proc.poll() is None
    holder.release()


def _pool_processes_by_title(name: str, directory: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
            continue
        if f"[{name}]" in cmdline or ("pool.ops.daemon" in cmdline and str(directory) in cmdline):
            found.append(proc)
    return found


@pytest.mark.parametrize("attempt", range(int(os.environ.get("RACE_ATTEMPTS", "5"))))
def test_stop_racing_a_start_leaves_nothing_running(cli: Cli, attempt: int) -> None:
    lock = cli.directory / "supervisor.lock"
    argv = [
        POOLCTL,
        "--name",
        cli.name,
        "--runtime-dir",
        str(cli.directory),
        "start",
        "cli_targets:slow_boot",
        "-w",
        "2",
        "--grace",
        "0.5",
        "--heartbeat-timeout",
        "5",
    ]
    starter = subprocess.Popen(
        argv, cwd=TESTS_DIR, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for(
            lambda: lock.exists() and liveness.lock_holder_present(lock),
            30,
            "the supervisor to take its lock",
            interval=0.001,
        )
        holders = lock_holders(lock)
        result = cli("stop")
        assert result.code == 0, str(result)
        assert not lock_holders(lock), str(result)
        assert not any(alive(pid) for pid in holders)
        left = _pool_processes_by_title(cli.name, cli.directory)
        assert not left, f"after `stop` exit 0: {[p.pid for p in left]}\n{result}"
        assert not cli.segments(), f"after `stop` exit 0: {cli.segments()}\n{result}\n{cli.log_lines()}"
        starter.wait(timeout=60)
    finally:
        if starter.poll() is None:
            starter.kill()
        starter.communicate(timeout=30)


# -- what a dead supervisor left ----------------------------------------------------------

# A stand-in worker: leads its own process group (as the supervisor makes workers do),
# starts a child in its group and a grandchild that escapes with setsid(), prints their pids.
_WORKER = """
import os, subprocess, sys, time
os.setpgid(0, 0)
child = subprocess.Popen(["sleep", "300"])
escaper = subprocess.Popen(["sleep", "300"], start_new_session=True)
print(child.pid, escaper.pid, flush=True)
time.sleep(300)
"""


def _dead_identity(spawn: Any) -> tuple[int, int]:
    proc = spawn(["sleep", "300"])
    identity = _identity(proc.pid)
    proc.kill()
    proc.wait()
    return identity


def _old_pool(spawn: Any, read_line: Callable[..., str]) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
    """A dead supervisor's runtime.json document whose one worker (and its children) live on."""
    sup = _dead_identity(spawn)  # first: a pool's processes start after its supervisor
    worker = spawn.python(_WORKER)
    child, escaper = map(int, read_line(worker).split())
    procs = {"worker": _identity(worker.pid), "child": _identity(child), "escaper": _identity(escaper)}
    document = {
        "pool": f"pt-old-{uuid.uuid4().hex[:6]}",
        "state": "running",
        "supervisor": {"pid": sup[0], "start_ticks": sup[1]},
        "workers_desired": 1,
        "workers": [{"slot": 0, "pid": worker.pid, "start_ticks": procs["worker"][1], "state": "running"}],
        "descendants": [{"pid": escaper, "start_ticks": procs["escaper"][1], "slot": 0}],
    }
    return document, procs


def _kill_all(procs: dict[str, tuple[int, int]]) -> None:
    for pid, ticks in procs.values():
        if alive(pid, ticks):
            os.kill(pid, signal.SIGKILL)


def test_remnants_are_the_workers_their_descendants_and_group_and_nothing_else(
    spawn: Any, read_line: Callable[..., str]
) -> None:
    from pool.supervision.remnants import remnants

    bystander = spawn(["sleep", "300"])
    document, procs = _old_pool(spawn, read_line)
    try:
        found = {(r.pid, r.start_ticks) for r in remnants(document)}
        assert found == set(procs.values())
        assert _identity(bystander.pid) not in found and _identity(os.getpid()) not in found

        # The worker dies (reaped): its group lives on in the child, which is still provably
        # the old pool's; the escaper is named in "descendants".
        worker_pid = procs["worker"][0]
        os.kill(worker_pid, signal.SIGKILL)
        next(p for p in spawn.procs if p.pid == worker_pid).wait()
        found = {(r.pid, r.start_ticks) for r in remnants(document)}
        assert found == {procs["child"], procs["escaper"]}

        # A supervisor that is alive left nothing: its processes are its own business.
        live = dict(
            document, supervisor={"pid": os.getpid(), "start_ticks": liveness.start_ticks(os.getpid())}
        )
        assert remnants(live) == []
    finally:
        _kill_all(procs)


def test_start_kills_what_a_dead_supervisor_left_and_logs_one_line(
    runtime: Path, spawn: Any, read_line: Callable[..., str]
) -> None:
    from pool.supervision.supervisor import Supervisor

    bystander = spawn(["sleep", "300"])
    document, procs = _old_pool(spawn, read_line)
    try:
        spec = supkit.make_spec("well_behaved", workers=1, grace=0.5)
        runtime_file.write(runtime, dict(document, pool=spec.name))
        with Supervisor(spec, runtime_dir=runtime):
            assert _nothing_of(list(procs.values()))
            lines = supkit.log_lines(runtime, "left by dead supervisor")
            assert len(lines) == 1, lines
            assert (
                f"killed 3 process(es) left by dead supervisor pid {document['supervisor']['pid']}:"
                in lines[0]
            )
        assert alive(*_identity(bystander.pid))
    finally:
        _kill_all(procs)


def test_stop_kills_what_a_dead_supervisor_left(cli: Cli, spawn: Any, read_line: Callable[..., str]) -> None:
    bystander = spawn(["sleep", "300"])
    document, procs = _old_pool(spawn, read_line)
    try:
        runtime_file.write(cli.directory, dict(document, pool=cli.name))
        result = cli("stop")
        assert result.code == 0, str(result)
        assert (
            f"killed 3 process(es) left by dead supervisor pid {document['supervisor']['pid']}" in result.out
        )
        assert _nothing_of(list(procs.values()))
        assert alive(*_identity(bystander.pid))
        assert cli.status()[1]["state"] == "stopped"
    finally:
        _kill_all(procs)


def test_the_fast_stop_stays_free_of_heavy_imports(cli: Cli) -> None:
    cli.start(workers=1)
    code = (
        "import sys; from cli.main import main; rc = main(sys.argv[1:]); "
        "bad = [m for m in ('typer', 'numpy', 'psutil') if m in sys.modules]; print(rc, bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "--name", cli.name, "--runtime-dir", str(cli.directory), "stop"],
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.splitlines()[-1] == "0 []", out


def test_scale_reaches_only_the_lock_holder_even_through_a_wrong_control_socket(tmp_path: Path) -> None:
    """runtime.json of pool a names pool b's control socket (its own supervisor pid intact):
    `scale` must not resize b. The kernel says who serves a socket (SO_PEERCRED)."""
    dirs = []
    for tag in ("a", "b"):
        path = tmp_path / tag
        path.mkdir(mode=0o700)
        dirs.append(path)
    with cli_session(dirs[0]) as a, cli_session(dirs[1]) as b:
        a.start("cli_targets:steady", *SLOW_FLUSH, workers=1)
        b.start("cli_targets:steady", *SLOW_FLUSH, workers=1)
        document = a.runtime()
        document["control"] = b.runtime()["control"]
        runtime_file.write(a.directory, {k: v for k, v in document.items() if k != "schema"})

        result = a("scale", "2", "--wait", "5")
        assert result.code == 1, str(result)
        assert len(result.err_lines) == 1 and "lock holder" in result.err, str(result)
        assert b.status()[1]["workers_desired"] == 1
        a.ok("stop")
        b.ok("stop")


@pytest.mark.parametrize("command", ["stop", "start"])
def test_what_a_sigkilled_supervisor_left_is_ended_by_the_next_stop_or_start(cli: Cli, command: str) -> None:
    """A real pool: its worker's helper escaped into its own session and ignores SIGTERM.
    The supervisor is SIGKILLed; the helper outlives it (runtime.json names it among the
    descendants); the next `stop` or `start` kills it and says so in one line."""
    cli.start("cli_targets:leaves_a_stubborn_escaper", "--flush-interval", "0.2", workers=1)
    supervisor = cli.supervisor()

    def recorded() -> list[dict[str, Any]]:
        return [d for d in cli.runtime().get("descendants", []) if alive(d["pid"], d["start_ticks"])]

    escaper = wait_for(recorded, 30, "the escaped helper in runtime.json's descendants")[0]
    escaper_id = (escaper["pid"], escaper["start_ticks"])
    cli.seen[escaper["pid"]] = escaper["start_ticks"]  # teardown kills it whatever happens
    os.killpg(supervisor[0], signal.SIGKILL)  # the daemon's whole group; the helper has its own session
    wait_for(lambda: not alive(*supervisor), 30, "the supervisor to die")
    assert alive(*escaper_id)

    line = f"killed 1 process(es) left by dead supervisor pid {supervisor[0]}: pid {escaper_id[0]} (descendant of worker 0)"
    if command == "stop":
        result = cli("stop")
        assert result.code == 0, str(result)
        assert line in result.out, str(result)
    else:
        cli.start(workers=1)
        assert any(line in entry for entry in cli.log_lines()), cli.log_lines()
        cli.ok("stop")
    assert not alive(*escaper_id)
    assert cli.status()[0] == 3


def test_a_lock_record_the_kernel_contradicts_is_not_believed(
    runtime_dir: Path, lock_holder: Callable[[Path], Any], spawn: Any
) -> None:
    """supervisor.lock held by one process, its record naming another live one (a bystander):
    lock_holder() names nobody (so stop signals nobody), and status does not take the
    bystander for the supervisor."""
    holder = lock_holder(runtime_dir)
    bystander = _identity(spawn(["sleep", "300"]).pid)
    (runtime_dir / "supervisor.lock").write_text(f"{bystander[0]} {bystander[1]}\n")
    assert liveness.lock_holder(runtime_dir / "supervisor.lock") == (True, None)
    assert not liveness.lock_held_by(
        runtime_dir / "supervisor.lock", os.getpid(), liveness.start_ticks(os.getpid()) or 0
    )
    result = Cli(runtime_dir)("stop", "--timeout", "1")
    assert result.code == 1 and f"held by pid {holder.proc.pid}" in result.err, str(result)
    assert alive(*bystander) and holder.proc.poll() is None
    # The holder's own record is believed.
    (runtime_dir / "supervisor.lock").write_text(
        f"{holder.proc.pid} {liveness.start_ticks(holder.proc.pid)}\n"
    )
    assert liveness.lock_holder(runtime_dir / "supervisor.lock") == (True, _identity(holder.proc.pid))
    holder.release()
    assert liveness.lock_holder(runtime_dir / "supervisor.lock") == (False, None)


@pytest.mark.parametrize("attempt", range(int(os.environ.get("RACE_ATTEMPTS", "5"))))
def test_stop_while_start_is_still_launching_the_supervisor_stops_what_it_launches(
    cli: Cli, attempt: int
) -> None:
    """Earlier than the boot window: `poolctl start` has begun (it holds start.lock) but its
    supervisor may not even exist yet. `stop` waits for it and stops it; exit 0 only when
    nothing of the pool runs, and the start then fails instead of leaving a pool behind."""
    start_lock = cli.directory / "start.lock"
    argv = [
        POOLCTL,
        "--name",
        cli.name,
        "--runtime-dir",
        str(cli.directory),
        "start",
        "cli_targets:slow_boot",
        "-w",
        "2",
        "--grace",
        "0.5",
        "--heartbeat-timeout",
        "5",
    ]
    starter = subprocess.Popen(
        argv, cwd=TESTS_DIR, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for(
            lambda: start_lock.exists() and liveness.lock_holder_present(start_lock),
            30,
            "`poolctl start` to take start.lock",
            interval=0.001,
        )
        result = cli("stop")
        assert result.code == 0, str(result)
        out, err = starter.communicate(timeout=60)
        assert starter.returncode != 0 or b"running" not in out, (out, err)
        assert not lock_holders(cli.directory / "supervisor.lock"), str(result)
        left = _pool_processes_by_title(cli.name, cli.directory)
        assert not left, f"after `stop` exit 0: {[p.pid for p in left]}\n{result}"
        assert cli.status()[0] == 3
    finally:
        if starter.poll() is None:
            starter.kill()
        starter.communicate(timeout=30)
