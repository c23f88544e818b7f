"""`poolctl systemd-unit`: the unit text, its quoting, systemd's own verdict on it (when
systemd-analyze exists), and that its ExecStart really runs the pool in the foreground and
stops it cleanly on the SIGTERM systemd sends."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from cli_targets import POOLCTL, TESTS_DIR, Cli, run, wait_for

from cli.app import app
from cli.systemd_unit import UnitOptions, poolctl_command, render_unit

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def unit(*args: str, cwd: Path = TESTS_DIR, name: str = "web") -> str:
    result = run([POOLCTL, "--name", name, "systemd-unit", *args], cwd=cwd)
    assert result.code == 0, str(result)
    assert result.err == "", str(result)
    return result.out


def sections(text: str) -> dict[str, list[tuple[str, str]]]:
    """[Section] -> [(key, value)] in order (systemd allows repeated keys)."""
    parsed: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            parsed[current] = []
            continue
        assert current is not None, f"setting outside a section: {line!r}"
        key, _, value = line.partition("=")
        parsed[current].append((key, value))
    return parsed


def settings(text: str, section: str = "Service") -> dict[str, str]:
    pairs = sections(text)[section]
    keys = [k for k, _ in pairs if k != "Environment"]
    assert len(keys) == len(set(keys)), f"a key repeats: {keys}"
    return dict(pairs)


def exec_argv(value: str) -> list[str]:
    """Undo systemd's escaping of an ExecStart= value ($$ and %% are literal $ and %)."""
    return shlex.split(value.replace("$$", "$").replace("%%", "%"))


# -- the text -----------------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    text = unit("cli_targets:steady", cwd=tmp_path)
    service = settings(text)
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert exec_argv(service["ExecStart"]) == [
        POOLCTL,
        "--name",
        "web",
        "start",
        "cli_targets:steady",
        "--foreground",
    ]
    assert service["WorkingDirectory"] == str(tmp_path)
    assert service["KillMode"] == "mixed"
    assert service["TimeoutStopSec"] == "15"  # the default grace (5 s) + 10
    assert service["Restart"] == "on-failure"
    assert service["WatchdogSec"] == "30"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert "User" not in service
    assert settings(text, "Unit")["Description"] == "poolctl pool web (cli_targets:steady)"
    assert settings(text, "Install") == {"WantedBy": "multi-user.target"}
    assert text.endswith("\n")
    assert f"# Health: {POOLCTL} --name web status" in text


def test_start_options_reach_exec_start(tmp_path: Path) -> None:
    """How given start options are written (each start option: the derived tests below), and
    the unit's own options."""
    text = unit(
        "cli_targets:steady",
        "-w", "4",
        "--grace", "2",
        "--max-rss", "512M",
        "--restart-window", "30.5",
        "--watchdog-sec", "2.5",
        "--user", "nobody",
        "--description", "Crunchers",
        "--working-directory", str(tmp_path),
        "--env", "PYTHONUNBUFFERED=1",
        "--env", "GREETING=hello world",
        "--wanted-by", "default.target",
    )  # fmt: skip
    service = settings(text)
    assert exec_argv(service["ExecStart"])[4:] == [
        "cli_targets:steady",
        "--foreground",
        "--workers", "4",  # by its long name
        "--grace", "2",  # a whole number of seconds as one
        "--restart-window", "30.5",
        "--max-rss", "512M",  # as written
    ]  # fmt: skip
    assert service["TimeoutStopSec"] == "12"  # grace 2 + 10
    assert service["WatchdogSec"] == "2500ms"
    assert service["User"] == "nobody"
    assert service["WorkingDirectory"] == str(tmp_path)
    assert [v for k, v in sections(text)["Service"] if k == "Environment"] == [
        "PYTHONUNBUFFERED=1",
        '"GREETING=hello world"',
    ]
    assert settings(text, "Unit")["Description"] == "Crunchers"
    assert settings(text, "Install") == {"WantedBy": "default.target"}


# -- the options are start's ---------------------------------------------------------------------

# The start options a unit deliberately leaves out, each with the reason. Every other start
# option must be a systemd-unit option of the same type and reach ExecStart as given.
NOT_IN_UNIT = {
    "--foreground": "ExecStart always has it: the supervisor is the service's main process (Type=notify)",
    "--wait": "only a detached start waits for the first beats; under systemd, READY=1 is the readiness",
}
# Values for options whose type alone does not give a valid one.
SAMPLES = {"--max-rss": "512M", "--metrics-host": "0.0.0.0", "--metrics-port": "9100"}


