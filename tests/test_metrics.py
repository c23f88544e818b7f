"""Prometheus metrics: the exposition of status documents (parsed with prometheus_client's own
parser), `poolctl metrics` against real pools (running, degraded, stopped, never started,
unreadable), and the supervisor's non-blocking /metrics server driven like the supervisor loop
drives it (real urllib clients, stalled clients, clients that never read)."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cli_targets import Cli, wait_for
from prometheus_client.parser import text_string_to_metric_families

from pool.integrations.metrics_http import CONTENT_TYPE, MAX_CLIENTS, MetricsServer
from statusboard.metrics import POOL_STATES, WORKER_STATES, exposition
from statusboard.probe import probe

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[dict[str, Any], Samples]:
    """(families by name, {(sample name, sorted labels): value}) via prometheus_client's parser."""
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples: Samples = {}
    for family in families.values():
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def by_name(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


# -- exposition of a document -----------------------------------------------------------------


def _worker(slot: int, **changes: Any) -> dict[str, Any]:
    worker = {
        "slot": slot,
        "pid": 1000 + slot,
        "state": "running",
        "healthy": True,
        "heartbeat_age_s": 0.25,
        "beats": 120,
        "tasks_done": 7,
        "tasks_failed": 1,
        "restarts": 2,
        "recycled": 1,
        "rss_bytes": 50_000_000,
    }
    worker.update(changes)
    return worker


def _document(**changes: Any) -> dict[str, Any]:
    document = {
        "pool": "web",
        "state": "degraded",
        "source": "shm",
        "reason": "worker 1 restarting",
        "supervisor": {"pid": 4242, "alive": True, "started_at": "x", "uptime_s": 12.5},
        "target": "app:work",
        "workers_desired": 2,
        "workers": [
            _worker(0),
            _worker(1, state="backoff", healthy=False, heartbeat_age_s=None, rss_bytes=None),
        ],
    }
    document.update(changes)
    return document


def test_every_field_of_a_document_becomes_a_sample() -> None:
    families, samples = parse(exposition(_document()).decode())
    pool = {"pool": "web"}
    assert value(samples, "poolctl_supervisor_up", **pool) == 1
    assert by_name(samples, "poolctl_pool_state") == {
        (("pool", "web"), ("state", s)): (1.0 if s == "degraded" else 0.0) for s in POOL_STATES
    }
    assert value(samples, "poolctl_pool_source", source="shm", **pool) == 1
    assert value(samples, "poolctl_pool_source", source="file", **pool) == 0
    assert value(samples, "poolctl_pool_info", target="app:work", **pool) == 1
    assert value(samples, "poolctl_workers_desired", **pool) == 2
    assert value(samples, "poolctl_workers_healthy", **pool) == 1
    assert value(samples, "poolctl_supervisor_uptime_seconds", **pool) == 12.5
    w0 = {"pool": "web", "slot": "0"}
    w1 = {"pool": "web", "slot": "1"}
    assert value(samples, "poolctl_worker_up", **w0) == 1
    assert value(samples, "poolctl_worker_up", **w1) == 0
    assert value(samples, "poolctl_worker_heartbeat_age_seconds", **w0) == 0.25
    assert ("poolctl_worker_heartbeat_age_seconds", tuple(sorted(w1.items()))) not in samples  # no beat yet
    assert value(samples, "poolctl_worker_beats_total", **w0) == 120
    assert value(samples, "poolctl_worker_restarts_total", **w0) == 2
    assert value(samples, "poolctl_worker_recycled_total", **w0) == 1
    assert value(samples, "poolctl_worker_tasks_done_total", **w0) == 7
    assert value(samples, "poolctl_worker_tasks_failed_total", **w0) == 1
    assert value(samples, "poolctl_worker_resident_memory_bytes", **w0) == 50_000_000
    assert ("poolctl_worker_resident_memory_bytes", tuple(sorted(w1.items()))) not in samples
    states = by_name(samples, "poolctl_worker_state")
    assert {dict(k)["state"] for k in states if dict(k)["slot"] == "1" and states[k] == 1} == {"backoff"}
    assert len(states) == 2 * len(WORKER_STATES)
    # types and help text
    assert families["poolctl_worker_beats"].type == "counter"
    assert families["poolctl_worker_heartbeat_age_seconds"].type == "gauge"
    assert all(f.documentation for f in families.values())
    assert all(name.startswith("poolctl_") for name in families)


def test_a_dead_supervisor_is_down_and_unknown_states_still_show() -> None:
    document = _document(
        state="stale",
        source="file",
        supervisor={"pid": 4242, "alive": False},
        workers=[_worker(0, state="unknown(42)", healthy=False)],
    )
    _, samples = parse(exposition(document).decode())
    assert value(samples, "poolctl_supervisor_up", pool="web") == 0
    assert value(samples, "poolctl_pool_state", pool="web", state="stale") == 1
    assert value(samples, "poolctl_worker_state", pool="web", slot="0", state="unknown(42)") == 1
    assert ("poolctl_supervisor_uptime_seconds", (("pool", "web"),)) not in samples


def test_label_values_are_escaped() -> None:
    target = 'dir with "quotes"\\and\nnewline.py:work'
    _, samples = parse(exposition(_document(target=target)).decode())
    assert value(samples, "poolctl_pool_info", pool="web", target=target) == 1


def test_the_status_path_never_imports_prometheus_client(tmp_path: Path) -> None:
    code = (
        "import sys; from cli.main import main; "
        f"main(['--name', 'x', '--runtime-dir', {str(tmp_path / 'run')!r}, 'status', '--json']); "
        "print('prometheus_client' in sys.modules, 'statusboard.metrics' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.splitlines()[-1] == "False False"


# -- `poolctl metrics` against real pools --------------------------------------------------------


def metrics(cli: Cli, expect: int = 0) -> Samples:
    result = cli("metrics")
    assert result.code == expect, str(result)
    return parse(result.out)[1]


def test_metrics_of_a_running_pool_agree_with_status(cli: Cli) -> None:
    cli.start(workers=2)
    samples = metrics(cli)
    pool = {"pool": cli.name}
    assert value(samples, "poolctl_supervisor_up", **pool) == 1
    assert value(samples, "poolctl_pool_state", state="running", **pool) == 1
    assert value(samples, "poolctl_pool_source", source="shm", **pool) == 1
    assert value(samples, "poolctl_workers_desired", **pool) == 2
    assert value(samples, "poolctl_workers_healthy", **pool) == 2
    assert value(samples, "poolctl_pool_info", target="cli_targets:steady", **pool) == 1
    for slot in ("0", "1"):
        worker = {"pool": cli.name, "slot": slot}
        assert value(samples, "poolctl_worker_up", **worker) == 1
        assert value(samples, "poolctl_worker_state", state="running", **worker) == 1
        assert value(samples, "poolctl_worker_beats_total", **worker) >= 1
        assert value(samples, "poolctl_worker_heartbeat_age_seconds", **worker) >= 0  # fresh: worker_up
        assert value(samples, "poolctl_worker_restarts_total", **worker) == 0
        assert value(samples, "poolctl_worker_resident_memory_bytes", **worker) > 1_000_000
    # beats move: a second scrape sees more (the workers beat every 50 ms)
    first = value(samples, "poolctl_worker_beats_total", pool=cli.name, slot="0")
    wait_for(
        lambda: value(metrics(cli), "poolctl_worker_beats_total", pool=cli.name, slot="0") > first,
        10,
        "worker 0's beats to grow",
    )


def test_metrics_of_a_degraded_pool(cli: Cli) -> None:
    cli.start("cli_targets:crash_loop_slot_1", "--max-restarts", "1", workers=2)
    wait_for(lambda: cli.status()[0] == 2, 20, "the pool to be degraded")
    samples = metrics(cli)
    assert value(samples, "poolctl_pool_state", pool=cli.name, state="degraded") == 1
    assert value(samples, "poolctl_supervisor_up", pool=cli.name) == 1
    assert value(samples, "poolctl_worker_up", pool=cli.name, slot="1") == 0
    assert value(samples, "poolctl_worker_restarts_total", pool=cli.name, slot="1") >= 1


def test_metrics_of_a_stopped_pool_say_so_with_exit_0(cli: Cli) -> None:
    cli.start(workers=2)
    cli.ok("stop")
    samples = metrics(cli)
    assert value(samples, "poolctl_supervisor_up", pool=cli.name) == 0
    assert value(samples, "poolctl_pool_state", pool=cli.name, state="stopped") == 1
    assert value(samples, "poolctl_pool_source", pool=cli.name, source="file") == 1
    assert value(samples, "poolctl_workers_healthy", pool=cli.name) == 0
    assert value(samples, "poolctl_worker_state", pool=cli.name, slot="0", state="stopped") == 1


def test_metrics_of_a_never_started_pool(cli: Cli) -> None:
    samples = metrics(cli)
    assert value(samples, "poolctl_supervisor_up", pool=cli.name) == 0
    assert value(samples, "poolctl_pool_state", pool=cli.name, state="stopped") == 1
    assert value(samples, "poolctl_pool_source", pool=cli.name, source="none") == 1
    assert not by_name(samples, "poolctl_worker_up")


def test_unreadable_runtime_state_exits_4_with_unknown_metrics(cli: Cli) -> None:
    (cli.directory / "runtime.json").write_text('{"half": ')
    result = cli("metrics")
    assert result.code == 4, str(result)
    _, samples = parse(result.out)
    assert value(samples, "poolctl_pool_state", pool=cli.name, state="unknown") == 1
    assert len(result.err_lines) == 1 and "runtime.json" in result.err, str(result)


def test_metrics_output_file_is_replaced_atomically(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "poolctl.prom"
    target.write_text("old\n")
    result = cli("metrics", "--output", str(target))
    assert result.code == 0 and result.out == "", str(result)
    _, samples = parse(target.read_text())
    assert value(samples, "poolctl_supervisor_up", pool=cli.name) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poolctl.prom", "run"]  # no temp file left


# -- the /metrics server ------------------------------------------------------------------------


class Scrapes:
    """A render callable that counts its calls and returns a real exposition."""

    def __init__(self, document: dict[str, Any] | None = None) -> None:
        self.calls = 0
        self.document = document or _document()

    def __call__(self) -> bytes:
        self.calls += 1
        return exposition(self.document)


def serve_once(server: MetricsServer) -> None:
    """``server.service()``, which must never block: it runs in a thread, and one that has not
    returned after 10 s fails the test instead of hanging it (a bound on a blocked call,
    generous for a loaded machine; how fast service() is belongs to the bench)."""
    errors: list[BaseException] = []

    def call() -> None:
        try:
            server.service()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(10.0)
    assert not thread.is_alive(), "service() blocked"
    if errors:
        raise errors[0]


def drive(server: MetricsServer, done: Callable[[], bool], timeout: float = 30.0) -> None:
    """Run the server as the supervisor loop would: poll its one fd, wake for its deadlines."""
    poller = select.poll()
    poller.register(server.fileno(), select.POLLIN)
    limit = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < limit, "the server did not get there in time"
        wait = 0.05
        deadline = server.next_deadline()
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        ready = poller.poll(wait * 1000)
        if ready or (deadline is not None and time.monotonic() >= deadline):
            serve_once(server)


@pytest.fixture
def pool_threads() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as executor:
        yield executor


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get(
    server: MetricsServer, pool: ThreadPoolExecutor, path: str, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    future: Future[tuple[int, dict[str, str], bytes]] = pool.submit(
        fetch, f"http://127.0.0.1:{server.port}{path}", method
    )
    drive(server, future.done)
    return future.result()


def test_get_metrics_serves_a_fresh_render(pool_threads: ThreadPoolExecutor) -> None:
    render = Scrapes()
    with MetricsServer(0, render) as server:
        assert server.port > 0
        assert os.readlink(f"/proc/self/fd/{server.fileno()}") == "anon_inode:[eventpoll]"
        code, headers, body = get(server, pool_threads, "/metrics")
        assert code == 200
        assert headers["Content-Type"] == CONTENT_TYPE
        assert int(headers["Content-Length"]) == len(body)
        assert body == exposition(render.document)
        _, samples = parse(body.decode())
        assert value(samples, "poolctl_supervisor_up", pool="web") == 1
        render.document = _document(supervisor={"pid": 1, "alive": False})
        _, _, body = get(server, pool_threads, "/metrics?format=text")
        assert value(parse(body.decode())[1], "poolctl_supervisor_up", pool="web") == 0
        assert render.calls == 2
        assert server.served == 2
        assert server.clients == 0


@pytest.mark.parametrize(
    ("path", "method", "code"),
    [("/", "GET", 404), ("/metricsx", "GET", 404), ("/metrics", "POST", 405), ("/metrics", "DELETE", 405)],
)
def test_other_paths_and_methods(pool_threads: ThreadPoolExecutor, path: str, method: str, code: int) -> None:
    render = Scrapes()
    with MetricsServer(0, render) as server:
        assert get(server, pool_threads, path, method)[0] == code
        assert render.calls == 0


def test_head_sends_headers_only(pool_threads: ThreadPoolExecutor) -> None:
    with MetricsServer(0, Scrapes()) as server:
        code, headers, body = get(server, pool_threads, "/metrics", "HEAD")
        assert code == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_a_render_error_is_a_500_and_the_server_goes_on(pool_threads: ThreadPoolExecutor) -> None:
    calls = []

    def render() -> bytes:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("board gone")
        return b"ok 1\n"

    with MetricsServer(0, render) as server:
        code, _, body = get(server, pool_threads, "/metrics")
        assert code == 500 and b"board gone" in body
        code, _, body = get(server, pool_threads, "/metrics")
        assert (code, body) == (200, b"ok 1\n")


def _connect(server: MetricsServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def test_a_silent_client_blocks_nobody_and_is_dropped_at_its_deadline(
    pool_threads: ThreadPoolExecutor,
) -> None:
    with MetricsServer(0, Scrapes(), client_timeout=0.5) as server:
        silent = _connect(server)
        drive(server, lambda: server.clients == 1)
        accepted_deadline = server.next_deadline()
        assert accepted_deadline is not None
        # a real scrape is answered while the silent client holds its connection
        assert get(server, pool_threads, "/metrics")[0] == 200
        assert server.clients == 1
        # then the silent one is dropped once its deadline passes: it reads EOF
        drive(server, lambda: server.clients == 0)
        assert time.monotonic() >= accepted_deadline
        assert server.next_deadline() is None
        silent.settimeout(5)
        assert silent.recv(100) == b""
        silent.close()


def test_a_half_request_is_dropped_and_a_slow_complete_one_answered() -> None:
    now = [100.0]
    with MetricsServer(0, Scrapes(), client_timeout=5.0, clock=lambda: now[0]) as server:
        stalled, slow = _connect(server), _connect(server)
        drive(server, lambda: server.clients == 2)
        stalled.sendall(b"GET /metr")
        for piece in (b"GET /metrics HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
            slow.sendall(piece)
            time.sleep(0.01)  # separate segments, so the server sees the request in pieces
        slow.settimeout(10)
        received = b""
        while b"\r\n\r\n" not in received:
            server.service()
            select.select([slow], [], [], 0.05)
            try:
                received += slow.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
        assert received.startswith(b"HTTP/1.1 200 OK\r\n")
        assert server.clients == 1
        server.service()
        assert server.clients == 1  # the clock has not moved: the stalled one still has time
        now[0] += 5.0
        server.service()
        assert server.clients == 0
        stalled.settimeout(5)
        assert stalled.recv(100) == b""
        stalled.close()
        slow.close()


@pytest.mark.timeout(30)  # a blocking send would hang here: fail fast instead
def test_a_client_that_never_reads_cannot_block_service() -> None:
    big = b"# " + b"x" * 8_000_000 + b"\n"  # far more than any socket buffer
    now = [0.0]
    with MetricsServer(0, lambda: big, clock=lambda: now[0]) as server:
        sock = _connect(server)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        for _ in range(50):
            serve_once(server)  # a blocking send would never return: the client reads nothing
            time.sleep(0.002)
        assert server.clients == 1 and server.served == 0
        now[0] += 10
        server.service()
        assert server.clients == 0
        sock.close()


def test_too_many_clients_get_a_503_not_a_hang() -> None:
    with MetricsServer(0, Scrapes()) as server:
        held = [_connect(server) for _ in range(MAX_CLIENTS)]
        drive(server, lambda: server.clients == MAX_CLIENTS)
        extra = _connect(server)
        extra.settimeout(10)
        drive(server, lambda: select.select([extra], [], [], 0)[0] != [])
        assert extra.recv(100).startswith(b"HTTP/1.1 503")
        assert server.clients == MAX_CLIENTS
        for sock in [*held, extra]:
            sock.close()


def test_oversized_and_garbage_requests() -> None:
    with MetricsServer(0, Scrapes()) as server:
        for payload, status in ((b"X" * 9000, b"431"), (b"NONSENSE\r\n\r\n", b"400")):
            sock = _connect(server)
            sender = threading.Thread(target=sock.sendall, args=(payload,))
            sender.start()
            received = bytearray()

            def answered(sock: socket.socket = sock, received: bytearray = received) -> bool:
                if select.select([sock], [], [], 0)[0]:
                    received.extend(sock.recv(65536))
                return b"\r\n" in received

            drive(server, answered)
            sender.join(10)
            assert received.split(b" ")[1] == status
            sock.close()


def test_close_releases_the_port_and_is_idempotent() -> None:
    server = MetricsServer(0, Scrapes())
    port = server.port
    client = _connect(server)
    drive(server, lambda: server.clients == 1)
    fds = server.fds()
    assert len(fds) == 3 and server.fileno() in fds  # epoll, listener, one client
    with pytest.raises(OSError):
        MetricsServer(port, Scrapes())  # in use
    server.close()
    server.close()
    assert server.fds() == []
    client.settimeout(5)
    assert client.recv(100) == b""  # the server's end is closed
    client.close()
    with MetricsServer(port, Scrapes()) as again:
        assert again.port == port


def test_serves_a_real_status_document(cli: Cli, pool_threads: ThreadPoolExecutor) -> None:
    """What the supervisor will do: render = exposition(probe(...).document) of its own pool."""
    cli.start(workers=1)
    with MetricsServer(0, lambda: exposition(probe(cli.directory, cli.name).document)) as server:
        code, _, body = get(server, pool_threads, "/metrics")
    assert code == 200
    samples = parse(body.decode())[1]
    assert value(samples, "poolctl_supervisor_up", pool=cli.name) == 1
    assert value(samples, "poolctl_worker_up", pool=cli.name, slot="0") == 1
    assert json.loads(cli("status", "--json").out)["state"] == "running"
