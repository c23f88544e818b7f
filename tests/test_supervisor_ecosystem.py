"""The supervisor as systemd and Prometheus see it, end to end: a real `poolctl start
--foreground` talking sd_notify to a datagram socket we hold, and a real detached pool
serving /metrics from its loop."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from cli_targets import FAST, TESTS_DIR, Cli
from prometheus_client.parser import text_string_to_metric_families

WATCHDOG_USEC = 400_000  # systemd's WatchdogSec=0.4: we must ping every 0.2 s


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """An abstract-namespace datagram socket, as systemd hands a Type=notify service."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"poolctl-test-notify-{os.getpid()}-{time.monotonic_ns()}"
    sock.bind("\0" + name)
    try:
        yield sock, "@" + name
    finally:
        sock.close()


def receive(
    sock: socket.socket, until: str | Callable[[str], bool], timeout: float
) -> list[tuple[float, str]]:
    """Datagrams (arrival time, text) up to and including the first holding the line ``until``
    (or, given a function, the first for which it is true)."""
    done = until if callable(until) else lambda text: until in text.splitlines()
    got: list[tuple[float, str]] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"no {until!r} within {timeout}s; got {got}")
        sock.settimeout(remaining)
        try:
            text = sock.recv(4096).decode()
        except TimeoutError:
            continue
        got.append((time.monotonic(), text))
        if done(text):
            return got


def test_foreground_is_a_type_notify_service(cli: Cli, spawn, notify_socket) -> None:
    sock, address = notify_socket
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    proc = spawn(
        [*cli.argv(), "start", "cli_targets:steady", "-w", "3", *FAST, "--foreground"], cwd=TESTS_DIR, env=env
    )

    before_ready = receive(sock, "READY=1", 20.0)
    # READY=1 comes once every worker has beaten: the board agrees at that moment.
    code, document = cli.status()
    assert code == 0, document
    assert [w["state"] for w in document["workers"]] == ["running"] * 3
    assert all(w["beats"] > 0 for w in document["workers"])
    ready = before_ready[-1][1].splitlines()
    assert ready[0] == "READY=1" and ready[1] == "STATUS=3 of 3 workers running; 0 restarts, 0 recycled", (
        ready
    )

    # Watchdog pings keep coming while the loop is healthy (every WATCHDOG_USEC/2 by the rule
    # test_sdnotify checks; their spacing on a busy machine is not a pass mark): three more.
    pings = 0

    def third_ping(text: str) -> bool:
        nonlocal pings
        pings += text == "WATCHDOG=1"
        return pings >= 3

    receive(sock, third_ping, 30.0)

    # A crash changes the STATUS line.
    victim = document["workers"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    receive(sock, lambda text: text.startswith("STATUS=") and "1 restarts" in text, 30.0)

    os.kill(proc.pid, signal.SIGTERM)
    stopping = receive(sock, "STOPPING=1", 10.0)[-1][1].splitlines()
    assert stopping[1].startswith("STATUS=stopping: SIGTERM"), stopping
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert cli.status()[0] == 3


def test_workers_do_not_inherit_the_notify_socket(cli: Cli, spawn, notify_socket) -> None:
    sock, address = notify_socket
    env = {**os.environ, "NOTIFY_SOCKET": address}
    proc = spawn(
        [*cli.argv(), "start", "cli_targets:reports_notify_env", "-w", "1", *FAST, "--foreground"],
        cwd=TESTS_DIR,
        env=env,
    )
    receive(sock, "READY=1", 20.0)
    # The worker's own os.environ (a forked child's /proc/PID/environ still shows the block the
    # supervisor was exec'd with, whatever has been unset since).
    assert cli.status()[1]["workers"][0]["progress"] == 0.0
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_detached_pool_serves_metrics_from_its_loop(cli: Cli) -> None:
    port = free_port()
    cli.start("cli_targets:steady", "--metrics-port", str(port), workers=2)
    assert any(f"metrics at http://127.0.0.1:{port}/metrics" in line for line in cli.log_lines())
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples = {
        (sample.name, sample.labels.get("slot")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("poolctl_supervisor_up", None)] == 1.0
    assert samples[("poolctl_worker_up", "0")] == 1.0 and samples[("poolctl_worker_up", "1")] == 1.0
    assert samples[("poolctl_worker_resident_memory_bytes", "0")] > 1 << 20
    # The workers hold no copy of the listening socket (else one that outlives us holds the port).
    for worker in cli.status()[1]["workers"]:
        links = [
            os.readlink(f"/proc/{worker['pid']}/fd/{fd}") for fd in os.listdir(f"/proc/{worker['pid']}/fd")
        ]
        inodes = {link for link in links if link.startswith("socket:")}
        listener = _listener_inode(port)
        assert listener not in inodes, (links, listener)
    cli.ok("stop")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def _listener_inode(port: int) -> str:
    """``socket:[INODE]`` of the TCP socket listening on 127.0.0.1:port (from /proc/net/tcp)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as file:
        table = file.read().splitlines()[1:]
    for line in table:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":  # 0A: LISTEN
            return f"socket:[{fields[9]}]"
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def test_a_taken_metrics_port_fails_the_start_with_one_line(cli: Cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("start", "cli_targets:steady", "-w", "1", *FAST, "--metrics-port", str(port))
    assert result.code == 1, str(result)
    assert re.search(rf"metrics port {port}: .*in use", result.err), str(result)
    assert cli.status()[0] == 3
    assert not cli.segments()


def test_metrics_host_0_0_0_0_listens_on_every_address(cli: Cli) -> None:
    port = free_port()
    cli.start("cli_targets:steady", "--metrics-port", str(port), "--metrics-host", "0.0.0.0", workers=1)
    with open("/proc/net/tcp") as file:
        listening = {line.split()[1] for line in file.read().splitlines()[1:] if line.split()[3] == "0A"}
    assert f"00000000:{port:04X}" in listening, listening
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert b"poolctl_supervisor_up" in response.read()
    cli.ok("stop")
