"""The README's Docker/Kubernetes probe commands, run exactly as documented (only NAME is
substituted) against real pools: running, degraded, stale, stopped, never started, unreadable.
Each must pass or fail as the README's exit-code table says."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_targets import POOLCTL, TESTS_DIR, Cli, cli_session, new_name, wait_for

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Running under systemd, Docker/Kubernetes and Prometheus"


def readme_section() -> str:
    text = README.read_text()
    assert SECTION in text, f"README has no section {SECTION!r}"
    body = text.split(SECTION, 1)[1]
    return body.split("\n## ", 1)[0]


def marked_block(name: str) -> str:
    """The fenced block right after ``<!-- probe: NAME -->``."""
    match = re.search(
        rf"<!-- probe: {re.escape(name)} -->\n```[a-z]*\n(.*?)\n```", readme_section(), re.DOTALL
    )
    assert match, f"README marks no {name!r} probe block"
    return match.group(1)


def documented_table() -> dict[int, tuple[str, bool, bool]]:
    """exit code -> (status word, liveness passes, readiness passes), from the README's table."""
    rows = re.findall(r"^\| (\d) \| (\w+)[^|]*\| (pass|fail) \| (pass|fail) \|$", readme_section(), re.M)
    table = {int(code): (word, live == "pass", ready == "pass") for code, word, live, ready in rows}
    assert sorted(table) == [0, 1, 2, 3, 4], f"the README's exit-code table is incomplete: {table}"
    return table


def shell_probe(name: str) -> str:
    return marked_block(name).strip()


def docker_probe() -> str:
    """The shell form after CMD in the HEALTHCHECK line (Docker runs it with /bin/sh -c)."""
    block = marked_block("docker").replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?\bCMD\s+(.*)$", block, re.M)
    assert match, block
    return match.group(1).strip()


def kubernetes_probes() -> dict[str, list[str]]:
    """probe kind (startupProbe, livenessProbe, readinessProbe) -> its exec command argv."""
    probes: dict[str, list[str]] = {}
    current = None
    for line in marked_block("kubernetes").splitlines():
        key = re.match(r"\s*(\w+Probe):", line)
        if key:
            current = key.group(1)
        command = re.match(r"\s*command: (\[.*\])\s*$", line)
        if command and current is not None:
            probes[current] = json.loads(command.group(1))  # a YAML flow list of "strings" is JSON
            current = None
    assert {"livenessProbe", "readinessProbe"} <= set(probes), probes
    return probes


class Probes:
    """Runs the documented commands for one pool, the way Docker / the kubelet would."""

    def __init__(self, cli: Cli) -> None:
        self.cli = cli
        self.env = {
            **os.environ,
            "PATH": f"{Path(POOLCTL).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "POOLCTL_RUNTIME_DIR": str(cli.directory.parent),  # so `--name NAME` finds cli.directory
        }

    def _run(self, argv: list[str]) -> int:
        argv = [a.replace("NAME", self.cli.name) for a in argv]
        done = subprocess.run(
            argv, env=self.env, cwd=TESTS_DIR, stdin=subprocess.DEVNULL, capture_output=True, timeout=30
        )
        return done.returncode

    def shell(self, command: str) -> int:
        return self._run(["/bin/sh", "-c", command])

    def outcomes(self) -> dict[str, int]:
        codes = {
            "status": self.shell("poolctl --name NAME status"),
            "liveness": self.shell(shell_probe("liveness")),
            "readiness": self.shell(shell_probe("readiness")),
            "docker": self.shell(docker_probe()),
        }
        for kind, argv in kubernetes_probes().items():
            codes[kind] = self._run(argv)
        return codes

    def check(self, expected_status: int) -> None:
        """Every probe agrees with the README's table for this status."""
        word, live, ready = documented_table()[expected_status]
        codes = self.outcomes()
        what = f"{word} pool: {codes}"
        assert codes["status"] == expected_status, what
        assert (codes["liveness"] == 0) is live, what
        assert (codes["livenessProbe"] == 0) is live, what
        assert (codes["readiness"] == 0) is ready, what
        assert (codes["readinessProbe"] == 0) is ready, what
        assert codes["docker"] == (0 if ready else 1), what  # Docker: 0 healthy, 1 unhealthy
        if "startupProbe" in codes:
            assert (codes["startupProbe"] == 0) is ready, what


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    parent = tmp_path / "pools"
    parent.mkdir(mode=0o700)
    os.chmod(parent, 0o700)
    name = new_name()
    with cli_session(parent / name, name) as session:
        yield session


def test_the_documented_commands_are_what_we_think() -> None:
    assert shell_probe("readiness") == "poolctl --name NAME status"
    assert "poolctl --name NAME status" in shell_probe("liveness")
    assert "poolctl --name NAME status" in docker_probe()
    assert kubernetes_probes()["readinessProbe"] == ["poolctl", "--name", "NAME", "status"]


def test_probes_on_a_running_pool(cli: Cli) -> None:
    cli.start(workers=2)
    Probes(cli).check(0)


def test_probes_on_a_degraded_pool(cli: Cli) -> None:
    cli.start("cli_targets:crash_loop_slot_1", "--max-restarts", "1", workers=2)
    wait_for(lambda: cli.status()[0] == 2, 20, "the pool to be degraded")
    Probes(cli).check(2)


def test_probes_on_a_stale_pool(cli: Cli) -> None:
    cli.start(workers=1)
    pid, _ = cli.supervisor()
    os.kill(pid, signal.SIGKILL)  # its workers follow (parent-death signal); teardown checks
    wait_for(lambda: cli.status()[0] == 1, 10, "the pool to read stale")
    Probes(cli).check(1)


def test_probes_on_a_stopped_pool(cli: Cli) -> None:
    cli.start(workers=1)
    cli.ok("stop")
    Probes(cli).check(3)


def test_probes_on_a_pool_never_started(cli: Cli) -> None:
    assert not cli.directory.exists()
    Probes(cli).check(3)


def test_probes_on_an_unreadable_runtime_state(cli: Cli) -> None:
    cli.directory.mkdir(mode=0o700)
    (cli.directory / "runtime.json").write_text("{ torn")
    Probes(cli).check(4)
