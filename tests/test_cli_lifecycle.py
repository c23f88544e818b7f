"""`poolctl start / stop / restart --rolling / scale / logs / demo / --help`, driven as a user does.

Every supervisor a test starts is detached (its own session); the ``cli``
fixture kills it by pid and verifies it gone at teardown, pass or fail.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import cli_targets
import psutil
import pytest
from cli_targets import FAST, POOLCTL, TESTS_DIR, Cli, alive, lock_holders, wait_for

from pool.integrations.titles import supervisor_title
from statusboard.liveness import start_ticks
from statusboard.probe import probe

pytestmark = pytest.mark.timeout(120)
LOG_LINE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} (INFO|WARNING|ERROR) +\S")


def worker_pids(document: dict[str, Any]) -> list[tuple[int, int | None]]:
    return [(w["pid"], start_ticks(w["pid"])) for w in document["workers"]]


# -- start ----------------------------------------------------------------------------------------


def test_start_returns_only_when_every_worker_has_beaten(cli: Cli) -> None:
    # Slow-booting workers (first beat after BOOT_S): a start that returned before they beat
    # would leave them "starting" with no beats in the status read right after it.
    result = cli.start("cli_targets:slow_boot", workers=3)
    assert result.out.startswith(f"pool {cli.name}: running\n"), str(result)
    code, document = cli.status()  # right after start: no waiting
    assert code == 0, document
    assert document["workers_desired"] == 3 and len(document["workers"]) == 3
    assert all(w["state"] == "running" and w["beats"] >= 1 and w["healthy"] for w in document["workers"])
    cli.ok("stop")


def test_start_gives_up_at_the_wait_deadline_and_leaves_nothing(cli: Cli) -> None:
    result = cli("start", "cli_targets:slow_boot", "-w", "2", *FAST, "--wait", "0.3")
    assert result.code == 1, str(result)
    assert result.err_lines == ["poolctl: error: start failed: not ready within 0.3s"], str(result)
    cli.remember()
    assert not cli.pool_processes() and not cli.segments()
    assert not lock_holders(cli.directory / "supervisor.lock")
    assert cli.status()[0] == 3


def test_start_when_already_running_says_so(cli: Cli) -> None:
    cli.start(workers=1)
    pid, _ = cli.supervisor()
    again = cli.start(workers=1)
    assert again.out.startswith(f"pool {cli.name} is already running (supervisor pid {pid})"), str(again)
    assert cli.supervisor()[0] == pid
    cli.ok("stop")


_AUDIT: dict[str, Any] = {"directory": None, "events": []}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    directory = _AUDIT["directory"]
    if directory is None or event not in ("open", "os.rename", "os.remove"):
        return
    paths = [a for a in args[:2] if isinstance(a, str | os.PathLike)]
    if not any(os.fspath(p).startswith(directory) and "runtime.json" in os.fspath(p) for p in paths):
        return
    if event == "open":
        mode, flags = args[1], args[2]
        writes = isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        if not writes and not (isinstance(mode, str) and set(mode) & set("wax+")):
            return
    _AUDIT["events"].append((event, *map(str, args[:2])))


def test_start_never_writes_runtime_json(cli: Cli, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Run `start` in this process under an audit hook: no write, replace or unlink of runtime.json
    (nor of its temp files) may come from it; the supervisor, a different process, writes it."""
    from cli.main import main

    monkeypatch.chdir(TESTS_DIR)
    if not _AUDIT.get("installed"):
        sys.addaudithook(_audit)
        _AUDIT["installed"] = True
    argv = cli.argv("start", "cli_targets:steady", "-w", "2", *FAST)[1:]  # main() takes no argv[0]
    _AUDIT.update(directory=str(cli.directory), events=[])
    try:
        assert main(argv) == 0, capsys.readouterr()
        cli.remember()
        first_pid, first_ticks = cli.supervisor()
        # The start after a crashed supervisor cleans up after it; that, too, is the new supervisor's job.
        os.kill(first_pid, signal.SIGKILL)
        assert not cli_targets.wait_gone([(first_pid, first_ticks)], 5.0)
        assert main(argv) == 0, capsys.readouterr()
        cli.remember()
    finally:
        _AUDIT["directory"] = None
    assert _AUDIT["events"] == [], f"start itself touched runtime.json: {_AUDIT['events']}"

    document = cli.runtime()
    pid = document["supervisor"]["pid"]
    assert pid not in (os.getpid(), first_pid)
    assert lock_holders(cli.directory / "supervisor.lock") == {pid}, "the writer is not the lock holder"
    proc = psutil.Process(pid)
    assert proc.ppid() != pid and " ".join(proc.cmdline()).strip() == supervisor_title(cli.name)
    assert os.getsid(pid) == pid, "the supervisor does not lead its own session"
    code, status = cli.status()
    assert code == 0 and status["supervisor"]["pid"] == pid, status
    cli.ok("stop")