# typer 0.28 carries its own click (typer._click): the commands are read by duck typing.


def _commands() -> tuple[Any, Any]:
    """The click commands typer builds for start and systemd-unit."""
    group = typer.main.get_command(app)
    return group.commands["start"], group.commands["systemd-unit"]  # type: ignore[attr-defined]


def _options(command: Any) -> dict[str, Any]:
    """Each option by its first long name (``--workers`` for ``-w/--workers``)."""
    return {
        next(o for o in param.opts if o.startswith("--")): param
        for param in command.params
        if param.param_type_name == "option"
    }


def _sample(option: str, param: Any) -> list[str]:
    """A valid value for ``option`` that differs from its default, as command-line words."""
    if param.is_flag:
        return [option]
    if option in SAMPLES:
        return [option, SAMPLES[option]]
    kind = param.type
    if kind.name == "choice":
        default = getattr(param.default, "value", param.default)
        return [option, next(str(c) for c in reversed(kind.choices) if c != default)]
    if kind.name in ("integer", "int range"):
        return [option, str((getattr(kind, "min", None) or 0) + 3)]
    if kind.name in ("float", "float range"):
        return [option, "2.5"]
    raise AssertionError(f"give a sample value for {option} ({kind!r}) in SAMPLES")


def _shape(param: Any) -> tuple[Any, ...]:
    """What must match between a start option and its systemd-unit twin."""
    return (param.opts, param.secondary_opts, repr(param.type), param.multiple, param.is_flag)


def test_every_start_option_is_a_unit_option_or_deliberately_left_out() -> None:
    start, unit_command = _commands()
    start_options = _options(start)
    unit_options = _options(unit_command)
    assert set(NOT_IN_UNIT) <= set(start_options), "NOT_IN_UNIT names options start does not have"
    assert all(reason for reason in NOT_IN_UNIT.values())
    missing = sorted(set(start_options) - set(NOT_IN_UNIT) - set(unit_options))
    assert missing == [], f"start options systemd-unit does not accept: {missing}"
    for option in NOT_IN_UNIT:
        assert option not in unit_options, f"{option} is left out of units but systemd-unit takes it"
    for option in set(start_options) - set(NOT_IN_UNIT):
        assert _shape(unit_options[option]) == _shape(start_options[option]), option
    start_args = [(p.name, repr(p.type)) for p in start.params if p.param_type_name == "argument"]
    unit_args = [(p.name, repr(p.type)) for p in unit_command.params if p.param_type_name == "argument"]
    assert unit_args == start_args


def test_every_start_option_given_reaches_exec_start(tmp_path: Path) -> None:
    """All of them at once, each with a non-default value: ExecStart has each as given."""
    start, _ = _commands()
    given = [_sample(option, param) for option, param in _options(start).items() if option not in NOT_IN_UNIT]
    text = unit("cli_targets:steady", *[word for pair in given for word in pair], cwd=tmp_path)
    argv = exec_argv(settings(text)["ExecStart"])
    assert argv[4:6] == ["cli_targets:steady", "--foreground"]
    rest = argv[6:]
    pairs = [rest[i : i + 2] for i in range(0, len(rest), 2)]
    assert sorted(pairs) == sorted(given), (rest, given)


def test_watchdog_0_means_no_watchdog() -> None:
    assert "WatchdogSec" not in settings(unit("cli_targets:steady", "--watchdog-sec", "0"))


def test_runtime_dir_is_passed_absolute(tmp_path: Path) -> None:
    result = run(
        [POOLCTL, "--name", "web", "--runtime-dir", "rt/web", "systemd-unit", "app:work"], cwd=tmp_path
    )
    assert result.code == 0, str(result)
    argv = exec_argv(settings(result.out)["ExecStart"])
    assert argv[1:5] == ["--name", "web", "--runtime-dir", str(tmp_path / "rt/web")]
    assert f"--runtime-dir {tmp_path / 'rt/web'} status" in result.out


