"""runtime.json: atomic replace under SIGKILL, validated reads, a named error for every bad input."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import stat
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from statusboard import runtime_file
from statusboard.errors import (
    RuntimeFileCorrupt,
    RuntimeFileError,
    RuntimeFileMissing,
    RuntimeFileSchemaError,
)

TMP_GLOB = ".runtime.json.*.tmp"
SEEN_ENOUGH = 20  # the reader must read files of this many different writes while they are written


def document(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "pool": "rt",
        "state": "running",
        "supervisor": {"pid": 1234, "start_ticks": 5678},
        "workers_desired": 2,
        "workers": [{"slot": 0, "pid": 1240}, {"slot": 1, "pid": 1241}],
    }
    doc.update(overrides)
    return doc


# -- writing ---------------------------------------------------------------------------


@pytest.mark.parametrize("durable", [True, False])
def test_round_trip(runtime_dir: Path, durable: bool) -> None:
    doc = document(target="app:work", flushed_at="2026-11-24T15:00:00.000+00:00")
    runtime_file.write(runtime_dir, doc, durable=durable)
    assert runtime_file.read(runtime_dir) == {"schema": runtime_file.SCHEMA, **doc}
    assert runtime_file.SCHEMA == 1

    doc2 = document(state="stopped", workers=[])
    runtime_file.write(runtime_dir, doc2, durable=durable)
    assert runtime_file.read(runtime_dir) == {"schema": 1, **doc2}
    assert sorted(p.name for p in runtime_dir.iterdir()) == ["runtime.json"]  # no temp left


def test_file_mode_is_0600_whatever_the_umask(runtime_dir: Path) -> None:
    old = os.umask(0)
    try:
        runtime_file.write(runtime_dir, document())
    finally:
        os.umask(old)
    path = runtime_dir / "runtime.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.stat().st_uid == os.geteuid()


def test_a_failed_write_keeps_the_old_file(runtime_dir: Path) -> None:
    runtime_file.write(runtime_dir, document(state="running"))
    with pytest.raises(TypeError):
        runtime_file.write(runtime_dir, document(state="stopping", bad=object()))
    assert runtime_file.read(runtime_dir)["state"] == "running"
    assert list(runtime_dir.glob(TMP_GLOB)) == []


def test_a_failed_rename_removes_its_temp_file(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    (directory / "runtime.json").mkdir(parents=True)  # a non-empty directory cannot be replaced
    (directory / "runtime.json" / "x").touch()
    with pytest.raises(OSError):
        runtime_file.write(directory, document())
    assert list(directory.glob(TMP_GLOB)) == []


def test_remove_stale_temps_removes_only_temps(runtime_dir: Path) -> None:
    runtime_file.write(runtime_dir, document())
    (runtime_dir / ".runtime.json.abc123.tmp").write_text("{")
    (runtime_dir / ".runtime.json.def456.tmp").write_text("")
    (runtime_dir / "supervisor.lock").touch()
    (runtime_dir / "other.tmp").touch()
    assert runtime_file.remove_stale_temps(runtime_dir) == 2
    assert sorted(p.name for p in runtime_dir.iterdir()) == ["other.tmp", "runtime.json", "supervisor.lock"]
    assert runtime_file.remove_stale_temps(runtime_dir) == 0


# -- atomicity under SIGKILL -------------------------------------------------------------

_WRITER = """
import sys, json, random, zlib
from pathlib import Path
from statusboard import runtime_file

directory, first, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(first)
print("writing", flush=True)
for seq in range(first, first + count):
    n = rng.randint(1, 64)
    workers = [{"slot": i, "pid": seq * 100 + i, "state": "running", "pad": "x" * rng.randint(0, 300)}
               for i in range(n)]
    runtime_file.write(directory, {
        "pool": "atomic", "state": "running", "supervisor": {"pid": 1, "start_ticks": 1},
        "workers_desired": n, "workers": workers, "seq": seq,
        "crc": zlib.crc32(json.dumps(workers).encode()),
    })
"""

_READER = """
import sys, json, zlib
from pathlib import Path
from statusboard import runtime_file
from statusboard.errors import RuntimeFileError

directory, stop, SEEN_ENOUGH = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
reads, errors, error_count, mixed, seqs, told = 0, [], 0, [], set(), False
print("reading", flush=True)
while True:
    last = stop.exists()
    try:
        doc = runtime_file.read(directory)
    except RuntimeFileError as exc:
        error_count += 1
        if len(errors) < 5:
            errors.append(f"{type(exc).__name__}: {exc}")
    else:
        reads += 1
        seqs.add(doc["seq"])
        workers = doc["workers"]
        whole = (
            len(workers) == doc["workers_desired"]
            and all(w["slot"] == i and w["pid"] == doc["seq"] * 100 + i for i, w in enumerate(workers))
            and zlib.crc32(json.dumps(workers).encode()) == doc["crc"]
        )
        if not whole and len(mixed) < 5:
            mixed.append(doc["seq"])
        if len(seqs) >= SEEN_ENOUGH and not told:
            print("seen", flush=True)  # enough files, each from a different write, read whole
            told = True
    if last:
        break