def test_concurrent_starts_leave_exactly_one_supervisor(cli: Cli, spawn) -> None:
    argv = cli.argv("start", "cli_targets:steady", "-w", "1", *FAST)
    procs = [spawn(argv, cwd=TESTS_DIR) for _ in range(3)]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        outcomes.append((proc.returncode, out.decode(), err.decode()))
    cli.remember()
    assert any(code == 0 for code, _, _ in outcomes), outcomes
    for code, out, err in outcomes:
        if code == 0:
            assert err == "" and f"pool {cli.name}" in out, outcomes
        else:
            assert code == 1 and len(err.splitlines()) == 1 and "already running" in err, outcomes
    pid, _ = cli.supervisor()
    assert lock_holders(cli.directory / "supervisor.lock") == {pid}
    daemons = []  # supervisors of this directory: session leaders (forked workers share the cmdline)
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        ours = ("pool.ops.daemon" in cmdline and str(cli.directory) in cmdline) or " ".join(
            cmdline
        ).strip() == supervisor_title(cli.name)
        if ours and alive(proc.pid):
            try:
                if os.getsid(proc.pid) == proc.pid:
                    daemons.append(proc.pid)
            except ProcessLookupError:
                pass
    assert daemons == [pid], daemons
    assert len(cli.segments()) == 1
    cli.ok("stop")


def test_foreground_start_runs_until_sigterm(cli: Cli, spawn) -> None:
    argv = cli.argv("start", "cli_targets:steady", "-w", "2", *FAST, "--foreground")
    proc = spawn(argv, cwd=TESTS_DIR)
    wait_for(lambda: cli.status()[0] == 0, 20.0, "the foreground pool to run")
    assert cli.supervisor()[0] == proc.pid
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "supervisor stopped" in err.decode()  # the foreground supervisor echoes its log
    assert cli.status()[0] == 3


# -- stop -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["targets:ignore_sigterm", "targets:slow_shutdown"])
def test_stop_kills_stubborn_workers_and_verifies_them_gone(cli: Cli, target: str) -> None:
    cli.start(target, workers=2)
    code, document = cli.status()
    assert code == 0
    workers = worker_pids(document)
    result = cli.ok("stop")
    assert result.out == f"pool {cli.name}: stopped\n", str(result)
    assert not [pid for pid, ticks in workers if alive(pid, ticks)], "stop returned 0 with workers alive"
    assert any("escalated to SIGKILL" in line for line in cli.log_lines()), cli.log_lines()
    code, document = cli.status()
    assert (code, document["state"]) == (3, "stopped")
    assert not cli.segments()


def test_stop_kills_a_frozen_supervisor_and_its_workers(cli: Cli) -> None:
    cli.start("cli_targets:steady", workers=2)
    code, document = cli.status()
    processes = [cli.supervisor(), *worker_pids(document)]
    # Every worker leads its own process group (pool.supervision.containment), whatever its target does.
    assert [os.getpgid(pid) == pid for pid, _ in processes[1:]] == [True, True]
    os.kill(processes[0][0], signal.SIGSTOP)
    result = cli("stop", "--timeout", "1")
    assert result.code == 0, str(result)
    assert "killed" in result.out, str(result)
    assert not [pid for pid, ticks in processes if alive(pid, ticks)], "stop returned 0 with a process alive"
    runtime = cli.runtime()
    assert runtime["state"] == "stopped" and runtime["board"] is None, runtime
    code, document = cli.status()
    assert (code, document["state"]) == (3, "stopped"), document
    assert not cli.segments(), "the killed supervisor's board was left behind"


