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

import pytest
from cli_targets import POOLCTL, TESTS_DIR, Cli, run, wait_for

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
    text = unit(
        "cli_targets:steady",
        "-w", "4",
        "--heartbeat-timeout", "10",
        "--grace", "2",
        "--restart", "transient",
        "--max-restarts", "3",
        "--restart-window", "30",
        "--max-rss", "512M",
        "--max-age", "3600",
        "--metrics-port", "9100",
        "--log-format", "json",
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
        "--workers", "4",
        "--heartbeat-timeout", "10",
        "--grace", "2",
        "--restart", "transient",
        "--max-restarts", "3",
        "--restart-window", "30",
        "--max-rss", "512M",
        "--max-age", "3600",
        "--metrics-port", "9100",
        "--log-format", "json",
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
        [
            POOLCTL,
            "--name",
            cli.name,
            "--runtime-dir",
            str(cli.directory),
            "systemd-unit",
            "cli_targets:steady",
            "-w",
            "2",
            "--heartbeat-timeout",
            "5",
            "--grace",
            "0.5",
        ]
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
