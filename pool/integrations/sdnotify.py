"""systemd's sd_notify protocol: READY=1, STATUS=, WATCHDOG=1 and STOPPING=1 datagrams.

A service of ``Type=notify`` finds a unix datagram socket in ``$NOTIFY_SOCKET``
(a path, or ``@name`` for the Linux abstract namespace) and sends it
newline-separated ``KEY=VALUE`` assignments. The kernel attaches our pid, which
is how ``NotifyAccess=main`` tells the supervisor's messages from a worker's.

Design notes:

- A fresh non-blocking, close-on-exec socket per message, as libsystemd's own
  ``sd_notify`` does: nothing stays open for forked workers to inherit, and a
  message costs a few microseconds (the supervisor sends one per state change and
  one per watchdog interval).
- Sending never raises and never logs: a notification is advisory, and a full or
  vanished socket must not take the supervisor down. Each call returns whether the
  datagram was sent.
- ``from_environ`` unsets ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``
  by default (``sd_notify(unset_environment=1)``), so workers started later never
  inherit them and cannot notify (or be taken for the main process) by accident.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from types import TracebackType

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"
_ENV_NAMES = (ENV_SOCKET, ENV_WATCHDOG_USEC, ENV_WATCHDOG_PID)


def socket_address(value: str) -> str | None:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value, or None if we cannot use it.

    ``/path`` is a filesystem socket, ``@name`` an abstract one (leading NUL). Other
    forms (relative paths, systemd's ``vsock:`` addresses) are not supported.
    """
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of ``WATCHDOG_USEC`` (systemd's advice).

    None unless ``WATCHDOG_USEC`` is a positive integer and ``WATCHDOG_PID`` is unset
    or names ``pid`` (the watchdog was armed for another process otherwise).
    """
    try:
        usec = int(environ.get(ENV_WATCHDOG_USEC, ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watchdog_pid = environ.get(ENV_WATCHDOG_PID)
    if watchdog_pid is not None:
        try:
            if int(watchdog_pid) != pid:
                return None
        except ValueError:
            return None
    return usec / 2 / 1e6


def _one_line(text: str) -> str:
    """A value cannot hold a newline: it would start a new assignment."""
    return " ".join(text.splitlines())


class SystemdNotifier:
    """Sends sd_notify datagrams to one socket address. Never raises on a send failure."""

    def __init__(self, address: str, *, watchdog_interval: float | None = None) -> None:
        """``address``: as for ``socket.sendto`` (abstract names start with NUL)."""
        self.address = address
        self.watchdog_interval = watchdog_interval  # seconds between pings, or None
        self._closed = False

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, unset: bool = True
    ) -> SystemdNotifier | None:
        """The notifier systemd asked for, or None when ``NOTIFY_SOCKET`` is unset (or unusable).

        ``environ`` defaults to ``os.environ``. With ``unset`` (the default)
        ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` are removed from
        ``os.environ`` afterwards, so processes started later do not inherit them.
        """
        env = os.environ if environ is None else environ
        raw = env.get(ENV_SOCKET) or ""
        interval = watchdog_interval(env, os.getpid())
        if unset:
            for name in _ENV_NAMES:
                os.environ.pop(name, None)
        address = socket_address(raw)
        if address is None:
            return None
        return cls(address, watchdog_interval=interval)

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments as one datagram; True if the socket took it."""
        if self._closed:
            return False
        message = "\n".join(assignments).encode("utf-8", errors="replace")
        try:
            with socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            ) as sock:
                return sock.sendto(message, self.address) == len(message)
        except OSError:  # no such socket, refused, full (EAGAIN), ...
            return False

    def ready(self, status: str) -> bool:
        """Startup finished (every worker has beaten): ``READY=1`` with a status line."""
        return self.notify("READY=1", f"STATUS={_one_line(status)}")

    def status(self, text: str) -> bool:
        """The one-line status `systemctl status` shows."""
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """Keep-alive ping: send every ``watchdog_interval`` seconds while the loop is healthy."""
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str) -> bool:
        """Shutdown began: ``STOPPING=1`` with a status line."""
        return self.notify("STOPPING=1", f"STATUS={_one_line(status)}")

    def close(self) -> None:
        """No socket is held between messages; later sends return False. Safe to call twice."""
        self._closed = True

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        shown = "@" + self.address[1:] if self.address.startswith("\0") else self.address
        return f"SystemdNotifier({shown!r}, watchdog_interval={self.watchdog_interval!r})"
