"""A /metrics HTTP endpoint that lives inside the supervisor's single-threaded loop.

No thread: the supervisor forks its workers and must stay single-threaded (a
thread could hold a lock at fork time). So the server is a state machine driven
by the loop:

    loop's select.poll --(fileno() readable)--> service()
        service(): epoll.poll(0) on [listener, clients] -> accept / recv / send,
                   each bounded; drop clients past their deadline
    loop's timeout <= next_deadline()   (so a stalled client is dropped on time)

One fd for the loop: an internal ``select.epoll`` holds the listening socket and
every client socket, and ``fileno()`` is the epoll's own fd, readable whenever
one of them is ready. Level-triggered: work left over by one bounded call keeps
the fd readable and the loop simply calls again.

HTTP/1.0-style: one request per connection, ``Connection: close``. GET (and HEAD)
/metrics answers 200 with ``render()``'s bytes; any other path 404, any other
method 405. ``render`` runs in the loop, so it must be quick (reading the board
and formatting it is well under a millisecond for 64 workers).
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CLIENT_TIMEOUT_S = 5.0  # whole request + response; a client slower than this is dropped
MAX_CLIENTS = 32
MAX_REQUEST_BYTES = 8192
_ACCEPTS_PER_CALL = 16
_EVENTS_PER_CALL = 64
_RECV_BYTES = 4096


class _Client:
    __slots__ = ("deadline", "inbox", "outbox", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.inbox = b""
        self.outbox: memoryview | None = None  # the response, once the request is complete


class MetricsServer:
    """Serves ``render()`` at http://HOST:PORT/metrics, driven by ``service()`` calls."""

    def __init__(
        self,
        port: int,
        render: Callable[[], bytes],
        host: str = "127.0.0.1",
        *,
        client_timeout: float = CLIENT_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Bind and listen at once; raises OSError (EADDRINUSE, ...) if it cannot. Port 0 picks one."""
        self._render = render
        self._timeout = client_timeout
        self._clock = clock
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self._listener = socket.socket(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, proto)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(address)
            self._listener.listen(MAX_CLIENTS)
            self._epoll = select.epoll(sizehint=MAX_CLIENTS + 1, flags=select.EPOLL_CLOEXEC)
        except BaseException:
            self._listener.close()
            raise
        self._epoll.register(self._listener.fileno(), select.EPOLLIN)
        self._clients: dict[int, _Client] = {}
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self.served = 0  # responses sent in full (tests and the curious)

    def fileno(self) -> int:
        """The one fd to register (POLLIN) in the caller's poll set: the internal epoll."""
        return self._epoll.fileno()

    def fds(self) -> list[int]:
        """Every fd the server holds now (epoll, listener, clients): for a forked child to close."""
        if self._epoll.closed:
            return []
        return [self._epoll.fileno(), self._listener.fileno(), *self._clients]

    def next_deadline(self) -> float | None:
        """The earliest client deadline (on the clock given, time.monotonic by default), or None."""
        if not self._clients:
            return None
        return min(client.deadline for client in self._clients.values())

    @property
    def clients(self) -> int:
        """Connections open now."""
        return len(self._clients)

    def service(self) -> None:
        """Do the I/O that is ready now, without blocking, and drop clients past their deadline."""
        if self._epoll.closed:
            return
        for fd, events in self._epoll.poll(0, _EVENTS_PER_CALL):
            if fd == self._listener.fileno():
                self._accept()
                continue
            client = self._clients.get(fd)
            if client is None:
                continue
            if events & (select.EPOLLERR | select.EPOLLHUP) and client.outbox is None:
                self._drop(client)
            elif client.outbox is None:
                self._receive(client)
            else:
                self._send(client)
        now = self._clock()
        for client in [c for c in self._clients.values() if c.deadline <= now]:
            self._drop(client)

    def close(self) -> None:
        """Close every socket and the epoll. Safe to call twice."""
        for client in list(self._clients.values()):
            self._drop(client)
        if not self._epoll.closed:
            self._epoll.close()
        self._listener.close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the connection state machine --------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_CALL):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ECONNABORTED, EMFILE ...: try again on the next call
                return
            sock.setblocking(False)
            if len(self._clients) >= MAX_CLIENTS:
                _send_now(sock, _response(503, b"too many connections\n"))
                sock.close()
                continue
            client = _Client(sock, self._clock() + self._timeout)
            self._clients[sock.fileno()] = client
            self._epoll.register(sock.fileno(), select.EPOLLIN)

    def _receive(self, client: _Client) -> None:
        try:
            chunk = client.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        if not chunk:  # the client gave up before finishing its request
            self._drop(client)
            return
        client.inbox += chunk
        head, sep, _ = client.inbox.partition(b"\r\n\r\n")
        if not sep:
            head, sep, _ = client.inbox.partition(b"\n\n")  # tolerate bare-LF clients
        if sep:
            self._respond(client, head)
        elif len(client.inbox) > MAX_REQUEST_BYTES:
            self._respond(client, None)

    def _respond(self, client: _Client, head: bytes | None) -> None:
        response = self._answer(head)
        client.inbox = b""
        client.outbox = memoryview(response)
        self._epoll.modify(client.sock.fileno(), select.EPOLLOUT)
        self._send(client)  # usually the whole response fits the socket buffer at once

    def _answer(self, head: bytes | None) -> bytes:
        if head is None:
            return _response(431, b"request header too large\n")
        try:
            method, target, _version = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].decode("latin-1").split()
        except ValueError:
            return _response(400, b"bad request\n")
        path = target.split("?", 1)[0]
        if path != "/metrics":
            return _response(404, b"not found; metrics are at /metrics\n")
        if method not in ("GET", "HEAD"):
            return _response(405, b"method not allowed\n", extra=b"Allow: GET, HEAD\r\n")
        try:
            body = self._render()
        except Exception as exc:  # the loop must go on; the scraper sees a 500
            return _response(500, f"cannot render metrics: {type(exc).__name__}: {exc}\n".encode())
        return _response(200, body, content_type=CONTENT_TYPE, head_only=method == "HEAD")

    def _send(self, client: _Client) -> None:
        assert client.outbox is not None
        try:
            sent = client.sock.send(client.outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        client.outbox = client.outbox[sent:]
        if not client.outbox:
            self.served += 1
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        fd = client.sock.fileno()
        self._clients.pop(fd, None)
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        client.sock.close()


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _response(
    code: int,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    extra: bytes = b"",
    head_only: bool = False,
) -> bytes:
    head = (
        f"HTTP/1.1 {code} {_REASONS[code]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
    ).encode()
    return head + extra + b"\r\n" + (b"" if head_only else body)


def _send_now(sock: socket.socket, data: bytes) -> None:
    """Best effort, never blocks: for a refusal the client may or may not read."""
    try:
        sock.send(data)
    except OSError:
        pass