def test_a_survivor_makes_stop_fail_naming_it(cli: Cli, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """No process can be made unkillable here, so the kernel's answer is simulated: pool.ops.stopper's
    (and the probe's) liveness check reports one worker alive after the stop, as it would for a
    process stuck in uninterruptible sleep. Everything else is real: the pool, the stop, the file."""
    import pool.ops.stopper
    import statusboard.liveness
    from cli.main import main

    cli.start(workers=2)
    code, document = cli.status()
    survivor = document["workers"][1]["pid"]
    really_alive = statusboard.liveness.is_alive

    def stuck(pid: int, ticks: int | None = None) -> bool:
        return pid == survivor or really_alive(pid, ticks)

    monkeypatch.setattr(pool.ops.stopper, "is_alive", stuck)
    assert main(["--name", cli.name, "--runtime-dir", str(cli.directory), "stop", "--timeout", "5"]) == 1
    out, err = capsys.readouterr()
    assert err == f"poolctl: error: stop failed: still alive: pid {survivor}\n" and out == "", (out, err)
    runtime = cli.runtime()
    assert runtime["state"] == "stop_failed", runtime
    assert [s["pid"] for s in runtime["survivors"]] == [survivor], runtime

    monkeypatch.setattr(statusboard.liveness, "is_alive", stuck)
    report = probe(cli.directory, cli.name)
    assert int(report.code) == 1 and report.document["state"] == "stop_failed", report.document
    assert f"still alive: pid {survivor}" in report.document["reason"]
    monkeypatch.undo()

    # In truth it is gone: status says so, and a second stop settles the file.
    code, document = cli.status()
    assert (code, document["state"]) == (3, "stopped"), document
    cli.ok("stop")
    assert cli.runtime()["state"] == "stopped"


def test_stop_when_not_running(cli: Cli) -> None:
    result = cli("stop")
    assert (result.code, result.out) == (0, f"pool {cli.name}: not running (never started)\n"), str(result)
    cli.start(workers=1)
    cli.ok("stop")
    result = cli.ok("stop")
    assert result.out == f"pool {cli.name}: not running (stopped)\n", str(result)


# -- live changes: scale, rolling restart ---------------------------------------------------------


def test_scale_returns_when_reached(cli: Cli) -> None:
    # Slow-booting workers: a scale that returned before its new workers beat would show them starting.
    cli.start("cli_targets:slow_boot", workers=2)
    pid, _ = cli.supervisor()
    for n in (4, 1, 3):
        result = cli.ok("scale", str(n))
        assert result.out == f"pool {cli.name}: {n} workers running\n", str(result)
        code, document = cli.status()  # no waiting: scale returned once it was reached
        assert code == 0, document
        assert document["workers_desired"] == n and len(document["workers"]) == n, document
        assert all(w["state"] == "running" and w["healthy"] for w in document["workers"])
    assert cli.supervisor()[0] == pid
    cli.ok("stop")


def test_rolling_restart_replaces_every_worker_keeping_the_supervisor(cli: Cli) -> None:
    cli.start(workers=3)
    pid, _ = cli.supervisor()
    code, before = cli.status()
    assert code == 0

    serving: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            report = probe(cli.directory, cli.name)
            serving.append(sum(w["state"] == "running" and w["healthy"] for w in report.document["workers"]))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = cli.ok("restart", "--rolling")
    finally:
        done.set()
        watcher.join()
    assert result.out.startswith(f"pool {cli.name}: running\n"), str(result)
    code, after = cli.status()
    assert code == 0, after
    assert after["supervisor"]["pid"] == pid == cli.supervisor()[0]
    old = {w["slot"]: w for w in before["workers"]}
    for worker in after["workers"]:
        assert worker["pid"] != old[worker["slot"]]["pid"], (before, after)
        assert worker["generation"] == old[worker["slot"]]["generation"] + 1, (before, after)
    assert serving and min(serving) >= 2, (
        f"fewer than N-1 workers served during the rolling restart: {min(serving)}"
    )
    assert not [p for p, t in worker_pids(before) if alive(p, t)], "a replaced worker lives on"
    cli.ok("stop")


# -- logs -----------------------------------------------------------------------------------------


def _sleeping(pid: int) -> bool:
    """The process is blocked in a nanosleep (time.sleep): /proc's wchan, else its syscall number."""
    try:
        if "nanosleep" in Path(f"/proc/{pid}/wchan").read_text():
            return True
        number = Path(f"/proc/{pid}/syscall").read_text().split()[0]
    except (OSError, IndexError):
        return False
    return number in {"230", "35"} if os.uname().machine == "x86_64" else number in {"115", "101"}


def test_logs_tail_and_follow(cli: Cli, spawn, read_line) -> None:
    cli.start(workers=2)
    result = cli.ok("logs", "-n", "3")
    lines = result.out.splitlines()
    assert len(lines) == 3 and all(LOG_LINE_RE.match(line) for line in lines), str(result)
    assert lines == cli.log_lines()[-3:]

    follower = spawn([POOLCTL, "--runtime-dir", str(cli.directory), "logs", "-f", "-n", "0"], cwd=TESTS_DIR)
    # Once it polls (asleep between reads) it has taken its starting position, the file's end.
    wait_for(lambda: _sleeping(follower.pid), 60.0, "logs -f to poll", interval=0.01)
    cli.ok("scale", "3")
    deadline = time.monotonic() + 30
    seen = []
    while not any("scaling from 2 to 3 workers" in line for line in seen):
        assert time.monotonic() < deadline, f"logs -f printed no scaling line: {seen}"
        seen.append(read_line(follower, timeout=max(0.1, deadline - time.monotonic())))
    assert all(LOG_LINE_RE.match(line) for line in seen), seen
    os.kill(follower.pid, signal.SIGINT)  # Ctrl-C ends a follow cleanly
    assert follower.wait(timeout=10) == 0
    cli.ok("stop")


def test_watch_refreshes_until_ctrl_c(cli: Cli, spawn) -> None:
    cli.start(workers=2)
    watcher = spawn(cli.argv("watch", "--interval", "0.1"))
    # Ctrl-C once it refreshes: asleep between two frames (a Ctrl-C during its imports is
    # exit 130, which is right but not this test), however long starting took.
    wait_for(lambda: _sleeping(watcher.pid), 60.0, "watch to sleep between refreshes", interval=0.01)
    os.kill(watcher.pid, signal.SIGINT)
    out, err = watcher.communicate(timeout=10)
    assert watcher.returncode == 0, err
    assert f"pool {cli.name}: running" in out.decode() and "Traceback" not in err.decode()
    cli.ok("stop")


# -- help, version, demo --------------------------------------------------------------------------

HELP = {
    (): ["--name", "--runtime-dir", "--debug", "--version", "start", "stop", "status", "demo"],
    ("start",): [
        "target",
        "--workers",
        "--heartbeat-timeout",
        "--grace",
        "--restart",
        "--max-restarts",
        "--restart-window",
        "--flush-interval",
        "--start-method",
        "--foreground",
        "--wait",
    ],
    ("stop",): ["--timeout"],
    ("restart",): ["--rolling", "--wait"],
    ("status",): ["--json", "--supervisor-timeout"],
    ("watch",): ["--interval"],
    ("scale",): ["workers", "--wait"],
    ("logs",): ["--lines", "--follow"],
    ("demo",): ["--seconds", "--workers"],
}


@pytest.mark.parametrize("command", list(HELP), ids=[" ".join(c) or "poolctl" for c in HELP])
def test_help_everywhere(command: tuple[str, ...]) -> None:
    # 80 columns, as on a default terminal: every option must still be there in full.
    env = {**os.environ, "COLUMNS": "80"}
    result = cli_targets.run([POOLCTL, *command, "--help"], timeout=30, env=env)
    assert result.code == 0 and result.err == "", str(result)
    assert "Usage: poolctl" in result.out
    for option in HELP[command]:
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", result.out), (
            f"{option} missing from help:\n{result.out}"
        )


