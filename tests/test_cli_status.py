"""`poolctl status`: unreadable runtime state is "unknown" (exit 4) with a reason, and every
status read parses and is right while the supervisor flushes runtime.json as fast as it can."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cli_targets import Cli, cli_session, wait_for

import statusboard
from statusboard.errors import RuntimeFileError
from statusboard.probe import probe

CLI_CALLS_PER_PHASE = 60  # two phases: 120 CLI `status --json` calls ...
IN_PROCESS_ROUNDS = 250  # ... and at least this many probe() + attach() rounds in each phase


@pytest.fixture(scope="module")
def real_runtime_json(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a real runtime.json, as a supervisor wrote it while running."""
    with cli_session(tmp_path_factory.mktemp("template") / "run") as cli:
        cli.start(workers=2)
        raw = (cli.directory / "runtime.json").read_bytes()
        cli.ok("stop")
    return raw


# -- unknown: the runtime state cannot be read --------------------------------------------------


def _doc(raw: bytes, **changes: Any) -> bytes:
    document = json.loads(raw)
    for key, value in changes.items():
        if value is _DROP:
            document.pop(key)
        else:
            document[key] = value
    return json.dumps(document).encode()


_DROP = object()
CORRUPT = {
    "empty": (lambda raw: b"", "is empty"),
    "blank": (lambda raw: b"  \n\t\n", "is empty"),
    "truncated": (lambda raw: raw[: len(raw) // 2], "is truncated or not JSON"),
    "one-byte-short": (lambda raw: raw[:-1], "is truncated or not JSON"),
    "binary": (lambda raw: b"\xff\xfe\x00\x81garbage", "is truncated or not JSON"),
    "json-array": (lambda raw: b"[1, 2, 3]", "holds a JSON list, not an object"),
    "future-schema": (lambda raw: _doc(raw, schema=2), "has schema 2; this poolctl reads schema 1"),
    "foreign-json": (lambda raw: b'{"pid": 4242, "program": "gunicorn"}', "has schema None"),
    "missing-key": (lambda raw: _doc(raw, supervisor=_DROP), "missing key 'supervisor'"),
    "wrong-type": (lambda raw: _doc(raw, workers_desired="2"), "'workers_desired' should be int, got str"),
    "unknown-state": (lambda raw: _doc(raw, state="exploded"), "unknown state 'exploded'"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_unreadable_runtime_file_is_unknown_with_a_reason(
    runtime_dir: Path, real_runtime_json: bytes, case: str
) -> None:
    make, fragment = CORRUPT[case]
    content = make(real_runtime_json)
    (runtime_dir / "runtime.json").write_bytes(content)
    cli = Cli(runtime_dir)
    code, document = cli.status()
    assert code == 4, document
    assert document["state"] == "unknown", document
    assert fragment in document["reason"] and "runtime.json" in document["reason"], document["reason"]
    table = cli("status")
    assert table.code == 4 and table.err == "", str(table)
    assert table.out.splitlines()[0] == f"pool {cli.name}: unknown - {document['reason']}", str(table)
    assert "Traceback" not in table.out
    # Nothing is lost: reading never rewrites (or "repairs") the file.
    assert (runtime_dir / "runtime.json").read_bytes() == content


def test_runtime_json_that_is_a_directory_is_unknown(runtime_dir: Path) -> None:
    (runtime_dir / "runtime.json").mkdir()
    code, document = Cli(runtime_dir).status()
    assert code == 4 and "is a directory" in document["reason"], document


def test_start_over_a_corrupt_runtime_file_works(cli: Cli, real_runtime_json: bytes) -> None:
    (cli.directory / "runtime.json").write_bytes(real_runtime_json[:100])
    stop = cli("stop")  # nobody holds the lock: nothing to stop, and it says why
    assert stop.code == 0 and "not running" in stop.out and "truncated" in stop.out, str(stop)
    cli.start(workers=1)
    code, document = cli.status()
    assert code == 0, document
    cli.ok("stop")
    assert cli.status()[0] == 3


# -- status while the supervisor flushes as fast as it can ----------------------------------------


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.problems: list[str] = []
        self.rounds = 0  # in-process rounds made (each one probe() and one attach() check)

    def add(self, kind: str, problem: str | None = None) -> None:
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if problem is not None and len(self.problems) < 20:
                self.problems.append(f"{kind}: {problem}")


def _cli_status_calls(cli: Cli, calls: int, allowed: set[int], tally: Tally, threads: int = 3) -> None:
    """``calls`` CLI `status --json` subprocesses from ``threads`` threads; check each."""
    remaining = [calls]

    def worker() -> None:
        while True:
            with tally.lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            result = cli("status", "--json", timeout=30)
            try:
                document = json.loads(result.out)
            except ValueError as exc:
                tally.add("cli", f"parse error {exc}: {result.out!r} {result.err!r}")
                continue
            wrong = (
                result.code not in allowed
                or document["source"] != "shm"
                or document["supervisor"]["alive"] is not True
                or document["state"] not in {0: {"running"}, 2: {"degraded"}}.get(result.code, set())
                or result.err
            )
            tally.add("cli", f"exit {result.code}: {document} {result.err}" if wrong else None)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=120)


def _in_process_checks(directory: Path, name: str, allowed: set[int], tally: Tally, steady: bool) -> None:
    """One round of the in-process readers: probe(), and a fresh attach() (it reads runtime.json)."""
    report = probe(directory, name)
    if int(report.code) not in allowed or report.document["source"] != "shm":
        tally.add("probe", f"exit {int(report.code)}: {report.document['reason']}")
    else:
        tally.add("probe")
    try:
        reader = statusboard.attach(directory)
    except RuntimeFileError as exc:  # a torn or partial runtime.json would land here
        tally.add("attach", f"{type(exc).__name__}: {exc}")
        return
    with reader:
        snapshot = reader.snapshot()
        workers = snapshot.workers()
        healthy = reader.healthy()
        bad = snapshot.torn_rows or snapshot.pool_state != "running" or not workers
        if steady:
            bad = bad or not healthy or any(w["state"] != "running" for w in workers)
        tally.add(
            "attach", f"healthy={healthy} state={snapshot.pool_state} workers={workers}" if bad else None
        )


@pytest.mark.timeout(240)
def test_every_status_read_is_right_while_the_supervisor_flushes_flat_out(cli: Cli) -> None:
    # A generous heartbeat timeout: a worker starved of CPU by this very test is not a bug.
    cli.ok(
        "start",
        "cli_targets:steady",
        "-w",
        "2",
        "--flush-interval",
        "0.001",
        "--heartbeat-timeout",
        "30",
        "--grace",
        "0.5",
    )
    path = cli.directory / "runtime.json"

    # It really does flush over and over while we read (each flush fsyncs, so the disk sets
    # the pace): 10 distinct flushes seen, every one of them a whole, valid file.
    flushes = set()

    def ten_flushes() -> bool:
        flushes.add(json.loads(path.read_bytes())["flushed_at"])
        return len(flushes) >= 10

    wait_for(ten_flushes, 60.0, "10 distinct flushes of runtime.json", interval=0.001)

    def phase(allowed: set[int], steady: bool, during: Any = None) -> Tally:
        tally = Tally()
        stop = threading.Event()
        errors: list[BaseException] = []

        def lifecycle() -> None:
            try:
                during()
            except BaseException as exc:
                errors.append(exc)

        changer = threading.Thread(target=lifecycle) if during else None
        clis = threading.Thread(target=_cli_status_calls, args=(cli, CLI_CALLS_PER_PHASE, allowed, tally))
        clis.start()
        if changer:
            changer.start()
        # Until the CLI calls and the changes are done, and at least IN_PROCESS_ROUNDS rounds
        # were checked: a count of reads, however long the machine takes for them.
        rounds = 0
        while clis.is_alive() or (changer is not None and changer.is_alive()) or rounds < IN_PROCESS_ROUNDS:
            _in_process_checks(cli.directory, cli.name, allowed, tally, steady)
            rounds += 1
            time.sleep(0.005)
        tally.rounds = rounds
        stop.set()
        clis.join()
        if changer:
            changer.join()
        assert not errors, errors
        return tally

    began = time.monotonic()
    steady = phase({0}, steady=True)
    print(f"steady phase {time.monotonic() - began:.1f}s {steady.counts}")
    assert not steady.problems, f"{steady.counts}\n" + "\n".join(steady.problems)
    assert steady.counts == {"cli": CLI_CALLS_PER_PHASE, "probe": steady.rounds, "attach": steady.rounds}
    assert steady.rounds >= IN_PROCESS_ROUNDS

    def lifecycle_changes() -> None:
        cli.ok("scale", "4")
        cli.ok("restart", "--rolling")
        cli.ok("scale", "2")

    began = time.monotonic()
    changing = phase({0, 2}, steady=False, during=lifecycle_changes)
    print(f"changing phase {time.monotonic() - began:.1f}s {changing.counts}")
    assert not changing.problems, f"{changing.counts}\n" + "\n".join(changing.problems)
    assert changing.counts == {
        "cli": CLI_CALLS_PER_PHASE,
        "probe": changing.rounds,
        "attach": changing.rounds,
    }
    assert changing.rounds >= IN_PROCESS_ROUNDS

    code, document = wait_for(lambda: (r := cli.status())[0] == 0 and r, 10.0, "running after the changes")
    assert [w["generation"] for w in document["workers"]] == [2, 2], document
    cli.ok("stop")
    code, document = cli.status()
    assert (code, document["state"]) == (3, "stopped"), document
    assert not cli.pool_processes() and not cli.segments()
