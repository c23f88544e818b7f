"""Bad input to `poolctl`: one line on stderr, the right exit code, nothing started, nothing lost.

Usage errors exit 2 (click's code) with ONE line naming the option and the bad
value; failures to start exit 1 with the supervisor's reason; an unsafe runtime
directory is refused by every command. No output carries a traceback unless the
top-level --debug asks for one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path

import pytest
from cli_targets import TESTS_DIR, Cli, cli_session, lock_holders

pytestmark = pytest.mark.timeout(120)


def assert_one_line_error(result, code: int) -> str:
    assert result.code == code, str(result)
    lines = result.err_lines
    assert len(lines) == 1, f"expected ONE line on stderr:\n{result}"
    assert lines[0].startswith("poolctl: error: "), str(result)
    assert "Traceback" not in result.out + result.err, str(result)
    assert "Usage:" not in result.err and "╭" not in result.err, str(result)
    return lines[0]


def names_value(line: str, value: str) -> bool:
    """``value`` appears in ``line`` as a token of its own (so '0' is not found in '10')."""
    return re.search(rf"(?<![\w.]){re.escape(value)}(?![\w.])", line) is not None


def assert_nothing_started(cli: Cli) -> None:
    lock = cli.directory / "supervisor.lock"
    if lock.exists():
        assert not lock_holders(lock), f"someone holds {lock}"
    assert not cli.segments(), cli.segments()
    assert not cli.pool_processes(), cli.pool_processes()


# -- usage errors: exit 2, one line naming option and value, before anything starts ----------

USAGE_CASES = [
    (["start", "cli_targets:steady", "-w", "0"], "--workers", "0"),
    (["start", "cli_targets:steady", "-w", "-1"], "--workers", "-1"),
    (["start", "cli_targets:steady", "-w", "5000"], "--workers", "5000"),
    (["start", "cli_targets:steady", "-w", "many"], "--workers", "many"),
    (["start", "cli_targets:steady", "--heartbeat-timeout", "0"], "--heartbeat-timeout", "0"),
    (["start", "cli_targets:steady", "--heartbeat-timeout", "-1"], "--heartbeat-timeout", "-1"),
    (["start", "cli_targets:steady", "--grace", "0"], "--grace", "0"),
    (["start", "cli_targets:steady", "--grace", "inf"], "--grace", "inf"),
    (["start", "cli_targets:steady", "--flush-interval", "0"], "--flush-interval", "0"),
    (["start", "cli_targets:steady", "--restart-window", "-5"], "--restart-window", "-5"),
    (["start", "cli_targets:steady", "--max-restarts", "-1"], "--max-restarts", "-1"),
    (["start", "cli_targets:steady", "--restart", "sometimes"], "--restart", "sometimes"),
    (["start", "cli_targets:steady", "--start-method", "teleport"], "--start-method", "teleport"),
    (["start", "cli_targets:steady", "--wait", "0"], "--wait", "0"),
    (["start", "cli_targets:steady", "--frobnicate"], "--frobnicate", "--frobnicate"),
    (["scale", "0"], "workers", "0"),
    (["scale", "2000"], "workers", "2000"),
    (["stop", "--timeout", "0"], "--timeout", "0"),
    (["status", "--supervisor-timeout", "0"], "--supervisor-timeout", "0"),
    (["status", "--supervisor-timeout", "-2"], "--supervisor-timeout", "-2"),
    (["status", "--colour"], "--colour", "--colour"),
    (["logs", "-n", "-1"], "--lines", "-1"),
    (["watch", "--interval", "0"], "--interval", "0"),
    (["restart", "--wait", "0"], "--wait", "0"),
    (["demo", "--seconds", "0"], "--seconds", "0"),
    (["frobnicate"], "frobnicate", "frobnicate"),
]


@pytest.mark.parametrize(("args", "option", "value"), USAGE_CASES, ids=[" ".join(c[0]) for c in USAGE_CASES])
def test_usage_error_is_one_line_naming_option_and_value(tmp_path: Path, args, option, value) -> None:
    cli = Cli(tmp_path / "never-created")
    result = cli(*args, timeout=30)
    line = assert_one_line_error(result, 2)
    assert option in line, f"the line does not name {option}: {line}"
    assert names_value(line, value), f"the line does not name the bad value {value!r}: {line}"
    assert result.out == ""
    assert not cli.directory.exists(), "a usage error created the runtime directory"


@pytest.mark.parametrize("bad_name", ["a/b", "..", "x..y"])
@pytest.mark.parametrize("command", [["start", "cli_targets:steady"], ["status", "--json"], ["stop"]])
def test_bad_pool_name_is_a_usage_error(tmp_path: Path, bad_name: str, command: list[str]) -> None:
    env = {**os.environ, "POOLCTL_RUNTIME_DIR": str(tmp_path / "pools")}
    from cli_targets import POOLCTL, run

    result = run([POOLCTL, "--name", bad_name, *command], timeout=30, env=env)
    # exit 2 for status too: status's exit 1 means "stale", a verdict this is not
    line = assert_one_line_error(result, 2)
    assert "--name" in line and bad_name in line, line
    assert result.out == ""
    assert not (tmp_path / "pools").exists()


def test_no_command_prints_help_not_an_error(tmp_path: Path) -> None:
    from cli_targets import POOLCTL, run

    result = run([POOLCTL], timeout=30)
    assert result.code in (0, 2), str(result)
    assert "start" in result.out and "status" in result.out, str(result)
    assert "Traceback" not in result.out + result.err


# -- start failures: exit 1, the supervisor's reason on one line, nothing left running ---------

TARGET_FAILURES = [
    ("no_such_module_here:work", "no module named 'no_such_module_here'"),
    ("cli_targets:no_such_function", "has no attribute 'no_such_function'"),
    ("targets:NOT_CALLABLE", "is not callable"),
    ("broken_module:work", "RuntimeError: broken_module: refusing to import"),
    ("bad_syntax:work", "syntax error in"),
    ("missing/file.py:work", "no such file"),
]


@pytest.mark.parametrize(("target", "fragment"), TARGET_FAILURES, ids=[t for t, _ in TARGET_FAILURES])
def test_start_failure_is_one_line_and_leaves_nothing(tmp_path: Path, target: str, fragment: str) -> None:
    code = tmp_path / "code"
    code.mkdir()
    for module in ("targets.py", "broken_module.py", "cli_targets.py"):
        shutil.copy(TESTS_DIR / module, code / module)
    (code / "bad_syntax.py").write_text("def work(ctx)\n    pass\n")
    runtime = tmp_path / "run"
    with cli_session(runtime, cwd=code) as cli:
        result = cli("start", target, "-w", "2", "--grace", "0.5", "--wait", "20", timeout=60)
        line = assert_one_line_error(result, 1)
        assert "start failed" in line and fragment in line, line
        assert result.out == ""
        assert_nothing_started(cli)
        # The pool reads as not running, with the reason; nothing was lost or left half-written.
        status = cli("status", "--json")
        assert status.code == 3, str(status)
        assert json.loads(status.out)["state"] == "stopped"


def test_malformed_target_is_refused_before_anything_starts(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "run")
    line = assert_one_line_error(cli("start", "no colon here"), 1)
    assert "'no colon here'" in line and "module:function" in line, line
    assert not cli.directory.exists()


def test_lock_held_by_a_live_holder_then_a_stale_lock_file(cli: Cli, lock_holder) -> None:
    holder = lock_holder(cli.directory)
    lock = cli.directory / "supervisor.lock"
    result = cli("start", "cli_targets:steady", "-w", "1", "--grace", "0.5", timeout=60)
    line = assert_one_line_error(result, 1)
    assert "start failed" in line and "already running" in line, line
    assert lock_holders(lock) == {holder.proc.pid}, "the failed start disturbed the lock"
    assert not (cli.directory / "runtime.json").exists(), "a start that never got the lock wrote runtime.json"
    assert not cli.segments()
    code, document = cli.status()
    assert (code, document["state"]) == (3, "stopped"), document

    # The holder goes; its lock FILE stays (stale, nobody holds it): start must work.
    holder.release()
    lock.write_text("999999\n")
    cli.start(workers=1)
    code, document = cli.status()
    assert code == 0, document
    assert lock_holders(lock) == {document["supervisor"]["pid"]}
    cli.ok("stop")
    assert not cli.pool_processes()


# -- unsafe runtime directories: refused by every command, nothing changed ------------------------


def _make_unsafe(kind: str, base: Path) -> tuple[Path, Path]:
    """(runtime dir to pass, the directory whose contents must stay untouched)."""
    real = base / "real"
    real.mkdir(mode=0o700)
    (real / "keep.txt").write_text("precious\n")
    if kind == "symlink":
        link = base / "link"
        link.symlink_to(real)
        return link, real
    if kind == "other-owner":
        os.chown(real, 65534, 65534)
        return real, real
    if kind == "world-writable":
        os.chmod(real, 0o777)
        return real, real
    if kind == "regular-file":
        path = base / "afile"
        path.write_text("not a directory\n")
        return path, real
    raise AssertionError(kind)


def _state(path: Path) -> object:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        content: object = os.readlink(path)
    elif stat.S_ISDIR(st.st_mode):
        content = sorted((p.name, p.read_text()) for p in path.iterdir())
    else:
        content = path.read_text()
    return stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, content


UNSAFE = [
    ("symlink", "is a symlink"),
    ("other-owner", "owned by uid 65534"),
    ("world-writable", "writable by group or others"),
    ("regular-file", "is not a directory"),
]


@pytest.mark.parametrize(("kind", "fragment"), UNSAFE, ids=[k for k, _ in UNSAFE])
def test_unsafe_runtime_directory_is_refused(tmp_path: Path, kind: str, fragment: str) -> None:
    directory, watched = _make_unsafe(kind, tmp_path)
    before = (_state(directory), _state(watched))
    commands = [["start", "cli_targets:steady", "-w", "1", "--grace", "0.5"], ["stop"]]
    if kind == "symlink":  # every command resolves the directory the same way; check them all once
        commands += [["restart"], ["scale", "2"], ["logs"]]
    with cli_session(directory) as cli:
        for args in commands:
            line = assert_one_line_error(cli(*args), 1)
            assert fragment in line, f"{args}: {line}"
        status = cli("status", "--json")
        assert status.code == 4, str(status)
        document = json.loads(status.out)
        assert document["state"] == "unknown" and fragment in document["reason"], document
        table = cli("status")
        assert table.code == 4 and fragment in table.out.splitlines()[0], str(table)
        assert not cli.pool_processes() and not cli.segments()
    assert (_state(directory), _state(watched)) == before, "a refused command changed the directory"
    if kind == "other-owner":
        os.chown(watched, 0, 0)  # let tmp_path clean-up remove it


# -- --debug: the traceback follows the one line, with the same exit code --------------------------


def test_debug_adds_a_traceback_with_the_same_exit_code(tmp_path: Path) -> None:
    with cli_session(tmp_path / "run") as cli:
        plain = cli("start", "no_such_module_here:work", "--grace", "0.5")
        line = assert_one_line_error(plain, 1)
        debug = cli("--debug", "start", "no_such_module_here:work", "--grace", "0.5")
        assert debug.code == plain.code == 1, str(debug)
        lines = debug.err_lines
        assert lines[0] == line, str(debug)
        assert lines[1] == "Traceback (most recent call last):", str(debug)
        assert lines[-1].endswith(
            "start failed: cannot import 'no_such_module_here': no module named 'no_such_module_here'"
        )
        assert_nothing_started(cli)

    # an error inside a command that is not a start: a corrupt runtime.json read by restart
    runtime = tmp_path / "corrupt"
    runtime.mkdir(mode=0o700)
    (runtime / "runtime.json").write_text('{"schema": 1, "pool": ')
    cli = Cli(runtime)
    plain = cli("restart")
    line = assert_one_line_error(plain, 1)
    assert "truncated or not JSON" in line
    debug = cli("--debug", "restart")
    assert debug.code == 1 and debug.err_lines[0] == line
    assert "Traceback (most recent call last):" in debug.err
