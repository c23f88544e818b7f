"""sd_notify: the exact datagrams on a real unix datagram socket (path and abstract), the
watchdog interval rules, the environment unset for workers, and sends that never raise."""

from __future__ import annotations

import os
import select
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pool.integrations.sdnotify import SystemdNotifier, socket_address, watchdog_interval


class Listener:
    """A bound AF_UNIX SOCK_DGRAM socket standing in for systemd; ``env`` is its NOTIFY_SOCKET."""

    def __init__(self, sock: socket.socket, env: str) -> None:
        self.sock = sock
        self.env = env
        sock.settimeout(5.0)  # a missing datagram fails the test instead of hanging it

    def receive(self) -> bytes:
        return self.sock.recv(4096)

    def nothing_pending(self) -> bool:
        readable, _, _ = select.select([self.sock], [], [], 0)
        return not readable


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Listener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        path = str(tmp_path / "notify.sock")
        sock.bind(path)
        env = path
    else:
        name = f"poolctl-test-notify-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        env = "@" + name
    try:
        yield Listener(sock, env)
    finally:
        sock.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# -- the datagrams ------------------------------------------------------------------------------


def test_each_message_is_one_exact_datagram(listener: Listener) -> None:
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": listener.env}, unset=False)
    assert notifier is not None
    assert notifier.ready("running: 4 workers")
    assert listener.receive() == b"READY=1\nSTATUS=running: 4 workers"
    assert notifier.status("degraded: worker 2 restarting")
    assert listener.receive() == b"STATUS=degraded: worker 2 restarting"
    assert notifier.watchdog()
    assert listener.receive() == b"WATCHDOG=1"
    assert notifier.stopping("stopping: SIGTERM received")
    assert listener.receive() == b"STOPPING=1\nSTATUS=stopping: SIGTERM received"
    assert listener.nothing_pending()


def test_a_newline_in_a_status_cannot_inject_an_assignment(listener: Listener) -> None:
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": listener.env}, unset=False)
    assert notifier is not None
    assert notifier.status("worker 1 raised:\nREADY=1")
    assert listener.receive() == b"STATUS=worker 1 raised: READY=1"


def test_datagrams_come_from_our_pid(listener: Listener) -> None:
    """NotifyAccess=main relies on the sender's credentials: they must be this very process."""
    listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": listener.env}, unset=False)
    assert notifier is not None
    assert notifier.watchdog()
    size = socket.CMSG_SPACE(12)
    data, ancillary, _, _ = listener.sock.recvmsg(4096, size)
    assert data == b"WATCHDOG=1"
    creds = [
        d for level, kind, d in ancillary if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
    ]
    assert creds and int.from_bytes(creds[0][:4], "little") == os.getpid()


def test_the_socket_is_not_held_between_messages(listener: Listener) -> None:
    """Nothing is left open for a forked worker to inherit."""
    before = set(os.listdir("/proc/self/fd"))
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": listener.env}, unset=False)
    assert notifier is not None
    assert notifier.ready("ready")
    listener.receive()
    assert set(os.listdir("/proc/self/fd")) == before


# -- failures never raise -----------------------------------------------------------------------


def test_a_vanished_socket_returns_false(tmp_path: Path) -> None:
    notifier = SystemdNotifier(str(tmp_path / "gone.sock"))
    assert notifier.ready("ready") is False
    assert notifier.watchdog() is False


def test_a_full_socket_returns_false_without_blocking(tmp_path: Path) -> None:
    path = str(tmp_path / "full.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        notifier = SystemdNotifier(path)
        sent = 0
        while notifier.status("x" * 1000):  # nobody reads: the queue fills, then EAGAIN
            sent += 1
            assert sent < 100_000, "the socket never filled"
        assert sent > 0
        assert notifier.watchdog() is False


def test_closed_notifier_sends_nothing(listener: Listener) -> None:
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": listener.env}, unset=False)
    assert notifier is not None
    notifier.close()
    notifier.close()  # twice is fine
    assert notifier.watchdog() is False
    assert listener.nothing_pending()


# -- from the environment -----------------------------------------------------------------------


def test_no_notify_socket_means_no_notifier(clean_env: pytest.MonkeyPatch) -> None:
    assert SystemdNotifier.from_environ({}) is None
    assert SystemdNotifier.from_environ({"WATCHDOG_USEC": "30000000"}) is None
    assert SystemdNotifier.from_environ() is None


@pytest.mark.parametrize("value", ["", "relative/notify.sock", "@", "vsock:2:1234"])
def test_unusable_addresses_mean_no_notifier(value: str) -> None:
    assert socket_address(value) is None
    assert SystemdNotifier.from_environ({"NOTIFY_SOCKET": value}, unset=False) is None


def test_abstract_address_gets_a_leading_nul() -> None:
    assert socket_address("@/org/freedesktop/systemd1/notify/42") == "\0/org/freedesktop/systemd1/notify/42"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"


def test_unset_removes_the_variables_from_os_environ(
    listener: Listener, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("NOTIFY_SOCKET", listener.env)
    clean_env.setenv("WATCHDOG_USEC", "2000000")
    clean_env.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = SystemdNotifier.from_environ()
    assert notifier is not None
    assert notifier.watchdog_interval == 1.0  # read before unsetting
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        assert name not in os.environ
    assert notifier.ready("ready")  # still works: the address was kept
    assert listener.receive() == b"READY=1\nSTATUS=ready"


def test_unset_false_leaves_os_environ_alone(listener: Listener, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("NOTIFY_SOCKET", listener.env)
    clean_env.setenv("WATCHDOG_USEC", "2000000")
    assert SystemdNotifier.from_environ(unset=False) is not None
    assert os.environ["NOTIFY_SOCKET"] == listener.env
    assert os.environ["WATCHDOG_USEC"] == "2000000"


def test_a_child_started_after_from_environ_does_not_inherit_the_socket(
    listener: Listener, clean_env: pytest.MonkeyPatch, spawn
) -> None:
    clean_env.setenv("NOTIFY_SOCKET", listener.env)
    clean_env.setenv("WATCHDOG_USEC", "2000000")
    assert SystemdNotifier.from_environ() is not None
    proc = spawn.python(
        "import os; print(sorted(k for k in os.environ if k in "
        "('NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID')))"
    )
    out, _ = proc.communicate(timeout=30)
    assert out.decode().strip() == "[]"


# -- the watchdog interval ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "OURS"}, 15.0),
        ({"WATCHDOG_USEC": "1"}, 0.0000005),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "OTHER"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "junk"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_PID": "OURS"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_rules(env: dict[str, str], expected: float | None, listener: Listener) -> None:
    pid = os.getpid()
    resolved = {k: str(pid) if v == "OURS" else str(pid + 1) if v == "OTHER" else v for k, v in env.items()}
    assert watchdog_interval(resolved, pid) == expected
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": listener.env, **resolved}, unset=False)
    assert notifier is not None
    assert notifier.watchdog_interval == expected