def test_version() -> None:
    result = cli_targets.run([POOLCTL, "--version"], timeout=30)
    assert (result.code, result.out, result.err) == (0, f"poolctl {version('poolctl')}\n", "")


@pytest.mark.timeout(90)
def test_demo_runs_crash_and_hang_and_leaves_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = cli_targets.run([POOLCTL, "demo", "--seconds", "8"], cwd=tmp_path, timeout=60, env=env)
    assert result.code == 0, str(result)
    out = result.out
    assert re.search(r"worker 1 \(pid \d+\) raised: RuntimeError: injected crash", out), out
    assert "worker 1 restarting" in out, out
    assert re.search(r"worker 2 \(pid \d+\) hung: no heartbeat", out), out
    assert "worker 2 restarting" in out, out
    assert out.splitlines()[-1].startswith("demo pool stopped: stopped"), out
    assert list(tmp_path.iterdir()) == [], "the demo left its runtime directory behind"


def test_a_plain_stop_runs_before_typer_loads(cli: Cli) -> None:
    # typer (and its command tree) cost more than the stop itself; like status, a plain
    # `stop [--timeout S]` is parsed by cli/fast.py and never imports typer, numpy or psutil.
    cli.start("cli_targets:steady", workers=2)
    pids = [w["pid"] for w in cli.status()[1]["workers"]]
    code = (
        "import sys; from cli.main import main; "
        f"rc = main(['--name', {cli.name!r}, '--runtime-dir', {str(cli.directory)!r}, 'stop', '--timeout', '10']); "
        "print(rc, *(m in sys.modules for m in ('typer', 'numpy', 'psutil', 'multiprocess')))"
    )
    result = cli_targets.run([sys.executable, "-c", code], cwd=TESTS_DIR)
    assert result.out.splitlines()[-1] == "0 False False False False", str(result)
    assert f"pool {cli.name}: " in result.out
    assert cli.status()[0] == 3
    assert not cli_targets.wait_gone([(pid, None) for pid in pids], 5.0)