print(json.dumps({"reads": reads, "errors": errors, "error_count": error_count,
                  "mixed": mixed, "distinct_seqs": len(seqs)}), flush=True)
"""


def _seq(directory: Path) -> int:
    return int(runtime_file.read(directory)["seq"])


def test_readers_never_see_a_partial_file_while_writers_are_killed(
    runtime_dir: Path,
    spawn,
    read_line: Callable[..., str],
    wait_until: Callable[..., Any],
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    runtime_file.write(
        runtime_dir,
        {
            "pool": "atomic",
            "state": "running",
            "supervisor": {"pid": 1, "start_ticks": 1},
            "workers_desired": 0,
            "workers": [],
            "seq": 0,
            "crc": zlib.crc32(b"[]"),
        },
    )
    stop = runtime_dir.parent / "stop-reading"
    reader = spawn.python(_READER, runtime_dir, stop, SEEN_ENOUGH)
    assert read_line(reader) == "reading"

    # Writers are killed until 6 were, 500 files were written and the reader has read files
    # of SEEN_ENOUGH different writes: counts of what happened, however fast the machine.
    kills = 0
    reader_has_seen = False
    while kills < 6 or _seq(runtime_dir) < 500 or not reader_has_seen:
        assert kills < 400, "the writers make no progress"
        first = _seq(runtime_dir) + 1
        writer = spawn.python(_WRITER, runtime_dir, first, 100_000)
        assert read_line(writer, timeout=30) == "writing"
        # Let it complete a random number of writes, then kill it wherever it is.
        target = first + rng.randint(2, 150)
        wait_until(lambda t=target: _seq(runtime_dir) >= t, 30, f"the writer to reach seq {target}", 0.001)
        os.kill(writer.pid, signal.SIGKILL)
        assert writer.wait(timeout=10) == -signal.SIGKILL
        kills += 1
        if not reader_has_seen and select.select([reader.stdout], [], [], 0)[0]:
            assert read_line(reader) == "seen"
            reader_has_seen = True

    # One writer that is allowed to finish.
    first = _seq(runtime_dir) + 1
    final = spawn.python(_WRITER, runtime_dir, first, 20)
    _, err = final.communicate(timeout=60)
    assert final.returncode == 0, err.decode()

    stop.touch()
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err.decode()
    seen = json.loads(out.decode().splitlines()[-1])
    context = f"seed {seed}, {kills} kills: {seen}"
    assert seen["error_count"] == 0, context
    assert seen["mixed"] == [], context
    # It really read while the writers wrote (the loop above waited for it).
    assert seen["reads"] >= seen["distinct_seqs"] >= SEEN_ENOUGH, context

    final_doc = runtime_file.read(runtime_dir)
    assert final_doc["seq"] == first + 19
    assert final_doc["seq"] >= 500

    leftovers = sorted(p.name for p in runtime_dir.glob(TMP_GLOB))
    assert runtime_file.remove_stale_temps(runtime_dir) == len(leftovers), leftovers
    assert sorted(p.name for p in runtime_dir.iterdir()) == ["runtime.json"]
    assert runtime_file.read(runtime_dir)["seq"] == first + 19


# -- reading bad input -------------------------------------------------------------------

_GOOD = json.dumps({"schema": 1, **document()}).encode()


def _with(**changes: Any) -> bytes:
    doc = {"schema": 1, **document()}
    for key, value in changes.items():
        if value is _DROP:
            doc.pop(key)
        else:
            doc[key] = value
    return json.dumps(doc).encode()


def _supervisor(**changes: Any) -> bytes:
    sup = {"pid": 1234, "start_ticks": 5678}
    for key, value in changes.items():
        if value is _DROP:
            sup.pop(key)
        else:
            sup[key] = value
    return _with(supervisor=sup)


_DROP = object()

BAD_INPUT: dict[str, tuple[bytes, type[RuntimeFileError], list[str]]] = {
    "empty": (b"", RuntimeFileCorrupt, ["is empty"]),
    "whitespace": (b"  \n\t\r\n ", RuntimeFileCorrupt, ["is empty"]),
    "truncated": (_GOOD[: len(_GOOD) // 2], RuntimeFileCorrupt, ["truncated or not JSON"]),
    "binary garbage": (bytes(range(256)) * 4, RuntimeFileCorrupt, ["not JSON"]),
    "invalid utf-8": (b'{"schema": 1, "pool": "\xff\xfe"}', RuntimeFileCorrupt, ["not JSON"]),
    "nested too deep": (b"[" * 200_000, RuntimeFileCorrupt, ["not JSON"]),
    "absurd integer": (b'{"schema": ' + b"9" * 5000 + b"}", RuntimeFileCorrupt, ["not JSON"]),
    "a JSON list": (b"[1, 2, 3]", RuntimeFileSchemaError, ["JSON list, not an object"]),
    "a JSON string": (b'"running"', RuntimeFileSchemaError, ["JSON str, not an object"]),
    "schema 99": (_with(schema=99), RuntimeFileSchemaError, ["schema 99", "reads schema 1"]),
    "schema missing": (_with(schema=_DROP), RuntimeFileSchemaError, ["schema None"]),
    "schema as a string": (_with(schema="1"), RuntimeFileSchemaError, ["schema '1'"]),
    "pool missing": (_with(pool=_DROP), RuntimeFileSchemaError, ["missing key", "pool"]),
    "state missing": (_with(state=_DROP), RuntimeFileSchemaError, ["missing key", "state"]),
    "supervisor missing": (_with(supervisor=_DROP), RuntimeFileSchemaError, ["missing key", "supervisor"]),
    "workers_desired missing": (
        _with(workers_desired=_DROP),
        RuntimeFileSchemaError,
        ["missing key", "workers_desired"],
    ),
    "workers missing": (_with(workers=_DROP), RuntimeFileSchemaError, ["missing key", "workers"]),
    "supervisor.pid missing": (_supervisor(pid=_DROP), RuntimeFileSchemaError, ["missing key", "pid"]),
    "supervisor.start_ticks missing": (
        _supervisor(start_ticks=_DROP),
        RuntimeFileSchemaError,
        ["missing key", "start_ticks"],
    ),
    "workers_desired a string": (
        _with(workers_desired="4"),
        RuntimeFileSchemaError,
        ["workers_desired", "should be int, got str"],
    ),
    "workers_desired a bool": (
        _with(workers_desired=True),
        RuntimeFileSchemaError,
        ["workers_desired", "should be int, got bool"],
    ),
    "workers_desired a float": (
        _with(workers_desired=4.0),
        RuntimeFileSchemaError,
        ["workers_desired", "should be int, got float"],
    ),
    "pool a number": (_with(pool=5), RuntimeFileSchemaError, ["pool", "should be str, got int"]),
    "supervisor a list": (_with(supervisor=[1, 2]), RuntimeFileSchemaError, ["should be dict, got list"]),
    "workers an object": (_with(workers={}), RuntimeFileSchemaError, ["workers", "should be list, got dict"]),
    "supervisor.pid a string": (
        _supervisor(pid="1234"),
        RuntimeFileSchemaError,
        ["pid", "should be int, got str"],
    ),
    "supervisor.start_ticks null": (
        _supervisor(start_ticks=None),
        RuntimeFileSchemaError,
        ["start_ticks", "should be int, got NoneType"],
    ),
    "unknown state": (_with(state="flying"), RuntimeFileSchemaError, ["unknown state 'flying'"]),
    "state a number": (_with(state=2), RuntimeFileSchemaError, ["state", "should be str, got int"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_gives_its_named_error(case: str, runtime_dir: Path) -> None:
    raw, error, fragments = BAD_INPUT[case]
    path = runtime_dir / "runtime.json"
    path.write_bytes(raw)
    with pytest.raises(error) as info:
        runtime_file.read(runtime_dir)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_the_good_document_behind_the_table_reads(runtime_dir: Path) -> None:
    # The control for the table above: the unmutated bytes are valid.
    (runtime_dir / "runtime.json").write_bytes(_GOOD)
    assert runtime_file.read(runtime_dir)["pool"] == "rt"
    (runtime_dir / "runtime.json").write_bytes(_with(extra_key={"any": "thing"}))  # keys may be added
    assert runtime_file.read(runtime_dir)["extra_key"] == {"any": "thing"}


@pytest.mark.parametrize("state", runtime_file.STATES)
def test_every_known_state_reads(state: str, runtime_dir: Path) -> None:
    (runtime_dir / "runtime.json").write_bytes(_with(state=state))
    assert runtime_file.read(runtime_dir)["state"] == state


def test_a_directory_named_runtime_json(runtime_dir: Path) -> None:
    (runtime_dir / "runtime.json").mkdir()
    with pytest.raises(RuntimeFileCorrupt, match="is a directory"):
        runtime_file.read(runtime_dir)


def test_missing_file(runtime_dir: Path) -> None:
    with pytest.raises(RuntimeFileMissing, match="does not exist") as info:
        runtime_file.read(runtime_dir)
    assert str(runtime_dir / "runtime.json") in str(info.value)
    assert not isinstance(info.value, (RuntimeFileCorrupt, RuntimeFileSchemaError))
