"""The supervisor's control socket: scale, rolling restart and stop from another process.

Signals carry no argument and the kernel merges repeats of a pending one, so
`poolctl scale 8` cannot be eight SIGTTINs. A Linux abstract-namespace unix
socket, named after the supervisor instance (pid + start ticks), needs no file
to clean up and no path-length budget; since abstract sockets have no file
permissions, the server accepts only peers of the same uid (SO_PEERCRED).

Protocol: one JSON line each way. ``{"op": "scale", "workers": 8}``,
``{"op": "rolling"}``, ``{"op": "stop"}`` -> ``{"ok": true}`` or
``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

_CLIENT_TIMEOUT_S = 0.5


def address(pool: str, pid: int, ticks: int) -> str:
    """Abstract socket name (leading NUL) for one supervisor instance."""
    return f"\0poolctl-{os.getuid()}-{pool}-{pid}-{ticks}"


class ControlServer:
    def __init__(self, name: str, handle: Callable[[dict[str, Any]], str | None]) -> None:
        """``handle`` returns None on success or an error message."""
        self.name = name
        self._handle = handle
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(name)
        self.sock.listen(8)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def serve_pending(self) -> None:
        """Answer every connection waiting now. Called when the listener is readable."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            with conn:
                self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(_CLIENT_TIMEOUT_S)
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _, uid, _ = struct.unpack("3i", creds)
            if uid not in (os.getuid(), 0):
                _reply(conn, f"uid {uid} may not control this pool")
                return
            line = conn.makefile("rb").readline(4096)
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("request is not an object")
        except (OSError, ValueError) as exc:
            _reply(conn, f"bad request: {exc}")
            return
        _reply(conn, self._handle(request))

    def close(self) -> None:
        self.sock.close()


def _reply(conn: socket.socket, error: str | None) -> None:
    body = {"ok": True} if error is None else {"ok": False, "error": error}
    try:
        conn.sendall(json.dumps(body).encode() + b"\n")
    except OSError:
        pass


def request(
    name: str, payload: dict[str, Any], timeout: float = 5.0, *, peer_pid: int | None = None
) -> dict[str, Any]:
    """Send one request to a supervisor; raises OSError when it cannot be reached.

    ``peer_pid``: the pid that must be serving the socket (the verified lock holder). The
    kernel says who listens (SO_PEERCRED of a connected client socket is the listener's
    process), so a socket name read from a wrong runtime.json cannot reach another pool:
    PermissionError, and nothing is sent.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(name)
        if peer_pid is not None:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            served_by, _, _ = struct.unpack("3i", creds)
            if served_by != peer_pid:
                raise PermissionError(
                    f"the control socket is served by pid {served_by}, not the lock holder pid {peer_pid}"
                )
        sock.sendall(json.dumps(payload).encode() + b"\n")
        line = sock.makefile("rb").readline(4096)
    answer = json.loads(line) if line else {"ok": False, "error": "no answer"}
    return answer if isinstance(answer, dict) else {"ok": False, "error": "bad answer"}