def test_specials_are_escaped_and_quoted() -> None:
    target = 'my dir/100% "real" $HOME\\app.py:work'
    text = render_unit(
        UnitOptions(
            name="web",
            target=target,
            command=["/opt/poolctl env/bin/poolctl"],
            working_directory="/srv/100%",
            description="50% of $x",
        )
    )
    service = settings(text)
    assert exec_argv(service["ExecStart"]) == [
        "/opt/poolctl env/bin/poolctl",
        "--name",
        "web",
        "start",
        target,
        "--foreground",
    ]
    assert "%%" in service["ExecStart"] and "$$HOME" in service["ExecStart"]
    assert service["WorkingDirectory"] == "/srv/100%%"
    assert settings(text, "Unit")["Description"] == "50%% of $x"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--env", "NOEQUALS"], "--env"),
        (["--env", "1BAD=x"], "--env"),
        (["--max-rss", "12"], "--max-rss"),
        (["-w", "0"], "--workers"),
        (["--grace", "-1"], "--grace"),
        (["--watchdog-sec", "-1"], "--watchdog-sec"),
        (["--restart", "sometimes"], "--restart"),
    ],
)
def test_bad_options_are_usage_errors(args: list[str], needle: str) -> None:
    result = run([POOLCTL, "systemd-unit", "app:work", *args])
    assert result.code == 2, str(result)
    assert len(result.err_lines) == 1 and needle in result.err, str(result)
    assert result.out == ""


def test_poolctl_command_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert poolctl_command(POOLCTL) == [POOLCTL]
    relative = os.path.relpath(POOLCTL)
    assert poolctl_command(relative) == [os.path.abspath(relative)]
    monkeypatch.setenv("PATH", str(Path(POOLCTL).parent))
    assert poolctl_command("/somewhere/cli/__main__.py") == [POOLCTL]
    monkeypatch.setenv("PATH", str(tmp_path))
    assert poolctl_command("/somewhere/cli/__main__.py") == [os.path.abspath(sys.executable), "-m", "cli"]


# -- systemd's verdict ----------------------------------------------------------------------------


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize(
    "args",
    [
        [],
        ["-w", "4", "--grace", "2.5", "--watchdog-sec", "0", "--log-format", "json", "--env", "A=b c"],
        ["--user", "root", "--metrics-port", "9100", "--description", "100% pool"],
    ],
)
def test_systemd_analyze_verify_accepts_it(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "poolctl-web.service"
    path.write_text(unit("cli_targets:steady", *args))
    assert SYSTEMD_ANALYZE is not None
    result = run([SYSTEMD_ANALYZE, "verify", str(path)], cwd=tmp_path)
    complaints = [line for line in result.err_lines if path.name in line]
    assert result.code == 0 and not complaints, str(result)


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a unit naming a missing program is refused."""
    path = tmp_path / "poolctl-web.service"
    text = render_unit(
        UnitOptions(name="web", target="app:work", command=["/nonexistent/poolctl"], working_directory="/")
    )
    path.write_text(text)
    assert SYSTEMD_ANALYZE is not None
    result = run([SYSTEMD_ANALYZE, "verify", str(path)], cwd=tmp_path)
    assert result.code != 0 or any(path.name in line for line in result.err_lines), str(result)


# -- the ExecStart runs the pool ------------------------------------------------------------------


def test_exec_start_runs_the_pool_and_sigterm_stops_it(cli: Cli, spawn) -> None:
    """What systemd does: run ExecStart in WorkingDirectory, wait, then SIGTERM the main process."""
    result = run(
        cli.argv(
            "systemd-unit", "cli_targets:steady", "-w", "2", "--heartbeat-timeout", "5", "--grace", "0.5"
        )
    )
    assert result.code == 0, str(result)
    service = settings(result.out)
    main = spawn(exec_argv(service["ExecStart"]), cwd=service["WorkingDirectory"], stdout=subprocess.DEVNULL)
    document = wait_for(lambda: _running(cli), 30, "the unit's pool to run")
    assert document["supervisor"]["pid"] == main.pid  # the main process is the supervisor
    assert len(document["workers"]) == 2
    main.send_signal(signal.SIGTERM)
    assert main.wait(timeout=_seconds(service["TimeoutStopSec"])) == 0
    assert cli.status()[0] == 3
    assert cli.pool_processes() == []


def _running(cli: Cli) -> dict[str, object] | None:
    code, document = cli.status()
    return document if code == 0 else None


def _seconds(span: str) -> float:
    return int(span[:-2]) / 1000 if span.endswith("ms") else float(span)
